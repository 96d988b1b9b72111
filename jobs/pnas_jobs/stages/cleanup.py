"""Delete a run's outputs: what `spec.cleanup` does when its PnasEval is deleted.

Only a folder that holds a run's records is taken for a run root, and only what a run writes there
is deleted (model/, shards/, results/, the accuracy files and the report): pointed at any other
folder, or at the parent of runs, it deletes nothing and says why. It says what it deletes.
"""

from __future__ import annotations

import logging
import re
from collections import Counter

from pnas_jobs import layout
from pnas_jobs.errors import UserError
from pnas_jobs.params import CleanupParams
from pnas_jobs.storage import StorageSettings, open_store

log = logging.getLogger(__name__)


def main(p: CleanupParams) -> int:
    store = open_store(p.root, StorageSettings.from_env())
    keys = store.list()
    if not keys:
        log.info("cleanup: nothing to delete under %s", store.uri)
        return 0
    ours = [k for k in keys if re.fullmatch(layout.RUN_KEY, k)]
    if not any(re.fullmatch(layout.RECORDS, k) for k in ours):
        raise UserError(
            f"--root: {store.uri} is not the root of a pnas-eval run (no model/convert.json, shards/shard-*.json "
            f"or report.json in it); nothing was deleted"
        )
    others = sorted(set(keys) - set(ours))
    parts = Counter(k.split("/", 1)[0] + ("/" if "/" in k else "") for k in ours)
    log.info(
        "cleanup: deleting %d objects of the run at %s: %s",
        len(ours),
        store.uri,
        ", ".join(f"{part} ({count})" for part, count in sorted(parts.items())),
    )
    if others:
        log.info(
            "cleanup: keeping %d %s a run does not write, e.g. %s",
            len(others),
            "object" if len(others) == 1 else "objects",
            ", ".join(others[:3]),
        )
    for key in ours:
        store.delete(key)
    return len(ours)
