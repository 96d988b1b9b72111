"""Stage 0, preflight: check, read-only and in seconds, what the run will read (pnas_jobs.preflight).

The first step of a run on a cluster, in a pod with the run's storage credentials: a missing bucket,
an empty prefix, labels that name none of the images or missing weights stop the run here, with the
fix, instead of minutes later inside a stage. Every finding is logged; those that are not ok go to
the summary file (the pod's termination message, which the operator turns into the Preflight
condition). Exit 2 when something must change, 1 when storage did not answer (the Job retries).
Imports nothing heavy: no torch, no numpy decoding.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pnas_jobs import preflight
from pnas_jobs.errors import UserError
from pnas_jobs.params import PreflightParams
from pnas_jobs.spec import DatasetSpec
from pnas_jobs.status import MESSAGE_LIMIT
from pnas_jobs.storage import StorageError, StorageSettings

log = logging.getLogger(__name__)
SUMMARY_LIMIT = 4096  # bytes of a termination message the kubelet keeps


def findings(p: PreflightParams, settings: StorageSettings) -> list[preflight.Finding]:
    data = DatasetSpec.model_validate({"images": p.images, "labels": p.labels, "limit": p.limit, "shards": p.shards})
    return preflight.checks(p.root, data, p.weights, settings)


def main(p: PreflightParams) -> None:
    found = findings(p, StorageSettings.from_env(retries=1, backoff=0.2))
    for finding in found:
        log.info("%s", finding.line())
    notable = [f.brief() for f in found if f.level != "ok"]
    if p.summary_file:
        Path(p.summary_file).write_text("\n".join(notable).encode()[:SUMMARY_LIMIT].decode(errors="ignore"))
    code = preflight.exit_code(found)
    if code:
        message = "; ".join(f.brief() for f in found if f.level in ("problem", "unreachable"))[:MESSAGE_LIMIT]
        if code == 2:
            raise UserError(f"preflight: {message}")
        raise StorageError(f"preflight: {message}", permanent=False)
