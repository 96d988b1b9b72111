"""Measurements that run in a fresh process of their own: `python -m benchmarks.worker KIND 'JSON options'`.

A fresh process per measurement keeps one runtime's thread pools (PyTorch's OpenMP, onnxruntime's)
from spinning while the other computes, and lets the caller pin it to one CPU. Each prints one JSON
line: what it measured.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np


def _rate(run_batch, batch: np.ndarray, timed_images: int) -> float:
    """Images/s of `run_batch` on the same batch, over at least `timed_images` images and 2 batches."""
    run_batch(batch)  # warm-up, not timed (as ais_bench's warmup)
    batches = max(2, math.ceil(timed_images / len(batch)))
    started = time.perf_counter()
    for _ in range(batches):
        run_batch(batch)
    return batches * len(batch) / (time.perf_counter() - started)


def backend(options: dict) -> dict:
    """1. One backend on the same inputs at each batch size: images/s, and its outputs for the parity check."""
    inputs = np.load(options["inputs"])
    if options["backend"] == "torch":
        import torch

        from pnas_jobs.stages.convert import load_model

        model, _, _ = load_model(options["model"], "random")  # the weights convert exported

        def run_batch(batch):
            with torch.inference_mode():
                return model(torch.from_numpy(batch)).numpy()

    else:
        from pnas_jobs.backends import registry

        session = registry.get("onnxruntime").open(
            model_path=Path(options["model_path"]), device=options["device"], batch_size=1, threads=options["threads"]
        )

        def run_batch(batch):
            return session.infer(batch)[0]

    rates = {}
    for batch_size in options["batch_sizes"]:
        batch = np.ascontiguousarray(inputs[np.arange(batch_size) % len(inputs)])
        rates[str(batch_size)] = _rate(run_batch, batch, options["timed_images"])
    np.save(options["outputs"], run_batch(np.ascontiguousarray(inputs[: options["batch_sizes"][0]])))
    return {"images_per_s": rates}


def loop(options: dict) -> dict:
    """2. The `ais_bench --loop` analogue: the infer stage's backend on one batch of the shard, no I/O."""
    from pnas_jobs import layout, records, transform
    from pnas_jobs.backends import registry
    from pnas_jobs.stages.infer import load_pixels, model_entry
    from pnas_jobs.storage import open_store

    store = open_store(options["run"])
    shard_record = records.read(store, layout.shard_record(options["index"]))
    work = Path(options["work"])
    pixels = load_pixels(store, shard_record, work)
    backend = registry.get(options["backend"])
    model_path = store.fetch(model_entry(records.read(store, layout.CONVERT_RECORD), backend, 1)["key"], work)
    config = transform.Preprocess.from_dict(shard_record["preprocess"])
    batch_size = options["batch_size"]
    batch = transform.normalize(np.asarray(pixels[np.arange(batch_size) % len(pixels)]), config)
    session = backend.open(
        model_path=model_path, device=options["device"], batch_size=batch_size, threads=options["threads"]
    )
    try:
        if options.get("barrier"):  # concurrent workers: time only while all of them compute
            session.infer(batch)
            _wait_for_all(Path(options["barrier"]), options["parties"])
        rate = _rate(lambda b: session.infer(b), batch, options["images"])
    finally:
        session.close()
    return {"images_per_s": rate}


def _wait_for_all(folder: Path, parties: int, timeout: float = 600.0) -> None:
    """A barrier between processes: each leaves a file, then waits until `parties` files are there."""
    import os

    (folder / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + timeout
    while len(list(folder.glob("ready-*"))) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(list(folder.glob('ready-*')))} of {parties} workers got ready")
        time.sleep(0.005)


def seed_preprocess(options: dict) -> dict:
    """4. The seed's imagenet_torch_preprocess.py re-implemented: per image, torchvision's transform, a float32 .bin."""
    import torch
    from PIL import Image
    from torchvision import transforms

    torch.set_num_threads(1)  # one process, one core: as the shard stage with --workers 1
    recipe = transforms.Compose(
        [
            transforms.Resize(363, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(331),
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]),
        ]
    )
    source, target = Path(options["images"]), Path(options["out"])
    target.mkdir(parents=True, exist_ok=True)
    files = sorted(p.name for p in source.iterdir() if p.suffix == ".JPEG")[: options["limit"] or None]
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # numpy 2 on np.array(tensor), as the seed writes it
    started, cpu = time.perf_counter(), time.process_time()
    for name in files:
        image = Image.open(source / name).convert("RGB")
        tensor = recipe(image)
        np.array(tensor).astype(np.float32).tofile(target / (name.split(".")[0] + ".bin"))
    return {"images": len(files), "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu}


def shard(options: dict) -> dict:
    """4. The shard stage (`shard.main`, what `pnas-eval shard` runs), and the CPU time it took.

    CPU seconds (this process and its decoding processes) count the work done, whatever else the
    machine runs at the same time; the shard_record's `seconds` is the stage's own wall time.
    """
    import os

    from pnas_jobs import transform
    from pnas_jobs.params import ShardParams
    from pnas_jobs.stages import shard as stage

    transform.resolve("pnasnet5large")  # imports timm (seconds of CPU): process start-up, not the stage's work
    before = os.times()
    shard_record = stage.main(
        ShardParams(
            root=options["run"],
            images=options["images"],
            labels=options["labels"],
            model="pnasnet5large",
            shards=1,
            index=0,
            workers=options["workers"],
            force=True,
        )
    )
    after = os.times()
    cpu = sum(getattr(after, k) - getattr(before, k) for k in ("user", "system", "children_user", "children_system"))
    return {"images": len(shard_record["images"]), "seconds": shard_record["seconds"], "cpu_seconds": cpu}


KINDS = {"backend": backend, "loop": loop, "seed-preprocess": seed_preprocess, "shard": shard}

if __name__ == "__main__":
    kind, options = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps(KINDS[kind](options)))
