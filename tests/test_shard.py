"""The shard stage keeps every good crop, in order, when bad images fall between good ones.

Workers decode each image straight into its slot of the shard file; the slots of images that fail
are squeezed out afterwards. Failures in the middle of a shard (not only at its end) must move the
later crops down without mixing them up, with one worker or several.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from builders import TINY_MODEL
from pnas_jobs.params import ShardParams
from pnas_jobs import layout, transform
from pnas_jobs.stages import shard


@pytest.mark.parametrize("workers", [1, 2])
def test_failed_images_between_good_ones_leave_the_rest_in_order(sample_set, tmp_path, workers):
    images = tmp_path / "images"
    shutil.copytree(sample_set["images"], images)
    names = sample_set["names"][:8]
    for name in sample_set["names"][8:]:
        (images / f"{name}.JPEG").unlink()
    broken = {names[1], names[4], names[5]}  # 2nd, 5th and 6th of the shard: later crops must move down
    for name in broken:
        path = images / f"{name}.JPEG"
        path.write_bytes(path.read_bytes()[:200])

    record = shard.main(
        ShardParams(
            root=str(tmp_path / "run"),
            images=str(images),
            labels=str(sample_set["labels"]),
            model=TINY_MODEL,
            shards=1,
            index=0,
            workers=workers,
        )
    )

    good = [name for name in names if name not in broken]
    assert record["images"] == good
    assert sorted(f["image"] for f in record["failed"]) == sorted(f"{name}.JPEG" for name in broken)
    config = transform.resolve(TINY_MODEL)
    stored = np.fromfile(tmp_path / "run" / layout.shard_pixels(0), dtype=np.uint8).reshape(-1, *config.shape)
    expected = np.stack([transform.preprocess((images / f"{name}.JPEG").read_bytes(), config) for name in good])
    assert np.array_equal(stored, expected)
    assert json.loads((tmp_path / "run" / layout.shard_record(0)).read_text())["images"] == good


def test_every_labelled_file_is_used_or_recorded(sample_set, tmp_path):
    """An animated GIF is decoded (its first frame, as PIL and torchvision's loader read it), and a
    file the labels name is taken whatever its suffix; unlabelled files without an image suffix are not images."""
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    names = sample_set["names"][:2]
    frames = [Image.open(sample_set["images"] / f"{name}.JPEG").convert("RGB") for name in names]
    frames[0].save(images / "animated.gif", save_all=True, append_images=frames[1:])
    shutil.copy(sample_set["images"] / f"{names[0]}.JPEG", images / "photo.jfif")
    (images / "notes.txt").write_text("not an image")
    labels = tmp_path / "labels.txt"
    labels.write_text("animated.gif 5\nphoto.jfif 7\n")
    record = shard.main(
        ShardParams(
            root=str(tmp_path / "run"), images=str(images), labels=str(labels), model=TINY_MODEL, shards=1, index=0
        )
    )
    assert record["images"] == ["animated", "photo"] and record["labels"] == [5, 7] and record["failed"] == []
