"""results.md (the table, how each figure was measured, what changed to reach the targets) and throughput.png."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from benchmarks.backends import GPU_BATCH_SIZES, GPU_COMMAND, SEED_310P3
from benchmarks.common import Context, Row, cpu_count

# What was changed in the pipeline because of these benchmarks: the figures that show each change are
# in the rows named, measured anew on every run.
CHANGES = """\
Measured on this machine while writing this suite, each against the code before the change (same data,
alternated runs); the rows above measure the result anew on every run.

- **Aggregation (row 5)**: 50,000 results took about 20 s to score (`np.array(text.split(),
  dtype=np.float32)` over all the text, about 360 us a result, and the `tarfile` module, about 70 us a
  member); now about 3.5 s when the machine is otherwise idle. `results.parse_rows` parses ais_bench's fixed `%f` layout vectorised: it
  checks the layout (only digits, `-`, `.`, single spaces; one point six places before each value's end;
  every row as wide as the first), gathers each value's last 8 bytes as one 64-bit word, turns the digits
  into an integer with SWAR arithmetic and computes `float32((integer * 1e6 + decimals) / 1e6)`: the
  float64 division is correctly rounded, like strtod, so the result is exactly `np.float32(text)`
  (tests/test_results.py checks it bit for bit; row 5 checks the JSON against the seed-style script's).
  Blocks of 32,768 values keep the arrays in the CPU cache; threads made it slower on these 2 CPUs, so
  there are none. Any other text (nan, inf, exponents, |x| >= 1e8, other widths) takes the previous
  parser and its error messages. `first_lines_from_tar` walks the 512-byte headers over a memory map
  (checksums checked in one numpy pass) and hands anything but plain files to `tarfile`.
- **Preprocessing (rows 4a, 4b)**: with `--workers 2` the decoding processes sent each 330 KB crop to
  the stage's process through a pipe (pickled): about 1.56x one worker. Each process now writes its crops
  straight into their slots of the shard file (`os.pwrite`; the stage's process reads each slot back in
  order with `os.pread`, checksums it and squeezes out the slots of images that failed): about 1.8x to
  2x. A first version shared the file as a memory map, which cost page faults and an `msync` of the
  whole shard; `pwrite` made one worker about 15% faster than that. `transform.load_rgb` no longer
  copies images that are already RGB (`convert("RGB")` only copied them). Per core, the shard stage went
  from about 1.2x the seed's recipe to about 1.3x-1.5x: decoding and the bicubic resize, which both do
  alike, are four fifths of the work. Output unchanged, byte for byte (tests/test_transform.py, tests/test_shard.py).
- **Writing results (rows 2a, 2b)**: the infer stage's writer thread built each tar header with `tarfile`
  (about 30 us) and formatted each image's 1000 scores with Python's `%` (about 200 us). `TarWriter`
  now patches one header template (byte-identical to `tarfile`'s GNU headers; long names still go through
  `tarfile`) and `format_rows` formats a batch at a time: a float32 times 1e6 is exact in float64, so
  rounding it half to even gives the six decimals `%f` prints; the digits are written with SWAR into one
  buffer (byte-identical to `%f`, checked in tests/test_results.py; nan, inf, |x| >= 1e8 and
  non-float32 scores keep Python's formatting). With an instant backend (row 2b) the stage went from
  about 1,900 to about 2,500 images/s at batch size 4 here.
- **Batch buffers (row 2b)**: the producer thread allocated a fresh float32 batch each time (84 MB at
  batch size 64 and 331 px, beyond malloc's reuse threshold, so every batch paid its page faults again);
  it now normalises into a ring of `queue size + 2` reused buffers, which is as many as can be in use.
- **Pipeline efficiency (row 2a)** needed no change on CPU: reading, normalising and writing already
  overlap compute in threads, and they cost well under 1 ms an image against about 350 ms of compute,
  so onnxruntime's default intra-op threads keep the cores.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _environment(ctx: Context) -> list[str]:
    import numpy
    import onnxruntime
    import torch

    cpu = "unknown CPU"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    timings = ctx.facts.get("timings", {})
    load = ctx.facts.get("load", {})
    return [
        f"Machine: {cpu}, {cpu_count()} CPUs, {memory:.0f} GiB; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, numpy {numpy.__version__}, torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}.",
        f"Load average (1 min) at the start and the end: {load.get('start', 0):.2f} and {load.get('end', 0):.2f} "
        "(other work on the machine slows both sides of a ratio alike, not always evenly).",
        f"Wall time: {timings.get('total', 0):.0f} s in all ("
        + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items() if name != "total")
        + ").",
    ]


def markdown(ctx: Context, rows: list[Row]) -> str:
    mode = (
        "`python -m benchmarks --smoke` (tiny sizes: these figures mean nothing)"
        if ctx.smoke
        else ("`python -m benchmarks` (`make bench`)")
    )
    lines = [
        "# Benchmarks",
        "",
        f"Written by {mode} on {ctx.facts.get('date', '')}. Every figure is a ratio of two things measured in "
        "this run, alternated round by round with the best round of each side kept, so it holds on a noisy "
        "machine; the absolute figures are this machine's. The model is "
        f"{ctx.sizes.model} with random weights (none can be downloaded here): speed does not depend on the weights.",
        "",
        *[f"- {line}" for line in _environment(ctx)],
        "",
        "| # | benchmark | measured | against (same run) | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        met = {True: "yes", False: "**no**", None: "-"}[row.met]
        lines.append(
            f"| {row.number} | {_cell(row.name)} | {_cell(row.measured)} | {_cell(row.baseline) or '-'} | "
            f"{_cell(row.ratio_text) or '-'} | {_cell(row.target)} | {met} |"
        )
    lines += ["", "![Throughput against batch size](throughput.png)", "", "## How each figure was measured", ""]
    for row in rows:
        lines.append(f"**{row.number}. {row.name}**")
        lines.append("")
        lines += [f"- {note}" for note in row.notes] or ["- (no notes)"]
        lines.append("")
    lines += ["## GPU against the seed's Ascend 310P3", "", _gpu_table(ctx), ""]
    if not ctx.smoke:  # figures from development, at full sizes: beside smoke-sized ones they would mislead
        lines += ["## What changed to reach the targets", "", CHANGES]
    return "\n".join(lines)


def _gpu_table(ctx: Context) -> str:
    gpu = ctx.facts.get("gpu_backends") or {}
    cpu = ctx.facts.get("cpu_backends") or {}
    head = (
        "| batch size | Ascend 310P3 (seed's table) | onnxruntime CUDA | TensorRT fp16 "
        "| onnxruntime CPU (this machine) |"
    )
    lines = [head, "|---|---|---|---|---|"]
    missing = "not measured" if not ctx.gpu else "-"
    for bs in GPU_BATCH_SIZES:
        cells = [f"{SEED_310P3[bs]} img/s"]
        for device in ("cuda", "tensorrt"):
            value = gpu.get(device, {}).get(bs)
            cells.append(f"{value:,.1f} img/s" if value else missing)
        value = cpu.get("onnxruntime", {}).get(bs)
        cells.append(f"{value:.2f} img/s" if value else "-")
        lines.append(f"| {bs} | " + " | ".join(cells) + " |")
    if not gpu:
        lines += [
            "",
            f"No GPU was lent to this run. To fill the GPU columns: `{GPU_COMMAND}` on a machine with an NVIDIA "
            "GPU and onnxruntime-gpu (the GPU jobs image has both); it measures onnxruntime CUDA and TensorRT "
            "fp16 at each batch size above.",
        ]
    return "\n".join(lines)


def plot(ctx: Context, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 6), dpi=110)
    series = [
        ("Ascend 310P3 (seed's table, not measured here)", SEED_310P3, dict(linestyle="--", marker="s", color="gray")),
    ]
    for device, label in (("cuda", "onnxruntime CUDA"), ("tensorrt", "TensorRT fp16")):
        rates = (ctx.facts.get("gpu_backends") or {}).get(device)
        if rates:
            series.append((f"{label} (measured)", rates, dict(marker="o")))
    cpu = ctx.facts.get("cpu_backends") or {}
    if cpu:
        cores = cpu_count()
        series.append(
            (f"onnxruntime CPU, {cores} cores (measured)", cpu["onnxruntime"], dict(marker="o", color="tab:blue"))
        )
        series.append(
            (f"PyTorch eager CPU, {cores} cores (measured)", cpu["torch"], dict(marker="o", color="tab:orange"))
        )
    for label, rates, style in series:
        sizes = sorted(rates)
        axes.plot(sizes, [rates[b] for b in sizes], label=label, **style)
    ceiling = ctx.facts.get("host_ceiling")
    if ceiling:
        best = max(ceiling, key=ceiling.get)
        label = f"host-side ceiling of the infer stage here (instant backend, bs{best}: {ceiling[best]:,.0f} img/s)"
        axes.axhline(ceiling[best], color="tab:green", linestyle=":", label=label)
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xticks(list(GPU_BATCH_SIZES))
    axes.set_xticklabels([str(b) for b in GPU_BATCH_SIZES])
    axes.set_xlabel("batch size")
    axes.set_ylabel("images / s (log)")
    axes.set_title(f"{ctx.sizes.model}: throughput against batch size" + (" (smoke sizes)" if ctx.smoke else ""))
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
