"""The results of a run, in one schema: the aggregate writes them (report.json, and the summary a
pod leaves in its termination log), the local runner prints them, the operator puts them in status.

camelCase, as everything a user reads from the PnasEval resource.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def dump(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class BatchResult(_Model):
    """One batch size's result, as the status shows it."""

    batch_size: int = Field(..., description="images per call of the backend")
    images: int = Field(..., description="images scored")
    top1: float | None = Field(None, description="top-1 accuracy, percent")
    top5: float | None = Field(None, description="top-5 accuracy, percent")
    throughput: float | None = Field(None, description="images/s from compute time, as ais_bench reports it")
    json_: str | None = Field(None, alias="json", description="location of result_bs<B>.json")
    top1_agreement: float | None = Field(
        None, description="spec.fidelity: % of the sample whose top-1 class is the reference's"
    )
    top1_drop: float | None = Field(
        None, description="spec.fidelity: reference top-1 minus this top-1 on the sample, points"
    )
    fidelity_ok: bool | None = Field(None, description="spec.fidelity: the drop is within maxTop1Drop")


class Summary(_Model):
    """What the aggregate leaves in its pod's termination log (at most 4 KiB): no URIs, the operator knows them."""

    results: list[BatchResult] = Field(default_factory=list)
    failed_images: int = 0


class Timing(_Model):
    batches: int = 0
    mean_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    throughput: float = 0.0  # 1000 * batch size / mean compute ms
    end_to_end: float = 0.0  # images/s, everything the stage does per image
    pipeline_efficiency: float | None = None


class BatchReport(BatchResult):
    """One batch size in report.json: the status's figures and the detail behind them."""

    classes: int = 0
    accuracy: dict[str, float] = Field(default_factory=dict)  # top1 .. top5
    timing: Timing = Field(default_factory=Timing)
    shards: list[dict[str, Any]] = Field(default_factory=list)
    backend: str | None = None
    device: str | None = None
    json_sha256: str | None = None  # of the published result_bs<B>.json: the report vouches for it
    fidelity: dict[str, Any] | None = None  # spec.fidelity: this batch size against the reference (fidelity.compare)

    def result(self) -> BatchResult:
        return BatchResult.model_validate(self.model_dump(include=set(BatchResult.model_fields)))


class Report(_Model):
    """report.json: everything about a run beside the seed-format accuracy files."""

    run: str
    model: dict[str, Any]
    dataset: dict[str, Any]
    shards: list[dict[str, Any]]
    results: list[BatchReport]
    timings: dict[str, Any]
    checks: dict[str, Any] | None = None  # which check looked at what: convert's parity, the fidelity sample

    def summary(self) -> Summary:
        return Summary(
            results=[r.result().model_copy(update={"json_": None}) for r in self.results],
            failed_images=len(self.dataset.get("failed", [])),
        )
