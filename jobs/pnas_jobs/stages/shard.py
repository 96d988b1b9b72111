"""Stage 2, shard: images + labels -> shard i as uint8 crops and its record.

The seed's imagenet_torch_preprocess.py writes one float32 `.bin` per image (1,314,732 bytes at
331x331); a shard here is one file of uint8 crops (328,683 bytes an image) plus a JSON record
with names, labels, shape, checksum and every image that could not be used, and why.

A shard is done for good only while it was made from the same content: its record keeps each
image's version token and the sha256 of the bytes decoded (hashed as they are read, so it costs
no extra read), and the labels of its images. An image whose token changed is read and hashed
again; a shard is redone only when some image's bytes, a label, the preprocessing or the pixels
in storage differ.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from pnas_jobs import dataset, layout, records, transform
from pnas_jobs.errors import UserError
from pnas_jobs.params import ShardParams, stage_index
from pnas_jobs.storage import StorageSettings, open_store

log = logging.getLogger(__name__)

_worker = {}


def _init_worker(images_uri: str, settings: StorageSettings, pixels: Path, slot_bytes: int) -> None:
    """Each decoding process: its own store, and the shard file it writes crops into."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a stop ends a decoder at once; the stage itself unwinds
    _worker["store"] = open_store(images_uri, settings)
    _worker["file"] = os.open(pixels, os.O_WRONLY)
    _worker["slot_bytes"] = slot_bytes


def _crop(job: tuple[int, str, transform.Preprocess]) -> tuple[str | None, str]:
    """Decode image `slot` straight into its slot of the shard file: (the error or None, sha256 of its bytes).

    Crops go through the page cache, not through a pipe: pickling 330 KB an image to the stage's
    process cost about a tenth of a second worker (benchmarks/results.md, row 4b). A storage error
    is raised, not recorded: it says nothing about the image, and a retry may get it.
    """
    slot, key, config = job
    data = _worker["store"].read_bytes(key)
    digest = hashlib.sha256(data).hexdigest()
    try:
        crop = transform.preprocess(data, config)
    except Exception as error:  # corrupt, truncated or not an image: recorded, never fatal
        return f"cannot decode: {type(error).__name__}: {error}", digest
    size = _worker["slot_bytes"]
    if crop.nbytes != size:
        return f"cannot decode: crop of {crop.shape} instead of {config.shape}", digest
    _write_at(_worker["file"], memoryview(crop).cast("B"), slot * size)
    return None, digest


def _write_at(file: int, data: memoryview, offset: int) -> None:
    """pwrite until all is written (it may write less, e.g. when interrupted)."""
    while data:
        written = os.pwrite(file, data, offset)
        data, offset = data[written:], offset + written


def _close_worker() -> None:
    if "file" in _worker:
        os.close(_worker["file"])
    _worker.clear()


def _check(p: ShardParams, index: int, data: dataset.Dataset) -> None:
    if not 0 <= index < p.shards:
        raise UserError(f"shard index {index} is outside 0..{p.shards - 1}")
    if p.shards > len(data.keys):
        raise UserError(
            f"spec.dataset.shards is {p.shards} but there are only {len(data.keys)} images: "
            "use at most one shard per image"
        )


def _write_crops(p: ShardParams, index: int, data: dataset.Dataset, keys, config, pixels: Path, settings) -> dict:
    """Decode the shard's images into `pixels`, failed slots squeezed out: names, labels, failures, checksums."""
    names, labels, failed, sources = [], [], [], {}
    digest = hashlib.sha256()
    size = int(np.prod(config.shape))
    shard_file = os.open(pixels, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(shard_file, size * len(keys))  # one slot per image, in order
        stored = 0  # bytes of crops kept: the slots of failed images are squeezed out
        for slot, (key, (error, content)) in enumerate(
            _crops(p.images, settings, keys, config, p.workers, pixels, size)
        ):
            sources[key] = [data.versions[key], content]
            name = dataset.image_name(key)
            if error is None and name not in data.labels:
                error = f"no label for {name!r} in {p.labels}"
            if error is not None:
                failed.append({"image": key, "error": error})
                log.warning("shard %d: %s: %s", index, key, error)
                continue
            crop = os.pread(shard_file, size, slot * size)  # done: results come in order
            if len(crop) != size:
                raise OSError(f"shard {index}: short read of image {slot} from {pixels}")
            if stored != slot * size:
                _write_at(shard_file, memoryview(crop), stored)
            digest.update(crop)
            stored += size
            names.append(name)
            labels.append(data.labels[name])
        os.ftruncate(shard_file, stored)
    finally:
        os.close(shard_file)
    return dict(images=names, labels=labels, failed=failed, sha256=digest.hexdigest(), sources=sources)


def _inputs(p: ShardParams, index: int, data: dataset.Dataset, keys, config) -> dict:
    """What a shard is made from, besides its images' bytes (checked apart: see `_already_done`)."""
    return dict(
        shards=p.shards,
        index=index,
        limit=p.limit,
        preprocess=config.to_dict(),
        keys_sha256=hashlib.sha256("\n".join(keys).encode()).hexdigest(),
        # the labels of this shard's images only: a label fixed elsewhere leaves this shard alone
        labels_sha256=records.sha256_json([[k, data.labels.get(dataset.image_name(k))] for k in keys]),
    )


def _already_done(store, index: int, inputs: dict, data: dataset.Dataset, keys) -> dict | None:
    """The shard's record if it was made from these inputs and these very bytes, and its pixels are intact."""
    key = layout.shard_record(index)
    record = records.finished(store, key, inputs, outputs=lambda r: [r["pixels"]])
    sources = (record or {}).get("sources", {})
    if record is None or set(sources) != set(keys):
        return None
    touched = [k for k in keys if sources[k][0] != data.versions[k]]
    for image in touched:  # a new version token: compare the bytes themselves
        if hashlib.sha256(data.store.read_bytes(image)).hexdigest() != sources[image][1]:
            log.info("shard %d: %s changed since the shard was made; doing it again", index, image)
            return None
    if touched:  # same bytes (copied, touched): remember the new tokens so the next run reads nothing
        log.info("shard %d: %d images have new timestamps but the same bytes", index, len(touched))
        for image in touched:
            sources[image][0] = data.versions[image]
        records.write(store, key, record)
    return record


def main(p: ShardParams) -> dict:
    index = stage_index(p.index)
    settings = StorageSettings.from_env()
    store = open_store(p.root, settings)
    data = dataset.load(p.images, p.labels, p.limit, settings)
    _check(p, index, data)
    config = transform.resolve(p.model, p.preprocess.model_dump(exclude_none=True))  # after the checks: it imports timm
    keys = data.shard(index, p.shards)
    inputs = _inputs(p, index, data, keys, config)
    if not p.force and (done := _already_done(store, index, inputs, data, keys)):
        log.info("shard %d: already done from the same images, labels and preprocessing; skipping", index)
        return done
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pnas-shard-") as tmp:
        pixels = Path(tmp) / "shard.pixels"
        crops = _write_crops(p, index, data, keys, config, pixels, settings)
        seconds = time.perf_counter() - started
        size = pixels.stat().st_size
        etag = store.upload(pixels, layout.shard_pixels(index))
    record = dict(
        inputs=inputs,
        index=index,
        shards=p.shards,
        images=crops["images"],
        labels=crops["labels"],
        labels_uri=p.labels,
        failed=crops["failed"],
        shape=[len(crops["images"]), *config.shape],
        dtype="uint8",
        layout="NHWC",
        preprocess=config.to_dict(),
        pixels=records.output(layout.shard_pixels(index), crops["sha256"], size, etag),
        sources=crops["sources"],  # image key -> [version token, sha256 of its bytes]
        seconds=seconds,
    )
    records.write(store, layout.shard_record(index), record)  # last: the shard now exists
    log.info(
        "shard %d/%d: %d %s (%d failed) in %.1f s, %.0f images/s",
        index,
        p.shards,
        len(crops["images"]),
        "image" if len(crops["images"]) == 1 else "images",
        len(crops["failed"]),
        seconds,
        len(keys) / seconds if seconds else 0.0,
    )
    return record


def _crops(images_uri, settings, keys, config, workers, pixels: Path, slot_bytes: int):
    """(key, error or None) for each key, in order, once its crop is in its slot of `pixels`."""
    init = (images_uri, settings, pixels, slot_bytes)
    jobs = [(slot, key, config) for slot, key in enumerate(keys)]
    if workers <= 1:
        _init_worker(*init)
        try:
            yield from zip(keys, map(_crop, jobs))
        finally:
            _close_worker()
        return
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=init) as pool:
        try:
            yield from zip(keys, pool.map(_crop, jobs, chunksize=8))
        except BaseException:  # a failure or a stop: drop the queued images instead of decoding them all first
            pool.shutdown(wait=False, cancel_futures=True)
            raise
