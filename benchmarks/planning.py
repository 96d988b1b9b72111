"""6. Operator planning: a PnasEval of 1,000 shards -> the Job manifests the operator creates.

Planning and building manifests is what the operator does on every reconcile pass, so it must stay
cheap however many shards there are. Indexed Jobs make the number of API objects constant in the
shard count: one Job per stage (convert, shard, infer per batch size, aggregate), against one Job per
shard and stage without them. Timed for 1,000 shards against 16 (the spec's default).
"""

from __future__ import annotations

import json
import time

from benchmarks.common import Context, Row, fastest

BATCH_SIZES = [1, 4, 8, 16, 32, 64]  # the seed's table

ROWS = ("6",)  # the rows of results.md this module measures


def manifest(shards: int) -> dict:
    return {
        "apiVersion": "pnaseval.io/v1alpha1",
        "kind": "PnasEval",
        "metadata": {"name": "pnasnet5large-310p", "namespace": "ml"},
        "spec": {
            "convert": {"target": "om"},
            "dataset": {
                "images": "s3://datasets/imagenet/val/",
                "labels": "s3://datasets/val_label.txt",
                "shards": shards,
            },
            "inference": {"backend": "ais_bench", "batchSizes": BATCH_SIZES, "parallelism": 8},
            "storage": {"uri": "s3://pnas-eval/runs", "endpoint": "minio.minio.svc:9000"},
        },
    }


def build(shards: int) -> list[dict]:
    """Spec -> plan -> every Job manifest, as a reconcile pass does."""
    from pnas_jobs.plan import make_plan
    from pnas_jobs.spec import parse_manifest
    from pnas_operator.manifests import JobSettings, Owner, jobs_for_plan

    parsed = parse_manifest(manifest(shards))
    plan = make_plan(parsed, parsed.spec.storage.uri)
    uid = "00000000-0000-0000-0000-000000000000"
    owner = Owner(name=parsed.metadata.name, namespace=parsed.metadata.namespace, uid=uid)
    return jobs_for_plan(plan, parsed.spec, owner, JobSettings())


def per_shard_objects(jobs: list[dict], shards: int) -> int:
    """Jobs without Indexed Jobs: one per shard for each indexed stage, one for each other stage."""
    return sum(shards if job["spec"].get("completionMode") == "Indexed" else 1 for job in jobs)


def _seconds(shards: int, repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        build(shards)
    return (time.perf_counter() - started) / repeats


def run(ctx: Context) -> list[Row]:
    shards = ctx.sizes.plan_shards
    ctx.log(f"6. planning a PnasEval of {shards:,} shards ...")
    repeats = 20 if ctx.smoke else 200
    build(shards)  # imports and pydantic's first validation, not timed
    big = fastest(lambda: _seconds(shards, repeats), 3)
    small = fastest(lambda: _seconds(16, repeats), 3)
    jobs = build(shards)
    objects = len(jobs)
    without = per_shard_objects(jobs, shards)
    indexed = [job for job in jobs if job["spec"].get("completionMode") == "Indexed"]
    size = len(json.dumps(jobs))
    return [
        Row(
            "6",
            f"Operator planning: a PnasEval of {shards:,} shards and {len(BATCH_SIZES)} batch sizes -> Job manifests",
            f"{objects} Jobs, built in {big * 1000:.2f} ms",
            f"{without:,} Jobs with one Job per shard and stage",
            objects / without,
            f"{without / objects:,.0f}x fewer API objects",
            "constant in shards (Indexed Jobs)",
            objects == len(build(16)),
            [
                f"Spec validation, plan and every Job manifest (`pnas_operator.manifests.jobs_for_plan`): "
                f"{big * 1000:.2f} ms for {shards:,} shards against {small * 1000:.2f} ms for 16 "
                f"({big / small:.2f}x; mean of {repeats} builds, fastest of 3).",
                f"{len(indexed)} of the {objects} Jobs are Indexed (`completions: {shards}`, `backoffLimitPerIndex`); "
                f"the Job controller makes their pods. All {objects} manifests together are {size:,} bytes of JSON "
                "whatever the shard count.",
            ],
        )
    ]
