"""Cross-field rules of the spec: one table, written in CEL.

The same expressions become the CRD's `x-kubernetes-validations` (the API server checks them on
`kubectl apply`) and are evaluated here with cel-python for local runs, so a rule exists once.
Each expression sees the spec, with its defaults applied, as `self`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from pnas_jobs.backends import registry


@dataclass(frozen=True)
class Rule:
    rule: str  # CEL over the spec
    message: str  # what is wrong and how to fix it
    field: str  # the field a user should change (dotted, under spec)


def _cel_list(values) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def _backend_rules() -> tuple[Rule, ...]:
    """Which convert target and devices go with which backend: read from the backend registry."""
    out = []
    default_target = registry.ARTIFACTS_BUILT[0]
    for backend in registry.BACKENDS:
        # the default target is what a backend gets unless it asks for more; one that runs the
        # timm model itself needs no converted model at all
        if backend.artifact not in ("state_dict", default_target):
            out.append(
                Rule(
                    f"self.inference.backend != '{backend.name}' || self.convert.target == '{backend.artifact}'",
                    f"backend {backend.name} runs {backend.artifact} models: set convert.target to {backend.artifact}",
                    "convert.target",
                )
            )
    for target in registry.ARTIFACTS_BUILT[1:]:  # a target other than the default is asked for on purpose
        fits = [b.name for b in registry.BACKENDS if b.artifact == target]
        out.append(
            Rule(
                f"self.convert.target != '{target}' || self.inference.backend in {_cel_list(fits)}",
                f"convert.target {target} builds models that only {' or '.join(fits)} runs: "
                f"use target {default_target} for the other backends",
                "inference.backend",
            )
        )
    for backend in registry.BACKENDS:
        out.append(
            Rule(
                f"self.inference.backend != '{backend.name}' || !has(self.inference.device) "
                f"|| self.inference.device in {_cel_list(backend.device_names)}",
                f"backend {backend.name} runs on {' | '.join(backend.device_names)}",
                "inference.device",
            )
        )
    return tuple(out)


RULES: tuple[Rule, ...] = _backend_rules()

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
