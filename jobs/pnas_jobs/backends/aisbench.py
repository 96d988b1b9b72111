"""ais_bench on Ascend NPUs, through its Python API (`ais_bench.infer.interface.InferSession`).

There is no command-line fallback: `python -m ais_bench` runs ais_bench's infer/__main__.py, which
imports the same `ais_bench.infer.interface` (and through it the compiled `aclruntime`), so it fails
exactly when the Python API does. Nothing here can run without an NPU; tests drive this module with
stand-ins of ais_bench and aclruntime (tests/support/fake_ais_bench, fake_aclruntime).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from pnas_jobs.errors import UserError

LOCAL_RANK = "LOCAL_RANK"
VISIBLE_DEVICES = "ASCEND_VISIBLE_DEVICES"
_VISIBLE_ENTRY = re.compile(r"^(?:(?:Ascend\w*|npu)-(?P<named>\d+)|(?P<low>\d+)(?:-(?P<high>\d+))?)$")


def default_device_id() -> int:
    """The ACL device id of the first NPU this container was given: its first logical id.

    The Ascend device plugin sets ASCEND_VISIBLE_DEVICES to the PHYSICAL ids of the allocated NPUs
    (e.g. "3", or "Ascend310P-3" from Volcano's annotation), and the Ascend container runtime mounts
    those devices; ACL numbers the visible devices from 0, so aclrtSetDevice, InferSession(device_id)
    and `ais_bench --device` take 0..count-1 (Ascend/mind-cluster ascend-device-plugin
    pkg/common/common.go SetAscendRuntimeEnv; ascend-docker-runtime process.go checkVisibleDevice).
    The plugin sets LOCAL_RANK (logical ids "0,...,n-1") only in dynamic vNPU mode
    (docs/en/scheduling/api/environment_variable_description.md); its first value is used when set.
    """
    first = os.environ.get(LOCAL_RANK, "").replace(",", " ").split()[:1]
    return int(first[0]) if first and first[0].isdigit() else 0


def visible_count(value: str) -> int | None:
    """How many NPUs ASCEND_VISIBLE_DEVICES gives the container, read as the Ascend container runtime
    reads it (ascend-docker-runtime process.go checkVisibleDevice): "Ascend310P-3,Ascend310P-5"
    (Volcano's annotation) or "3,5" and ranges "0-3" (the device plugin's ids). None: unset or unreadable."""
    ids: set[int] = set()
    for entry in filter(None, (e.strip() for e in value.split(","))):
        match = _VISIBLE_ENTRY.match(entry)
        if not match:
            return None
        low = int(match["named"] or match["low"])
        high = int(match["high"] or low)
        if high < low:
            return None
        ids.update(range(low, high + 1))
    return len(ids) or None


def _exec_ms(entry) -> float:
    # ais_bench keeps (start, end) pairs in ms in newer releases (msit), plain durations in older ones
    if isinstance(entry, (tuple, list)):
        return float(entry[1]) - float(entry[0])
    return float(entry)


class InferSessionBackend:
    name = "ais_bench"

    def __init__(self, model_path: Path, device_id: int):
        from ais_bench.infer.interface import InferSession

        try:
            self.session = InferSession(device_id, str(model_path))
        except RuntimeError as error:  # aclrtSetDevice (or the model load) failed
            raise _device_error(device_id, error) from None

    def _summary(self):
        # summary() in msit's ais_bench; the older Ascend/tools release has only the misspelt sumary()
        summary = getattr(self.session, "summary", None) or self.session.sumary
        return summary()

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        outputs = self.session.infer([batch], mode="static")
        return np.asarray(outputs[0]), _exec_ms(self._summary().exec_time_list[-1])

    def close(self) -> None:
        self.session.finalize()


def _device_error(device_id: int, error: RuntimeError) -> Exception:
    """A device id this container cannot have is the spec's mistake (exit 2); anything else may pass."""
    value = os.environ.get(VISIBLE_DEVICES, "")
    count = visible_count(value)
    if count is not None and device_id >= count:
        return UserError(
            f"backend ais_bench: device id {device_id} does not exist here: {VISIBLE_DEVICES}={value} gives "
            f"this container {count} NPU(s), numbered 0..{count - 1} inside it ({error}); "
            "leave spec.inference.deviceId unset (the first NPU) or pick one of those"
        )
    return error


def open_ais_bench(model_path: Path, batch_size: int, device_id: int | None = None, **_):
    device_id = default_device_id() if device_id is None else device_id
    try:
        import ais_bench.infer.interface  # noqa: F401  (imports aclruntime, the compiled runtime)
    except ImportError as error:
        raise UserError(
            f"backend ais_bench: cannot import ais_bench's InferSession ({error}); "
            "run in the Ascend jobs image (CANN, the ais_bench and aclruntime wheels for this Python)"
        ) from None
    return InferSessionBackend(model_path, device_id)
