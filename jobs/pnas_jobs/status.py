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
    # one "<Step>Done" condition per step of the plan: see step_condition_type


def step_condition_type(step: str) -> str:
    """convert -> ConvertDone, infer-bs4 -> Infer-bs4Done (a step's name, as in Job names)."""
    return f"{step.capitalize()}Done"


class StagePhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Condition(_Model):
    """metav1.Condition."""

    type: str = Field(..., description="Ready, or <Step>Done for each step")
    status: Literal["True", "False", "Unknown"] = Field(..., description="True | False | Unknown")
    reason: str = Field(..., description="CamelCase reason")
    message: str = Field("", description="what happened, for people")
    last_transition_time: str = Field(..., json_schema_extra={"format": "date-time"}, description="when status last changed")
    observed_generation: int | None = Field(None, description="metadata.generation this condition is about")


class ShardCounts(_Model):
    total: int = Field(0, description="shards planned")
    succeeded: int = Field(0, description="shards inferred at the current batch size")
    failed: int = Field(0, description="shards failed for good at the current batch size")
    active: int = Field(0, description="shard pods running")


class StageStatus(_Model):
    name: str = Field(..., description="the step: convert, shard, infer-bs<B>, aggregate")
    phase: StagePhase = Field(..., description="Pending | Running | Succeeded | Failed")
    job: str | None = Field(None, description="its Job")
    succeeded: int = Field(0, description="tasks done")
    completions: int = Field(1, description="tasks in all (shards for indexed steps)")
    failed_pods: int = Field(0, description="pods that failed (each retried within the retry policy)")


class PnasEvalStatus(_Model):
    phase: Phase = Field(Phase.PENDING, description=" | ".join(Phase))
    message: str = Field("", description="what is happening, or why it failed")
    observed_generation: int | None = Field(None, description="metadata.generation last reconciled")
    start_time: str | None = Field(None, json_schema_extra={"format": "date-time"}, description="when the run started")
    completion_time: str | None = Field(None, json_schema_extra={"format": "date-time"}, description="when it ended")
    run: str | None = Field(None, description="storage location of this run's outputs")
    progress: str | None = Field(None, description="shards inferred / shards planned, for kubectl get")
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


def condition(previous: dict | None, type_: str, ok: bool | None, reason: str, message: str, now: str, generation) -> Condition:
    """A condition whose transition time changes only when its status does."""
    status = "Unknown" if ok is None else ("True" if ok else "False")
    old = next((c for c in (previous or {}).get("conditions") or [] if c.get("type") == type_), None)
    since = old["lastTransitionTime"] if old and old.get("status") == status else now
    return Condition(
        type=type_, status=status, reason=reason, message=message, last_transition_time=since, observed_generation=generation
    )


def failed(previous: dict | None, reason: str, message: str, now: str, generation) -> PnasEvalStatus:
    """A run that failed for good before or outside its Jobs (an invalid spec, a refused Job)."""
    previous = previous or {}
    return PnasEvalStatus(
        phase=Phase.FAILED,
        message=message,
        observed_generation=generation,
        start_time=previous.get("startTime") or now,
        completion_time=now,
        conditions=[condition(previous, ConditionType.READY, False, reason, message, now, generation)],
    )
