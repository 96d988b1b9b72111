"""Cross-field rules of the spec: one table, written in CEL.

The same expressions become the CRD's `x-kubernetes-validations` (the API server checks them on
`kubectl apply`) and are evaluated here with cel-python for local runs, so a rule exists once.
Each expression sees the spec, with its defaults applied, as `self`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any


@dataclass(frozen=True)
class Rule:
    rule: str  # CEL over the spec
    message: str  # what is wrong and how to fix it
    field: str  # the field a user should change (dotted, under spec)


RULES: tuple[Rule, ...] = (
    Rule(
        "self.inference.backend != 'ais_bench' || self.convert.target == 'om'",
        "backend ais_bench runs Ascend .om models: set convert.target to om",
        "convert.target",
    ),
    Rule(
        "self.convert.target != 'om' || self.inference.backend == 'ais_bench'",
        "convert.target om builds Ascend models that only inference.backend ais_bench runs: "
        "use target onnx for onnxruntime",
        "inference.backend",
    ),
    Rule(
        "!has(self.inference.device) || (self.inference.device == 'npu') == (self.inference.backend == 'ais_bench')",
        "device npu goes with backend ais_bench; onnxruntime runs on cpu, cuda or tensorrt",
        "inference.device",
    ),
)

# The spec cannot change once created: a changed evaluation is a new evaluation.
IMMUTABLE = Rule(
    "self == oldSelf",
    "spec is immutable: create a new PnasEval (with a new name) to evaluate something else",
    "",
)


@cache
def _program(expression: str):
    import celpy  # small, pure Python; imported lazily to keep `import pnas_jobs.spec` fast

    environment = celpy.Environment()
    return environment.program(environment.compile(expression))


def violations(spec: dict[str, Any]) -> list[Rule]:
    """The rules that `spec` (a camelCase mapping with defaults applied) breaks."""
    import celpy

    activation = {"self": celpy.json_to_cel(spec)}
    return [rule for rule in RULES if not bool(_program(rule.rule).evaluate(activation))]


def cel_validations() -> list[dict[str, str]]:
    """The rules in the CRD's `x-kubernetes-validations` shape."""
    return [{"rule": r.rule, "message": r.message, "fieldPath": f".{r.field}"} for r in RULES]
