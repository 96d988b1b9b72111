"""The operator's Prometheus metrics (prometheus_client), served with the readiness probe (probes.py).

Names follow Prometheus' conventions (prometheus.io/docs/practices/naming/): a `pnas_eval_` prefix,
base units (seconds), `_total` on counters.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

EVALUATIONS = Gauge(
    "pnas_eval_evaluations", "PnasEvals this operator reconciles, by phase", ["phase"], registry=REGISTRY
)
STAGE_SECONDS = Histogram(
    "pnas_eval_stage_duration_seconds",
    "Wall time of a finished stage's Job (its startTime to completionTime), by stage and outcome",
    ["stage", "outcome"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200),
    registry=REGISTRY,
)
SHARDS = Counter(
    "pnas_eval_shards_total", "Shards of finished inference stages, by result", ["result"], registry=REGISTRY
)
RECONCILE_ERRORS = Counter(
    "pnas_eval_reconcile_errors_total",
    "Reconcile passes that could not finish, by reason",
    ["reason"],
    registry=REGISTRY,
)
PASSES = Counter(
    "pnas_eval_reconcile_passes_total", "Reconcile passes, by what woke them", ["trigger"], registry=REGISTRY
)
API_SECONDS = Histogram(
    "pnas_eval_api_request_duration_seconds",
    "Latency of the operator's own Kubernetes API calls (kube.py; kopf's watches not included), by verb, resource and code",
    ["verb", "resource", "code"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)


@contextmanager
def api_call(verb: str, resource: str):
    """Time one API call; `code` is the HTTP status, or `timeout` / `error` when there is none."""
    started, outcome = time.perf_counter(), {"code": "200"}
    try:
        yield outcome
    except BaseException as error:
        outcome["code"] = str(
            getattr(error, "status", "") or ("timeout" if "timeout" in type(error).__name__.lower() else "error")
        )
        raise
    finally:
        API_SECONDS.labels(verb, resource, outcome["code"]).observe(time.perf_counter() - started)


def set_phases(phases: dict[str, str]) -> None:
    """The evaluations gauge from {PnasEval key: phase} of every PnasEval this operator knows."""
    counts: dict[str, int] = {}
    for phase in phases.values():
        counts[phase] = counts.get(phase, 0) + 1
    for labels in list(EVALUATIONS._metrics):  # phases no PnasEval is in any more read 0
        EVALUATIONS.labels(*labels).set(0)
    for phase, count in counts.items():
        EVALUATIONS.labels(phase).set(count)
