"""Stage 4, aggregate: every shard's results + labels -> result_bs<B>.json (the seed's format) and
report.json; or, for results made outside pnas-eval, one ais_bench TXT folder -> one JSON.

Everything is read and checked first, then every result of the run is published, or none: a
missing or stale shard, results made from another shard or model, a label outside the model's
classes or nothing to score at all stop the stage before it writes. Publishing removes the old
report first and writes the new one last (it lists each published file's checksum), and removes
the accuracy files of batch sizes this run does not have: the run's folder never mixes two inputs.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pnas_jobs import dataset, fidelity, layout, metric, records, results
from pnas_jobs.errors import UserError
from pnas_jobs.params import AggregateParams
from pnas_jobs.report import BatchReport, Report, Timing
from pnas_jobs.spec import FidelitySpec
from pnas_jobs.storage import StorageSettings, open_object, open_store

log = logging.getLogger(__name__)


_ACCURACY_JSON = re.compile(r"result_bs[0-9]+\.json")


def score(names: list[str], scores: np.ndarray, labels: metric.Labels, source: str) -> tuple[dict, np.ndarray]:
    """The seed's accuracy table for these results, and each image's label rank."""
    unknown = [n for n in names if n not in labels]
    if unknown:
        raise UserError(f"{len(unknown)} results have no label in {source} (e.g. {unknown[:3]})")
    if not names:
        raise UserError(f"no results to score against {source}")
    num_classes = scores.shape[1]
    try:
        metric.check_classes(labels, names, num_classes)
    except metric.LabelsError as error:
        raise UserError(f"{error} (the results have {num_classes} scores per image)") from None
    targets = np.array([labels[n] for n in names], dtype=np.int64) + metric.label_offset(num_classes)
    positions = metric.ranks(scores, targets)
    return metric.accuracy_table(len(names), num_classes, metric.hits(positions)), positions


def score_folder(results_dir: str, labels_uri: str, output: str) -> dict:
    """`pnas-eval aggregate --results DIR`: score a plain ais_bench output folder like the seed."""
    folder = Path(results_dir)
    if not folder.is_dir():
        raise UserError(f"--results: {results_dir} is not a folder")
    labels = dataset.read_labels(labels_uri)
    try:
        files, scores = results.parse_first_lines(results.first_lines_from_dir(folder))
    except results.ScoreFormatError as error:
        raise UserError(f"--results: {error}") from None
    if not files:
        inner = sorted(d.name for d in folder.iterdir() if d.is_dir() and any(d.glob(f"*{results.TXT_SUFFIX}")))
        if inner:
            raise UserError(
                f"--results: {results_dir} holds no TXT results, but its folder {inner[0]} does"
                f"{f' (and {len(inner) - 1} more)' if len(inner) > 1 else ''}: pass the ais_bench output folder itself"
            )
        raise UserError(f"--results: no ais_bench TXT results (<image>{results.TXT_SUFFIX}) in {results_dir}")
    table, _ = score([results.image_name(f) for f in files], scores, labels, labels_uri)
    store, key = open_object(output)
    store.write_text(key, metric.seed_json(table))
    return table


def _combined_timing(markers: list[dict], batch_size: int) -> Timing:
    count = sum(m["compute"].get("count", 0) for m in markers)
    if not count:
        return Timing()
    timed = [m for m in markers if m["compute"]["count"]]
    mean = sum(m["compute"]["mean"] * m["compute"]["count"] for m in timed) / count
    images = sum(m["images"] for m in markers)
    seconds = sum(m["seconds"] for m in markers)
    e2e = images / seconds if seconds else 0.0
    compute = 1000.0 * batch_size / mean
    return Timing(
        batches=count,
        mean_ms=mean,
        min_ms=min(m["compute"]["min"] for m in timed),
        max_ms=max(m["compute"]["max"] for m in timed),
        throughput=compute,
        end_to_end=e2e,
        pipeline_efficiency=e2e / compute if compute else 0.0,
    )


def _read_batch_size(store, batch_size: int, shards: list[dict], models: set[str] | None, work: Path):
    """Names, scores and markers of every shard at this batch size; UserError unless all are there and current."""
    return _read_results(
        store, lambda index: layout.result_marker(batch_size, index), f"batch size {batch_size}", shards, models, work
    )


def _read_results(
    store, marker_key: Callable[[int], str], what: str, shards: list[dict], models: set[str] | None, work: Path
):
    """Names, scores and markers of these shards' results (`marker_key`: where a shard's record is)."""
    markers, missing, stale = [], [], []
    for shard in shards:
        index = shard["index"]
        marker = records.read(store, marker_key(index))
        if marker is None:
            missing.append(index)
        elif marker["inputs"].get("shard") != records.shard_identity(shard) or (
            models is not None and marker["inputs"].get("model_sha256") not in models
        ):
            stale.append(index)  # made from another shard or another model
        else:
            markers.append(marker)
    if missing or stale:
        parts = [f"missing for shards {missing}" if missing else "", f"stale for shards {stale}" if stale else ""]
        raise UserError(
            f"results for {what} are {' and '.join(p for p in parts if p)}: "
            "run the evaluation again (or their infer units); nothing was published"
        )
    names, blocks = [], []
    for shard, marker in zip(shards, markers):
        path = store.fetch(marker["tar"]["key"], work)
        if records.sha256_file(path) != marker["tar"]["sha256"]:
            raise UserError(
                f"{marker['tar']['key']} does not match its checksum: run the evaluation again (its infer unit "
                "makes damaged results again); nothing was published"
            )
        files, scores = results.parse_first_lines(results.first_lines_from_tar(path))
        shard_names = [results.image_name(f) for f in files]
        if sorted(shard_names) != sorted(shard["images"]):
            raise UserError(
                f"{marker['tar']['key']} holds {len(files)} results for the {len(shard['images'])} images "
                f"of shard {shard['index']}: run the evaluation again (or that infer unit); nothing was published"
            )
        names += shard_names
        blocks.append(scores)
        if path.is_relative_to(work):
            path.unlink()
    if len(set(names)) != len(names):
        raise UserError(f"an image appears in two shards of {what}; re-run the shard stage")
    width = {b.shape[1] for b in blocks if len(b)}
    if len(width) > 1:
        raise UserError(f"shards of {what} disagree on the number of classes: {sorted(width)}")
    scores = np.concatenate([b for b in blocks if len(b)]) if names else np.zeros((0, 0), np.float32)
    return names, scores, markers


def _batch_report(batch_size: int, names, scores, markers, labels, labels_uri) -> tuple[BatchReport, dict]:
    """One batch size's report and its accuracy table (the seed's JSON)."""
    table, _ = score(names, scores, labels, labels_uri)
    accuracy = metric.percentages(table)
    timing = _combined_timing(markers, batch_size)
    return BatchReport(
        batch_size=batch_size,
        images=len(names),
        top1=accuracy.get("top1"),
        top5=accuracy.get("top5"),
        throughput=round(timing.throughput, 2),
        json_=layout.accuracy_json(batch_size),
        classes=int(scores.shape[1]) if len(names) else 0,
        accuracy=accuracy,
        timing=timing,
        shards=[
            {k: m[k] for k in ("index", "images", "seconds", "end_to_end_images_per_s", "compute")} for m in markers
        ],
        backend=markers[0]["backend"] if markers else None,
        device=markers[0]["device"] if markers else None,
    ), table


class Reference:
    """The fidelity reference's results on the sampled shards, read and checked like a batch size's."""

    def __init__(self, store, sample: tuple[int, ...], shard_records: list[dict], models, work: Path):
        outside = [i for i in sample if i >= len(shard_records)]
        if outside:
            raise UserError(
                f"--reference-sample: shards {outside} are not shards of this run ({len(shard_records)} shards)"
            )
        chosen = [shard_records[i] for i in sample]
        self.names, self.scores, markers = _read_results(
            store, layout.reference_marker, "the fidelity reference", chosen, models, work
        )
        if not self.names:
            raise UserError(
                f"the fidelity sample (shards {list(sample)}) holds no usable image: raise spec.fidelity.images "
                "(see report.json's shards for what failed); nothing was published"
            )
        self.sample, self.backend = sample, markers[0]["backend"]
        self.device = markers[0]["device"]
        self.seconds = sum(m["seconds"] for m in markers)

    def compare(
        self, batch: BatchReport, names: list[str], scores: np.ndarray, labels: metric.Labels, max_drop: float
    ) -> None:
        """Put this batch size's fidelity (the same images' scores, row for row) in its report and result."""
        row_of = {name: row for row, name in enumerate(names)}
        deployed = scores[[row_of[n] for n in self.names]] if self.names else scores[:0]
        if deployed.shape[1:] != self.scores.shape[1:]:
            raise UserError(
                f"the fidelity reference gives {self.scores.shape[1]} scores per image and batch size {batch.batch_size} "
                f"{deployed.shape[1]}: not the same model; nothing was published"
            )
        targets = np.array([labels[n] for n in self.names], dtype=np.int64) + metric.label_offset(deployed.shape[1])
        batch.fidelity = fidelity.compare(self.names, deployed, self.scores, targets, max_drop, batch.batch_size)
        batch.fidelity.update(reference=self.backend, referenceDevice=self.device)
        batch.top1_agreement, batch.top1_drop = batch.fidelity["top1Agreement"], batch.fidelity["top1Drop"]
        batch.fidelity_ok = batch.fidelity["ok"]

    def check(self, per_batch: list[BatchReport], max_drop: float) -> dict:
        failing = [b.batch_size for b in per_batch if not b.fidelity_ok]
        return {
            "what": "each batch size's deployed outputs against the reference's on the same real images "
            "(export, conversion precision, runtime; not preprocessing: both get the same tensors)",
            "reference": self.backend,
            "device": self.device,
            "shards": list(self.sample),
            "images": len(self.names),
            "maxTop1Drop": max_drop,
            "ok": not failing,
            "failingBatchSizes": failing,
            "seconds": self.seconds,
        }


def _checks(convert: dict, reference: Reference | None, per_batch: list[BatchReport], max_drop: float | None) -> dict:
    """Which check looked at what: convert's parity (PyTorch against ONNX on random inputs) and the fidelity."""
    parity = convert.get("parity") or {}
    checks = {
        "conversionParity": {
            "what": "PyTorch against the exported ONNX on random inputs, at convert (export errors only)",
            "samples": parity.get("samples"),
            "tolerance": parity.get("tolerance"),
            "ok": parity.get("passed"),
            "maxAbsDiff": max((v["max_abs_diff"] for v in parity.values() if isinstance(v, dict)), default=None),
        }
    }
    if reference is not None:
        checks["fidelity"] = reference.check(per_batch, max_drop)
    return checks


def _shard_records(store, shards: int) -> list[dict]:
    found, missing = [], []
    for index in range(shards):
        record = records.read(store, layout.shard_record(index))
        (found.append(record) if record else missing.append(index))
    if missing:
        raise UserError(f"shards {missing} do not exist under {store.uri}: run the shard stage; nothing was published")
    return found


def _dataset_report(shard_records: list[dict], labels: dict, labels_uri: str, limit: int) -> dict:
    failed = [dict(f, shard=m["index"]) for m in shard_records for f in m["failed"]]
    selected = {n for m in shard_records for n in m["images"]} | {dataset.image_name(f["image"]) for f in failed}
    return dict(
        labels=labels_uri,
        images=len(selected),
        scored=sum(len(m["images"]) for m in shard_records),
        failed=failed,
        # with a limit, most labels have no selected image by design
        labels_without_image=sorted(set(labels) - selected)[:50] if not limit else None,
        labels_without_image_count=len(set(labels) - selected) if not limit else None,
        preprocess=shard_records[0]["preprocess"],
    )


def _check_something_scored(data: dict) -> None:
    """Zero scored images is no accuracy at all: say why instead of publishing "Number of images 0"."""
    if data["scored"]:
        return
    failed = data["failed"]
    unlabelled = sum(1 for f in failed if f["error"].startswith("no label"))
    example = f" (e.g. {failed[0]['image']}: {failed[0]['error']})" if failed else ""
    raise UserError(
        f"no image could be scored: of {data['images']} images, {len(failed) - unlabelled} could not be decoded "
        f"and {unlabelled} have no label in {data['labels']}{example}; nothing was published"
    )


def _publish(store, tables: dict[int, dict], report: Report) -> None:
    """The run's results, all of them: the old report goes first and the new one comes last, so that a
    report always vouches for the accuracy files beside it; files of other batch sizes are removed."""
    store.delete(layout.REPORT)
    for row in report.results:
        text = metric.seed_json(tables[row.batch_size])
        store.write_text(layout.accuracy_json(row.batch_size), text)
        row.json_sha256 = hashlib.sha256(text.encode()).hexdigest()
    current = {layout.accuracy_json(b) for b in tables}
    for key in store.list():
        if _ACCURACY_JSON.fullmatch(key) and key not in current:
            log.info(
                "aggregate: removing %s: this run has no batch size %s", key, key[len("result_bs") : -len(".json")]
            )
            store.delete(key)
    records.write(store, layout.REPORT, report.dump())


def _model_shas(convert: dict) -> set[str] | None:
    return {entry["sha256"] for entry in records.model_files(convert)} if convert else None


def main(p: AggregateParams) -> dict:
    if p.results is not None:
        table = score_folder(p.results, p.labels, p.output)
        print(metric.seed_json(table))
        return table
    started = time.perf_counter()
    settings = StorageSettings.from_env()
    store = open_store(p.root, settings)
    labels = dataset.read_labels(p.labels, settings)
    convert = records.read(store, layout.CONVERT_RECORD) or {}
    shard_records = _shard_records(store, p.shards)
    data = _dataset_report(shard_records, labels, p.labels, p.limit)
    _check_something_scored(data)
    per_batch, tables = [], {}
    max_drop = p.max_top1_drop if p.max_top1_drop is not None else FidelitySpec.model_fields["max_top1_drop"].default
    with tempfile.TemporaryDirectory(prefix="pnas-aggregate-") as tmp:
        sample = p.reference_sample
        reference = Reference(store, sample, shard_records, _model_shas(convert), Path(tmp)) if sample else None
        for batch_size in sorted(p.batch_sizes):  # everything is read and checked before anything is written
            names, scores, markers = _read_batch_size(store, batch_size, shard_records, _model_shas(convert), Path(tmp))
            result, tables[batch_size] = _batch_report(batch_size, names, scores, markers, labels, p.labels)
            if reference is not None:
                reference.compare(result, names, scores, labels, max_drop)
            per_batch.append(result)
    report = Report(
        run=store.uri,
        model={
            k: convert.get(k)
            for k in ("model", "num_classes", "label_offset", "input_size", "opset", "weights", "parity")
        }
        | {"onnx_sha256": convert.get("onnx", {}).get("sha256"), "om": convert.get("om")},
        dataset=data,
        shards=[
            {"index": m["index"], "images": len(m["images"]), "failed": len(m["failed"]), "seconds": m["seconds"]}
            for m in shard_records
        ],
        results=per_batch,
        timings=dict(
            convert_s=convert.get("timings"),
            shard_s=sum(m["seconds"] for m in shard_records),
            infer_s={str(b.batch_size): sum(s["seconds"] for s in b.shards) for b in per_batch},
            aggregate_s=time.perf_counter() - started,
        ),
        checks=_checks(convert, reference, per_batch, max_drop),
    )
    _publish(store, tables, report)
    if p.summary_file:
        Path(p.summary_file).write_text(report.summary().model_dump_json(by_alias=True, exclude_none=True))
    for row in per_batch:
        log.info(
            "aggregate bs%d: %d %s, top-1 %s%%, top-5 %s%%",
            row.batch_size,
            row.images,
            "image" if row.images == 1 else "images",
            row.top1,
            row.top5,
        )
        if row.fidelity:
            log.log(
                logging.INFO if row.fidelity_ok else logging.WARNING,
                "fidelity bs%d: top-1 agreement %.2f%% with %s on %d images, top-1 drop %.2f points (max %g): %s",
                row.batch_size,
                row.top1_agreement,
                row.fidelity["reference"],
                row.fidelity["images"],
                row.top1_drop,
                max_drop,
                "ok" if row.fidelity_ok else "FAILED",
            )
    return report.dump()
