"""Small JSON records that mark a unit of work as done (written last), and file checksums.

A unit is "already done" only while its record says it was made from the very same inputs (their
content, not their names) and every output it lists is still in storage as written: a missing or
damaged output makes the unit run again instead of failing downstream on every re-run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable, Iterable

from pnas_jobs.storage import NotFound, Store

log = logging.getLogger(__name__)

Outputs = Callable[
    [dict[str, Any]], Iterable[dict[str, Any]]
]  # a record -> its output entries {key, sha256, bytes, etag}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    """The checksum of a JSON value, independent of key order."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=2, sort_keys=True) + "\n"


def write(store: Store, key: str, record: dict[str, Any]) -> None:
    store.write_text(key, dumps(record))


def read(store: Store, key: str) -> dict[str, Any] | None:
    """The record, or None when there is none (or it is damaged: then its unit is simply not done)."""
    try:
        record = json.loads(store.read_text(key))
    except NotFound:
        return None
    except ValueError:  # not JSON, or not UTF-8
        log.warning("%s/%s is damaged; treated as missing", store.uri, key)
        return None
    return record if isinstance(record, dict) else None


def output(key: str, sha256: str, size: int, etag: str | None) -> dict[str, Any]:
    """A record's entry for one object it made: enough to tell later whether it is still intact."""
    entry = {"key": key, "sha256": sha256, "bytes": size}
    return entry | ({"etag": etag} if etag else {})


def intact(store: Store, entry: dict[str, Any]) -> bool:
    return store.matches(entry["key"], entry["sha256"], entry.get("bytes"), entry.get("etag"))


def finished(store: Store, key: str, inputs: dict[str, Any], outputs: Outputs = lambda r: ()) -> dict[str, Any] | None:
    """The record of a unit already done with these very inputs whose outputs are all intact (so a re-run can skip it)."""
    record = read(store, key)
    if record is None or record.get("inputs") != json.loads(json.dumps(inputs)):
        return None
    damaged = [entry["key"] for entry in outputs(record) if not intact(store, entry)]
    if damaged:
        log.warning("%s: %s missing or damaged since; doing it again", key, ", ".join(damaged))
        return None
    return record


def shard_identity(shard: dict[str, Any]) -> str:
    """What inference results depend on in a shard: its pixels, the names they go by, the normalisation."""
    return sha256_json([shard["pixels"]["sha256"], shard["images"], shard["preprocess"]])


def model_files(convert: dict[str, Any]) -> list[dict[str, Any]]:
    """Every model file a convert record lists (ONNX, the state dict, Ascend models)."""
    return [
        convert["onnx"],
        *([convert["state_dict"]] if "state_dict" in convert else []),
        *convert.get("om", {}).values(),
    ]
