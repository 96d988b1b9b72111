"""Inference backends: each runs one batch and says how long the accelerator computed.

`open_backend` imports only the runtime it needs (onnxruntime or ais_bench).
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np


class Backend(Protocol):
    name: str

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        """float32 NCHW batch -> (scores of shape (batch, classes), pure compute milliseconds)."""

    def close(self) -> None: ...


def open_backend(
    backend: str, device: str, model_path: Path, batch_size: int, threads: int = 0, device_id: int | None = None
) -> Backend:
    if backend == "onnxruntime":
        from pnas_jobs.backends.ort import OrtBackend

        return OrtBackend(model_path, device, threads)
    if backend == "ais_bench":
        from pnas_jobs.backends.aisbench import open_ais_bench

        return open_ais_bench(model_path, batch_size, device_id)
    raise ValueError(f"unknown backend {backend!r}")
