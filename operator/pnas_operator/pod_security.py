"""The Pod Security Standards, as the API server's admission enforces them, over a pod spec.

Follows kubernetes/pod-security-admission `policy/check_*.go` (their header comments list each
control): "baseline" forbids privileged containers, host namespaces, hostPath volumes, host ports,
added capabilities beyond the defaults, unsafe sysctls, custom /proc mounts and unconfined seccomp
or AppArmor; "restricted" adds: volumes only of the types configMap, csi, downwardAPI, emptyDir,
ephemeral, image, persistentVolumeClaim, projected, secret; allowPrivilegeEscalation explicitly
false; runAsNonRoot true (pod or every container) and runAsUser not 0; seccompProfile
RuntimeDefault or Localhost (pod or every container); capabilities drop ALL, add at most
NET_BIND_SERVICE. Pure: used by `pnas-eval doctor` and by the tests of every pod we generate.
"""
from __future__ import annotations

LEVELS = ("privileged", "baseline", "restricted")
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image", "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP",
    "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes",
}  # fmt: skip


def _containers(pod: dict) -> list[dict]:
    return [*pod.get("initContainers", []), *pod.get("containers", []), *pod.get("ephemeralContainers", [])]


def _baseline(pod: dict) -> list[str]:
    out = [f"host namespace {k}" for k in ("hostNetwork", "hostPID", "hostIPC") if pod.get(k)]
    out += [f"volume {v.get('name')}: hostPath" for v in pod.get("volumes", []) if "hostPath" in v]
    security = pod.get("securityContext") or {}
    out += [f"sysctl {s.get('name')} is not safe" for s in security.get("sysctls", []) if s.get("name") not in SAFE_SYSCTLS]
    if (security.get("seccompProfile") or {}).get("type") == "Unconfined":
        out.append("pod seccompProfile Unconfined")
    for c in _containers(pod):
        context, name = c.get("securityContext") or {}, c.get("name")
        if context.get("privileged"):
            out.append(f"container {name}: privileged")
        added = set((context.get("capabilities") or {}).get("add", [])) - BASELINE_CAPABILITIES
        out += [f"container {name}: adds capability {cap}" for cap in sorted(added)]
        out += [f"container {name}: hostPort {p['hostPort']}" for p in c.get("ports", []) if p.get("hostPort")]
        if context.get("procMount", "Default") != "Default":
            out.append(f"container {name}: procMount {context['procMount']}")
        if (context.get("seccompProfile") or {}).get("type") == "Unconfined":
            out.append(f"container {name}: seccompProfile Unconfined")
    return out


def _restricted(pod: dict) -> list[str]:
    out = []
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            out.append(f"volume {volume.get('name')}: type {', '.join(sorted(kinds - RESTRICTED_VOLUMES))} not allowed")
    pod_context = pod.get("securityContext") or {}
    for c in _containers(pod):
        context, name = c.get("securityContext") or {}, c.get("name")
        if context.get("allowPrivilegeEscalation") is not False:
            out.append(f"container {name}: allowPrivilegeEscalation must be false")
        if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
            out.append(f"container {name}: runAsNonRoot must be true")
        if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
            out.append(f"container {name}: runAsUser 0")
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"container {name}: seccompProfile must be RuntimeDefault or Localhost")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in capabilities.get("drop", []):
            out.append(f"container {name}: capabilities must drop ALL")
        out += [f"container {name}: adds capability {cap}" for cap in capabilities.get("add", []) if cap != "NET_BIND_SERVICE"]
    return out


def violations(pod: dict, level: str = "restricted") -> list[str]:
    """What keeps this pod spec out of a namespace that enforces `level`; empty when admitted."""
    if level not in LEVELS:
        raise ValueError(f"unknown Pod Security level {level!r}: one of {', '.join(LEVELS)}")
    if level == "privileged":
        return []
    found = _baseline(pod)
    return found + _restricted(pod) if level == "restricted" else found
