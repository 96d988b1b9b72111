"""The Pod Security Standards, checked over a pod spec as the admission controller checks it.

Every rule of kubernetes/pod-security-admission `policy/check_*.go`, for the pod and every
container, init container and ephemeral container. "baseline": no host namespaces, hostPath
volumes, privileged containers, host ports, capabilities added beyond the default set, custom
/proc mounts, unsafe sysctls, Windows host processes, other SELinux types or users, and seccomp or
AppArmor only RuntimeDefault or Localhost when set. "restricted" adds: volumes only of the types
configMap, csi, downwardAPI, emptyDir, ephemeral, image, persistentVolumeClaim, projected,
secret; allowPrivilegeEscalation explicitly false; runAsNonRoot true (pod or container) and
runAsUser not 0; a seccomp profile set (pod or container); capabilities dropping ALL and adding
NET_BIND_SERVICE at most. Pure: `pnas-eval doctor` judges a namespace's level with it, and the tests
check every pod the chart and the operator create.
"""

from __future__ import annotations

LEVELS = ("privileged", "baseline", "restricted")
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "image",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
PROFILE_TYPES = {"RuntimeDefault", "Localhost"}  # seccomp and AppArmor


def containers(pod: dict) -> list[dict]:
    return [*pod.get("initContainers", []), *pod.get("containers", []), *pod.get("ephemeralContainers", [])]


def violations(pod: dict, level: str = "restricted", annotations: dict | None = None) -> list[str]:
    """What keeps this pod spec out of a namespace that enforces `level`, one line each; empty when admitted."""
    if level not in LEVELS:
        raise ValueError(f"unknown Pod Security level {level!r}: one of {', '.join(LEVELS)}")
    if level == "privileged":
        return []
    restricted = level == "restricted"
    found = _pod_baseline(pod, annotations or {}) + (_pod_restricted(pod) if restricted else [])
    for container in containers(pod):
        problems = _container_baseline(container) + (_container_restricted(container, pod) if restricted else [])
        found += [f"container {container.get('name')}: {p}" for p in problems]
    return found


def _context_baseline(context: dict, where: str) -> list[str]:
    """Rules that apply alike to a pod's and a container's securityContext."""
    found = []
    if (context.get("windowsOptions") or {}).get("hostProcess"):
        found.append(f"{where}.windowsOptions.hostProcess: true")
    selinux = context.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
        found.append(f"{where}.seLinuxOptions: {selinux}")
    for profile in ("seccompProfile", "appArmorProfile"):
        kind = (context.get(profile) or {}).get("type")
        if kind is not None and kind not in PROFILE_TYPES:
            found.append(f"{where}.{profile}.type: {kind}")
    return found


def _pod_baseline(pod: dict, annotations: dict) -> list[str]:
    found = [f"{field}: true" for field in ("hostNetwork", "hostPID", "hostIPC") if pod.get(field)]
    context = pod.get("securityContext") or {}
    found += _context_baseline(context, "securityContext")
    found += [
        f"securityContext.sysctls: {s.get('name')} is not a safe sysctl"
        for s in context.get("sysctls") or []
        if s.get("name") not in SAFE_SYSCTLS
    ]
    found += [f"volume {v.get('name')}: hostPath" for v in pod.get("volumes") or [] if "hostPath" in v]
    for key, value in annotations.items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/"):
            if value != "runtime/default" and not value.startswith("localhost/"):
                found.append(f"annotation {key}: {value}")
    return found


def _pod_restricted(pod: dict) -> list[str]:
    context = pod.get("securityContext") or {}
    found = ["securityContext.runAsNonRoot: false"] if context.get("runAsNonRoot") is False else []
    found += ["securityContext.runAsUser: 0"] if context.get("runAsUser") == 0 else []
    for volume in pod.get("volumes") or []:
        kinds = [k for k in volume if k != "name"]
        if not set(kinds) <= RESTRICTED_VOLUMES and "hostPath" not in kinds:  # hostPath: said by baseline
            found.append(f"volume {volume.get('name')}: type {', '.join(kinds)} is not allowed (restricted)")
    return found


def _container_baseline(container: dict) -> list[str]:
    context = container.get("securityContext") or {}
    found = _context_baseline(context, "securityContext")
    if context.get("privileged"):
        found.append("securityContext.privileged: true")
    if context.get("procMount", "Default") != "Default":
        found.append(f"securityContext.procMount: {context['procMount']}")
    found += [f"ports: hostPort {p['hostPort']}" for p in container.get("ports") or [] if p.get("hostPort")]
    added = set((context.get("capabilities") or {}).get("add") or []) - BASELINE_CAPABILITIES
    found += [f"securityContext.capabilities.add: {cap} (baseline)" for cap in sorted(added)]
    return found


def _container_restricted(container: dict, pod: dict) -> list[str]:
    pod_context = pod.get("securityContext") or {}
    context = container.get("securityContext") or {}
    found = []
    if context.get("allowPrivilegeEscalation") is not False:
        found.append("securityContext.allowPrivilegeEscalation must be false")
    if context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is not True:
        found.append("runAsNonRoot must be true (pod or container)")
    if context.get("runAsUser") == 0:
        found.append("securityContext.runAsUser: 0")
    if (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type") is None:
        found.append("seccompProfile must be set to RuntimeDefault or Localhost (pod or container)")
    capabilities = context.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []):
        found.append("securityContext.capabilities.drop must include ALL")
    # beyond NET_BIND_SERVICE, and not already refused by baseline
    extra = sorted((set(capabilities.get("add") or []) & BASELINE_CAPABILITIES) - {"NET_BIND_SERVICE"})
    if extra:
        found.append(f"securityContext.capabilities.add: {extra} (restricted allows NET_BIND_SERVICE only)")
    return found
