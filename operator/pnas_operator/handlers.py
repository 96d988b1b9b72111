"""kopf handlers: decorators only; the work is in reconcile.py."""
from __future__ import annotations

import logging

import kopf

from pnas_jobs.spec import API_GROUP, API_VERSION, PLURAL
from pnas_jobs.status import TERMINAL
from pnas_operator import reconcile
from pnas_operator.settings import OperatorSettings

SETTINGS = OperatorSettings()
RESOURCE = (API_GROUP, API_VERSION, PLURAL)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_) -> None:
    # kopf's bookkeeping in annotations: the status schema holds only what users read
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=API_GROUP)
    settings.posting.level = logging.WARNING  # Events come from reconcile, not from every log line
    settings.watching.server_timeout = 60


def _apply(body, patch, logger) -> None:
    outcome = reconcile.reconcile(dict(body), SETTINGS)
    if outcome is None:
        return
    for type_, reason, message in outcome.events:
        kopf.event(body, type=type_, reason=reason, message=message)
        logger.info("%s: %s", reason, message)
    patch.status.update(outcome.status.dump())


# The timer does every pass, the first one included: it fires as soon as a PnasEval is seen (created,
# or found at start-up). A create/resume handler as well would run a second pass at the same moment.
@kopf.timer(*RESOURCE, interval=SETTINGS.reconcile_interval, when=lambda status, **_: status.get("phase") not in TERMINAL)
def watch_jobs(body, patch, logger, **_) -> None:
    _apply(body, patch, logger)


@kopf.on.delete(*RESOURCE, when=lambda spec, **_: bool(spec.get("cleanup")))
def clean_storage(body, logger, **_) -> None:
    job = reconcile.cleanup(dict(body), SETTINGS)
    if job:
        logger.info("started Job %s to delete this run's objects in storage", job)
