"""The example manifests: what the model accepts, the API server would accept too.

Each example is read by the spec model, checked for a cluster (object storage everywhere), and
validated against the generated CRD as the API server would: its openAPIV3Schema (OpenAPI v3.0:
boolean exclusiveMinimum, so Draft 4 semantics) and its CEL rules.
"""

from __future__ import annotations

import copy
from pathlib import Path

import celpy
import jsonschema
import pytest
import yaml

from pnas_jobs import crd
from pnas_jobs.accelerators import NVIDIA_GPU
from pnas_jobs.plan import cluster_problems, inference_placement
from pnas_jobs.spec import load_manifest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
LOCAL = {"local.yaml"}  # runs with `pnas-eval run --local`; paths on this machine
CLUSTER = [p for p in EXAMPLES if p.name not in LOCAL]
ids = lambda p: p.name  # noqa: E731


def openapi_to_jsonschema(node):
    """OpenAPI v3.0 -> JSON Schema Draft 4: `nullable` widens the type; x-kubernetes-* are kept as
    annotations, except int-or-string, which is a type."""
    if isinstance(node, list):
        return [openapi_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: openapi_to_jsonschema(v) for k, v in node.items() if k != "x-kubernetes-validations"}
    if out.pop("x-kubernetes-int-or-string", False):
        out["type"] = ["integer", "string"]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else [*out["type"], "null"]
    if out.get("type") == "object" and "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        # the API server prunes unknown fields; an example with one would silently lose it
        out["additionalProperties"] = False
    return out


def crd_version() -> dict:
    definition = yaml.safe_load(crd.render())
    (version,) = definition["spec"]["versions"]
    return version


def spec_schema() -> dict:
    return crd_version()["schema"]["openAPIV3Schema"]["properties"]["spec"]


def test_the_examples_are_here():
    assert {p.name for p in CLUSTER} >= {"seed-310p.yaml", "seed-910b.yaml", "cpu.yaml", "gpu.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=ids)
def test_example_loads_and_matches_the_crd_schema(path):
    manifest = load_manifest(path)
    (document,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert document["apiVersion"] == "pnaseval.io/v1alpha1" and document["kind"] == "PnasEval"
    schema = openapi_to_jsonschema(spec_schema())
    jsonschema.Draft4Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft4Validator(schema).iter_errors(document["spec"]), key=str)
    assert not errors, "\n".join(f"spec.{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
    # with the model's defaults filled in, as the API server fills in the CRD's
    dumped = manifest.spec.model_dump(by_alias=True, exclude_none=True)
    assert not list(jsonschema.Draft4Validator(schema).iter_errors(dumped))


@pytest.mark.parametrize("path", EXAMPLES, ids=ids)
def test_example_passes_the_crd_cel_rules(path):
    spec = load_manifest(path).spec.model_dump(by_alias=True, exclude_none=True)
    rules = spec_schema()["x-kubernetes-validations"]
    assert rules
    env = celpy.Environment()
    for rule in rules:
        program = env.program(env.compile(rule["rule"]))
        activation = {"self": celpy.json_to_cel(spec)}
        if "oldSelf" in rule["rule"]:  # transition rule (immutability): an unchanged update passes
            activation["oldSelf"] = celpy.json_to_cel(copy.deepcopy(spec))
        assert bool(program.evaluate(activation)), f"{path.name}: {rule['message']}"


def test_the_schema_check_can_fail():
    """The harness above is not vacuous: typos and wrong types are caught as the API server would."""
    schema = openapi_to_jsonschema(spec_schema())
    document = yaml.safe_load((REPO / "examples" / "seed-310p.yaml").read_text())
    document["spec"]["inference"]["batchSize"] = [4]  # for batchSizes
    document["spec"]["dataset"]["shards"] = "16"
    document["spec"]["convert"]["parityTolerance"] = 0
    paths = {
        ".".join(map(str, e.absolute_path)) for e in jsonschema.Draft4Validator(schema).iter_errors(document["spec"])
    }
    assert paths == {"inference", "dataset.shards", "convert.parityTolerance"}


def test_the_cel_check_can_fail():
    """The harness above is not vacuous: a broken spec breaks a rule."""
    spec = load_manifest(REPO / "examples" / "seed-310p.yaml").spec.model_dump(by_alias=True, exclude_none=True)
    spec["convert"]["target"] = "onnx"
    env = celpy.Environment()
    results = [
        bool(env.program(env.compile(r["rule"])).evaluate({"self": celpy.json_to_cel(spec)}))
        for r in spec_schema()["x-kubernetes-validations"]
        if "oldSelf" not in r["rule"]
    ]
    assert not all(results)


@pytest.mark.parametrize("path", CLUSTER, ids=ids)
def test_cluster_example_needs_only_object_storage(path):
    manifest = load_manifest(path)
    assert cluster_problems(manifest) == []
    assert manifest.metadata.namespace == "default", "no namespace in examples: `kubectl apply -n` picks it"
    assert manifest.spec.storage.credentials_secret == "minio-credentials"  # the chart's Secret


def test_seed_example_is_the_seed_evaluation():
    manifest = load_manifest(REPO / "examples" / "seed-310p.yaml")
    spec = manifest.spec
    assert (spec.model.name, spec.model.weights, spec.model.opset) == (
        "pnasnet5large",
        "s3://models/pnasnet5large.pth",
        11,
    )
    assert (spec.convert.target, spec.convert.soc_version) == ("om", "Ascend310P3")
    assert (spec.inference.backend, spec.inference.device) == ("ais_bench", "npu")
    assert spec.inference.batch_sizes == [1, 4, 8, 16, 32, 64]  # the seed's table
    assert (spec.dataset.images, spec.dataset.labels) == (
        "s3://datasets/imagenet/val/",
        "s3://datasets/imagenet/val_label.txt",
    )
    assert (spec.dataset.shards, spec.inference.parallelism) == (16, 8)
    placement = inference_placement(spec)
    assert placement.resources == {"huawei.com/Ascend310P": 1}
    assert placement.node_selector["accelerator"] == "huawei-Ascend310P"
    assert (spec.storage.uri, spec.storage.endpoint) == ("s3://pnas-eval/runs", "minio.minio.svc:9000")


def test_cpu_and_gpu_examples_use_onnxruntime():
    cpu = load_manifest(REPO / "examples" / "cpu.yaml").spec
    assert (cpu.convert.target, cpu.inference.backend, cpu.inference.device) == ("onnx", "onnxruntime", "cpu")
    assert not any("/" in k for k in inference_placement(cpu).resources)  # no accelerator
    gpu = load_manifest(REPO / "examples" / "gpu.yaml").spec
    assert (gpu.convert.target, gpu.inference.backend) == ("onnx", "onnxruntime")
    assert gpu.inference.device in ("cuda", "tensorrt")
    assert inference_placement(gpu).resources == {NVIDIA_GPU: 1}


@pytest.mark.parametrize("path", CLUSTER, ids=ids)
def test_examples_explain_their_fields(path):
    text = path.read_text()
    comments = [line for line in text.splitlines() if "#" in line]
    assert len(comments) >= 8, f"{path.name}: say what the fields mean"
