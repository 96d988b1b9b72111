"""The PnasEval resource: one model for the spec, its defaults and its validation.

The same YAML that `kubectl apply` takes is read here; the CRD schema is generated from these
models (`pnas_jobs.crd`), so a field exists in one place only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from pnas_jobs import rules

API_GROUP = "pnaseval.io"
API_VERSION = "v1alpha1"
KIND = "PnasEval"
PLURAL = "pnasevals"

# Defaults that depend on the backend (timm-style layering: spec value > backend default).
ASCEND_RESOURCE = "huawei.com/Ascend310P"
ASCEND_NODE_SELECTOR = {"accelerator": "huawei-Ascend310P"}
GPU_RESOURCE = "nvidia.com/gpu"


class SpecError(ValueError):
    """A manifest that cannot be run; `problems` holds one readable line per problem."""

    def __init__(self, problems: list[str], source: str = "manifest"):
        self.problems = problems
        self.source = source
        super().__init__(f"{source} is not a valid PnasEval:\n" + "\n".join(f"  - {p}" for p in problems))


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class ModelSpec(_Model):
    name: str = Field("pnasnet5large", min_length=1, description="timm model name")
    weights: str = Field(
        "timm",
        min_length=1,
        description='local .pth path | s3://bucket/key | "timm" (pretrained from the hub, needs network) | "random"',
    )
    opset: int = Field(11, ge=7, le=21, description="ONNX opset of the export")


class ConvertSpec(_Model):
    target: Literal["onnx", "om"] = Field("onnx", description="onnx (onnxruntime) | om (Ascend ATC)")
    soc_version: str = Field("Ascend310P3", min_length=1, description="ATC --soc_version (om only)")
    parity_tolerance: float = Field(
        1e-4, gt=0, le=1, description="max |PyTorch - ONNX| allowed by the conversion parity check"
    )


class PreprocessSpec(_Model):
    """Overrides of the model's timm data config; unset fields come from timm."""

    input_size: int | None = Field(None, ge=8, le=4096, description="crop size (square)")
    crop_pct: float | None = Field(None, gt=0, le=1, description="resize to floor(inputSize / cropPct)")
    interpolation: Literal["bicubic", "bilinear", "nearest"] | None = None
    mean: list[float] | None = Field(None, min_length=3, max_length=3)
    std: list[float] | None = Field(None, min_length=3, max_length=3)


class DatasetSpec(_Model):
    images: str = Field(..., min_length=1, description="local dir or s3:// prefix; flat or class sub-folders")
    labels: str = Field(..., min_length=1, description='"<file name> <class>" per line (seed format)')
    limit: int = Field(0, ge=0, description="first N images in sorted order; 0 = all")
    shards: int = Field(16, ge=1, le=10000, description="number of shards (one inference pod each)")
    preprocess: PreprocessSpec = Field(default_factory=PreprocessSpec)


class InferenceSpec(_Model):
    backend: Literal["onnxruntime", "ais_bench"] = "onnxruntime"
    device: Literal["cpu", "cuda", "tensorrt", "npu"] | None = Field(
        None, description="onnxruntime: cpu | cuda | tensorrt; ais_bench: npu (default follows the backend)"
    )
    batch_sizes: list[Annotated[int, Field(ge=1, le=64)]] = Field(
        [4], min_length=1, max_length=16, description="one accuracy JSON and throughput per batch size"
    )
    parallelism: int = Field(8, ge=1, le=1024, description="shard pods at once (cluster)")
    resources: dict[str, int | str] | None = Field(
        None, description="resources.limits of an inference pod, also its requests (default follows the device)"
    )
    node_selector: dict[str, str] | None = Field(None, description="default follows the device")
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    device_id: int | None = Field(
        None, ge=0, le=255, description="ais_bench ACL device id; default: first id in ASCEND_VISIBLE_DEVICES, else 0"
    )
    threads: int = Field(0, ge=0, le=256, description="onnxruntime intra-op threads; 0 = runtime default")

    @field_validator("batch_sizes")
    @classmethod
    def _batch_sizes(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"batch sizes must be unique, got {value}")
        return value

    @property
    def resolved_device(self) -> str:
        return self.device or ("npu" if self.backend == "ais_bench" else "cpu")

    @property
    def resolved_resources(self) -> dict[str, int | str]:
        if self.resources is not None:
            return dict(self.resources)
        return {"npu": {ASCEND_RESOURCE: 1}, "cuda": {GPU_RESOURCE: 1}, "tensorrt": {GPU_RESOURCE: 1}}.get(
            self.resolved_device, {}
        )

    @property
    def resolved_node_selector(self) -> dict[str, str]:
        if self.node_selector is not None:
            return dict(self.node_selector)
        return dict(ASCEND_NODE_SELECTOR) if self.resolved_device == "npu" else {}


class StorageSpec(_Model):
    uri: str | None = Field(
        None, description="root of all outputs: s3://bucket/prefix or a local path (default for local runs: --workdir)"
    )
    endpoint: str | None = Field(None, description="S3/MinIO host:port")
    secure: bool = Field(False, description="TLS to the endpoint")
    region: str | None = None
    credentials_secret: str = Field(
        "minio-credentials", min_length=1, description="Secret with keys accessKey/secretKey (cluster)"
    )


class PnasEvalSpec(_Model):
    model: ModelSpec = Field(default_factory=ModelSpec)
    convert: ConvertSpec = Field(default_factory=ConvertSpec)
    dataset: DatasetSpec
    inference: InferenceSpec = Field(default_factory=InferenceSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    cleanup: bool = Field(False, description="delete the run's objects in storage when the PnasEval is deleted")


class Metadata(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    name: str = Field(..., min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    namespace: str = "default"


class PnasEval(BaseModel):
    """A whole manifest: what `kubectl apply -f` and `pnas-eval run` take."""

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
        where = _location(tuple(p for p in item["loc"] if not str(p).startswith("function-")))
        where = f"{prefix}{where}" if where else prefix.rstrip(".") or "manifest"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; fields are camelCase)"
        lines.append(f"{where}: {message}")
    return lines


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
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise SpecError([f"cannot read {path}: {error.strerror}"], str(path)) from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        raise SpecError([f"not valid YAML: {error}"], str(path)) from None
    evals = [d for d in documents if isinstance(d, dict) and d.get("kind") == KIND]
    if len(evals) != 1:
        found = ", ".join(str(d.get("kind")) for d in documents if isinstance(d, dict)) or "nothing"
        raise SpecError([f"expected exactly one {KIND} document, found: {found}"], str(path))
    return parse_manifest(evals[0], str(path))
