"""Stage parameters: one typed model per stage, the single definition of each parameter.

The planner fills a model from the spec; `argv()` serialises it into the `pnas-eval <stage> ...`
command that a Job's pod and the local runner run; the CLI parses that command back into the same
model (pydantic-settings, in cli.py); the stage takes the model as its argument. A parameter that
mirrors a spec field takes its default, bounds and description from that field (`from_spec`), so
each default is written once, in the spec.
"""

from __future__ import annotations

import copy
import json
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pnas_jobs.backends import registry
from pnas_jobs.spec import ConvertSpec, DatasetSpec, FidelitySpec, InferenceSpec, ModelSpec, PreprocessSpec

INDEX_ENV = "JOB_COMPLETION_INDEX"  # set by Kubernetes for Indexed Jobs; by the local runner too
# the CPU a unit may use, in millicores: its pod's CPU limit or request (downward API, divisor 1m); the local runner's share
CPUS_ENV = "PNAS_CPU_MILLICORES"


def from_spec(model: type[BaseModel], name: str, **changes):
    """The spec field `name` of `model` (default, bounds, description) as a stage parameter."""
    field = copy.copy(model.model_fields[name])
    field.alias = field.validation_alias = field.serialization_alias = field.alias_priority = None
    for key, value in changes.items():
        setattr(field, key, value)
    return field


class StageParams(BaseModel):
    """What every stage takes: where the run's outputs live, and whether to redo finished work."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    STAGE: ClassVar[str]  # the `pnas-eval` sub-command
    ENTRY: ClassVar[str]  # "module:function" that runs the stage with these parameters

    root: str = Field(..., min_length=1, description="the run's root: where its outputs live (path or s3://)")
    force: bool = Field(False, description="redo the work even when done with the same inputs")

    def argv(self) -> list[str]:
        """The command line after `pnas-eval <stage>`: every set parameter, in field order."""
        out: list[str] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            flag = "--" + name.replace("_", "-")
            if value is None or value is False or value in ((), [], {}):
                continue
            if value is True:
                out.append(flag)
            elif isinstance(value, BaseModel):
                dumped = value.model_dump(by_alias=True, exclude_none=True)
                if dumped:
                    out += [flag, json.dumps(dumped, sort_keys=True)]
            elif isinstance(value, (tuple, list)):
                out += [flag, ",".join(str(v) for v in value)]
            else:
                out += [flag, repr(value) if isinstance(value, float) else str(value)]
        return out

    @property
    def command(self) -> list[str]:
        return ["pnas-eval", self.STAGE, *self.argv()]


class PreflightParams(StageParams):
    """Check, read-only, what the run reads: the outputs' bucket, the images, the labels, the weights."""

    STAGE = "preflight"
    ENTRY = "pnas_jobs.stages.preflight:main"

    images: str = from_spec(DatasetSpec, "images")
    labels: str = from_spec(DatasetSpec, "labels")
    limit: int = from_spec(DatasetSpec, "limit")
    shards: int = from_spec(DatasetSpec, "shards")
    weights: str = from_spec(ModelSpec, "weights")
    summary_file: str | None = Field(
        None, description="also write the findings here (one per line): a pod's termination log"
    )


class ConvertParams(StageParams):
    """weights -> ONNX (-> Ascend .om per batch size), checked against PyTorch."""

    STAGE = "convert"
    ENTRY = "pnas_jobs.stages.convert:main"

    model: str = from_spec(ModelSpec, "name")
    weights: str = from_spec(ModelSpec, "weights")
    opset: int = from_spec(ModelSpec, "opset")
    target: Literal[registry.ARTIFACTS_BUILT] = from_spec(ConvertSpec, "target")
    soc_version: str = from_spec(ConvertSpec, "soc_version")
    batch_sizes: tuple[int, ...] = Field((), description="target om: one .om per batch size")
    parity_tolerance: float = from_spec(ConvertSpec, "parity_tolerance")
    input_size: int | None = from_spec(
        PreprocessSpec, "input_size", description="crop size; default: the model's timm config"
    )
    keep_state_dict: bool = Field(
        False, description="also store the weights as exported, for backends that run the PyTorch model"
    )


class ShardParams(StageParams):
    """images + labels -> one shard of uint8 crops and its record."""

    STAGE = "shard"
    ENTRY = "pnas_jobs.stages.shard:main"

    images: str = from_spec(DatasetSpec, "images")
    labels: str = from_spec(DatasetSpec, "labels")
    model: str = from_spec(ModelSpec, "name", description="whose timm eval transform to apply")
    shards: int = from_spec(DatasetSpec, "shards")
    index: int | None = Field(None, ge=0, description=f"this shard; default: ${INDEX_ENV}")
    limit: int = from_spec(DatasetSpec, "limit")
    preprocess: PreprocessSpec = Field(
        default_factory=PreprocessSpec, description="overrides of the timm data config (JSON)"
    )
    workers: int = Field(1, ge=1, le=256, description="decoding processes")


class InferParams(StageParams):
    """one shard, one backend, one batch size -> ais_bench TXT results and timings."""

    STAGE = "infer"
    ENTRY = "pnas_jobs.stages.infer:main"

    index: int | None = Field(None, ge=0, description=f"the shard; default: ${INDEX_ENV}")
    batch_size: int = Field(4, ge=1, le=64, description="images per call of the backend")
    backend: Literal[registry.NAMES] = from_spec(InferenceSpec, "backend")
    device: Literal[registry.DEVICES] | None = from_spec(InferenceSpec, "device")
    threads: int = from_spec(InferenceSpec, "threads")
    device_id: int | None = from_spec(InferenceSpec, "device_id")
    sample: tuple[int, ...] = Field((), description="run on these shards only: the unit's index picks one of them")
    reference: bool = Field(
        False, description="the fidelity reference's results (results/reference/), not a batch size's"
    )


class AggregateParams(StageParams):
    """Score every shard of a run; or, with `results`, one plain ais_bench TXT folder (the seed's script)."""

    STAGE = "aggregate"
    ENTRY = "pnas_jobs.stages.aggregate:main"

    root: str | None = Field(None, min_length=1, description="the run's root (path or s3://)")
    labels: str | None = from_spec(DatasetSpec, "labels", default=None)
    batch_sizes: tuple[int, ...] = Field((), description="batch sizes to score")
    shards: int | None = from_spec(DatasetSpec, "shards", default=None)
    limit: int = from_spec(DatasetSpec, "limit")
    summary_file: str | None = Field(
        None, description="also write the run's summary (JSON) here: a pod's termination log"
    )
    reference_sample: tuple[int, ...] = Field(
        (), description="shards the fidelity reference ran on: compare every batch size with it"
    )
    max_top1_drop: float | None = from_spec(FidelitySpec, "max_top1_drop", default=None)
    results: str | None = Field(None, description="a folder of ais_bench TXT files to score instead of a run")
    output: str | None = Field(None, description="with --results: the accuracy JSON to write")

    @model_validator(mode="after")
    def _one_mode(self):
        if self.results is not None:
            if not (self.labels and self.output):
                raise ValueError("--results needs --labels and --output (the seed's vision_metric arguments)")
        else:
            missing = [
                f"--{n.replace('_', '-')}" for n in ("root", "labels", "batch_sizes", "shards") if not getattr(self, n)
            ]
            if missing:
                raise ValueError(f"needs {', '.join(missing)} (or --results DIR --labels FILE --output FILE)")
        return self


class CleanupParams(StageParams):
    """Delete a run's outputs (what spec.cleanup does when the PnasEval is deleted)."""

    STAGE = "cleanup"
    ENTRY = "pnas_jobs.stages.cleanup:main"


STAGES: dict[str, type[StageParams]] = {
    p.STAGE: p for p in (PreflightParams, ConvertParams, ShardParams, InferParams, AggregateParams, CleanupParams)
}


def stage_index(index: int | None) -> int:
    """The shard a unit works on: `--index`, else `JOB_COMPLETION_INDEX` (an Indexed Job's pod)."""
    import os

    from pnas_jobs.errors import UserError

    if index is not None:
        return index
    if os.environ.get(INDEX_ENV, "").isdigit():
        return int(os.environ[INDEX_ENV])
    raise UserError(f"no shard index: pass --index or set {INDEX_ENV}")


def cpu_share() -> int:
    """Whole CPUs this unit may use: its pod's CPU limit or request rounded down, at least one (pods of
    1.5 CPUs, three on a 4-CPU node, run one thread each, not two), else every CPU it can run on."""
    import os

    value = os.environ.get(CPUS_ENV, "")
    return max(1, int(value) // 1000) if value.isdigit() else len(os.sched_getaffinity(0))
