"""The CRD: generated from the spec model, structural, with rules that compile and mean what they say."""

from __future__ import annotations

import copy
from pathlib import Path

import kubernetes_validate
import pytest

from builders import pnaseval
from pnas_jobs import crd, rules
from pnas_jobs.backends import registry

REPO = Path(__file__).resolve().parents[1]


def version() -> dict:
    return crd.definition()["spec"]["versions"][0]


def test_crds_folder_is_up_to_date():
    assert (REPO / "crds" / "pnaseval.yaml").read_text() == crd.render(), "run `make crd`"


def test_crd_is_a_valid_kubernetes_object():
    kubernetes_validate.validate(crd.definition(), "1.33", strict=True)


def structural_problems(schema, path="") -> list[str]:
    """Kubernetes' structural-schema rules that matter here: every node typed, no anyOf/$ref left."""
    problems = []
    if not isinstance(schema, dict):
        return problems
    # the one anyOf Kubernetes allows: x-kubernetes-int-or-string's own pair of types (as for resource.Quantity)
    int_or_string = schema.get("x-kubernetes-int-or-string") and schema.get("anyOf") == [
        {"type": "integer"},
        {"type": "string"},
    ]
    if "$ref" in schema or "oneOf" in schema or ("anyOf" in schema and not int_or_string):
        problems.append(f"{path}: $ref/anyOf/oneOf")
    if (
        "type" not in schema
        and not schema.get("x-kubernetes-int-or-string")
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        problems.append(f"{path}: no type")
    if schema.get("additionalProperties") is False:
        problems.append(f"{path}: additionalProperties false")
    for name, child in (schema.get("properties") or {}).items():
        problems += structural_problems(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        problems += structural_problems(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        problems += structural_problems(schema["additionalProperties"], f"{path}{{}}")
    return problems


def test_schema_is_structural():
    assert structural_problems(version()["schema"]["openAPIV3Schema"]) == []


def test_names_subresource_and_printer_columns():
    spec = crd.definition()["spec"]
    assert (spec["group"], spec["names"]["plural"], spec["names"]["shortNames"]) == ("pnaseval.io", "pnasevals", ["pe"])
    assert version()["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version()["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase" and columns["Shards"] == ".status.progress"
    assert columns["Top-1"] == ".status.results[0].top1" and columns["Age"] == ".metadata.creationTimestamp"
    status = version()["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert {"phase", "progress", "results", "conditions", "shards", "startTime", "completionTime"} <= set(status)


def test_defaults_enums_and_bounds_are_in_the_schema():
    spec = version()["schema"]["openAPIV3Schema"]["properties"]["spec"]
    inference = spec["properties"]["inference"]["properties"]
    assert inference["backend"]["enum"] == list(registry.NAMES) and inference["backend"]["default"] == "onnxruntime"
    assert inference["batchSizes"]["items"] == {"maximum": 64, "minimum": 1, "type": "integer"}
    assert inference["batchSizes"]["x-kubernetes-list-type"] == "set"
    assert inference["resources"]["additionalProperties"]["x-kubernetes-int-or-string"] is True
    toleration = inference["tolerations"]["items"]["properties"]
    assert toleration["operator"]["enum"] == ["Exists", "Equal"] and "tolerationSeconds" in toleration
    assert spec["properties"]["dataset"]["properties"]["shards"]["minimum"] == 1
    assert spec["required"] == ["dataset"] and spec["properties"]["model"]["default"] == {}


def cel(rule: str, self_value, old=None) -> bool:
    import celpy

    env = celpy.Environment()
    activation = {"self": celpy.json_to_cel(self_value)}
    if old is not None:
        activation["oldSelf"] = celpy.json_to_cel(old)
    return bool(env.program(env.compile(rule)).evaluate(activation))


def test_cel_rules_in_the_crd_are_the_rules_table():
    validations = version()["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"]
    assert [v["rule"] for v in validations] == [r.rule for r in rules.RULES] + [rules.IMMUTABLE.rule]
    assert all(v["message"] for v in validations)


@pytest.mark.parametrize(
    "sections, broken",
    [
        ({}, []),
        ({"inference": {"backend": "ais_bench"}}, [0]),
        ({"convert": {"target": "om"}}, [1]),
        ({"convert": {"target": "om"}, "inference": {"backend": "ais_bench"}}, []),
        ({"inference": {"device": "npu"}}, [2]),
    ],
)
def test_cel_rules_evaluate_as_the_api_server_would(sections, broken):
    # the API server applies the schema's defaults before it runs the rules
    spec = {
        "convert": {"target": "onnx", **sections.get("convert", {})},
        "inference": {"backend": "onnxruntime", **sections.get("inference", {})},
    }
    assert [i for i, rule in enumerate(rules.RULES) if not cel(rule.rule, spec)] == broken


def test_the_spec_is_immutable():
    spec = pnaseval()["spec"]
    changed = copy.deepcopy(spec)
    changed["dataset"]["shards"] = 8
    assert cel(rules.IMMUTABLE.rule, spec, copy.deepcopy(spec)) is True
    assert cel(rules.IMMUTABLE.rule, changed, spec) is False
    assert "create a new PnasEval" in rules.IMMUTABLE.message


def undescribed(node: dict, path: str = "") -> list[str]:
    """Fields `kubectl explain` would show without a description."""
    out = []
    for name, child in (node.get("properties") or {}).items():
        out += ([] if child.get("description") else [f"{path}.{name}"]) + undescribed(child, f"{path}.{name}")
    for key, suffix in (("items", "[]"), ("additionalProperties", "{}")):
        if isinstance(node.get(key), dict):
            out += undescribed(node[key], path + suffix)
    return out


def test_every_field_is_described_for_kubectl_explain():
    assert undescribed(version()["schema"]["openAPIV3Schema"]) == []


def test_conditions_are_a_map_by_type_and_not_in_the_all_category():
    status = version()["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    conditions = status["conditions"]
    assert (conditions["x-kubernetes-list-type"], conditions["x-kubernetes-list-map-keys"]) == ("map", ["type"])
    assert "type" in conditions["items"]["required"]  # a map key must be required
    assert "all" not in crd.definition()["spec"]["names"].get("categories", [])


@pytest.mark.parametrize(
    "toleration, refused",
    [
        ({"key": "huawei.com/Ascend310P", "operator": "Exists", "effect": "NoSchedule"}, []),
        ({"key": "a", "operator": "Equal", "value": "b"}, []),
        ({"operator": "Exists"}, []),
        ({"key": "a", "operator": "Exists", "value": "b"}, ["value must be empty when operator is Exists"]),
        ({"operator": "Equal", "value": "b"}, ["operator must be Exists when key is empty"]),
        ({"key": "a", "operator": "Exists", "tolerationSeconds": 30}, ["tolerationSeconds needs effect NoExecute"]),
    ],
)
def test_bad_tolerations_are_refused_on_apply_as_kubernetes_refuses_them(toleration, refused):
    items = version()["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["inference"]["properties"][
        "tolerations"
    ]["items"]
    assert items["properties"]["tolerationSeconds"]["format"] == "int64"
    assert [v["message"] for v in items["x-kubernetes-validations"] if not cel(v["rule"], toleration)] == refused
