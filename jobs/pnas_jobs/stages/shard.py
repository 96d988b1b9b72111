"""Stage 2, shard: images + labels -> shard i as uint8 crops and a manifest.

The seed's imagenet_torch_preprocess.py writes one float32 `.bin` per image (1,314,732 bytes at
331x331); a shard here is one file of uint8 crops (328,683 bytes an image) plus a JSON manifest
with names, labels, shape, checksum and every image that could not be used, and why.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from pnas_jobs import dataset, layout, records, transform
from pnas_jobs.errors import UserError
from pnas_jobs.storage import StorageSettings, open_store

log = logging.getLogger(__name__)

_worker_store = None


def _init_worker(images_uri: str, settings: StorageSettings) -> None:
    global _worker_store
    _worker_store = open_store(images_uri, settings)


def _crop(job: tuple[str, transform.Preprocess]) -> tuple[str, bytes | None, str | None]:
    key, config = job
    try:
        data = _worker_store.read_bytes(key)
    except Exception as error:
        return key, None, f"cannot read: {error}"
    try:
        return key, transform.preprocess(data, config).tobytes(), None
    except Exception as error:  # corrupt, truncated or not an image: recorded, never fatal
        return key, None, f"cannot decode: {type(error).__name__}: {error}"


def run(
    run_uri: str,
    images_uri: str,
    labels_uri: str,
    model_name: str,
    shards: int,
    index: int,
    limit: int = 0,
    preprocess_overrides: dict | None = None,
    workers: int = 1,
    force: bool = False,
) -> dict:
    if not 0 <= index < shards:
        raise UserError(f"shard index {index} is outside 0..{shards - 1}")
    settings = StorageSettings.from_env()
    store = open_store(run_uri, settings)
    config = transform.resolve(model_name, preprocess_overrides)
    data = dataset.load(images_uri, labels_uri, limit, settings)
    if shards > len(data.keys):
        raise UserError(
            f"spec.dataset.shards is {shards} but there are only {len(data.keys)} images: "
            "use at most one shard per image"
        )
    keys = data.shard(index, shards)
    inputs = dict(
        images=images_uri,
        labels=labels_uri,
        limit=limit,
        shards=shards,
        index=index,
        preprocess=config.to_dict(),
        keys_sha256=hashlib.sha256("\n".join(keys).encode()).hexdigest(),
    )
    if not force and (done := records.finished(store, layout.shard_manifest(index), inputs)):
        log.info("shard %d: already done for these inputs; skipping", index)
        return done

    started = time.perf_counter()
    names, labels, failed = [], [], []
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory(prefix="pnas-shard-") as tmp:
        pixels = Path(tmp) / "shard.pixels"
        with open(pixels, "wb") as out:
            for key, crop, error in _crops(images_uri, settings, keys, config, workers):
                name = dataset.image_name(key)
                if error is None and name not in data.labels:
                    error = f"no label for {name!r} in {labels_uri}"
                if error is not None:
                    failed.append({"image": key, "error": error})
                    log.warning("shard %d: %s: %s", index, key, error)
                    continue
                out.write(crop)
                digest.update(crop)
                names.append(name)
                labels.append(data.labels[name])
        seconds = time.perf_counter() - started
        store.upload(pixels, layout.shard_pixels(index))
        manifest = dict(
            inputs=inputs,
            index=index,
            shards=shards,
            images=names,
            labels=labels,
            failed=failed,
            shape=[len(names), *config.shape],
            dtype="uint8",
            layout="NHWC",
            preprocess=config.to_dict(),
            pixels={
                "key": layout.shard_pixels(index),
                "sha256": digest.hexdigest(),
                "bytes": pixels.stat().st_size,
            },
            seconds=seconds,
        )
    records.write(store, layout.shard_manifest(index), manifest)  # last: the shard now exists
    log.info(
        "shard %d/%d: %d images (%d failed) in %.1f s, %.0f images/s",
        index,
        shards,
        len(names),
        len(failed),
        seconds,
        len(keys) / seconds if seconds else 0.0,
    )
    return manifest


def _crops(images_uri, settings, keys, config, workers):
    jobs = [(key, config) for key in keys]
    if workers <= 1:
        _init_worker(images_uri, settings)
        yield from map(_crop, jobs)
        return
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(images_uri, settings)) as pool:
        yield from pool.map(_crop, jobs, chunksize=8)


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))
