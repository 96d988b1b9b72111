"""What the benchmarks share: sizes, the run context, result rows, timing, generated data, processes."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SEED_BIN_BYTES = 1_314_732  # the seed's float32 .bin of one 3x331x331 image (REFERENCE.md)


@dataclass(frozen=True)
class Sizes:
    """How much work each benchmark does: the full run (about 5 minutes here when the machine is otherwise
    idle) or the smoke run (under a minute)."""

    model: str
    batch_sizes: tuple[int, ...]  # 1. backends
    timed_images: int  # 1. at least this many images timed per backend and batch size
    shard_images: int  # 2. the shard the infer stage runs on
    infer_batch: int  # 2. its batch size
    photos: int  # 3, 4. generated JPEGs
    results: int  # 5. results scored
    result_shards: int  # 5. in this many shard tars
    seed_subset: int  # 5. results the seed-style parser scores (extrapolated when fewer than `results`)
    plan_shards: int  # 6.
    rounds: int  # measurements alternated this many times; the best round of each side counts (backends: one less)


FULL = Sizes(
    model="pnasnet5large",
    batch_sizes=(1, 4, 8),
    timed_images=4,
    shard_images=24,
    infer_batch=4,
    photos=600,
    results=50_000,
    result_shards=16,
    seed_subset=5_000,
    plan_shards=1_000,
    rounds=3,
)
SMOKE = Sizes(
    model="test_efficientnet",
    batch_sizes=(1, 2),
    timed_images=2,
    shard_images=4,
    infer_batch=2,
    photos=4,
    results=40,
    result_shards=2,
    seed_subset=20,
    plan_shards=1_000,
    rounds=1,
)


@dataclass
class Row:
    """One line of results.md: a figure, what it is measured against in the same run, and the target."""

    number: str  # "1", "2a", ...
    name: str
    measured: str
    baseline: str
    ratio: float | None  # measured / baseline, oriented as the target states it
    ratio_text: str  # how the ratio reads, e.g. "1.8x" or "0.25"
    target: str
    met: bool | None  # None: no target, or not measured
    notes: list[str] = field(default_factory=list)

    @classmethod
    def missing(cls, number: str, name: str, target: str, why: str, notes: list[str] | None = None) -> "Row":
        return cls(number, name, f"not measured: {why}", "", None, "", target, None, notes or [])


@dataclass
class Context:
    sizes: Sizes
    smoke: bool
    work: Path  # generated data and runs (benchmarks/work or a temporary folder)
    out: Path  # where results.md and throughput.png go
    gpu: bool = False
    facts: dict = field(default_factory=dict)  # figures one benchmark leaves for another (and for the plot)

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    @property
    def logs(self) -> Path:
        path = self.work / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path


def alternate(sides: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Run each side once per round, in turn, and keep each side's best (highest) figure.

    Alternating puts both sides of a ratio under the same machine load; the best round is the one
    least disturbed by other work.
    """
    best: dict[str, float] = {}
    for _ in range(max(1, rounds)):
        for name, measure in sides.items():
            value = measure()
            best[name] = max(best.get(name, -math.inf), value)
    return best


def fastest(measure: Callable[[], float], rounds: int) -> float:
    """The shortest of `rounds` timings (seconds)."""
    return min(measure() for _ in range(max(1, rounds)))


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# ---------------------------------------------------------------- processes


def python(args: list[str], log: Path, cpus: set[int] | None = None, env: dict | None = None) -> str:
    """Run `python ARGS` from the repository root (pinned to `cpus` if given); stdout, or an error with the log's tail."""
    with open(log, "w") as stderr:
        result = subprocess.run(
            [sys.executable, *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, **(env or {})},
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
    if result.returncode != 0:
        tail = log.read_text().strip().splitlines()[-8:]
        raise RuntimeError(f"python {' '.join(args[:3])} ... exited {result.returncode}: " + " | ".join(tail))
    return result.stdout


def pnas_eval(args: list[str], log: Path, cpus: set[int] | None = None) -> None:
    """A stage as the Jobs run it: `pnas-eval ARGS` in its own process."""
    python(["-m", "pnas_jobs", *args], log, cpus)


def worker(kind: str, options: dict, log: Path, cpus: set[int] | None = None) -> dict:
    """One measurement in a fresh process (benchmarks.worker); its JSON answer."""
    out = python(["-m", "benchmarks.worker", kind, json.dumps(options)], log, cpus)
    return json.loads(out.strip().splitlines()[-1])


# ---------------------------------------------------------------- generated data


def photo(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """An RGB image with the statistics of a photograph: 1/f^1.2 amplitude spectrum, correlated channels.

    Saved at JPEG quality 90 a 500x375 one is about 90 KB, like an ImageNet validation image, so it
    costs the decoder what a real photo costs (the demo's sample images are smaller and simpler).
    """
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    radius = np.sqrt(fx**2 + fy**2)
    radius[0, 0] = 1.0
    amplitude = radius**-1.2
    amplitude[0, 0] = 0.0
    fields = []
    for _ in range(3):
        spectrum = amplitude * np.exp(2j * np.pi * rng.random(amplitude.shape))
        plane = np.fft.irfft2(spectrum, s=(height, width))
        fields.append(plane / plane.std())
    light, warm, cool = fields
    base = rng.uniform(60, 190, 3)
    rgb = np.stack([light * 45 + warm * 18, light * 45 - warm * 8 + cool * 10, light * 45 - cool * 18], -1) + base
    return np.clip(rgb, 0, 255).astype(np.uint8)


# ImageNet validation images are mostly 500 wide; about a quarter are portrait
_SHAPES = [(500, 375), (500, 375), (500, 333), (375, 500), (500, 400), (400, 500), (500, 375), (500, 281)]


def photo_jpegs(folder: Path, count: int, seed: int = 0) -> tuple[Path, Path]:
    """`count` photo-like JPEGs named like ImageNet val, and their val_label.txt (generated once, kept)."""
    from PIL import Image

    labels = folder.parent / f"{folder.name}_labels.txt"
    stamp = folder / ".complete"
    if stamp.is_file() and stamp.read_text() == f"{count} {seed}":
        return folder, labels
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.JPEG"):
        stale.unlink()
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(count):
        width, height = _SHAPES[i % len(_SHAPES)]
        name = f"ILSVRC2012_val_{i + 1:08d}"
        buffer = io.BytesIO()
        Image.fromarray(photo(rng, width, height)).save(buffer, "JPEG", quality=90)
        (folder / f"{name}.JPEG").write_bytes(buffer.getvalue())
        lines.append(f"{name}.JPEG {int(rng.integers(0, 1000))}\n")
    labels.write_text("".join(lines))
    stamp.write_text(f"{count} {seed}")
    return folder, labels


def mean_file_bytes(folder: Path, pattern: str) -> float:
    sizes = [p.stat().st_size for p in folder.glob(pattern)]
    return sum(sizes) / len(sizes) if sizes else 0.0
