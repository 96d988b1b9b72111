"""Bad input ends with one clear message naming the field or file, exit code 2 and no traceback."""
from __future__ import annotations

import pytest

from builders import TINY_MODEL, tiny, write
from conftest import run_cli


def assert_clean_failure(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


def shard(tmp_path, images, labels, shards=1, index=0):
    return run_cli(
        "shard", "--root", str(tmp_path / "run"), "--images", str(images), "--labels", str(labels),
        "--model", TINY_MODEL, "--shards", str(shards), "--index", str(index),
    )  # fmt: skip


def test_manifest_with_wrong_fields(tmp_path):
    data = tiny("bad", "imgs", "labels.txt", "w.pth", tmp_path, inference={"batchSize": 4, "backend": "tpu"})
    data["spec"]["dataset"]["shards"] = -1
    result = run_cli("run", str(write(tmp_path / "bad.yaml", data)), "--local", "--workdir", str(tmp_path))
    assert_clean_failure(
        result,
        "bad.yaml is not a valid PnasEval",
        "spec.inference.batchSize: unknown field",
        "spec.inference.backend: Input should be 'onnxruntime', 'ais_bench' or 'pytorch'",
        "spec.dataset.shards: Input should be greater than or equal to 1",
    )


def test_missing_labels_file_stops_the_run(sample_set, tmp_path):
    data = tiny("nolabels", sample_set["images"], tmp_path / "missing.txt", sample_set["planted"].weights, tmp_path / "s")
    result = run_cli("run", str(write(tmp_path / "m.yaml", data)), "--local", "--workdir", str(tmp_path), "--quiet")
    assert result.returncode == 2
    assert "spec.dataset.labels:" in result.stderr and "missing.txt does not exist" in result.stderr
    assert "shard[0] failed (exit 2, 1 attempts)" in result.stderr and "run it again to resume" in result.stderr


def test_empty_dataset(tmp_path, sample_set):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.txt").write_text("no images here")
    assert_clean_failure(shard(tmp_path, tmp_path / "empty", sample_set["labels"]), "spec.dataset.images: no images under")


def test_more_shards_than_images(tmp_path, sample_set):
    assert_clean_failure(
        shard(tmp_path, sample_set["images"], sample_set["labels"], shards=30, index=2),
        "spec.dataset.shards is 30 but there are only 24 images",
    )


def test_unreadable_labels_name_the_line(tmp_path, sample_set):
    labels = tmp_path / "labels.txt"
    labels.write_text("ILSVRC2012_val_00000001.JPEG 3\nILSVRC2012_val_00000002.JPEG cat\n")
    assert_clean_failure(shard(tmp_path, sample_set["images"], labels), "labels.txt:2: expected '<file name> <class>'")


def test_infer_before_the_model_exists(tmp_path):
    result = run_cli("infer", "--root", str(tmp_path), "--index", "0", "--batch-size", "4")
    assert_clean_failure(result, "no converted model under", "run the convert stage first")


def test_shard_index_comes_from_the_job_environment(tmp_path, sample_set):
    result = run_cli(
        "shard", "--root", str(tmp_path / "run"), "--images", str(sample_set["images"]), "--labels",
        str(sample_set["labels"]), "--model", TINY_MODEL, "--shards", "4", env={"JOB_COMPLETION_INDEX": "3"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "shards" / "shard-00003.json").exists()
    assert_clean_failure(
        run_cli("infer", "--root", str(tmp_path), "--batch-size", "4", env={"JOB_COMPLETION_INDEX": ""}),
        "no shard index: pass --index or set JOB_COMPLETION_INDEX",
    )


@pytest.mark.parametrize("key", ["../escape", "/etc/passwd", "a/../../b", "a//b"])
def test_keys_that_leave_the_store_are_refused(tmp_path, key):
    from pnas_jobs.storage import StorageError, open_store

    with pytest.raises(StorageError, match="refused object key") as caught:
        open_store(tmp_path).write_bytes(key, b"x")
    assert caught.value.permanent
