"""The PnasEval resource: one model for the spec, its defaults and its validation.

The same YAML that `kubectl apply` takes is read here, with the same rules as the API server:
camelCase field names only, strict types, Kubernetes names. The CRD schema is generated from these
models (`pnas_jobs.crd`), so a field, its default and its description exist in one place only.
Choices that come from a table (backends and their devices, convert targets) are read from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from pnas_jobs import rules
from pnas_jobs.accelerators import FAMILIES
from pnas_jobs.backends import registry

API_GROUP = "pnaseval.io"
API_VERSION = "v1alpha1"
KIND = "PnasEval"
PLURAL = "pnasevals"

# Kubernetes' own formats, so that a value the API server would refuse is refused here too
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"  # RFC 1123 label: names and namespaces
# resource.Quantity, the pattern controller-gen writes for it
QUANTITY = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
LABEL_KEY = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
SOC_VERSION = "^(" + "|".join(f.soc_prefix for f in FAMILIES) + ")[0-9A-Za-z_]*$"  # a chip family we know
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"

Quantity = Annotated[str, StringConstraints(pattern=QUANTITY)] | Annotated[int, Field(ge=0)]
LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY)]
LabelValue = Annotated[str, StringConstraints(pattern=LABEL_VALUE, max_length=63)]


class SpecError(ValueError):
    """A manifest that cannot be run; `problems` holds one readable line per problem."""

    def __init__(self, problems: list[str], source: str = "manifest"):
        self.problems = problems
        self.source = source
        super().__init__(f"{source} is not a valid PnasEval:\n" + "\n".join(f"  - {p}" for p in problems))


class _Model(BaseModel):
    # camelCase only and no type coercion: what the CRD's schema accepts, no more
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=False, extra="forbid", frozen=True, strict=True
    )


class ModelSpec(_Model):
    """The classifier to evaluate."""

    name: str = Field("pnasnet5large", min_length=1, description="timm model name (timm.list_models())")
    weights: str = Field(
        "timm",
        min_length=1,
        description='a state dict: local .pth path | s3://bucket/key | "timm" (pretrained from the hub, needs network) | "random"',
    )
    opset: int = Field(11, ge=7, le=21, description="ONNX opset of the export (the seed uses 11)")


class ConvertSpec(_Model):
    """How the model becomes what the inference backend runs."""

    target: Literal[registry.ARTIFACTS_BUILT] = Field(
        "onnx", description="onnx: a simplified ONNX model (onnxruntime) | om: Ascend models built by ATC (ais_bench)"
    )
    soc_version: str = Field(
        "Ascend310P3",
        pattern=SOC_VERSION,
        description="ATC --soc_version (om only); also picks the NPU chip nodes inference runs on",
    )
    parity_tolerance: float = Field(
        1e-4, gt=0, le=1, description="largest |PyTorch - ONNX| score difference the conversion check accepts"
    )


class PreprocessSpec(_Model):
    """Overrides of the model's timm data config; unset fields come from timm."""

    input_size: int | None = Field(None, ge=8, le=4096, description="crop size in pixels (square)")
    crop_pct: float | None = Field(
        None, gt=0, le=1, description="resize the shorter side to floor(inputSize / cropPct)"
    )
    interpolation: Literal["bicubic", "bilinear", "nearest"] | None = Field(None, description="resize filter")
    mean: list[float] | None = Field(None, min_length=3, max_length=3, description="per-channel mean (RGB)")
    std: list[float] | None = Field(None, min_length=3, max_length=3, description="per-channel std (RGB)")


class DatasetSpec(_Model):
    """The images, their labels, and how they are split."""

    images: str = Field(..., min_length=1, description="local folder or s3:// prefix; flat or class sub-folders")
    labels: str = Field(
        ..., min_length=1, description='"<file name> <class>" per line, 0-based (the seed\'s val_label.txt)'
    )
    limit: int = Field(0, ge=0, description="first N images in sorted order; 0 = all")
    shards: int = Field(16, ge=1, le=10000, description="number of shards (one inference pod each, per batch size)")
    preprocess: PreprocessSpec = Field(default_factory=PreprocessSpec, description="overrides of the timm data config")


class Toleration(_Model):
    """core/v1 Toleration."""

    key: LabelKey | None = Field(None, description="taint key; empty with operator Exists: every taint")
    operator: Literal["Exists", "Equal"] = Field("Equal", description="Exists | Equal")
    value: LabelValue | None = Field(None, description="taint value (operator Equal)")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="empty: every effect"
    )
    toleration_seconds: int | None = Field(None, description="NoExecute only: how long the pod stays once tainted")


class InferenceSpec(_Model):
    """How and where the model runs."""

    backend: Literal[registry.NAMES] = Field(
        registry.DEFAULT, description=f"inference runtime: {' | '.join(registry.NAMES)}"
    )
    device: Literal[registry.DEVICES] | None = Field(
        None,
        description="; ".join(f"{b.name}: {' | '.join(b.device_names)}" for b in registry.BACKENDS)
        + " (default: the first)",
    )
    batch_sizes: list[Annotated[int, Field(ge=1, le=64)]] = Field(
        [4], min_length=1, max_length=16, description="one accuracy JSON and throughput per batch size"
    )
    parallelism: int = Field(8, ge=1, le=1024, description="inference pods at once (cluster)")
    resources: dict[LabelKey, Quantity] | None = Field(
        None,
        description="limits (and requests) of an inference pod, e.g. huawei.com/Ascend310P: 1 "
        "(default: what the backend and device need; for NPUs, derived from convert.socVersion)",
    )
    node_selector: dict[LabelKey, LabelValue] | None = Field(
        None, description="node labels inference pods need (default: the chip's labels for NPUs)"
    )
    tolerations: list[Toleration] | None = Field(
        None, description="tolerations of inference pods (default: the device plugin's taint for NPUs)"
    )
    device_id: int | None = Field(
        None,
        ge=0,
        le=255,
        description="ais_bench device id inside the container; default: the first logical id (LOCAL_RANK, else 0)",
    )
    threads: int = Field(
        0,
        ge=0,
        le=256,
        description="onnxruntime intra-op threads; 0 = the CPUs the pod was given (its CPU limit or request)",
    )

    @field_validator("batch_sizes")
    @classmethod
    def _batch_sizes(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"batch sizes must be unique, got {value}")
        return value


class SchedulingSpec(_Model):
    """How the run's pods are scheduled: applies to every Job of the run."""

    scheduler_name: str | None = Field(
        None, description="pod schedulerName, e.g. volcano (then NPU ids come from the scheduler's pod annotation)"
    )
    queue_name: LabelValue | None = Field(
        None, description="Kueue LocalQueue: sets the label kueue.x-k8s.io/queue-name on every Job"
    )
    priority_class_name: str | None = Field(None, description="pod priorityClassName")
    pod_labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, description="extra labels on every pod")
    pod_annotations: dict[LabelKey, str] = Field(default_factory=dict, description="extra annotations on every pod")
    pending_deadline_seconds: int = Field(
        900, ge=60, description="a stage whose pods cannot start for this long fails the run with the cause"
    )
    active_deadline_seconds: int | None = Field(
        None, ge=60, description="activeDeadlineSeconds of every Job: a stage running longer fails"
    )


class FidelitySpec(_Model):
    """Agreement of the deployed backend with a reference on a sample of the same images."""

    reference: Literal[registry.REFERENCES] = Field(
        registry.REFERENCES[0], description="reference backend (fp32, the run's own weights)"
    )
    device: Literal["cpu", "cuda"] = Field("cpu", description="where the reference runs")
    images: int = Field(500, ge=1, le=50000, description="sample size, drawn as whole shards spread over the data set")
    max_top1_drop: float = Field(
        0.1, ge=0, le=100, description="largest drop of top-1 accuracy, in points, that passes"
    )


class StorageSpec(_Model):
    """Where every output goes, and how to reach it."""

    uri: str | None = Field(
        None, description="root of all outputs: s3://bucket/prefix or a local path (local runs default to --workdir)"
    )
    endpoint: str | None = Field(None, description="S3/MinIO host:port")
    secure: bool = Field(False, description="TLS to the endpoint")
    region: str | None = Field(None, description="S3 region")
    credentials_secret: str = Field(
        "minio-credentials", min_length=1, description="Secret with keys accessKey and secretKey (cluster)"
    )


class PnasEvalSpec(_Model):
    """An evaluation of an image classifier on an ImageNet-style set."""

    model: ModelSpec = Field(default_factory=ModelSpec, description="the classifier")
    convert: ConvertSpec = Field(default_factory=ConvertSpec, description="weights -> ONNX (-> Ascend .om)")
    dataset: DatasetSpec = Field(..., description="images and labels")
    inference: InferenceSpec = Field(default_factory=InferenceSpec, description="backend, batch sizes, placement")
    scheduling: SchedulingSpec = Field(
        default_factory=SchedulingSpec, description="scheduler, queue, priority, deadlines"
    )
    fidelity: FidelitySpec | None = Field(None, description="compare with a reference backend on a sample (optional)")
    storage: StorageSpec = Field(default_factory=StorageSpec, description="object storage of the run")
    cleanup: bool = Field(False, description="delete the run's objects in storage when the PnasEval is deleted")


class Metadata(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    name: str = Field(..., min_length=1, max_length=63, pattern=DNS_LABEL)
    namespace: str = Field("default", min_length=1, max_length=63, pattern=DNS_LABEL)


class PnasEval(BaseModel):
    """A whole resource: what `kubectl apply -f` and `pnas-eval run` take."""

    model_config = ConfigDict(frozen=True)
    metadata: Metadata
    spec: PnasEvalSpec


def _location(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _problems(error: ValidationError, prefix: str = "") -> list[str]:
    lines = []
    for item in error.errors():
        # pydantic names the branch of a union (str, int, function-...) in the location: not a field
        loc = tuple(p for p in item["loc"] if not str(p).startswith(("function-", "constrained-", "str", "int")))
        where = _location(loc)
        where = f"{prefix}{where}" if where else prefix.rstrip(".") or "manifest"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; fields are camelCase)"
        lines.append(f"{where}: {message}")
    return list(dict.fromkeys(lines))


def parse_spec(data: Any, source: str = "spec") -> PnasEvalSpec:
    """Validate a `spec` mapping: field rules first, then the cross-field rules (one line each)."""
    if not isinstance(data, dict):
        raise SpecError([f"spec: expected a mapping, got {type(data).__name__}"], source)
    try:
        spec = PnasEvalSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(_problems(error, "spec."), source) from None
    broken = rules.violations(spec.model_dump(by_alias=True, exclude_none=True))
    if broken:
        raise SpecError([f"spec.{rule.field}: {rule.message}" for rule in broken], source)
    return spec


def parse_manifest(data: Any, source: str = "manifest") -> PnasEval:
    """A PnasEval from its mapping (a YAML document or the body the API server sends)."""
    if not isinstance(data, dict):
        raise SpecError([f"expected a {KIND} mapping, got {type(data).__name__}"], source)
    problems = []
    for field, expected in (("apiVersion", f"{API_GROUP}/{API_VERSION}"), ("kind", KIND)):
        if data.get(field) != expected:
            problems.append(f"{field}: expected {expected}, got {data.get(field)!r}")
    metadata = spec = None
    try:
        metadata = Metadata.model_validate(data.get("metadata") or {})
    except ValidationError as error:
        problems += _problems(error, "metadata.")
    try:
        spec = parse_spec(data.get("spec"), source)
    except SpecError as error:
        problems += error.problems
    if problems:
        raise SpecError(problems, source)
    return PnasEval(metadata=metadata, spec=spec)


def load_manifest(path: str | Path) -> PnasEval:
    """The one PnasEval in a YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError([f"cannot read {path}: {getattr(error, 'strerror', None) or error}"], str(path)) from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        raise SpecError([f"not valid YAML: {error}"], str(path)) from None
    evals = [d for d in documents if isinstance(d, dict) and d.get("kind") == KIND]
    if len(evals) != 1:
        found = ", ".join(str(d.get("kind")) for d in documents if isinstance(d, dict)) or "nothing"
        raise SpecError([f"expected exactly one {KIND} document, found: {found}"], str(path))
    return parse_manifest(evals[0], str(path))
