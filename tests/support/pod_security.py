"""The Pod Security Standards' "restricted" level (baseline included), checked as the admission
controller checks a pod: every rule of kubernetes/pod-security-admission policy/check_*.go, for the
pod and every container, init container and ephemeral container.

`violations(pod_spec, annotations)` lists what `pod-security.kubernetes.io/enforce: restricted` would
refuse, one readable line per problem; an empty list means the namespace would admit the pod.
"""
from __future__ import annotations

# restricted (check_restrictedVolumes.go): the only volume types
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image", "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip
# baseline (check_sysctls.go): the safe set
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}  # fmt: skip
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
SECCOMP_RESTRICTED = {"RuntimeDefault", "Localhost"}
APPARMOR_TYPES = {"RuntimeDefault", "Localhost"}


def containers(pod: dict) -> list[dict]:
    return [*pod.get("initContainers", []), *pod.get("containers", []), *pod.get("ephemeralContainers", [])]


def violations(pod: dict, annotations: dict | None = None) -> list[str]:
    found = _pod_level(pod, annotations or {})
    for container in containers(pod):
        found += [f"container {container.get('name')}: {p}" for p in _container(container, pod)]
    return found


def _pod_level(pod: dict, annotations: dict) -> list[str]:
    found = [f"{field}: true" for field in ("hostNetwork", "hostPID", "hostIPC") if pod.get(field)]
    context = pod.get("securityContext") or {}
    found += _context_baseline(context, "securityContext")
    for sysctl in context.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            found.append(f"securityContext.sysctls: {sysctl.get('name')} is not a safe sysctl")
    if context.get("runAsNonRoot") is False:
        found.append("securityContext.runAsNonRoot: false")
    for volume in pod.get("volumes") or []:
        kinds = [k for k in volume if k != "name"]
        if not set(kinds) <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume.get('name')}: type {', '.join(kinds)} is not allowed (restricted)")
    for key, value in annotations.items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/"):
            if value != "runtime/default" and not value.startswith("localhost/"):
                found.append(f"annotation {key}: {value}")
    return found


def _context_baseline(context: dict, where: str) -> list[str]:
    """Rules that apply alike to a pod's and a container's securityContext."""
    found = []
    if (context.get("windowsOptions") or {}).get("hostProcess"):
        found.append(f"{where}.windowsOptions.hostProcess: true")
    selinux = context.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
        found.append(f"{where}.seLinuxOptions: {selinux}")
    seccomp = (context.get("seccompProfile") or {}).get("type")
    if seccomp is not None and seccomp not in SECCOMP_RESTRICTED:
        found.append(f"{where}.seccompProfile.type: {seccomp}")
    apparmor = (context.get("appArmorProfile") or {}).get("type")
    if apparmor is not None and apparmor not in APPARMOR_TYPES:
        found.append(f"{where}.appArmorProfile.type: {apparmor}")
    if context.get("runAsUser") == 0:
        found.append(f"{where}.runAsUser: 0")
    return found


def _container(container: dict, pod: dict) -> list[str]:
    pod_context = pod.get("securityContext") or {}
    context = container.get("securityContext") or {}
    found = _context_baseline(context, "securityContext")
    if context.get("privileged"):
        found.append("securityContext.privileged: true")
    if context.get("procMount", "Default") != "Default":
        found.append(f"securityContext.procMount: {context['procMount']}")
    for port in container.get("ports") or []:
        if port.get("hostPort"):
            found.append(f"ports: hostPort {port['hostPort']}")
    if context.get("allowPrivilegeEscalation") is not False:
        found.append("securityContext.allowPrivilegeEscalation must be false")
    if context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is not True:
        found.append("runAsNonRoot must be true (pod or container)")
    if (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type") is None:
        found.append("seccompProfile must be set to RuntimeDefault or Localhost (pod or container)")
    capabilities = context.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []):
        found.append("securityContext.capabilities.drop must include ALL")
    added = set(capabilities.get("add") or [])
    if added - {"NET_BIND_SERVICE"}:
        extra = sorted(added - {"NET_BIND_SERVICE"})
        found.append(f"securityContext.capabilities.add: {extra} (restricted allows NET_BIND_SERVICE only)")
    return found
