"""Pure builders: a plan's step -> the Kubernetes Job that runs it. No I/O, deterministic.

Every Job is owned by its PnasEval (deleted with it), labelled `app.kubernetes.io/*` and
`pnaseval.io/name`, named `<pnaseval>-<step>`, and runs `pnas-eval <stage> ...` as a non-root user
on a read-only root file system. Credentials reach the pod only through `secretKeyRef`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from pnas_jobs.plan import Plan, Step
from pnas_jobs.errors import EXIT_BAD_INPUT
from pnas_jobs.spec import API_GROUP, API_VERSION, KIND, PnasEvalSpec
from pnas_jobs.storage import ACCESS_KEY_ENV, SECRET_KEY_ENV

NAME_LABEL = f"{API_GROUP}/name"
STEP_LABEL = f"{API_GROUP}/step"
TERMINATION_LOG = "/dev/termination-log"
SCRATCH = "/tmp"


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
    backoff_limit: int = Field(2, ge=0)  # retries of a non-indexed Job (convert, aggregate)
    backoff_limit_per_index: int = Field(2, ge=0)  # retries of one shard, alone
    ascend_driver_path: str = "/usr/local/Ascend/driver"  # empty: the Ascend runtime mounts it
    scratch_size: str = "20Gi"
    run_as_user: int = 1000
    run_as_group: int = 1000
    cpu_request: str = "1"
    memory_request: str = "4Gi"
    memory_limit: str = "16Gi"


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


def _env(plan: Plan, spec: PnasEvalSpec) -> list[dict]:
    env = [{"name": k, "value": v} for k, v in sorted(plan.env.items())]
    secret = spec.storage.credentials_secret
    env += [
        {"name": ACCESS_KEY_ENV[0], "valueFrom": {"secretKeyRef": {"name": secret, "key": "accessKey"}}},
        {"name": SECRET_KEY_ENV[0], "valueFrom": {"secretKeyRef": {"name": secret, "key": "secretKey"}}},
        {"name": "HOME", "value": SCRATCH},  # caches (torch hub, timm) go to the writable scratch volume
    ]
    return env


def _resources(step: Step, spec: PnasEvalSpec, settings: JobSettings) -> dict:
    requests = {"cpu": settings.cpu_request, "memory": settings.memory_request}
    limits: dict[str, str | int] = {"memory": settings.memory_limit}
    if step.accelerator:
        devices = {k: str(v) for k, v in spec.inference.resolved_resources.items()}
        limits.update(devices)
        # extended resources (NPUs, GPUs) must request what they limit; and a cpu or memory limit
        # the spec sets may be below the operator's default request, which the API server refuses
        requests.update(devices)
    return {"requests": requests, "limits": limits}


def _pod_failure_policy(step: Step) -> dict:
    stop = "FailIndex" if step.indexed else "FailJob"
    return {
        "rules": [
            # bad input (exit 2): retrying cannot help
            {"action": stop, "onExitCodes": {"containerName": step.stage, "operator": "In", "values": [EXIT_BAD_INPUT]}},
            # a drained or preempted node is not the shard's fault: retry without counting it
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]
    }


def job_for_step(
    plan: Plan, step: Step, spec: PnasEvalSpec, owner: Owner, settings: JobSettings, owned: bool = True
) -> dict:
    """The Job of one step; `owned=False` for work that must outlive the PnasEval (cleanup)."""
    name = job_name(owner.name, step.name)
    step_labels = labels(owner.name, step, settings)
    command = step.command + (["--summary-file", TERMINATION_LOG] if step.stage == "aggregate" else [])
    mounts = [{"name": "scratch", "mountPath": SCRATCH}]
    volumes: list[dict] = [{"name": "scratch", "emptyDir": {"sizeLimit": settings.scratch_size}}]
    env = _env(plan, spec)
    if step.ascend and settings.ascend_driver_path:
        # empty path: the Ascend container runtime mounts the driver itself (no hostPath needed)
        mounts.append({"name": "ascend-driver", "mountPath": settings.ascend_driver_path, "readOnly": True})
        volumes.append(
            {"name": "ascend-driver", "hostPath": {"path": settings.ascend_driver_path, "type": "Directory"}}
        )
        env.append({"name": "ASCEND_DRIVER_PATH", "value": settings.ascend_driver_path})
    container = {
        "name": step.stage,
        "image": settings.ascend_image if step.ascend else settings.jobs_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": command,
        "env": env,
        "resources": _resources(step, spec, settings),
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
        "containers": [container],
        "volumes": volumes,
    }
    if settings.jobs_service_account:
        pod_spec["serviceAccountName"] = settings.jobs_service_account
    if step.accelerator or step.ascend:
        if spec.inference.resolved_node_selector:
            pod_spec["nodeSelector"] = spec.inference.resolved_node_selector
        if spec.inference.tolerations:
            pod_spec["tolerations"] = [dict(t) for t in spec.inference.tolerations]
    job_spec: dict = {
        "completions": step.completions,
        "parallelism": min(step.completions, spec.inference.parallelism),
        "podFailurePolicy": _pod_failure_policy(step),
        "template": {"metadata": {"labels": step_labels}, "spec": pod_spec},
    }
    if step.indexed:
        job_spec["completionMode"] = "Indexed"
        job_spec["backoffLimitPerIndex"] = settings.backoff_limit_per_index
    else:
        job_spec["backoffLimit"] = settings.backoff_limit
    if settings.job_ttl_seconds is not None:
        job_spec["ttlSecondsAfterFinished"] = settings.job_ttl_seconds
    metadata = {
        "name": name,
        "namespace": owner.namespace,
        "labels": step_labels,
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


def owned_by(job: dict, owner: Owner) -> bool:
    """Whether this PnasEval (by uid, not only by name) made the Job: a deleted PnasEval's Jobs
    linger until garbage collection, and must not count for a new one of the same name."""
    return any(ref.get("uid") == owner.uid for ref in job["metadata"].get("ownerReferences") or [])


def cleanup_job(plan: Plan, spec: PnasEvalSpec, owner: Owner, settings: JobSettings) -> dict:
    """Deletes the run's objects in storage (`spec.cleanup`); not owned, so it survives the deletion."""
    step = Step(name="cleanup", stage="cleanup", args=("--run", plan.root))
    return job_for_step(plan, step, spec, owner, settings, owned=False)


def jobs_for_plan(plan: Plan, spec: PnasEvalSpec, owner: Owner, settings: JobSettings) -> list[dict]:
    return [job_for_step(plan, step, spec, owner, settings) for step in plan.steps]
