"""5. Aggregation: scoring 50,000 results against a per-file parser in the seed's style.

The results are generated as ais_bench writes them (one line of 1000 `%f` scores per image) and laid
out as a finished run: shard tars, their markers and shard manifests. `pnas-eval aggregate` (its
`run`, in this process) checks and reads every tar, parses, ranks and writes the seed's JSON and
report.json. The baseline is the seed's vision_metric_ImageNet.py as tests/support/seed_metric.py
re-implements it (open each file, readline, split, np.float32 each value, argsort), on an ais_bench
folder of the same results; when that folder holds fewer results, its time is scaled to the full
count (it is linear: one file after another), which the row says.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, Context, Row, fastest

BATCH_SIZE = 4

ROWS = ("5",)  # the rows of results.md this module measures


def _seed_metric():
    """tests/support/seed_metric.py: the seed's script as the tests pin it (one reference, not two)."""
    spec = importlib.util.spec_from_file_location("seed_metric", REPO / "tests" / "support" / "seed_metric.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generate(folder: Path, count: int, shards: int, subset: int) -> dict:
    """A finished run of `count` results in `shards` shard tars, and an ais_bench folder of the first `subset`."""
    from pnas_jobs import dataset, layout, records, results
    from pnas_jobs.storage import open_store

    paths = {"run": folder / "run", "labels": folder / "val_label.txt", "folder": folder / "ais_bench"}
    stamp = folder / ".complete"
    key = f"{count} {shards} {subset} v3"
    if stamp.is_file() and stamp.read_text() == key:
        return paths
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    paths["folder"].mkdir(parents=True)
    store = open_store(paths["run"])
    rng = np.random.default_rng(5)
    names = [f"ILSVRC2012_val_{i + 1:08d}" for i in range(count)]
    labels = rng.integers(0, 1000, count)
    paths["labels"].write_text("".join(f"{n}.JPEG {c}\n" for n, c in zip(names, labels.tolist())))
    for index in range(shards):
        start, stop = dataset.shard_bounds(count, shards, index)
        scores = (rng.standard_normal((stop - start, 1000)) * 2).astype(np.float32)
        hits = rng.random(stop - start) < 0.8  # most labels score highest, as a good classifier's would
        rows = np.arange(stop - start)
        scores[rows[hits], labels[start:stop][hits]] += 10.0
        tar = paths["run"] / layout.result_tar(BATCH_SIZE, index)
        tar.parent.mkdir(parents=True, exist_ok=True)
        writer = results.TarWriter(tar)
        writer.add_rows(names[start:stop], scores)
        writer.close()
        for name, row in zip(names[start : min(stop, subset)], scores):
            (paths["folder"] / f"{name}{results.TXT_SUFFIX}").write_bytes(results.format_scores(row))
        pixels = hashlib.sha256(f"shard {index}".encode()).hexdigest()  # stands for the shard's checksum
        shard_record = dict(
            index=index,
            shards=shards,
            images=names[start:stop],
            labels=labels[start:stop].tolist(),
            failed=[],
            pixels={"key": layout.shard_pixels(index), "sha256": pixels, "bytes": 0},
            seconds=0.0,
            preprocess={
                "input_size": 331,
                "crop_pct": 0.911,
                "interpolation": "bicubic",
                "mean": [0.5] * 3,
                "std": [0.5] * 3,
            },
            # as the shard stage writes it: each image's version token and the sha256 of its bytes
            sources={
                f"{n}.JPEG": [f"110000:{i}:{i}", hashlib.sha256(n.encode()).hexdigest()]
                for i, n in enumerate(names[start:stop])
            },
        )
        records.write(store, layout.shard_record(index), shard_record)
        records.write(
            store,
            layout.result_marker(BATCH_SIZE, index),
            dict(
                index=index,
                images=stop - start,
                seconds=1.0,
                end_to_end_images_per_s=float(stop - start),
                inputs={"shard": records.shard_identity(shard_record)},
                backend="onnxruntime",
                device="cpu",
                compute={"count": 1, "mean": 1.0, "min": 1.0, "max": 1.0, "throughput": 4000.0},
                tar={"key": layout.result_tar(BATCH_SIZE, index), "sha256": records.sha256_file(tar)},
            ),
        )
    stamp.write_text(key)
    return paths


def _previous_parser(lines: list[bytes]) -> np.ndarray:
    """How results.parse_first_lines parsed before the vectorised path: numpy over the split text."""
    return np.array(b" ".join(lines).split(), dtype=np.float32)


def run(ctx: Context) -> list[Row]:
    from pnas_jobs.params import AggregateParams
    from pnas_jobs.stages import aggregate

    sizes = ctx.sizes
    count, subset = sizes.results, min(sizes.seed_subset, sizes.results)
    ctx.log(f"5. aggregation: generating {count:,} results (kept for the next run) ...")
    paths = generate(ctx.work / f"aggregate-{count}", count, sizes.result_shards, subset)
    seed = _seed_metric()

    ctx.log(f"5. aggregate stage on {count:,} results, seed-style parser on {subset:,}, {sizes.rounds} round(s) ...")
    # CPU seconds of this (single-threaded) process: the wall time of an idle machine, whatever else runs here
    stage_s = seed_s = folder_s = stage_wall = float("inf")
    for _ in range(sizes.rounds):  # alternated; the fastest round of each counts
        cpu, wall = time.process_time(), time.perf_counter()
        aggregate.main(
            AggregateParams(
                root=str(paths["run"]),
                labels=str(paths["labels"]),
                batch_sizes=(BATCH_SIZE,),
                shards=sizes.result_shards,
            )
        )
        stage_s, stage_wall = min(stage_s, time.process_time() - cpu), min(stage_wall, time.perf_counter() - wall)
        cpu = time.process_time()
        seed_json = seed.seed_score(paths["folder"], paths["labels"])
        seed_s = min(seed_s, time.process_time() - cpu)
        cpu = time.process_time()
        table = aggregate.score_folder(str(paths["folder"]), str(paths["labels"]), str(ctx.work / "folder.json"))
        folder_s = min(folder_s, time.process_time() - cpu)
    same_json = json.dumps(table) == seed_json

    from pnas_jobs import layout, metric, results

    lines = [line for _, line in results.first_lines_from_dir(paths["folder"])]
    previous_s = fastest(lambda: _cpu_seconds(lambda: _previous_parser(lines)), sizes.rounds)
    current_s = fastest(lambda: _cpu_seconds(lambda: results.parse_rows(lines)), sizes.rounds)

    scale = count / subset
    seed_full = seed_s * scale
    speedup = seed_full / stage_s
    accuracy = metric.percentages(json.loads((paths["run"] / layout.accuracy_json(BATCH_SIZE)).read_text()))
    notes = [
        f"`pnas-eval aggregate` (in-process `aggregate.main`) over {count:,} results in {sizes.result_shards} shard tars "
        f"(about {sum(p.stat().st_size for p in (paths['run'] / 'results').rglob('*.tar')) / 1e6:,.0f} MB of text): "
        "checksums, tar reading, parsing, ranking, the seed's JSON and report.json. Times are CPU seconds of "
        "this single-threaded process (what an idle machine takes; other work on the machine does not count), "
        f"fastest of {sizes.rounds} alternated round(s); the stage's fastest wall time was {stage_wall:.2f} s.",
        (
            f"The seed-style parser scored the first {subset:,} of the same results (an ais_bench folder) in "
            f"{seed_s:.2f} s; {seed_full:.1f} s for {count:,} is that time x {scale:g} (extrapolated)."
            if scale != 1
            else f"The seed-style parser scored the same {count:,} results (an ais_bench folder) in {seed_s:.2f} s."
        ),
        f"Same files, same work: `pnas-eval aggregate --results` on that folder took {folder_s:.2f} s against the "
        f"seed-style {seed_s:.2f} s ({seed_s / folder_s:.1f}x); its JSON equals the seed-style JSON byte for byte: "
        f"{'yes' if same_json else 'NO'}.",
        f"Parsing alone, {len(lines):,} lines: previous parser (numpy over the split text) {previous_s:.2f} s, "
        f"vectorised `%f` parser {current_s:.2f} s ({previous_s / current_s:.1f}x).",
        f"The generated results score top-1 {accuracy['top1']}%, top-5 {accuracy['top5']}% (about 80% of the "
        "labels were given the highest score).",
    ]
    met = stage_s < 5.0 and speedup >= 3.0 and same_json
    return [
        Row(
            "5",
            f"Aggregation: score {count:,} results (1000 `%f` scores each) vs a per-file parser in the seed's style",
            f"{stage_s:.2f} s (CPU)",
            f"{seed_full:.1f} s (CPU" + (", extrapolated)" if scale != 1 else ")"),
            speedup,
            f"{speedup:.1f}x",
            "< 5 s and >= 3x",
            met,
            notes,
        )
    ]


def _cpu_seconds(action) -> float:
    started = time.process_time()
    action()
    return time.process_time() - started
