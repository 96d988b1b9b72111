"""Pure builders: a plan's step -> the Kubernetes Job that runs it. No I/O, deterministic.

Every Job is owned by its PnasEval (deleted with it), labelled `app.kubernetes.io/*` and
`pnaseval.io/name`, named `<pnaseval>-<step>`, and runs `pnas-eval <stage> ...` as a non-root user
on a read-only root file system. Credentials reach the pod only through `secretKeyRef`.

Scheduling (`spec.scheduling`, else the operator's defaults) applies to every Job: the Kueue label
`kueue.x-k8s.io/queue-name` (Kueue's webhook then creates the Job suspended and unsuspends it on
admission: `spec.suspend` is Kueue's, never written here), `activeDeadlineSeconds`, and the pods'
schedulerName, priorityClassName, extra labels and annotations. With the Volcano scheduler, a pod
that asks for whole NPUs reads ASCEND_VISIBLE_DEVICES from the annotation Volcano's Ascend plugin
writes on it (`huawei.com/Ascend310P: Ascend310P-3`), through the downward API, as mind-cluster's
samples do; without Volcano, the device plugin sets that variable itself.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pnas_jobs.accelerators import whole_npu
from pnas_jobs.params import CPUS_ENV
from pnas_jobs.plan import Plan, Step, cleanup_step
from pnas_jobs.schedule import RetryPolicy
from pnas_jobs.spec import API_GROUP, API_VERSION, KIND, PnasEvalSpec
from pnas_jobs.storage import ACCESS_KEY_ENV, SECRET_KEY_ENV

NAME_LABEL = f"{API_GROUP}/name"
STEP_LABEL = f"{API_GROUP}/step"
TERMINATION_LOG = "/dev/termination-log"
SCRATCH = "/tmp"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"  # kueue pkg/controller/constants/constants.go
VOLCANO = "volcano"  # Volcano's scheduler name; the Ascend device plugin's -volcanoType mode needs it
VISIBLE_DEVICES = "ASCEND_VISIBLE_DEVICES"


class JobSettings(BaseModel):
    """What the operator decides for every Job. The operator reads these from its environment
    (`PNAS_OPERATOR_<FIELD>`, settings.py); `pnas-eval plan` and the tests pass them directly."""

    model_config = ConfigDict(frozen=True)

    jobs_image: str = "ghcr.io/pnas-eval/jobs:0.1.0"
    ascend_image: str = "ghcr.io/pnas-eval/jobs-ascend:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    jobs_service_account: str | None = "pnas-eval-jobs"  # None: the namespace's default account
    # ttlSecondsAfterFinished; None keeps finished Jobs. Not less than a minute: the operator must still
    # find the finished aggregate Job, and its pod, to read the run's summary
    job_ttl_seconds: int | None = Field(86400, ge=60)
    retries: int = Field(RetryPolicy().retries, ge=0)  # of one pod: a shard alone, or a whole single-pod step
    # Host path of the Ascend driver, mounted into Ascend pods as a hostPath volume. Empty (the default):
    # the Ascend Docker Runtime mounts the driver itself, and every pod passes Pod Security "restricted",
    # which refuses hostPath volumes; set it only on clusters without that runtime
    ascend_driver_path: str = Field("", pattern=r"^(/.*)?$")
    scratch_size: str = "20Gi"
    run_as_user: int = 1000
    run_as_group: int = 1000
    cpu_request: str = "1"
    memory_request: str = "4Gi"
    memory_limit: str = "16Gi"
    # cluster-wide defaults of spec.scheduling (empty: none); a PnasEval's own values win
    scheduler_name: str = ""
    queue_name: str = Field("", pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")  # a label value
    priority_class_name: str = ""

    @field_validator("job_ttl_seconds", "jobs_service_account", mode="before")
    @classmethod
    def _empty_is_none(cls, value):
        # an empty value (a chart's empty variable) means "none": keep finished Jobs forever, or use
        # the namespace's default account
        return None if value == "" else value

    @property
    def images(self) -> dict[str, str]:
        """The jobs images, by the names backend entries use (registry.BackendEntry.image)."""
        return {"jobs": self.jobs_image, "ascend": self.ascend_image}

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(retries=self.retries)


@dataclass(frozen=True)
class Owner:
    name: str
    namespace: str
    uid: str


def job_name(owner: str, step: str) -> str:
    """`<pnaseval>-<step>`, shortened with a hash when over the 63 characters a label value allows."""
    name = f"{owner}-{step}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(owner.encode()).hexdigest()[:8]
    return f"{owner[: 63 - len(step) - 10]}-{digest}-{step}"


def labels(owner: str, step: Step, settings: JobSettings) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "pnas-eval",
        "app.kubernetes.io/instance": owner,
        "app.kubernetes.io/component": step.stage,
        "app.kubernetes.io/managed-by": "pnas-operator",
        NAME_LABEL: owner,
        STEP_LABEL: step.name,
    }


def _env(plan: Plan, step: Step, spec: PnasEvalSpec, settings: JobSettings) -> list[dict]:
    env = [{"name": k, "value": v} for k, v in sorted(plan.env.items())]
    secret = spec.storage.credentials_secret
    env += [
        {"name": ACCESS_KEY_ENV[0], "valueFrom": {"secretKeyRef": {"name": secret, "key": "accessKey"}}},
        {"name": SECRET_KEY_ENV[0], "valueFrom": {"secretKeyRef": {"name": secret, "key": "secretKey"}}},
        {"name": "HOME", "value": SCRATCH},  # caches (torch hub, timm) go to the writable scratch volume
        # the CPU this pod was given (its limit, else its request), in millicores: a stage sizes its threads to it.
        # Divisor 1m: the default divisor 1 rounds up (1500m -> 2), and two such pods would oversubscribe 3 CPUs
        {"name": CPUS_ENV, "valueFrom": {"resourceFieldRef": _cpu_field(step)}},
    ]
    if step.image == "ascend" and settings.ascend_driver_path:
        env.append({"name": "ASCEND_DRIVER_PATH", "value": settings.ascend_driver_path})
    return env + _volcano_devices(step, spec, settings)


@dataclass(frozen=True)
class Scheduling:
    """spec.scheduling with the operator's defaults filled in."""

    scheduler_name: str | None
    queue_name: str | None
    priority_class_name: str | None
    pod_labels: dict[str, str]
    pod_annotations: dict[str, str]
    active_deadline_seconds: int | None


def scheduling(spec: PnasEvalSpec, settings: JobSettings) -> Scheduling:
    asked = spec.scheduling
    return Scheduling(
        scheduler_name=asked.scheduler_name or settings.scheduler_name or None,
        queue_name=asked.queue_name or settings.queue_name or None,
        priority_class_name=asked.priority_class_name or settings.priority_class_name or None,
        pod_labels=dict(asked.pod_labels),
        pod_annotations=dict(asked.pod_annotations),
        active_deadline_seconds=asked.active_deadline_seconds,
    )


def _volcano_devices(step: Step, spec: PnasEvalSpec, settings: JobSettings) -> list[dict]:
    """Volcano mode: the NPUs Volcano picked, from the pod annotation named after the resource
    (mind-cluster docs, full-NPU inference sample: fieldPath metadata.annotations['huawei.com/Ascend310P'];
    the device plugin checks that fieldPath when it allocates)."""
    resource = whole_npu(step.placement.resources) if step.placement else None
    if scheduling(spec, settings).scheduler_name != VOLCANO or resource is None:
        return []
    field = f"metadata.annotations['{resource}']"
    return [{"name": VISIBLE_DEVICES, "valueFrom": {"fieldRef": {"fieldPath": field}}}]


def _cpu_field(step: Step) -> dict:
    # without a limit the downward API gives the node's allocatable CPUs: then the request is the share
    resource = "limits.cpu" if step.placement and "cpu" in step.placement.resources else "requests.cpu"
    return {"containerName": step.stage, "resource": resource, "divisor": "1m"}


def _resources(step: Step, settings: JobSettings) -> dict:
    requests = {"cpu": settings.cpu_request, "memory": settings.memory_request}
    limits: dict[str, str | int] = {"memory": settings.memory_limit}
    if step.placement and step.placement.resources:
        asked = {k: str(v) for k, v in step.placement.resources.items()}
        limits.update(asked)
        # extended resources (NPUs, GPUs) must request what they limit; and a cpu or memory limit
        # the spec sets may be below the operator's default request, which the API server refuses
        requests.update(asked)
    return {"requests": requests, "limits": limits}


def _pod_failure_policy(step: Step, policy: RetryPolicy) -> dict:
    stop = "FailIndex" if step.indexed else "FailJob"
    final = sorted(policy.final_codes)
    return {
        "rules": [
            # bad input: retrying cannot help
            {"action": stop, "onExitCodes": {"containerName": step.stage, "operator": "In", "values": final}},
            # a drained or preempted node is not the shard's fault: retry without counting it
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]
    }


def _volumes(step: Step, settings: JobSettings) -> tuple[list[dict], list[dict]]:
    mounts = [{"name": "scratch", "mountPath": SCRATCH}]
    volumes: list[dict] = [{"name": "scratch", "emptyDir": {"sizeLimit": settings.scratch_size}}]
    if step.image == "ascend" and settings.ascend_driver_path:
        # empty path: the Ascend container runtime mounts the driver itself (no hostPath needed)
        mounts.append({"name": "ascend-driver", "mountPath": settings.ascend_driver_path, "readOnly": True})
        volumes.append(
            {"name": "ascend-driver", "hostPath": {"path": settings.ascend_driver_path, "type": "Directory"}}
        )
    return mounts, volumes


def _container(plan: Plan, step: Step, spec: PnasEvalSpec, settings: JobSettings, mounts: list[dict]) -> dict:
    return {
        "name": step.stage,
        "image": settings.images[step.image],
        "imagePullPolicy": settings.image_pull_policy,
        "command": step.command,
        "env": _env(plan, step, spec, settings),
        "resources": _resources(step, settings),
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def _pod_spec(plan: Plan, step: Step, spec: PnasEvalSpec, settings: JobSettings) -> dict:
    mounts, volumes = _volumes(step, settings)
    pod_spec: dict = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # stages talk to object storage, never to the API
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.run_as_user,
            "runAsGroup": settings.run_as_group,
            "fsGroup": settings.run_as_group,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container(plan, step, spec, settings, mounts)],
        "volumes": volumes,
    }
    if settings.jobs_service_account:
        pod_spec["serviceAccountName"] = settings.jobs_service_account
    wanted = scheduling(spec, settings)
    if wanted.scheduler_name:
        pod_spec["schedulerName"] = wanted.scheduler_name
    if wanted.priority_class_name:
        pod_spec["priorityClassName"] = wanted.priority_class_name
    if step.placement:
        if step.placement.node_selector:
            pod_spec["nodeSelector"] = dict(step.placement.node_selector)
        if step.placement.tolerations:
            pod_spec["tolerations"] = [dict(t) for t in step.placement.tolerations]
    return pod_spec


def job_for_step(
    plan: Plan, step: Step, spec: PnasEvalSpec, owner: Owner, settings: JobSettings, owned: bool = True
) -> dict:
    """The Job of one step; `owned=False` for work that must outlive the PnasEval (cleanup)."""
    step_labels = labels(owner.name, step, settings)
    wanted = scheduling(spec, settings)
    job_spec: dict = {
        "completions": step.completions,
        "parallelism": min(step.completions, spec.inference.parallelism),
        "podFailurePolicy": _pod_failure_policy(step, settings.retry_policy),
        "template": {"metadata": _pod_metadata(step_labels, wanted), "spec": _pod_spec(plan, step, spec, settings)},
    }
    if wanted.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = wanted.active_deadline_seconds
    if step.indexed:
        job_spec["completionMode"] = "Indexed"
        job_spec["backoffLimitPerIndex"] = settings.retries
    else:
        job_spec["backoffLimit"] = settings.retries
    if settings.job_ttl_seconds is not None:
        job_spec["ttlSecondsAfterFinished"] = settings.job_ttl_seconds
    metadata = {
        "name": job_name(owner.name, step.name),
        "namespace": owner.namespace,
        "labels": {**step_labels, **({KUEUE_QUEUE_LABEL: wanted.queue_name} if wanted.queue_name else {})},
        "annotations": {f"{API_GROUP}/run": plan.root},
    }
    if owned:
        metadata["ownerReferences"] = [
            {
                "apiVersion": f"{API_GROUP}/{API_VERSION}",
                "kind": KIND,
                "name": owner.name,
                "uid": owner.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}


def _pod_metadata(step_labels: dict[str, str], wanted: Scheduling) -> dict:
    """The pods' labels (the spec's extra ones cannot replace those the operator selects by) and annotations."""
    metadata: dict = {"labels": {**wanted.pod_labels, **step_labels}}
    if wanted.pod_annotations:
        metadata["annotations"] = dict(wanted.pod_annotations)
    return metadata


def owned_by(job: dict, owner: Owner) -> bool:
    """Whether this PnasEval (by uid, not only by name) made the Job: a deleted PnasEval's Jobs
    linger until garbage collection, and must not count for a new one of the same name."""
    return any(ref.get("uid") == owner.uid for ref in job["metadata"].get("ownerReferences") or [])


def cleanup_job(plan: Plan, spec: PnasEvalSpec, owner: Owner, settings: JobSettings) -> dict:
    """Deletes the run's objects in storage (`spec.cleanup`); not owned, so it survives the deletion."""
    return job_for_step(plan, cleanup_step(plan), spec, owner, settings, owned=False)


def jobs_for_plan(plan: Plan, spec: PnasEvalSpec, owner: Owner, settings: JobSettings) -> list[dict]:
    return [job_for_step(plan, step, spec, owner, settings) for step in plan.steps]
