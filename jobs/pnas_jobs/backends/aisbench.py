"""ais_bench on Ascend NPUs: its Python InferSession when importable, else its command line.

Neither can run without an NPU; tests drive these classes with a stand-in `ais_bench` package.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from pnas_jobs.errors import UserError


def default_device_id() -> int:
    """The ACL device id: the first id the Ascend runtime made visible, else 0."""
    visible = os.environ.get("ASCEND_VISIBLE_DEVICES", "").replace(",", " ").split()
    return int(visible[0]) if visible and visible[0].isdigit() else 0


def _exec_ms(entry) -> float:
    # ais_bench keeps (start, end) pairs in ms in newer releases, plain durations in older ones
    if isinstance(entry, (tuple, list)):
        return float(entry[1]) - float(entry[0])
    return float(entry)


class InferSessionBackend:
    name = "ais_bench"

    def __init__(self, model_path: Path, device_id: int):
        from ais_bench.infer.interface import InferSession

        self.session = InferSession(device_id, str(model_path))

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        outputs = self.session.infer([batch], mode="static")
        summary = self.session.summary() if hasattr(self.session, "summary") else self.session.sumary()
        return np.asarray(outputs[0]), _exec_ms(summary.exec_time_list[-1])

    def close(self) -> None:
        self.session.finalize()


class CliBackend:
    """`python -m ais_bench` over one batch at a time: slower to start, same numbers."""

    name = "ais_bench-cli"

    def __init__(self, model_path: Path, batch_size: int, device_id: int):
        self.model_path, self.batch_size, self.device_id = model_path, batch_size, device_id
        self.work = Path(tempfile.mkdtemp(prefix="pnas-aisbench-"))

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        inputs, output = self.work / "input", self.work / "output"
        for folder in (inputs, output):
            folder.mkdir(exist_ok=True)
            for stale in folder.rglob("*"):
                if stale.is_file():
                    stale.unlink()
        for i, image in enumerate(batch):
            image.tofile(inputs / f"{i:06d}.bin")
        command = [
            sys.executable, "-m", "ais_bench", "--model", str(self.model_path), "--batchsize", str(self.batch_size),
            "--input", str(inputs), "--output", str(output), "--output_dirname", "out", "--outfmt", "TXT",
            "--device", str(self.device_id),
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"ais_bench exited {result.returncode}: {result.stderr.strip()[-500:]}")
        scores = np.stack([np.loadtxt(output / "out" / f"{i:06d}_0.txt", dtype=np.float32) for i in range(len(batch))])
        summary = json.loads((output / "out_summary.json").read_text())
        return scores, float(summary["NPU_compute_time"]["mean"])

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.work, ignore_errors=True)


def open_ais_bench(model_path: Path, batch_size: int, device_id: int | None = None, **_):
    device_id = default_device_id() if device_id is None else device_id
    try:
        import ais_bench.infer.interface  # noqa: F401
    except ImportError:
        probe = subprocess.run([sys.executable, "-m", "ais_bench", "--help"], capture_output=True)
        if probe.returncode != 0:
            raise UserError(
                "backend ais_bench: neither its Python API nor `python -m ais_bench` is installed here; "
                "run in the Ascend jobs image (CANN + ais_bench)"
            ) from None
        return CliBackend(model_path, batch_size, device_id)
    return InferSessionBackend(model_path, device_id)
