"""Pure: why a stage's pods are not running, read from what Kubernetes reports.

How each cause surfaces (kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/, .../jobs/job/,
and the kubelet's container waiting reasons in pkg/kubelet/images/types.go and
pkg/kubelet/kuberuntime/kuberuntime_container.go):
- no node fits (resources, node selector, taints): the scheduler sets the pod condition
  `PodScheduled=False, reason Unschedulable` with its message ("0/3 nodes are available: ...");
- the image cannot be pulled: the container waits with reason `ErrImagePull`, then `ImagePullBackOff`
  (also `InvalidImageName`, `ErrImageNeverPull`);
- a Secret or ConfigMap the container needs is missing: the container waits with reason
  `CreateContainerConfigError` ("secret \"x\" not found");
- the pod is refused before it exists (admission: a missing ServiceAccount, Pod Security, a quota):
  the Job controller cannot create it and records a Warning Event `FailedCreate` on the Job
  ("Error creating: pods \"...\" is forbidden: ..."); the Job itself shows nothing.
- a queue (Kueue) holds the Job: `spec.suspend: true` and the Job condition `Suspended=True`
  (kueue.sigs.k8s.io/docs/tasks/run/jobs/). That is waiting, not a problem; Kueue owns `suspend`.
"""

from __future__ import annotations

from dataclasses import dataclass

from pnas_jobs.status import bounded

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")  # set by the Job controller on its pods
# container waiting reasons that mean the pod will not start by itself
WAITING_PROBLEMS = {
    "ErrImagePull": "the image cannot be pulled",
    "ImagePullBackOff": "the image cannot be pulled",
    "InvalidImageName": "the image name is invalid",
    "ErrImageNeverPull": "the image is not on the node (imagePullPolicy Never)",
    "CreateContainerConfigError": "the container's configuration cannot be resolved",
    "CreateContainerError": "the container cannot be created",
}


@dataclass(frozen=True)
class PodView:
    name: str
    job: str
    started: bool  # running or ended: the pod got past scheduling and container creation
    problem: tuple[str, str] | None  # (reason, message) that keeps it from starting
    summary: str | None  # termination message of a container that exited 0
    message: str | None = None  # termination message of a container that ended, whatever its exit code


def job_of(pod: dict) -> str:
    labels = pod["metadata"].get("labels") or {}
    return next((labels[k] for k in JOB_NAME_LABELS if labels.get(k)), "")


def pod_view(pod: dict) -> PodView:
    status = pod.get("status") or {}
    containers = status.get("containerStatuses") or []
    started = status.get("phase") in ("Running", "Succeeded", "Failed") or any(
        "running" in (c.get("state") or {}) or "terminated" in (c.get("state") or {}) for c in containers
    )
    problem = None
    for c in containers:
        waiting = (c.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in WAITING_PROBLEMS:
            problem = (
                waiting["reason"],
                f"{WAITING_PROBLEMS[waiting['reason']]}: {waiting.get('message') or waiting['reason']}",
            )
    scheduled = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), None)
    if (
        problem is None
        and scheduled
        and scheduled.get("status") == "False"
        and scheduled.get("reason") == "Unschedulable"
    ):
        problem = ("Unschedulable", f"no node can take the pod: {scheduled.get('message') or 'Unschedulable'}")
    ended = [t for t in ((c.get("state") or {}).get("terminated") or {} for c in containers) if t.get("message")]
    summary = next((t["message"] for t in ended if t.get("exitCode") == 0), None)
    message = ended[0]["message"] if ended else None
    return PodView(pod["metadata"]["name"], job_of(pod), started, None if started else problem, summary, message)


def queued(job: dict) -> bool:
    """Held by a queue: suspended (Kueue sets and clears spec.suspend; the operator never touches it)."""
    suspended = any(
        c.get("type") == "Suspended" and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )
    return bool((job.get("spec") or {}).get("suspend")) or suspended


def queue_message(step: str, job: dict) -> str:
    queue = (job["metadata"].get("labels") or {}).get(QUEUE_LABEL)
    where = f" in queue {queue}" if queue else ""
    return f"{step}: Job {job['metadata']['name']} is suspended, waiting{where} for admission"


def start_problem(step: str, pods: list[PodView], failed_create: list[str]) -> tuple[str, str] | None:
    """(reason, message) when none of a running stage's pods has started and something says why."""
    if any(p.started for p in pods):
        return None  # the stage makes progress; pods still waiting for room are normal
    stuck = [p for p in pods if p.problem]
    if stuck:
        reason, message = stuck[0].problem
        names = bounded(sorted(p.name for p in stuck), 3)
        return reason, f"{step}: {len(stuck)} pod(s) cannot start ({names}): {message}"
    if failed_create:
        return "FailedCreate", f"{step}: the Job cannot create its pods: {failed_create[-1]}"
    return None
