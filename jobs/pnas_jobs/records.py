"""Small JSON records that mark a unit of work as done (written last), and file checksums."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pnas_jobs.storage import NotFound, Store


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=2, sort_keys=True) + "\n"


def write(store: Store, key: str, record: dict[str, Any]) -> None:
    store.write_text(key, dumps(record))


def read(store: Store, key: str) -> dict[str, Any] | None:
    try:
        return json.loads(store.read_text(key))
    except NotFound:
        return None


def finished(store: Store, key: str, inputs: dict[str, Any]) -> dict[str, Any] | None:
    """The record of a unit already done with these very inputs (so a re-run can skip it)."""
    record = read(store, key)
    if record is not None and record.get("inputs") == json.loads(json.dumps(inputs)):
        return record
    return None
