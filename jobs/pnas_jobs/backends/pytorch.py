"""PyTorch itself: the timm model with the run's weights, in fp32, on the CPU or a CUDA GPU.

It is fed the very tensors the other backends get from the shards, so its outputs are the
reference a deployed backend is compared with (the fidelity report), and a backend of its own.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pnas_jobs.errors import UserError


class TorchBackend:
    name = "pytorch"

    def __init__(self, model_path: Path, model: str, device: str = "cpu", threads: int = 0, **_):
        import torch

        from pnas_jobs.models import load_model

        if device == "cuda" and not torch.cuda.is_available():
            raise UserError("backend pytorch, device cuda: this torch sees no CUDA GPU; use device cpu or a GPU node")
        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.device = torch.device(device)
        network, _, _ = load_model(model, "state_dict", model_path)
        self.model = network.to(self.device).eval()

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        torch = self.torch
        with torch.inference_mode():
            tensor = torch.from_numpy(batch).to(self.device)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            scores = self.model(tensor)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            ms = (time.perf_counter() - started) * 1000.0
        return scores.float().cpu().numpy(), ms

    def close(self) -> None:
        self.model = None
