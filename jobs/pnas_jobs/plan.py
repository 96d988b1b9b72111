"""The planner: a PnasEval -> the steps that evaluate it. Pure: no I/O, no clock.

The operator turns each step into a Kubernetes Job and the local runner into processes; both run
the same `pnas-eval <stage> ...` command, so a stage's work is defined once.

    convert ----\\
                 >-- infer-bs<B1> -- infer-bs<B2> -- ... -- aggregate
    shard[i] ---/

Batch sizes run one after another so that their throughput figures do not compete for devices.
An indexed step runs once per shard; its index comes from `JOB_COMPLETION_INDEX`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from pnas_jobs import layout
from pnas_jobs.spec import PnasEval, SpecError
from pnas_jobs.storage import StorageSettings

INDEX_ENV = "JOB_COMPLETION_INDEX"  # set by Kubernetes for Indexed Jobs; by the local runner too


@dataclass(frozen=True)
class Step:
    name: str  # convert | shard | infer-bs<B> | aggregate: unique, used in Job names
    stage: str  # the pnas-eval sub-command
    args: tuple[str, ...]  # after `pnas-eval`
    completions: int = 1
    indexed: bool = False
    after: tuple[str, ...] = ()
    accelerator: bool = False  # runs on inference nodes: the spec's resources, nodeSelector, tolerations
    ascend: bool = False  # needs the Ascend image (CANN: ATC or ais_bench)
    batch_size: int | None = None

    @property
    def command(self) -> list[str]:
        return ["pnas-eval", self.stage, *self.args]


@dataclass(frozen=True)
class Plan:
    name: str
    namespace: str
    root: str  # storage URI of this run
    steps: tuple[Step, ...]
    shards: int
    batch_sizes: tuple[int, ...]
    env: dict[str, str] = field(default_factory=dict)  # non-secret settings every step gets

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)

    def infer_steps(self) -> list[Step]:
        return [s for s in self.steps if s.stage == "infer"]


def _csv(values) -> str:
    return ",".join(str(v) for v in values)


def make_plan(manifest: PnasEval, storage_uri: str) -> Plan:
    spec, meta = manifest.spec, manifest.metadata
    root = layout.root(storage_uri, meta.namespace, meta.name)
    batch_sizes = tuple(spec.inference.batch_sizes)
    ascend = spec.inference.backend == "ais_bench"
    steps = [
        Step(
            name="convert",
            stage="convert",
            args=(
                "--run", root,
                "--model", spec.model.name,
                "--weights", spec.model.weights,
                "--opset", str(spec.model.opset),
                "--target", spec.convert.target,
                "--soc-version", spec.convert.soc_version,
                "--batch-sizes", _csv(batch_sizes),
                "--parity-tolerance", repr(spec.convert.parity_tolerance),
                # the model's input must be the crop the shards hold
                *(("--input-size", str(spec.dataset.preprocess.input_size)) if spec.dataset.preprocess.input_size else ()),
            ),  # fmt: skip
            ascend=spec.convert.target == "om",
        )
    ]
    preprocess = spec.dataset.preprocess.model_dump(by_alias=False, exclude_none=True)
    steps.append(
        Step(
            name="shard",
            stage="shard",
            args=(
                "--run", root,
                "--images", spec.dataset.images,
                "--labels", spec.dataset.labels,
                "--model", spec.model.name,
                "--shards", str(spec.dataset.shards),
                "--limit", str(spec.dataset.limit),
                *(("--preprocess", json.dumps(preprocess, sort_keys=True)) if preprocess else ()),
            ),  # fmt: skip
            completions=spec.dataset.shards,
            indexed=True,
        )
    )
    previous: tuple[str, ...] = ("convert", "shard")
    for batch_size in batch_sizes:
        args = ["--run", root, "--batch-size", str(batch_size), "--backend", spec.inference.backend]
        args += ["--device", spec.inference.resolved_device]
        if spec.inference.threads:
            args += ["--threads", str(spec.inference.threads)]
        if spec.inference.device_id is not None:
            args += ["--device-id", str(spec.inference.device_id)]
        step = Step(
            name=f"infer-bs{batch_size}",
            stage="infer",
            args=tuple(args),
            completions=spec.dataset.shards,
            indexed=True,
            after=previous,
            accelerator=True,
            ascend=ascend,
            batch_size=batch_size,
        )
        steps.append(step)
        previous = (step.name,)
    steps.append(
        Step(
            name="aggregate",
            stage="aggregate",
            args=(
                "--run", root,
                "--labels", spec.dataset.labels,
                "--batch-sizes", _csv(batch_sizes),
                "--shards", str(spec.dataset.shards),
                "--limit", str(spec.dataset.limit),
            ),  # fmt: skip
            after=previous,
        )
    )
    storage = StorageSettings(spec.storage.endpoint, spec.storage.secure, spec.storage.region)
    env = storage.environment()
    return Plan(meta.name, meta.namespace, root, tuple(steps), spec.dataset.shards, batch_sizes, env)


def cluster_plan(manifest: PnasEval, source: str) -> Plan:
    """The plan of a PnasEval run by the operator; SpecError (naming `source`) when it cannot run on a cluster."""
    problems = cluster_problems(manifest)
    if problems:
        raise SpecError(problems, source)
    return make_plan(manifest, manifest.spec.storage.uri)


def cluster_problems(manifest: PnasEval) -> list[str]:
    """What keeps a spec from running on a cluster, where pods share nothing but object storage."""
    spec = manifest.spec
    problems = []
    for where, value in (
        ("spec.storage.uri", spec.storage.uri or ""),
        ("spec.dataset.images", spec.dataset.images),
        ("spec.dataset.labels", spec.dataset.labels),
    ):
        if not value.startswith("s3://"):
            problems.append(f"{where}: pods share only object storage: use an s3:// URI, not {value or 'nothing'!r}")
    if spec.model.weights not in ("timm", "random") and not spec.model.weights.startswith("s3://"):
        problems.append(f"spec.model.weights: use an s3:// URI, 'timm' or 'random' on a cluster, not {spec.model.weights!r}")
    if any(s.startswith("s3://") for s in (spec.storage.uri or "", spec.dataset.images)) and not spec.storage.endpoint:
        problems.append("spec.storage.endpoint: set the S3/MinIO endpoint (host:port)")
    return problems
