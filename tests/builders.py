"""One family of fixture builders: PnasEval manifests (cluster, local, Ascend), plans, and Jobs
as the Job controller reports them. Every test that needs a PnasEval starts here."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from pnas_jobs.plan import make_plan
from pnas_jobs.spec import parse_manifest

TINY_MODEL = "test_efficientnet"  # timm's 0.36 M-parameter test model: real layers, fast on a CPU

CLUSTER = {
    "dataset": {"images": "s3://datasets/val/", "labels": "s3://datasets/val_label.txt", "shards": 4},
    "storage": {"uri": "s3://pnas-eval/runs", "endpoint": "minio.minio.svc:9000"},
}


def pnaseval(name: str = "eval", namespace: str = "ml", base: dict | None = None, **sections) -> dict:
    """A PnasEval manifest: `base` (a cluster spec by default) with each section's keys replaced by
    `sections` (a dict updates that section; anything else replaces it)."""
    spec = copy.deepcopy(CLUSTER if base is None else base)
    for section, values in sections.items():
        if isinstance(values, dict):
            spec.setdefault(section, {}).update(copy.deepcopy(values))
        else:
            spec[section] = values
    return {
        "apiVersion": "pnaseval.io/v1alpha1",
        "kind": "PnasEval",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def ascend(**sections) -> dict:
    """A cluster PnasEval on Ascend NPUs (om models, ais_bench)."""
    convert = {"target": "om", **sections.pop("convert", {})}
    inference = {"backend": "ais_bench", **sections.pop("inference", {})}
    return pnaseval(convert=convert, inference=inference, **sections)


def tiny(name: str, images, labels, weights, storage_uri, namespace: str = "test", **sections) -> dict:
    """The tiny model on 3 shards, batch sizes 1 and 4, with files on this machine or in a bucket."""
    base = {
        "model": {"name": TINY_MODEL, "weights": str(weights)},
        "dataset": {"images": str(images), "labels": str(labels), "shards": 3},
        "inference": {"backend": "onnxruntime", "device": "cpu", "batchSizes": [1, 4]},
        "storage": {"uri": str(storage_uri)},
    }
    return pnaseval(name, namespace, base=base, **sections)


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def planned(data: dict, **options):
    pnaseval_ = parse_manifest(data)
    return pnaseval_, make_plan(pnaseval_, pnaseval_.spec.storage.uri, **options)


def job(
    name: str,
    step: str,
    *,
    complete=False,
    failed=False,
    succeeded=0,
    failed_pods=0,
    active=0,
    failed_indexes=None,
    reason="",
) -> dict:
    """A Job of `step` as the Job controller reports it (status counters and conditions)."""
    conditions = []
    if complete:
        conditions.append({"type": "Complete", "status": "True"})
    if failed:
        conditions.append(
            {"type": "Failed", "status": "True", "reason": reason or "BackoffLimitExceeded", "message": "x"}
        )
    status = {"succeeded": succeeded, "failed": failed_pods, "active": active, "conditions": conditions}
    if failed_indexes is not None:
        status["failedIndexes"] = failed_indexes
    return {
        "metadata": {"name": f"{name}-{step}", "labels": {"pnaseval.io/name": name, "pnaseval.io/step": step}},
        "status": status,
    }
