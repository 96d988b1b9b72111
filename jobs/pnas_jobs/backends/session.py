"""What every backend's session does: run one batch and say how long the accelerator computed.

A registry entry's `session` callable opens one, with keyword arguments `model_path` (the artifact
it runs), `device`, `batch_size`, `threads`, `device_id` and `model` (the timm name); each backend
takes what it needs.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Session(Protocol):
    name: str

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        """float32 NCHW batch -> (scores of shape (batch, classes), pure compute milliseconds)."""

    def close(self) -> None: ...
