"""The planner: a PnasEval -> the steps that evaluate it. Pure: no I/O, no clock.

Each step carries its stage's typed parameters (params.py), so the command it runs is decided here
and only here; the operator turns a step into a Kubernetes Job and the local runner into processes.

    convert ----\\
                 >-- infer-bs<B1> -- infer-bs<B2> -- ... --\\
    shard[i] ---/\\                                        >-- aggregate
                  `-- reference[sampled shards] -----------/   (with spec.fidelity)

Batch sizes run one after another so that their throughput figures do not compete for devices.
An indexed step runs once per shard; its index comes from `JOB_COMPLETION_INDEX`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from pnas_jobs import layout
from pnas_jobs.accelerators import Placement, ascend_node
from pnas_jobs.backends import registry
from pnas_jobs.params import (
    AggregateParams,
    CleanupParams,
    ConvertParams,
    InferParams,
    PreflightParams,
    ShardParams,
    StageParams,
)
from pnas_jobs.spec import PnasEval, PnasEvalSpec, SpecError
from pnas_jobs.status import Phase
from pnas_jobs.storage import StorageSettings

# what the PnasEval's phase says while a stage's step is the first one unfinished
IMAGENET_VAL = 50_000  # what the planner assumes a full data set holds when no limit says otherwise
STAGE_PHASES = {
    "convert": Phase.CONVERTING,
    "shard": Phase.SHARDING,
    "infer": Phase.INFERRING,
    "aggregate": Phase.AGGREGATING,
}


@dataclass(frozen=True)
class Step:
    name: str  # convert | shard | infer-bs<B> | reference | aggregate: unique, used in Job names
    params: StageParams  # the stage's parameters; the command is their serialisation
    completions: int = 1
    indexed: bool = False
    after: tuple[str, ...] = ()
    image: str = "jobs"  # the jobs image with the stage's runtime: "jobs" | "ascend"
    placement: Placement | None = None  # accelerator nodes: resources, node selector, tolerations; None: any node

    @property
    def stage(self) -> str:
        return self.params.STAGE

    @property
    def command(self) -> list[str]:
        return self.params.command

    @property
    def phase(self) -> Phase:
        return STAGE_PHASES.get(self.stage, Phase.PENDING)

    @property
    def batch_size(self) -> int | None:
        return getattr(self.params, "batch_size", None)


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
        """The batch sizes' inference steps (not the fidelity reference's)."""
        return [s for s in self.steps if s.stage == "infer" and not s.params.reference]

    @property
    def summary_step(self) -> Step:
        """The step whose summary (a pod's termination message) holds the run's results."""
        return next(s for s in self.steps if isinstance(s.params, AggregateParams))


def inference_placement(spec: PnasEvalSpec) -> Placement:
    """Where an inference pod goes: the spec's explicit values, else the backend's defaults for its device."""
    inference = spec.inference
    default = registry.placement(inference.backend, inference.device, spec.convert.soc_version)
    tolerations = inference.tolerations
    return Placement(
        resources=dict(inference.resources) if inference.resources is not None else default.resources,
        node_selector=dict(inference.node_selector) if inference.node_selector is not None else default.node_selector,
        tolerations=(
            tuple(t.model_dump(by_alias=True, exclude_none=True) for t in tolerations)
            if tolerations is not None
            else default.tolerations
        ),
    )


def sample_shards(shards: int, images: int, limit: int) -> tuple[int, ...]:
    """Whole shards spread over the data set, as few as hold about `images` images.

    The planner cannot count the images (it does no I/O): with a limit it knows the total; without
    one it assumes ImageNet val. The report says how many images were really compared.
    """
    total = limit or IMAGENET_VAL
    per_shard = max(1, total // shards)
    count = min(shards, max(1, -(-images // per_shard)))  # whole shards: round up
    return tuple(sorted({int((j + 0.5) * shards / count) for j in range(count)}))


def fidelity_sample(spec: PnasEvalSpec) -> tuple[int, ...]:
    """The shards the fidelity reference runs on (none without spec.fidelity)."""
    return sample_shards(spec.dataset.shards, spec.fidelity.images, spec.dataset.limit) if spec.fidelity else ()


def backends_used(spec: PnasEvalSpec) -> list[str]:
    """The backends a run uses: its inference backend, and the fidelity reference if any."""
    return [spec.inference.backend, *([spec.fidelity.reference] if spec.fidelity else [])]


def _reference(spec: PnasEvalSpec, root: str, force: bool, sample: tuple[int, ...]) -> Step:
    """The fidelity reference on the sampled shards: one unit per sampled shard, beside the inference steps."""
    fidelity = spec.fidelity
    backend = registry.get(fidelity.reference)
    params = InferParams(
        root=root,
        force=force,
        batch_size=max(spec.inference.batch_sizes),  # fp32: the reference's scores do not depend on it
        backend=backend.name,
        device=backend.device(fidelity.device).name,
        sample=sample,
        reference=True,
    )
    placement = registry.placement(backend.name, fidelity.device, spec.convert.soc_version)
    return Step(
        "reference",
        params,
        completions=len(sample),
        indexed=True,
        after=("convert", "shard"),
        image=backend.image,
        placement=placement,
    )


def _convert(spec: PnasEvalSpec, root: str, force: bool) -> Step:
    om = spec.convert.target == "om"
    params = ConvertParams(
        root=root,
        force=force,
        model=spec.model.name,
        weights=spec.model.weights,
        opset=spec.model.opset,
        target=spec.convert.target,
        soc_version=spec.convert.soc_version,
        batch_sizes=tuple(spec.inference.batch_sizes) if om else (),
        parity_tolerance=spec.convert.parity_tolerance,
        input_size=spec.dataset.preprocess.input_size,  # the model's input must be the crop the shards hold
        keep_state_dict="state_dict" in {registry.get(b).artifact for b in backends_used(spec)},
    )
    image = registry.ARTIFACT_IMAGES[spec.convert.target]
    # ATC builds for one chip and lives on its nodes; it needs no NPU of its own
    return Step("convert", params, image=image, placement=ascend_node(spec.convert.soc_version) if om else None)


def _shard(spec: PnasEvalSpec, root: str, force: bool) -> Step:
    dataset = spec.dataset
    params = ShardParams(
        root=root,
        force=force,
        images=dataset.images,
        labels=dataset.labels,
        model=spec.model.name,
        shards=dataset.shards,
        limit=dataset.limit,
        preprocess=dataset.preprocess,
    )
    return Step("shard", params, completions=dataset.shards, indexed=True)


def _infer(spec: PnasEvalSpec, root: str, force: bool, batch_size: int, after: tuple[str, ...]) -> Step:
    inference = spec.inference
    backend = registry.get(inference.backend)
    params = InferParams(
        root=root,
        force=force,
        batch_size=batch_size,
        backend=backend.name,
        device=backend.device(inference.device).name,
        threads=inference.threads,
        device_id=inference.device_id,
    )
    return Step(
        f"infer-bs{batch_size}",
        params,
        completions=spec.dataset.shards,
        indexed=True,
        after=after,
        image=backend.image,
        placement=inference_placement(spec),
    )


def _preflight(spec: PnasEvalSpec, root: str, summary_file: str | None) -> Step:
    dataset = spec.dataset
    params = PreflightParams(
        root=root,
        images=dataset.images,
        labels=dataset.labels,
        limit=dataset.limit,
        shards=dataset.shards,
        weights=spec.model.weights,
        summary_file=summary_file,
    )
    return Step("preflight", params)


def _aggregate(spec: PnasEvalSpec, root: str, after: tuple[str, ...], summary_file: str | None) -> Step:
    params = AggregateParams(
        root=root,
        labels=spec.dataset.labels,
        batch_sizes=tuple(spec.inference.batch_sizes),
        shards=spec.dataset.shards,
        limit=spec.dataset.limit,
        summary_file=summary_file,
        reference_sample=fidelity_sample(spec),
        max_top1_drop=spec.fidelity.max_top1_drop if spec.fidelity else None,
    )  # no --force: it always scores what is there
    return Step("aggregate", params, after=after)


def make_plan(
    pnaseval: PnasEval, storage_uri: str, force: bool = False, summary_file: str | None = None, preflight: bool = False
) -> Plan:
    """The steps of one evaluation. `force` redoes finished work; `summary_file` is where the
    aggregate (and the preflight) leave their summary (a pod's termination log on a cluster);
    `preflight` puts the storage and data checks first, before convert and shard (a cluster's plan)."""
    spec, meta = pnaseval.spec, pnaseval.metadata
    root = layout.root(storage_uri, meta.namespace, meta.name)
    steps = [_convert(spec, root, force), _shard(spec, root, force)]
    if preflight:
        steps = [_preflight(spec, root, summary_file), *(replace(s, after=("preflight",)) for s in steps)]
    previous: tuple[str, ...] = ("convert", "shard")
    for batch_size in spec.inference.batch_sizes:
        steps.append(_infer(spec, root, force, batch_size, previous))
        previous = (steps[-1].name,)
    if spec.fidelity:
        steps.append(_reference(spec, root, force, fidelity_sample(spec)))
        previous += ("reference",)
    steps.append(_aggregate(spec, root, previous, summary_file))
    storage = StorageSettings(spec.storage.endpoint, spec.storage.secure, spec.storage.region)
    return Plan(
        meta.name,
        meta.namespace,
        root,
        tuple(steps),
        spec.dataset.shards,
        tuple(spec.inference.batch_sizes),
        storage.environment(),
    )


def cleanup_step(plan: Plan) -> Step:
    """The step that deletes a run's outputs (`spec.cleanup`, when its PnasEval is deleted)."""
    return Step("cleanup", CleanupParams(root=plan.root))


def cluster_plan(pnaseval: PnasEval, source: str, summary_file: str | None = None) -> Plan:
    """The plan of a PnasEval run by the operator; SpecError (naming `source`) when it cannot run on a cluster."""
    problems = cluster_problems(pnaseval)
    if problems:
        raise SpecError(problems, source)
    return make_plan(pnaseval, pnaseval.spec.storage.uri, summary_file=summary_file, preflight=True)


def cluster_problems(pnaseval: PnasEval) -> list[str]:
    """What keeps a spec from running on a cluster, where pods share nothing but object storage."""
    spec = pnaseval.spec
    problems = []
    for where, value in (
        ("spec.storage.uri", spec.storage.uri or ""),
        ("spec.dataset.images", spec.dataset.images),
        ("spec.dataset.labels", spec.dataset.labels),
    ):
        if not value.startswith("s3://"):
            problems.append(f"{where}: pods share only object storage: use an s3:// URI, not {value or 'nothing'!r}")
    if spec.model.weights not in ("timm", "random") and not spec.model.weights.startswith("s3://"):
        problems.append(
            f"spec.model.weights: use an s3:// URI, 'timm' or 'random' on a cluster, not {spec.model.weights!r}"
        )
    if any(s.startswith("s3://") for s in (spec.storage.uri or "", spec.dataset.images)) and not spec.storage.endpoint:
        problems.append("spec.storage.endpoint: set the S3/MinIO endpoint (host:port)")
    return problems
