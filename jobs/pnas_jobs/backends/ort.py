"""onnxruntime on CPU, CUDA or TensorRT."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from pnas_jobs.errors import UserError

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def providers_for(device: str) -> list:
    if device == "tensorrt":
        cache = Path(tempfile.gettempdir()) / "pnas-eval-trt-cache"
        # fp16, as ATC builds Ascend models by default; engines cached across batch sizes and runs
        options = {"trt_fp16_enable": True, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)}
        return [(PROVIDERS["tensorrt"], options), PROVIDERS["cuda"], PROVIDERS["cpu"]]
    if device == "cuda":
        return [PROVIDERS["cuda"], PROVIDERS["cpu"]]
    return [PROVIDERS["cpu"]]


class OrtBackend:
    name = "onnxruntime"

    def __init__(self, model_path: Path, device: str = "cpu", threads: int = 0, **_):
        import onnxruntime as ort

        if device not in PROVIDERS:
            raise UserError(f"spec.inference.device: onnxruntime runs on cpu, cuda or tensorrt, not {device!r}")
        wanted = PROVIDERS[device]
        if wanted not in ort.get_available_providers():
            raise UserError(
                f"spec.inference.device {device}: this onnxruntime has no {wanted} "
                f"(available: {', '.join(ort.get_available_providers())}); use the GPU jobs image (onnxruntime-gpu)"
            )
        if device != "cpu" and hasattr(ort, "preload_dlls"):
            ort.preload_dlls()  # CUDA/cuDNN from pip packages, when the loader path lacks them
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(model_path), options, providers=providers_for(device))
        if self.session.get_providers()[0] != wanted:
            raise UserError(f"onnxruntime could not start {wanted} (got {self.session.get_providers()})")
        self.input_name = self.session.get_inputs()[0].name
        self.providers = self.session.get_providers()

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        started = time.perf_counter()
        scores = self.session.run(None, {self.input_name: batch})[0]
        return scores, (time.perf_counter() - started) * 1000.0

    def close(self) -> None:
        self.session = None
