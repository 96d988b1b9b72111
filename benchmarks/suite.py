"""`python -m benchmarks [--smoke] [--out DIR] [--gpu] [--only NAME,...]`: run the benchmarks, write the report."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks import aggregation, backends, pipeline, planning, preprocess, reactions, reference, threads
from benchmarks.common import FULL, SMOKE, REPO, Context, Row
from benchmarks.report import markdown, plot

# in the order they run: quick and independent first, the model last
MODULES = {
    "planning": planning,
    "operator": reactions,
    "aggregation": aggregation,
    "preprocess": preprocess,
    "pipeline": pipeline,
    "threads": threads,
    "backends": backends,
    "reference": reference,  # reads row 1's figures
}
ROW_ORDER = ["1", "2a", "2b", "3", "4a", "4b", "5", "6", "7", "8", "9", "10"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: checks that the suite runs (CI)")
    parser.add_argument(
        "--out",
        type=Path,
        help="where results.md and throughput.png go (default: benchmarks/, or a new temporary folder with --smoke)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        help="generated data and runs (default: benchmarks/work, "
        "or a temporary folder removed afterwards with --smoke)",
    )
    parser.add_argument("--gpu", action="store_true", help="also measure onnxruntime CUDA and TensorRT fp16 (row 7)")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(MODULES)}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    only = [name.strip() for name in args.only.split(",")] if args.only else list(MODULES)
    unknown = [name for name in only if name not in MODULES]
    if unknown:
        print(f"--only: unknown {', '.join(unknown)} (choose from {', '.join(MODULES)})", file=sys.stderr)
        return 2
    out = args.out or (Path(tempfile.mkdtemp(prefix="pnas-bench-")) if args.smoke else REPO / "benchmarks")
    scratch = None
    if args.work:
        work = args.work
    elif args.smoke:
        work = scratch = Path(tempfile.mkdtemp(prefix="pnas-bench-work-"))
    else:
        work = REPO / "benchmarks" / "work"
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(sizes=SMOKE if args.smoke else FULL, smoke=args.smoke, work=work, out=out, gpu=args.gpu)
    ctx.facts["date"] = time.strftime("%Y-%m-%d %H:%M %Z")
    ctx.facts["load"] = {"start": os.getloadavg()[0]}
    timings: dict[str, float] = {}
    ctx.facts["timings"] = timings
    rows: list[Row] = []
    failed = False
    started = time.perf_counter()
    try:
        for name, module in MODULES.items():
            if name not in only:
                rows += [Row.missing(number, name, "", "not run (--only)") for number in module.ROWS]
                continue
            begun = time.perf_counter()
            try:
                rows += module.run(ctx)
            except Exception as error:  # one broken benchmark must not hide the others' figures
                failed = True
                traceback.print_exc()
                why = f"failed: {type(error).__name__}: {error}"
                rows += [Row.missing(number, name, "", why[:300]) for number in module.ROWS]
            timings[name] = time.perf_counter() - begun
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    timings["total"] = time.perf_counter() - started
    ctx.facts["load"]["end"] = os.getloadavg()[0]
    rows.sort(key=lambda row: ROW_ORDER.index(row.number))
    (out / "results.md").write_text(markdown(ctx, rows))
    plot(ctx, out / "throughput.png")
    print(f"wrote {out / 'results.md'} and {out / 'throughput.png'} in {timings['total']:.0f} s", file=sys.stderr)
    for row in rows:
        verdict = {True: "met", False: "NOT MET", None: ""}[row.met]
        print(f"{row.number:>3}  {row.ratio_text or row.measured:<40} {row.target:<30} {verdict}")
    return 1 if failed else 0
