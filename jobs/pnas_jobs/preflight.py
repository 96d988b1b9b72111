"""Preflight checks of what a run reads: object storage, the images, the labels, the weights.

`pnas-eval doctor` runs them from a workstation; the `preflight` step of a run runs them in a pod,
first, so that a missing bucket, an empty prefix or labels that name none of the images fail in
seconds with the fix, not minutes later inside a stage. Read-only; one Finding per check.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Literal

from pnas_jobs import dataset
from pnas_jobs.errors import UserError
from pnas_jobs.spec import DatasetSpec, PnasEvalSpec
from pnas_jobs.storage import StorageError, StorageSettings, is_s3, open_object, open_store

Level = Literal["ok", "warning", "problem", "unreachable"]


@dataclass(frozen=True)
class Finding:
    check: str  # what was checked, e.g. "storage: bucket"
    level: Level  # ok | warning | problem (the spec or the environment must change) | unreachable
    detail: str  # what was found
    fix: str = ""  # the command or change that fixes a problem

    def line(self) -> str:
        mark = {"ok": "ok", "warning": "warning", "problem": "PROBLEM", "unreachable": "UNREACHABLE"}[self.level]
        return f"{mark:<11} {self.check}: {self.detail}" + (f"\n            fix: {self.fix}" if self.fix else "")

    def brief(self) -> str:
        """One line, for a condition's message: `problem: dataset: images: ... (fix: ...)`."""
        return f"{self.level}: {self.check}: {self.detail}" + (f" (fix: {self.fix})" if self.fix else "")

    def to_dict(self) -> dict:
        return asdict(self)


def exit_code(findings: list[Finding]) -> int:
    """0: the run can start; 1: something could not be reached (retry); 2: something must change first."""
    levels = {f.level for f in findings}
    return 2 if "problem" in levels else (1 if "unreachable" in levels else 0)


def _storage_failure(check: str, error: StorageError, fix: str) -> Finding:
    return Finding(check, "problem" if error.permanent else "unreachable", str(error), fix if error.permanent else "")


def check_output(uri: str | None, settings: StorageSettings) -> Finding:
    if not uri:
        return Finding("storage: outputs", "ok", "local run: outputs go to --workdir")
    try:
        store = open_store(uri, settings)
        store.list("")  # reaches the endpoint, the bucket and the credentials
    except StorageError as error:
        bucket = uri.removeprefix("s3://").split("/")[0]
        return _storage_failure(
            "storage: outputs", error, f"mc mb <alias>/{bucket}  (and check spec.storage.endpoint, the credentials)"
        )
    return Finding("storage: outputs", "ok", f"{uri} reachable")


def check_data(data: DatasetSpec, settings: StorageSettings) -> list[Finding]:
    """Images under the prefix, labels that parse and name them (`data`: what the run reads, as in spec.dataset)."""
    try:
        found = dataset.load(data.images, data.labels, data.limit, settings)
    except StorageError as error:
        return [
            _storage_failure("dataset", error, "check spec.dataset.images / labels, the endpoint and the credentials")
        ]
    except UserError as error:  # dataset.load names the field first: "spec.dataset.labels: ..."
        field = re.match(r"spec\.dataset\.(\w+):", str(error))
        return [
            Finding(
                f"dataset: {field[1]}" if field else "dataset", "problem", str(error), "fix the named field or file"
            )
        ]
    findings = [
        Finding(
            "dataset: images",
            "ok",
            f"{len(found.keys)} images under {data.images}" + (f" (limit {data.limit})" if data.limit else ""),
        )
    ]
    missing = [k for k in found.keys if dataset.image_name(k) not in found.labels]
    if missing:  # none labelled at all is refused by dataset.load above
        findings.append(
            Finding(
                "dataset: labels",
                "warning",
                f"{len(missing)} of {len(found.keys)} images have no label "
                f"(e.g. {missing[0]}); they are recorded as failed, not scored",
            )
        )
    else:
        findings.append(Finding("dataset: labels", "ok", f"every image has a label ({len(found.labels)} lines)"))
    if data.shards > len(found.keys):
        findings.append(
            Finding(
                "dataset: shards",
                "problem",
                f"{data.shards} shards for {len(found.keys)} images",
                f"set spec.dataset.shards to at most {len(found.keys)}",
            )
        )
    return findings


def check_weights(weights: str, settings: StorageSettings) -> Finding:
    if weights in ("timm", "random"):
        detail = (
            "random weights (a pipeline check, not an evaluation)"
            if weights == "random"
            else "pretrained from the hub (needs network)"
        )
        return Finding("model: weights", "warning" if weights == "random" else "ok", detail)
    try:
        store, key = open_object(weights, settings)
        if not store.exists(key):
            return Finding(
                "model: weights",
                "problem",
                f"{weights} does not exist",
                "upload the state dict there, or fix spec.model.weights",
            )
    except StorageError as error:
        return _storage_failure("model: weights", error, "check spec.model.weights")
    return Finding("model: weights", "ok", f"{weights} exists")


def run_checks(spec: PnasEvalSpec, settings: StorageSettings | None = None) -> list[Finding]:
    """Every storage and data check of a spec, in the order a run needs them."""
    # one retry, short backoff: a preflight says "unreachable" in seconds rather than retrying for a minute
    settings = settings or StorageSettings.from_env(
        None,
        endpoint=spec.storage.endpoint,
        secure=spec.storage.secure,
        region=spec.storage.region,
        retries=1,
        backoff=0.2,
    )
    if any(is_s3(u or "") for u in (spec.storage.uri, spec.dataset.images, spec.dataset.labels, spec.model.weights)):
        if not settings.endpoint:
            return [
                Finding(
                    "storage: endpoint",
                    "problem",
                    "s3:// locations but no endpoint",
                    "set spec.storage.endpoint (host:port)",
                )
            ]
    return checks(spec.storage.uri, spec.dataset, spec.model.weights, settings)


def checks(outputs: str | None, data: DatasetSpec, weights: str, settings: StorageSettings) -> list[Finding]:
    """The outputs' location, the data, the weights: what a run reads and writes, in that order."""
    return [check_output(outputs, settings), *check_data(data, settings), check_weights(weights, settings)]
