"""Delete a run's outputs: what `spec.cleanup` does when its PnasEval is deleted."""
from __future__ import annotations

import logging

from pnas_jobs.params import CleanupParams
from pnas_jobs.storage import StorageSettings, open_store

log = logging.getLogger(__name__)


def main(p: CleanupParams) -> int:
    store = open_store(p.root, StorageSettings.from_env())
    deleted = store.delete_prefix("")
    log.info("cleanup: deleted %d objects under %s", deleted, store.uri)
    return deleted
