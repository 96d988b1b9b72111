"""The spec model: defaults, one clear message per problem, the CEL rules evaluated locally."""

from __future__ import annotations

import pytest

from builders import pnaseval
from pnas_jobs import rules
from pnas_jobs.spec import SpecError, load_manifest, parse_manifest


LOCAL = {"dataset": {"images": "s3://d/val/", "labels": "s3://d/val_label.txt"}}


def manifest(**sections) -> dict:
    return pnaseval("e1", base=LOCAL, **sections)


def problems(data) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_manifest(data)
    return caught.value.problems


def test_defaults_follow_the_contract():
    spec = parse_manifest(manifest()).spec
    assert (spec.model.name, spec.model.weights, spec.model.opset) == ("pnasnet5large", "timm", 11)
    assert (spec.convert.target, spec.dataset.shards, spec.inference.batch_sizes) == ("onnx", 16, [4])
    assert (spec.inference.backend, spec.inference.device) == ("onnxruntime", None)
    assert spec.storage.credentials_secret == "minio-credentials" and spec.cleanup is False
    assert spec.scheduling.pending_deadline_seconds == 900 and spec.scheduling.queue_name is None


@pytest.mark.parametrize(
    "sections, message",
    [
        (
            {"dataset": {"images": "x", "labels": "y", "shards": "3"}},
            "spec.dataset.shards: Input should be a valid integer",
        ),
        ({"model": {"opset": 11.0}}, "spec.model.opset: Input should be a valid integer"),
        ({"inference": {"batch_sizes": [1]}}, "spec.inference.batch_sizes: unknown field"),
        ({"inference": {"resources": {"cpu": "two"}}}, "spec.inference.resources.cpu: String should match pattern"),
        ({"inference": {"tolerations": [{"operator": "Sometimes"}]}}, "spec.inference.tolerations[0].operator"),
        ({"inference": {"nodeSelector": {"bad key!": "x"}}}, "spec.inference.nodeSelector.bad key!"),
        ({"convert": {"socVersion": "Ascend999"}}, "spec.convert.socVersion: String should match pattern"),
    ],
)
def test_what_the_api_server_refuses_is_refused_here(sections, message):
    """The CRD's schema is strict (camelCase, no coercion, Kubernetes formats): a local run must be too."""
    assert any(p.startswith(message) for p in problems(manifest(**sections))), problems(manifest(**sections))


@pytest.mark.parametrize("namespace", ["../../x", "UPPER", "a" * 64, ""])
def test_namespaces_are_kubernetes_names(namespace):
    data = manifest()
    data["metadata"]["namespace"] = namespace
    assert any(p.startswith("metadata.namespace") for p in problems(data))


def test_every_problem_is_reported_with_its_field():
    found = problems(
        manifest(
            dataset={"images": "x", "labels": "y", "shards": 0},
            inference={"batchSizes": [0, 4, 65], "bogus": 1, "backend": "tpu"},
            model={"opset": 3},
        )
    )
    joined = "\n".join(found)
    for field in (
        "spec.dataset.shards",
        "spec.inference.batchSizes[0]",
        "spec.inference.batchSizes[2]",
        "spec.inference.bogus: unknown field",
        "spec.inference.backend",
        "spec.model.opset",
    ):
        assert field in joined, (field, found)
    assert all(line.startswith(("spec.", "metadata.")) for line in found)


def test_missing_dataset_and_bad_metadata():
    data = manifest()
    del data["spec"]["dataset"]
    data["metadata"]["name"] = "Bad_Name"
    data["kind"] = "Job"
    found = problems(data)
    assert any(p.startswith("kind: expected PnasEval") for p in found)
    assert any(p.startswith("metadata.name") for p in found)
    assert "spec.dataset: Field required" in found


def test_duplicate_batch_sizes_are_refused():
    assert any("unique" in p for p in problems(manifest(inference={"batchSizes": [4, 4]})))


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"inference": {"backend": "ais_bench"}}, "spec.convert.target"),
        ({"convert": {"target": "om"}}, "spec.inference.backend"),
        ({"inference": {"device": "npu"}}, "spec.inference.device"),
        (
            {"convert": {"target": "om"}, "inference": {"backend": "ais_bench", "device": "cuda"}},
            "spec.inference.device",
        ),
    ],
)
def test_cross_field_rules(spec, field):
    found = problems(manifest(**spec))
    assert len(found) == 1 and found[0].startswith(field + ":"), found


def test_cel_rules_compile_and_accept_a_valid_spec():
    spec = parse_manifest(manifest(convert={"target": "om"}, inference={"backend": "ais_bench"})).spec
    assert rules.violations(spec.model_dump(by_alias=True, exclude_none=True)) == []
    for rule in (*rules.RULES, rules.IMMUTABLE):
        rules._program(rule.rule)  # compiles


def test_load_manifest_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SpecError, match="cannot read"):
        load_manifest(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: PnasEval\n  spec: [\n")
    with pytest.raises(SpecError, match="not valid YAML") as caught:
        load_manifest(bad)
    assert str(bad) in str(caught.value)
    other = tmp_path / "other.yaml"
    other.write_text("apiVersion: v1\nkind: ConfigMap\n")
    with pytest.raises(SpecError, match="exactly one PnasEval document, found: ConfigMap"):
        load_manifest(other)
