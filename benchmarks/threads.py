"""8. CPU threads in shared nodes: two inference processes at once, each with intra-op threads matched to
its share of the CPUs (what an infer pod does with its CPU request or limit, `params.cpu_share`), against
two with onnxruntime's default (one thread per core each, as a pod sized to the whole node would run).

Both sides run `benchmarks.worker loop` (the infer stage's backend on one batch of the shard) twice at
once, in the same run and on the same machine; a barrier starts the timing only when both processes
have loaded the model and warmed up, so they compete for the whole measurement. The figure is the two
processes' images per second added up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import REPO, Context, Row, alternate, cpu_count
from benchmarks.pipeline import prepared

ROWS = ("8",)  # the row of results.md this module measures
PROCESSES = 2


def _together(ctx: Context, run: Path, threads: int, images: int) -> float:
    """Images/s of PROCESSES loop workers started at once, each with `threads` (0: the runtime's default)."""
    with tempfile.TemporaryDirectory(dir=ctx.work) as tmp:
        options = dict(
            run=str(run),
            index=0,
            batch_size=ctx.sizes.infer_batch,
            backend="onnxruntime",
            device="cpu",
            threads=threads,
            images=images,
            barrier=tmp,
            parties=PROCESSES,
        )
        logs = [open(ctx.logs / f"threads-{threads}-{n}.log", "w") for n in range(PROCESSES)]
        workers = []
        for n, log in enumerate(logs):
            (Path(tmp) / f"work-{n}").mkdir()
            command = [
                sys.executable,
                "-m",
                "benchmarks.worker",
                "loop",
                json.dumps({**options, "work": f"{tmp}/work-{n}"}),
            ]
            workers.append(subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True))
        answers = [worker.communicate()[0] for worker in workers]
        for log in logs:
            log.close()
    if any(worker.returncode for worker in workers):
        raise RuntimeError(f"a loop worker failed: see {ctx.logs}/threads-{threads}-*.log")
    return sum(json.loads(answer.strip().splitlines()[-1])["images_per_s"] for answer in answers)


def run(ctx: Context) -> list[Row]:
    sizes = ctx.sizes
    shared = prepared(ctx)
    cpus = cpu_count()
    share = max(1, cpus // PROCESSES)
    images = max(2 * sizes.infer_batch, sizes.timed_images * 2)
    ctx.log(
        f"8. {PROCESSES} processes at once: {share} thread(s) each vs the runtime default, {sizes.rounds} round(s) ..."
    )
    best = alternate(
        {
            "matched": lambda: _together(ctx, shared["root"], share, images),
            "default": lambda: _together(ctx, shared["root"], 0, images),
        },
        sizes.rounds,
    )
    ratio = best["matched"] / best["default"]
    notes = [
        f"{PROCESSES} `benchmarks.worker loop` processes at once on this machine's {cpus} CPUs, onnxruntime CPU, "
        f"{sizes.model}, batch size {sizes.infer_batch}, at least {images} images each after a shared start "
        f"(a file barrier once both warmed up); best of {sizes.rounds} alternated round(s).",
        f"Matched: intra_op_num_threads = {share} each ({cpus} CPUs / {PROCESSES}: what `cpu_share()` gives a pod "
        f"that requested {share} CPU(s)). Default: intra_op_num_threads unset, so each process starts one "
        f"thread per core ({os.cpu_count()} logical CPUs here) and the two compete for them.",
    ]
    return [
        Row(
            "8",
            f"CPU threads of concurrent infer processes: matched to their share vs the runtime default ({sizes.model})",
            f"{best['matched']:.2f} img/s ({PROCESSES} x {share} thread(s))",
            f"{best['default']:.2f} img/s ({PROCESSES} x default threads)",
            ratio,
            f"{ratio:.2f}x",
            ">= 1.0 (no slower than oversubscribing)",
            ratio >= 1.0,
            notes,
        )
    ]
