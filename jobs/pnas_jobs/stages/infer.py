"""Stage 3, infer: one shard, one backend, one batch size -> ais_bench TXT results and timings.

Reading and normalising the next batch runs in a thread while the accelerator computes the current
one, and a second thread formats and writes results, so the device waits on neither. Like
ais_bench, the last short batch is padded with copies of its first image and the padded outputs
are dropped; one warm-up batch runs before timing starts.
"""

from __future__ import annotations

import logging
import queue
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from pnas_jobs import dataset, layout, metric, records, transform
from pnas_jobs.backends import registry
from pnas_jobs.errors import UserError
from pnas_jobs.params import InferParams, cpu_share, stage_index
from pnas_jobs.results import TarWriter
from pnas_jobs.storage import NotFound, Store, StorageError, StorageSettings, open_store

log = logging.getLogger(__name__)

_DONE = object()


class ShardCorrupt(UserError):
    pass


def load_pixels(store: Store, shard: dict, work: Path) -> np.ndarray:
    """A shard's pixels (memory-mapped), checked against its record's size and checksum."""
    index, shape = shard["index"], tuple(shard["shape"])
    if shape[0] == 0:
        return np.zeros(shape, dtype=np.uint8)
    redo = "run the evaluation again: its shard stage makes damaged or missing shards again"
    try:
        path = store.fetch(shard["pixels"]["key"], work)
    except NotFound:
        raise ShardCorrupt(f"shard {index}: {shard['pixels']['key']} is missing; {redo}") from None
    size, expected = path.stat().st_size, int(np.prod(shape))
    if size != expected or records.sha256_file(path) != shard["pixels"]["sha256"]:
        raise ShardCorrupt(
            f"shard {index}: {shard['pixels']['key']} is corrupt ({size} bytes, checksum mismatch); {redo}"
        )
    return np.memmap(path, dtype=np.uint8, mode="r", shape=shape)


def model_entry(record: dict, backend: registry.BackendEntry, batch_size: int) -> dict:
    """The convert record's entry ({key, sha256, ...}) of the model this backend runs at this batch size."""
    if backend.artifact == "om":  # one Ascend model per batch size
        if str(batch_size) not in record.get("om", {}):
            raise UserError(f"no Ascend model for batch size {batch_size}: convert with target om and this batch size")
        return record["om"][str(batch_size)]
    if backend.artifact not in record:
        raise UserError(f"backend {backend.name} runs {backend.artifact} models and convert built none")
    return record[backend.artifact]


def timing_summary(compute_ms: list[float], batch_size: int) -> dict:
    """ais_bench's NPU_compute_time statistics and its throughput = 1000 * batchsize / mean ms."""
    if not compute_ms:
        return {"count": 0}
    times = np.asarray(compute_ms)
    return {
        "count": len(times),
        "min": float(times.min()),
        "max": float(times.max()),
        "mean": float(times.mean()),
        "median": float(np.median(times)),
        "percentile(99%)": float(np.percentile(times, 99)),
        "throughput": 1000.0 * batch_size / float(times.mean()),
    }


def _batches(pixels: np.ndarray, batch_size: int, config: transform.Preprocess, out: queue.Queue) -> None:
    """Producer: normalised, padded float32 batches, in order.

    Batches are normalised into a ring of reused buffers (a fresh 84 MB array per batch of 64 costs
    more in page faults than the normalisation itself). A buffer comes round again only after the
    consumer took the batch behind it, so it is done with it: at most `out.maxsize` batches wait in
    the queue, one is being computed and one filled, so `maxsize + 2` buffers suffice.
    """
    try:
        height, width, channels = pixels.shape[1:]
        ring: list[np.ndarray] = []  # filled as needed: a small shard needs fewer
        for number, start in enumerate(range(0, len(pixels), batch_size)):
            chunk = np.asarray(pixels[start : start + batch_size])
            real = len(chunk)
            if real < batch_size:  # pad with the batch's first image, as ais_bench does (get_narray_from_files_list)
                chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch_size - real, axis=0)])
            slot = number % (out.maxsize + 2)
            if slot == len(ring):
                ring.append(np.empty((batch_size, channels, height, width), dtype=np.float32))
            out.put((start, real, transform.normalize(chunk, config, out=ring[slot])))
    except BaseException as error:  # surfaced by the consumer
        out.put(error)
    out.put(_DONE)


def _writer(tar: TarWriter, names: list[str], jobs: queue.Queue, errors: list) -> None:
    while (job := jobs.get()) is not _DONE:
        if errors:
            continue
        start, scores = job
        try:
            tar.add_rows(names[start : start + len(scores)], scores)  # a batch at a time: formatting is vectorised
        except BaseException as error:
            errors.append(error)


def check_labels(shard: dict, num_classes: int) -> None:
    """Before any inference: every label of the shard is one of the model's classes (naming the labels file's line)."""
    offset = metric.label_offset(num_classes)
    if all(0 <= label + offset < num_classes for label in shard["labels"]):
        return
    labels = metric.Labels(shard.get("labels_uri", "the labels file"))
    labels.update(zip(shard["images"], shard["labels"]))
    try:  # only now: the line numbers are in the labels file, not in the record
        labels.lines = dataset.read_labels(labels.source).lines
    except (UserError, StorageError):
        pass
    try:
        metric.check_classes(labels, shard["images"], num_classes)
    except metric.LabelsError as error:
        raise UserError(f"spec.dataset.labels: {error}") from None


def shard_of(p: InferParams) -> int:
    """The shard this unit works on: its index, or with a sample the sample's entry at its index."""
    position = stage_index(p.index)
    if not p.sample:
        return position
    if position >= len(p.sample):
        raise UserError(f"unit {position} of a sample of {len(p.sample)} shards: no such shard")
    return p.sample[position]


def output_keys(p: InferParams, index: int) -> tuple[str, str]:
    """Where this unit's record and result tar go: its batch size's folder, or the reference's."""
    if p.reference:
        return layout.reference_marker(index), layout.reference_tar(index)
    return layout.result_marker(p.batch_size, index), layout.result_tar(p.batch_size, index)


def main(p: InferParams) -> dict:
    index = shard_of(p)
    backend = registry.get(p.backend)
    device = backend.device(p.device).name
    store = open_store(p.root, StorageSettings.from_env())
    convert = records.read(store, layout.CONVERT_RECORD)
    if convert is None:
        raise UserError(f"no converted model under {store.uri}: run the convert stage first")
    shard = records.read(store, layout.shard_record(index))
    if shard is None:
        raise UserError(f"shard {index} does not exist under {store.uri}: run the shard stage first")
    model = model_entry(convert, backend, p.batch_size)
    inputs = dict(
        model_sha256=model["sha256"],
        shard=records.shard_identity(shard),
        index=index,
        batch_size=p.batch_size,
        backend=backend.name,
        device=device,
    ) | ({"reference": True} if p.reference else {})
    check_labels(shard, int(convert["num_classes"]))  # even when done: results the labels cannot score are no results
    marker, tar_key = output_keys(p, index)
    if not p.force and (done := records.finished(store, marker, inputs, outputs=lambda r: [r["tar"]])):
        log.info("infer shard %d bs%d: already done for these inputs; skipping", index, p.batch_size)
        return done
    threads = p.threads or (cpu_share() if backend.cpu_threads and device == registry.CPU else 0)
    config = transform.Preprocess.from_dict(shard["preprocess"])
    with tempfile.TemporaryDirectory(prefix="pnas-infer-") as tmp:
        work = Path(tmp)
        pixels = load_pixels(store, shard, work)
        model_path = store.fetch(model["key"], work)
        session = backend.open(
            model_path=model_path,
            device=device,
            batch_size=p.batch_size,
            threads=threads,
            device_id=p.device_id,
            model=convert["model"],
        )
        try:
            tar_path = work / "results.tar"
            result = _infer(session, pixels, shard["images"], p.batch_size, config, tar_path)
        finally:
            session.close()
        etag = store.upload(tar_path, tar_key)
        result.update(
            inputs=inputs,
            index=index,
            batch_size=p.batch_size,
            backend=backend.name,
            device=device,
            threads=threads,
            providers=getattr(session, "providers", None),
            tar=records.output(tar_key, records.sha256_file(tar_path), tar_path.stat().st_size, etag),
        )
    records.write(store, marker, result)  # last: the results now exist
    log.info(
        "infer shard %d bs%d: %d images, compute %.1f img/s, end to end %.1f img/s",
        index,
        p.batch_size,
        result["images"],
        result["compute"].get("throughput", 0.0),
        result["end_to_end_images_per_s"],
    )
    return result


def _infer(session, pixels, names, batch_size, config, tar_path) -> dict:
    if len(pixels):  # warm-up (not timed, not written), as ais_bench's warmup_count
        warm = np.repeat(np.asarray(pixels[:1]), batch_size, axis=0)
        session.infer(transform.normalize(warm, config))
    ready: queue.Queue = queue.Queue(maxsize=3)
    written: queue.Queue = queue.Queue(maxsize=8)
    errors: list = []
    tar = TarWriter(tar_path)
    started = time.perf_counter()
    producer = threading.Thread(target=_batches, args=(pixels, batch_size, config, ready), daemon=True)
    writer = threading.Thread(target=_writer, args=(tar, names, written, errors), daemon=True)
    producer.start()
    writer.start()
    compute_ms = []
    classes = None
    try:
        while (item := ready.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            start, real, batch = item
            scores, ms = session.infer(batch)
            compute_ms.append(ms)
            classes = scores.shape[-1]
            written.put((start, scores.reshape(batch_size, -1)[:real]))
    finally:
        written.put(_DONE)
        writer.join()
        tar.close()
    if errors:
        raise errors[0]
    seconds = time.perf_counter() - started
    return dict(
        images=len(names),
        classes=classes,
        compute=timing_summary(compute_ms, batch_size),
        seconds=seconds,
        end_to_end_images_per_s=len(names) / seconds if seconds and len(names) else 0.0,
    )
