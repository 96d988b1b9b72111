"""Preprocessing parity: the stored uint8 shard, normalised, equals timm's eval transform
(torchvision Resize + CenterCrop + ToTensor + Normalize) of the same files, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pnas_jobs.params import ShardParams
from pnas_jobs import layout, records, transform
from pnas_jobs.stages import infer, shard
from pnas_jobs.storage import open_store

# (width, height, mode, format): landscape, portrait, square, tiny, huge, and every colour mode
CASES = [
    (500, 375, "RGB", "JPEG"),
    (375, 500, "RGB", "JPEG"),
    (363, 363, "RGB", "JPEG"),
    (331, 900, "RGB", "JPEG"),
    (120, 80, "RGB", "JPEG"),
    (1600, 1200, "RGB", "JPEG"),
    (640, 427, "L", "JPEG"),
    (512, 384, "CMYK", "JPEG"),
    (400, 300, "RGBA", "PNG"),
    (300, 400, "P", "PNG"),
    (257, 511, "LA", "PNG"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("modes")
    rng = np.random.default_rng(7)
    labels = []
    for i, (w, h, mode, fmt) in enumerate(CASES):
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([(x * 255 // w), (y * 255 // h), ((x + y) * 3) % 256], -1).astype(np.uint8)
        noisy = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        image = Image.fromarray(noisy, "RGB")
        image = image.convert(mode) if mode != "RGBA" else Image.merge("RGBA", (*image.split(), image.split()[0]))
        name = f"img_{i:03d}.{'JPEG' if fmt == 'JPEG' else 'png'}"
        image.save(folder / name, fmt, **({"quality": 85} if fmt == "JPEG" else {}))
        labels.append(f"{name} {i}\n")
    (folder.parent / f"{folder.name}_labels.txt").write_text("".join(labels))
    return folder, folder.parent / f"{folder.name}_labels.txt"


@pytest.mark.parametrize("model", ["pnasnet5large", "test_efficientnet"])
def test_stored_shard_matches_timm_eval_transform(files, model, tmp_path):
    import timm
    from timm.data import create_transform, resolve_data_config

    folder, labels = files
    record = shard.main(
        ShardParams(root=str(tmp_path), images=str(folder), labels=str(labels), model=model, shards=1, index=0)
    )
    assert record["failed"] == [] and len(record["images"]) == len(CASES)
    store = open_store(tmp_path)
    pixels = infer.load_pixels(store, record, tmp_path)
    config = transform.Preprocess.from_dict(record["preprocess"])
    ours = transform.normalize(np.asarray(pixels), config)

    reference = create_transform(**resolve_data_config(pretrained_cfg=timm.models.get_pretrained_cfg(model).to_dict()))
    for row, name in enumerate(record["images"]):
        path = next(folder.glob(name + ".*"))
        expected = reference(Image.open(path).convert("RGB")).numpy()
        assert ours[row].shape == expected.shape
        assert np.abs(ours[row] - expected).max() == 0, name


def test_pnasnet_config_is_the_seed_recipe():
    config = transform.resolve("pnasnet5large")
    assert (config.input_size, config.scale_size, config.interpolation) == (331, 363, "bicubic")
    assert config.mean == config.std == (0.5, 0.5, 0.5)


def test_spec_overrides_win_over_timm():
    config = transform.resolve("pnasnet5large", {"input_size": 224, "crop_pct": 0.875, "interpolation": "bilinear"})
    assert (config.input_size, config.scale_size, config.interpolation, config.mean) == (
        224,
        256,
        "bilinear",
        (0.5,) * 3,
    )


def test_a_truncated_shard_is_detected_by_its_checksum(files, tmp_path):
    folder, labels = files
    record = shard.main(
        ShardParams(
            root=str(tmp_path), images=str(folder), labels=str(labels), model="test_efficientnet", shards=1, index=0
        )
    )
    path = tmp_path / layout.shard_pixels(0)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(infer.ShardCorrupt, match="corrupt"):
        infer.load_pixels(open_store(tmp_path), records.read(open_store(tmp_path), layout.shard_record(0)), tmp_path)
    assert record["pixels"]["bytes"] == len(CASES) * 160 * 160 * 3
