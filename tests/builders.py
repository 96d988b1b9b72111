"""Fluent fixtures for table-driven tests of the planner, the Job builders and the state function."""
from __future__ import annotations

import copy

from pnas_jobs.plan import make_plan
from pnas_jobs.spec import parse_manifest

BASE = {
    "apiVersion": "pnaseval.io/v1alpha1",
    "kind": "PnasEval",
    "metadata": {"name": "eval", "namespace": "ml"},
    "spec": {
        "dataset": {"images": "s3://datasets/val/", "labels": "s3://datasets/val_label.txt", "shards": 4},
        "storage": {"uri": "s3://pnas-eval/runs", "endpoint": "minio.minio.svc:9000"},
    },
}


def pnaseval(**spec_sections) -> dict:
    data = copy.deepcopy(BASE)
    for section, values in spec_sections.items():
        data["spec"].setdefault(section, {}).update(values)
    return data


def ascend(**spec_sections) -> dict:
    return pnaseval(convert={"target": "om"}, inference={"backend": "ais_bench", **spec_sections.pop("inference", {})}, **spec_sections)


def planned(data: dict):
    manifest = parse_manifest(data)
    return manifest, make_plan(manifest, manifest.spec.storage.uri)


def job(name: str, step: str, *, complete=False, failed=False, succeeded=0, failed_pods=0, active=0,
        failed_indexes=None, reason="") -> dict:  # fmt: skip
    conditions = []
    if complete:
        conditions.append({"type": "Complete", "status": "True"})
    if failed:
        conditions.append({"type": "Failed", "status": "True", "reason": reason or "BackoffLimitExceeded", "message": "x"})
    status = {"succeeded": succeeded, "failed": failed_pods, "active": active, "conditions": conditions}
    if failed_indexes is not None:
        status["failedIndexes"] = failed_indexes
    return {
        "metadata": {"name": f"{name}-{step}", "labels": {"pnaseval.io/name": name, "pnaseval.io/step": step}},
        "status": status,
    }
