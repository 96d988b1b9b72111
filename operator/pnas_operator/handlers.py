"""kopf handlers: decorators only; the work is in daemon.py and reconcile.py.

The operator learns about its Jobs and their pods from watches (kopf indexes: one list at start-up,
then events), and each change wakes the loop of the PnasEval they belong to (`pnaseval.io/name`
label). One daemon per running PnasEval reconciles it until it finishes; it writes the status
itself (see daemon.py for why), and kopf never patches a status.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import kopf

from pnas_jobs.spec import API_GROUP, API_VERSION, PLURAL
from pnas_jobs.status import TERMINAL, Reason
from pnas_operator import daemon, kube, probes, reconcile
from pnas_operator.manifests import NAME_LABEL
from pnas_operator.settings import OperatorSettings

SETTINGS = OperatorSettings()
RESOURCE = (API_GROUP, API_VERSION, PLURAL)
OWNED = {NAME_LABEL: kopf.PRESENT}
# a loop that has not turned for this long is stuck (each turn: a wait of at most the resync interval
# or the longest backoff, then a pass of a few calls, each bounded by the API timeout)
STALL_LIMIT = max(SETTINGS.resync_interval, SETTINGS.backoff_max) + 10 * (
    SETTINGS.api_timeout + SETTINGS.api_connect_timeout
)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_) -> None:
    # kopf's bookkeeping in annotations: the status schema holds only what users read
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=API_GROUP)
    settings.posting.level = logging.WARNING  # Events come from the daemons, not from every log line
    # every call kopf makes has a timeout too; a watch that goes quiet is dropped and re-opened
    settings.networking.request_timeout = SETTINGS.api_timeout
    settings.networking.connect_timeout = SETTINGS.api_connect_timeout
    settings.watching.connect_timeout = SETTINGS.api_connect_timeout
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 90
    # only our Jobs and pods, filtered by the API server (the handlers filter again)
    settings.watching.label_selectors["batch", "v1", "jobs"] = NAME_LABEL
    settings.watching.label_selectors["v1", "pods"] = NAME_LABEL
    kube.configure(SETTINGS.api_connect_timeout, SETTINGS.api_timeout)
    # the daemons' API calls run in threads: enough that calls hanging until their timeout hold up no one else
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(32, thread_name_prefix="kube"))
    logging.getLogger("kopf.objects").addFilter(_quiet)
    memo.runs, memo.missed, memo.stalled = daemon.Runs(), {}, []
    # ready once started, while no PnasEval's loop is stuck (as the liveness probe last found)
    memo.probes = await probes.serve(SETTINGS.probe_port, lambda: list(memo.stalled))


def _quiet(record: logging.LogRecord) -> bool:
    """Drop kopf's "Handler 'job_changed' succeeded." lines: one per watch event says nothing."""
    return not any(
        f"'{name}' succeeded" in record.getMessage() for name in ("job_changed", "pod_changed", "pnaseval_gone")
    )


@kopf.on.cleanup()
async def stop_probes(memo: kopf.Memo, **_) -> None:
    await memo.probes.cleanup()


def _trim_job(body) -> dict:
    """What a pass reads of a Job (kept in memory for every Job of every PnasEval)."""
    meta = body["metadata"]
    keep = ("name", "namespace", "uid", "labels", "ownerReferences", "creationTimestamp")
    return {
        "metadata": {k: meta[k] for k in keep if k in meta},
        "spec": {"suspend": body.get("spec", {}).get("suspend", False)},
        "status": dict(body.get("status") or {}),
    }


def _trim_pod(body) -> dict:
    status = body.get("status") or {}
    containers = [{"state": c.get("state") or {}} for c in status.get("containerStatuses") or []]
    scheduled = [c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"]
    return {
        "metadata": {"name": body["metadata"]["name"], "labels": dict(body["metadata"].get("labels") or {})},
        "status": {"phase": status.get("phase"), "conditions": scheduled, "containerStatuses": containers},
    }


@kopf.index("batch", "v1", "jobs", labels=OWNED)
async def owned_jobs(namespace: str, labels, body, **_) -> dict:
    return {(namespace, labels[NAME_LABEL]): _trim_job(body)}


@kopf.index("v1", "pods", labels=OWNED)
async def owned_pods(namespace: str, labels, body, **_) -> dict:
    return {(namespace, labels[NAME_LABEL]): _trim_pod(body)}


@kopf.index(*RESOURCE)
async def pnasevals(namespace: str, name: str, status, **_) -> dict:
    return {(namespace, name): status.get("phase", "Pending")}


@kopf.on.event("batch", "v1", "jobs", labels=OWNED)
async def job_changed(namespace: str, labels, memo: kopf.Memo, **_) -> None:
    memo.runs.wake((namespace, labels[NAME_LABEL]))


@kopf.on.event("v1", "pods", labels=OWNED)
async def pod_changed(namespace: str, labels, memo: kopf.Memo, **_) -> None:
    memo.runs.wake((namespace, labels[NAME_LABEL]))


@kopf.on.event(*RESOURCE)
async def pnaseval_gone(type: str, namespace: str, name: str, memo: kopf.Memo, **_) -> None:
    if type == "DELETED":
        memo.runs.forget((namespace, name))


@kopf.daemon(*RESOURCE, when=lambda status, **_: status.get("phase") not in TERMINAL, cancellation_timeout=1.0)
async def reconcile_until_done(
    namespace: str, name: str, body, memo: kopf.Memo, stopped, owned_jobs, owned_pods, **_
) -> None:
    key = (namespace, name)

    def post(type_: str, reason: str, message: str) -> None:
        kopf.event(body, type=type_, reason=reason, message=message)

    loop = daemon.Loop(
        key,
        lambda: body,
        lambda: list(owned_jobs.get(key, [])),
        lambda: list(owned_pods.get(key, [])),
        post,
        memo.runs,
        SETTINGS,
    )
    await loop.run(stopped)


@kopf.on.probe(id="progress", errors=kopf.ErrorsMode.PERMANENT)
def progress(memo: kopf.Memo, pnasevals, **_) -> str:
    """Liveness: fails (HTTP 500) when a running PnasEval's loop has stopped turning; readiness follows."""
    known = {key: next(iter(store), "Pending") for key, store in pnasevals.items()}
    stalled = memo.runs.stalled(known, STALL_LIMIT, memo.missed)
    memo.stalled[:] = stalled
    if stalled:
        raise kopf.PermanentError("; ".join(stalled))
    return f"{sum(1 for p in known.values() if p not in TERMINAL)} running"


@kopf.on.delete(*RESOURCE, when=lambda spec, **_: bool(spec.get("cleanup")))
async def clean_storage(body, logger, **_) -> None:
    """Start the cleanup Job; an API server that refuses it ends as an Event, never as a stuck finalizer."""
    snapshot = dict(body)
    for attempt in range(1, 4):
        try:
            type_, message = await asyncio.to_thread(reconcile.cleanup, snapshot, SETTINGS)
            kopf.event(
                body,
                type=type_,
                reason=Reason.CLEANUP_STARTED if type_ == "Normal" else Reason.CLEANUP_REFUSED,
                message=message,
            )
            logger.info(message)
            return
        except kube.ApiError as error:
            final = error.status not in (0, 429) and error.status < 500 or attempt == 3
            if final:
                message = f"the run's objects in storage stay: {error}"
                kopf.event(body, type="Warning", reason=Reason.CLEANUP_REFUSED, message=message)
                logger.warning(message)
                return
            await asyncio.sleep(SETTINGS.backoff_min * 2 ** (attempt - 1))
