"""Evaluation preprocessing, bit-exact to timm's eval transform (torchvision Resize + CenterCrop).

The shard stage stores the cropped image as uint8: the seed's recipe normalises only after the
crop, so uint8 loses nothing and is 4x smaller than its float32 `.bin`. `normalize` turns a uint8
batch into the float32 NCHW tensor the model takes, with the same float32 operations as
torchvision's ToTensor + Normalize (divide by 255, subtract mean, divide by std).
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

# ImageNet defaults (timm.data.constants), used when neither the spec nor timm says otherwise.
_DEFAULTS = dict(
    input_size=224, crop_pct=0.875, interpolation="bilinear", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
)
_RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


@dataclass(frozen=True)
class Preprocess:
    input_size: int
    crop_pct: float
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def scale_size(self) -> int:
        """Shorter side after the resize, as timm computes it: floor(331 / 0.911) = 363."""
        return math.floor(self.input_size / self.crop_pct)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.input_size, self.input_size, 3)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocess":
        return cls(**{**data, "mean": tuple(data["mean"]), "std": tuple(data["std"])})


def resolve(model_name: str, overrides: dict | None = None) -> Preprocess:
    """Layered like timm: spec override > the model's pretrained config > ImageNet default."""
    from timm.models import get_pretrained_cfg  # reads a registry entry; builds no model

    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    cfg = get_pretrained_cfg(model_name)
    known = {}
    if cfg is not None:
        known = dict(
            input_size=cfg.input_size[-1],
            crop_pct=cfg.crop_pct,
            interpolation=cfg.interpolation,
            mean=tuple(cfg.mean),
            std=tuple(cfg.std),
        )
    values = {}
    for field in _DEFAULTS:
        for layer in (overrides, known, _DEFAULTS):
            if layer.get(field) not in (None, ""):
                values[field] = layer[field]
                break
    if values["interpolation"] not in _RESAMPLE:
        values["interpolation"] = "bicubic" if "bicubic" in str(values["interpolation"]) else "bilinear"
    return Preprocess(
        input_size=int(values["input_size"]),
        crop_pct=float(values["crop_pct"]),
        interpolation=values["interpolation"],
        mean=tuple(float(v) for v in values["mean"]),
        std=tuple(float(v) for v in values["std"]),
    )


def resized_size(width: int, height: int, short: int) -> tuple[int, int]:
    """torchvision's Resize(int): shorter side to `short`, longer side truncated, aspect kept."""
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def crop_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """torchvision's CenterCrop offsets (round half to even, as Python's round)."""
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return left, top, left + size, top + size


def load_rgb(data: bytes) -> Image.Image:
    """Decode like torchvision's loader: RGB, no EXIF rotation; raises on corrupt data.

    An RGB image is returned as decoded: `convert("RGB")` would only copy it.
    """
    image = Image.open(io.BytesIO(data))
    image.load()
    return image if image.mode == "RGB" else image.convert("RGB")


def preprocess(data: bytes, config: Preprocess) -> np.ndarray:
    """Encoded image bytes -> cropped uint8 HWC array."""
    image = load_rgb(data)
    size = resized_size(*image.size, config.scale_size)
    image = image.resize(size, _RESAMPLE[config.interpolation])
    image = image.crop(crop_box(*image.size, config.input_size))
    return np.asarray(image, dtype=np.uint8)


def normalize(batch: np.ndarray, config: Preprocess, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW, ToTensor + Normalize in float32."""
    mean = np.asarray(config.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(config.std, dtype=np.float32).reshape(1, 3, 1, 1)
    chw = batch.transpose(0, 3, 1, 2)
    if out is None:
        out = np.empty(chw.shape, dtype=np.float32)
    np.divide(chw, np.float32(255), out=out, dtype=np.float32)
    np.subtract(out, mean, out=out)
    np.divide(out, std, out=out)
    return out
