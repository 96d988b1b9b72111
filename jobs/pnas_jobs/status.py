"""The PnasEval status the operator writes: its schema (for the CRD) and phase names."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

Phase = Literal["Pending", "Converting", "Sharding", "Inferring", "Aggregating", "Succeeded", "Failed"]
TERMINAL = ("Succeeded", "Failed")


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Condition(_Model):
    """metav1.Condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str = Field(..., json_schema_extra={"format": "date-time"})
    observed_generation: int | None = None


class ShardCounts(_Model):
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    active: int = 0


class StageStatus(_Model):
    name: str
    phase: Literal["Pending", "Running", "Succeeded", "Failed"]
    job: str | None = None
    succeeded: int = 0
    completions: int = 1
    failed_pods: int = 0


class BatchResult(_Model):
    batch_size: int
    images: int
    top1: float | None = None
    top5: float | None = None
    throughput: float | None = Field(None, description="images/s from compute time, as ais_bench reports")
    json_: str | None = Field(None, alias="json", description="location of result_bs<B>.json")


class PnasEvalStatus(_Model):
    phase: Phase = "Pending"
    message: str = ""
    observed_generation: int | None = None
    start_time: str | None = Field(None, json_schema_extra={"format": "date-time"})
    completion_time: str | None = Field(None, json_schema_extra={"format": "date-time"})
    run: str | None = Field(None, description="storage location of this run's outputs")
    progress: str | None = Field(None, description="shards inferred / shards planned, for kubectl get")
    conditions: list[Condition] = Field(default_factory=list)
    shards: ShardCounts = Field(default_factory=ShardCounts)
    stages: list[StageStatus] = Field(default_factory=list)
    failed_shards: list[int] = Field(default_factory=list)
    failed_images: int | None = None
    results: list[BatchResult] = Field(default_factory=list)
