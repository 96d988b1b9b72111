"""The PnasEval status the operator writes: its model (also the CRD's status schema), the phases and
condition types, named once here, and the small pure builders every status is made with."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from pnas_jobs.report import BatchResult


class Phase(StrEnum):
    PENDING = "Pending"
    CONVERTING = "Converting"
    SHARDING = "Sharding"
    INFERRING = "Inferring"
    AGGREGATING = "Aggregating"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


TERMINAL = (Phase.SUCCEEDED, Phase.FAILED)


class ConditionType(StrEnum):
    READY = "Ready"  # the run as a whole: True succeeded, False failed, Unknown running
    PREFLIGHT = "Preflight"  # storage and data checked first: True passed, False problems found (with their fixes)
    # one "<Step>Done" condition per step of the plan: see step_condition_type
    FIDELITY_OK = "FidelityOK"  # spec.fidelity, once results are in: every batch size's top-1 drop within maxTop1Drop
    QUEUED = "Queued"  # True while a stage's Job is held suspended by a queue (Kueue): waiting, not stuck
    STALLED = "Stalled"  # True while a stage's pods cannot start (unschedulable, image pull, config, admission)
    BLOCKED = "Blocked"  # True while the API server keeps the operator from acting (errors, a leftover Job)


class Reason(StrEnum):
    """Reasons of conditions and Events that the operator sets itself (a Job's own reasons pass through)."""

    INVALID_SPEC = "InvalidSpec"
    PREFLIGHT_RUNNING = "Checking"
    PREFLIGHT_PASSED = "Passed"
    PREFLIGHT_PROBLEMS = "ProblemsFound"
    JOB_REJECTED = "JobRejected"
    API_ERROR = "ApiError"  # a call failed (5xx, 429, timeout): retried with backoff
    QUOTA_EXCEEDED = "QuotaExceeded"  # 403 from a ResourceQuota: retried until it frees up
    FORBIDDEN = "Forbidden"  # 403 from RBAC or admission: retried, but someone has to act
    STATUS_WRITE_FAILED = "StatusWriteFailed"
    LEFTOVER_JOB = "LeftoverJob"  # a same-name Job of an earlier PnasEval is in the way
    SUSPENDED = "Suspended"  # a queue holds the Job (spec.suspend, condition Suspended)
    PENDING_DEADLINE = "PendingDeadlineExceeded"
    SUMMARY_UNREADABLE = "SummaryUnreadable"
    WITHIN_MAX_DROP = "WithinMaxTop1Drop"  # FidelityOK True
    ACCURACY_LOST = (
        "AccuracyLost"  # FidelityOK False: a batch size's top-1 drop against the reference exceeds maxTop1Drop
    )
    RESOLVED = "Resolved"  # the problem a condition reported is gone
    CLEANUP_STARTED = "CleanupStarted"
    CLEANUP_REFUSED = "CleanupRefused"


MESSAGE_LIMIT = 1024  # characters of a condition or status message; the first few items and a count beyond


def bounded(items, limit: int = 5) -> str:
    """ "1, 3, 4" or "1, 3, 4, 7, 9 and 995 more": a list for a message that stays small at any size."""
    items = [str(i) for i in items]
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def clip(message: str, limit: int = MESSAGE_LIMIT) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


def step_condition_type(step: str) -> str:
    """convert -> ConvertDone, infer-bs4 -> Infer-bs4Done (a step's name, as in Job names)."""
    return f"{step.capitalize()}Done"


class StagePhase(StrEnum):
    PENDING = "Pending"
    QUEUED = "Queued"  # its Job exists, suspended by a queue
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Condition(_Model):
    """metav1.Condition."""

    type: str = Field(..., description=", ".join(ConditionType) + ", or <Step>Done for each step")
    status: Literal["True", "False", "Unknown"] = Field(..., description="True | False | Unknown")
    reason: str = Field(..., description="CamelCase reason")
    message: str = Field("", description="what happened, for people")
    last_transition_time: str = Field(
        ..., json_schema_extra={"format": "date-time"}, description="when status last changed"
    )
    observed_generation: int | None = Field(None, description="metadata.generation this condition is about")


class ShardCounts(_Model):
    total: int = Field(0, description="shards planned")
    succeeded: int = Field(0, description="shards inferred at the current batch size")
    failed: int = Field(0, description="shards failed for good at the current batch size")
    active: int = Field(0, description="shard pods running")


class StageStatus(_Model):
    name: str = Field(..., description="the step: convert, shard, infer-bs<B>, aggregate")
    phase: StagePhase = Field(..., description=" | ".join(StagePhase))
    job: str | None = Field(None, description="its Job")
    succeeded: int = Field(0, description="tasks done")
    completions: int = Field(1, description="tasks in all (shards for indexed steps)")
    failed_pods: int = Field(0, description="pods that failed (each retried within the retry policy)")


class PnasEvalStatus(_Model):
    """What the operator observed of the run: written by the operator only (status subresource)."""

    phase: Phase = Field(Phase.PENDING, description=" | ".join(Phase))
    message: str = Field("", description="what is happening, or why it failed")
    observed_generation: int | None = Field(None, description="metadata.generation last reconciled")
    start_time: str | None = Field(None, json_schema_extra={"format": "date-time"}, description="when the run started")
    completion_time: str | None = Field(None, json_schema_extra={"format": "date-time"}, description="when it ended")
    run: str | None = Field(None, description="storage location of this run's outputs")
    progress: str | None = Field(None, description="shards inferred / shards planned, for kubectl get")
    worst_agreement: float | None = Field(
        None, description="spec.fidelity: the lowest top-1 agreement with the reference over the batch sizes, percent"
    )
    conditions: list[Condition] = Field(default_factory=list, description="metav1.Condition list, one per type")
    shards: ShardCounts = Field(default_factory=ShardCounts, description="shard counts of the current batch size")
    stages: list[StageStatus] = Field(default_factory=list, description="one entry per step of the plan")
    failed_shards: list[int] = Field(default_factory=list, description="shards that failed for good")
    failed_images: int | None = Field(None, description="images that could not be used (unreadable, no label)")
    results: list[BatchResult] = Field(default_factory=list, description="one entry per batch size")

    def dump(self) -> dict[str, Any]:
        """The status as the API server stores it: camelCase, no nulls (it drops them, and kopf
        would then see a difference on every pass)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def condition(
    previous: dict | None, type_: str, ok: bool | None, reason: str, message: str, now: str, generation
) -> Condition:
    """A condition whose transition time changes only when its status does."""
    status = "Unknown" if ok is None else ("True" if ok else "False")
    old = previous_condition(previous, type_)
    since = old["lastTransitionTime"] if old and old.get("status") == status else now
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=clip(message),
        last_transition_time=since,
        observed_generation=generation,
    )


def previous_condition(previous: dict | None, type_: str) -> dict | None:
    return next((c for c in (previous or {}).get("conditions") or [] if c.get("type") == type_), None)


def problem_condition(
    previous: dict | None, type_: str, problem: tuple[str, str] | None, now: str, generation
) -> Condition | None:
    """A condition that reports a problem: True with its (reason, message) while it lasts; once it is
    gone, False with reason Resolved if it was ever reported, else no condition at all."""
    if problem is not None:
        return condition(previous, type_, True, problem[0], problem[1], now, generation)
    if previous_condition(previous, type_) is None:
        return None
    return condition(previous, type_, False, Reason.RESOLVED, "", now, generation)


def fidelity_condition(
    previous: dict | None, results: list[BatchResult], max_drop: float, now: str, generation
) -> Condition | None:
    """FidelityOK once the results carry a fidelity verdict: True when every batch size's top-1 drop
    against the reference is within maxTop1Drop, else False naming those that lost more."""
    judged = [r for r in results if r.fidelity_ok is not None]
    if not judged:
        return None
    lost = [r for r in judged if not r.fidelity_ok]
    if not lost:
        worst = max(judged, key=lambda r: r.top1_drop or 0.0)
        message = f"top-1 drop at most {worst.top1_drop:.2f} points (bs{worst.batch_size}), within {max_drop:g}"
        return condition(previous, ConditionType.FIDELITY_OK, True, Reason.WITHIN_MAX_DROP, message, now, generation)
    message = "; ".join(
        f"bs{r.batch_size}: top-1 drop {r.top1_drop:.2f} points, agreement {r.top1_agreement:.2f}%" for r in lost
    )
    message = f"{message} (spec.fidelity.maxTop1Drop {max_drop:g}); see report.json's fidelity sections"
    return condition(previous, ConditionType.FIDELITY_OK, False, Reason.ACCURACY_LOST, message, now, generation)


def with_problem(
    status: PnasEvalStatus, previous: dict | None, type_: str, problem: tuple[str, str] | None, now: str
) -> PnasEvalStatus:
    """The status with one problem condition set (or resolved), the others as they were."""
    kept = [c for c in status.conditions if c.type != type_]
    made = problem_condition(previous, type_, problem, now, status.observed_generation)
    return status.model_copy(update={"conditions": kept + ([made] if made else [])})


def failed(previous: dict | None, reason: str, message: str, now: str, generation) -> PnasEvalStatus:
    """A run that failed for good before or outside its Jobs (an invalid spec, a refused Job)."""
    previous = previous or {}
    return PnasEvalStatus(
        phase=Phase.FAILED,
        message=clip(message),
        observed_generation=generation,
        start_time=previous.get("startTime") or now,
        completion_time=now,
        conditions=[condition(previous, ConditionType.READY, False, reason, message, now, generation)],
    )
