"""1. Inference backends: onnxruntime (the simplified ONNX the convert stage wrote) against PyTorch eager.

Same weights (the convert stage's random initialisation, seed 0, which it exported), same inputs (the
shard's normalised crops), per batch size; each backend in its own process, so that one runtime's
idle threads do not spin while the other computes. A parity check compares their outputs.

7. With `--gpu`: the same onnxruntime backend on CUDA and on TensorRT (fp16), per batch size,
beside the seed's Ascend 310P3 table.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import Context, Row, worker
from benchmarks.pipeline import prepared

# The seed's table on Ascend 310P3 (REFERENCE.md): batch size -> img/s
SEED_310P3 = {1: 66.3, 4: 203.3, 8: 177.7, 16: 164.3, 32: 154.4, 64: 148.5}
GPU_BATCH_SIZES = (1, 4, 8, 16, 32, 64)
GFLOP_PER_IMAGE = 50.0  # pnasnet5large at 331: 25.04 GMACs

ROWS = ("1", "7")  # the rows of results.md this module measures


def _inputs(ctx: Context, shared: dict, folder: Path) -> Path:
    from pnas_jobs import transform
    from pnas_jobs.stages import infer
    from pnas_jobs.storage import open_store

    shard = shared["shard"]
    crops = np.asarray(infer.load_pixels(open_store(shared["root"]), shard, folder))
    batch = transform.normalize(crops, transform.Preprocess.from_dict(shard["preprocess"]))
    path = folder / "inputs.npy"
    np.save(path, batch)
    return path


def _measure(ctx: Context, backend: str, shared: dict, inputs: Path, folder: Path, device: str = "cpu") -> dict:
    model_path = shared["root"] / shared["convert"]["onnx"]["key"]
    options = dict(
        backend=backend,
        device=device,
        threads=0,
        model=ctx.sizes.model,
        model_path=str(model_path),
        inputs=str(inputs),
        outputs=str(folder / f"outputs-{backend}-{device}.npy"),
        batch_sizes=list(ctx.sizes.batch_sizes if device == "cpu" else GPU_BATCH_SIZES),
        timed_images=ctx.sizes.timed_images if device == "cpu" else 256,
        work=str(folder),
    )
    answer = worker("backend", options, ctx.logs / f"backend-{backend}-{device}.log")
    return {int(k): v for k, v in answer["images_per_s"].items()}


def run(ctx: Context) -> list[Row]:
    sizes = ctx.sizes
    shared = prepared(ctx)
    rounds = max(1, sizes.rounds - 1)  # the longest benchmark, and no target to meet
    ctx.log(f"1. onnxruntime vs PyTorch eager, batch sizes {list(sizes.batch_sizes)}, {rounds} round(s) ...")
    with tempfile.TemporaryDirectory(dir=ctx.work) as tmp:
        folder = Path(tmp)
        inputs = _inputs(ctx, shared, folder)
        ort: dict[int, float] = {}
        torch: dict[int, float] = {}
        for _ in range(rounds):  # alternated; the best round per batch size counts
            for best, backend in ((ort, "onnxruntime"), (torch, "torch")):
                for bs, rate in _measure(ctx, backend, shared, inputs, folder).items():
                    best[bs] = max(best.get(bs, 0.0), rate)
        diff = float(
            np.abs(np.load(folder / "outputs-onnxruntime-cpu.npy") - np.load(folder / "outputs-torch-cpu.npy")).max()
        )
    ctx.facts["cpu_backends"] = {"onnxruntime": ort, "torch": torch}
    ratios = {bs: ort[bs] / torch[bs] for bs in sizes.batch_sizes}
    worst = min(ratios.values())
    per_bs = "; ".join(f"bs{bs} {ort[bs]:.2f} vs {torch[bs]:.2f} ({ratios[bs]:.2f}x)" for bs in sizes.batch_sizes)
    notes = [
        f"Per batch size, onnxruntime vs PyTorch img/s: {per_bs}.",
        f"Each backend in its own process with its default threads, one warm-up batch, then at least "
        f"{sizes.timed_images} images and 2 batches timed; best of {rounds} alternated round(s). "
        f"Largest |onnxruntime - PyTorch| over the first batch's scores: {diff:.2g} (same weights, same inputs).",
    ]
    if sizes.model == "pnasnet5large":
        best_rate = max(ort.values())
        notes.append(
            f"At about {GFLOP_PER_IMAGE:.0f} GFLOP per image, onnxruntime's best ({best_rate:.2f} img/s) is "
            f"{best_rate * GFLOP_PER_IMAGE:.0f} GFLOP/s on this machine's CPUs."
        )
    return [
        Row(
            "1",
            f"Inference backends: onnxruntime (simplified ONNX) vs PyTorch eager, CPU ({sizes.model})",
            ", ".join(f"bs{bs} {ort[bs]:.2f}" for bs in sizes.batch_sizes) + " img/s",
            ", ".join(f"bs{bs} {torch[bs]:.2f}" for bs in sizes.batch_sizes) + " img/s",
            worst,
            f"{min(ratios.values()):.2f}x to {max(ratios.values()):.2f}x",
            "none (faster is better)",
            None,
            notes,
        ),
        *gpu_rows(ctx, shared),
    ]


GPU_COMMAND = "python -m benchmarks --gpu"  # on a machine with an NVIDIA GPU, onnxruntime-gpu and TensorRT


def gpu_rows(ctx: Context, shared: dict) -> list[Row]:
    seed = ", ".join(f"bs{bs} {v}" for bs, v in SEED_310P3.items())
    name = "GPU throughput per batch size: onnxruntime CUDA and TensorRT fp16 (seed: Ascend 310P3)"
    target = f"beside the seed's 310P3 ({seed} img/s)"
    if not ctx.gpu:
        why = [f"To measure: `{GPU_COMMAND}` on a machine with an NVIDIA GPU and onnxruntime-gpu (CUDA, TensorRT)."]
        return [Row.missing("7", name, target, "no GPU in this session", why)]
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        return [Row.missing("7", name, target, f"this onnxruntime has no CUDA provider ({', '.join(available)})")]
    results: dict[str, dict[int, float]] = {}
    errors = []
    with tempfile.TemporaryDirectory(dir=ctx.work) as tmp:
        inputs = _inputs(ctx, shared, Path(tmp))
        for device in ("cuda", "tensorrt"):
            ctx.log(f"7. onnxruntime {device}, batch sizes {list(GPU_BATCH_SIZES)} ...")
            try:
                results[device] = _measure(ctx, "onnxruntime", shared, inputs, Path(tmp), device)
            except RuntimeError as error:
                errors.append(f"{device}: {error}")
    ctx.facts["gpu_backends"] = results
    if not results:
        return [Row.missing("7", name, target, "; ".join(errors))]
    best_device = max(results, key=lambda d: max(results[d].values()))
    best_bs = max(results[best_device], key=results[best_device].get)
    best = results[best_device][best_bs]
    ratio = best / SEED_310P3[4]
    notes = [
        f"{device}: " + ", ".join(f"bs{bs} {v:,.1f}" for bs, v in rates.items()) + " img/s"
        for device, rates in results.items()
    ]
    notes += errors
    notes.append(
        f"Best: {best:,.1f} img/s ({best_device}, bs{best_bs}), about {best * GFLOP_PER_IMAGE / 1000:,.1f} TFLOP/s at "
        f"{GFLOP_PER_IMAGE:.0f} GFLOP per image. The 310P3 figures are the seed's published table, not measured here."
    )
    return [
        Row(
            "7",
            name,
            f"{best:,.1f} img/s ({best_device}, bs{best_bs})",
            "203.3 img/s (seed, 310P3 bs4)",
            ratio,
            f"{ratio:.1f}x",
            target,
            None,
            notes,
        )
    ]
