"""Bad input ends with one clear message naming the field or file, exit code 2 and no traceback."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

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
        "shard",
        "--root",
        str(tmp_path / "run"),
        "--images",
        str(images),
        "--labels",
        str(labels),
        "--model",
        TINY_MODEL,
        "--shards",
        str(shards),
        "--index",
        str(index),
    )


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
    data = tiny(
        "nolabels", sample_set["images"], tmp_path / "missing.txt", sample_set["planted"].weights, tmp_path / "s"
    )
    result = run_cli("run", str(write(tmp_path / "m.yaml", data)), "--local", "--workdir", str(tmp_path), "--quiet")
    assert result.returncode == 2
    # the reason on the failure's first line; the log's tail below it
    assert (
        f"shard[0] failed (exit 2, 1 attempt): spec.dataset.labels: {tmp_path / 'missing.txt'} does not exist\n"
        in result.stderr
    )
    assert "run it again to resume" in result.stderr


def test_empty_dataset(tmp_path, sample_set):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.txt").write_text("no images here")
    assert_clean_failure(
        shard(tmp_path, tmp_path / "empty", sample_set["labels"]), "spec.dataset.images: no images under"
    )


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
        "shard",
        "--root",
        str(tmp_path / "run"),
        "--images",
        str(sample_set["images"]),
        "--labels",
        str(sample_set["labels"]),
        "--model",
        TINY_MODEL,
        "--shards",
        "4",
        env={"JOB_COMPLETION_INDEX": "3"},
    )
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


def first_line(result) -> str:
    return result.stderr.strip().splitlines()[0]


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda lines: lines + [lines[2].replace(" ", " 1")],
            "labels.txt:25: ILSVRC2012_val_00000003.JPEG gives class",
        ),
        (
            lambda lines: lines[:-1] + [lines[-1].split()[0] + " -1"],
            "labels.txt:24: class -1 of ILSVRC2012_val_00000024.JPEG is negative",
        ),
        (
            lambda lines: lines[:-1] + [lines[-1].split()[0] + " \u0663"],
            "labels.txt:24: expected '<file name> <class>'",
        ),
    ],
    ids=["conflicting-lines", "minus-one", "non-ascii-digit"],
)
def test_ambiguous_labels_stop_the_shard_naming_the_line(tmp_path, sample_set, edit, message):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(edit(sample_set["labels"].read_text().splitlines())) + "\n")
    result = shard(tmp_path, sample_set["images"], labels)
    assert_clean_failure(result, f"spec.dataset.labels: {labels}:" + message.removeprefix("labels.txt:"))
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_byte_order_mark_is_accepted(tmp_path, sample_set):
    labels = tmp_path / "labels.txt"
    labels.write_text("\ufeff" + sample_set["labels"].read_text())
    assert shard(tmp_path, sample_set["images"], labels).returncode == 0
    record = (tmp_path / "run" / "shards" / "shard-00000.json").read_text()
    assert '"failed": []' in record and "ILSVRC2012_val_00000001" in record


def test_a_labels_path_that_is_a_folder(tmp_path, sample_set):
    result = shard(tmp_path, sample_set["images"], tmp_path)
    assert_clean_failure(result, f"spec.dataset.labels: {tmp_path} is a folder; give the labels file")


def test_labels_that_match_no_image(tmp_path, sample_set):
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"other_{i}.JPEG {i}\n" for i in range(24)))
    result = shard(tmp_path, sample_set["images"], labels)
    assert_clean_failure(
        result, "spec.dataset.labels: none of the 24 images under", "has a label in", "'other_0' on line 1"
    )


def test_a_limit_larger_than_the_data_set(tmp_path, sample_set):
    result = run_cli(
        "shard",
        "--root",
        str(tmp_path / "run"),
        "--images",
        str(sample_set["images"]),
        "--labels",
        str(sample_set["labels"]),
        "--model",
        TINY_MODEL,
        "--shards",
        "1",
        "--index",
        "0",
        "--limit",
        "100",
    )
    assert_clean_failure(result, "spec.dataset.limit is 100 but there are only 24 images under")


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["run", "x.yaml", "--local", "--workers", "-1"],
            "pnas-eval run: error: --workers: Input should be greater than or equal to 0",
        ),
        (
            ["shard", "--root", "r", "--images", "i", "--labels", "l", "--shards", "1", "--workers", "-1"],
            "pnas-eval shard: error: --workers: Input should be greater than or equal to 1",
        ),
        (
            ["infer", "--root", "r", "--index", "0", "--batch-size", "0"],
            "pnas-eval infer: error: --batch-size: Input should be greater than or equal to 1",
        ),
    ],
    ids=["run-workers", "shard-workers", "batch-size"],
)
def test_bad_flags(args, message):
    result = run_cli(*args)
    assert_clean_failure(result)
    assert first_line(result) == message


def local_spec(tmp_path, sample_set, **sections) -> Path:
    data = tiny("t", sample_set["images"], sample_set["labels"], sample_set["planted"].weights, "", **sections)
    data["spec"]["storage"].pop("uri")
    return write(tmp_path / "t.yaml", data)


def test_a_workdir_that_is_a_file(tmp_path, sample_set):
    (tmp_path / "work").write_text("not a folder")
    result = run_cli("run", str(local_spec(tmp_path, sample_set)), "--local", "--workdir", str(tmp_path / "work"))
    assert_clean_failure(result)
    assert first_line(result) == f"pnas-eval run: error: --workdir: {tmp_path / 'work'} is a file, not a folder"


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder no one may write to: without write permission, or (as root, whom permissions do not
    stop) a read-only bind mount; skipped where root may not mount."""
    folder = tmp_path / "work"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder, "Permission denied"
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"root cannot mount here: {mounted.stderr.decode().strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
        yield folder, "Read-only file system"
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_workdir(tmp_path, sample_set, read_only_folder):
    folder, reason = read_only_folder
    result = run_cli("run", str(local_spec(tmp_path, sample_set)), "--local", "--workdir", str(folder))
    assert_clean_failure(result)
    assert first_line(result) == f"pnas-eval run: error: {reason}: {folder / 'logs'}"


def test_a_full_disk_is_bad_input_not_a_retry(tmp_path, monkeypatch, capsys):
    """A full disk cannot be made here without root: the write fails as the kernel makes it fail."""
    from pnas_jobs import cli
    from pnas_jobs.storage import LocalStore

    def full(self, key, write):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.root / key))

    monkeypatch.setattr(LocalStore, "_atomic", full)
    folder = tmp_path / "res"
    folder.mkdir()
    (folder / "a_0.txt").write_text("0.100000 0.900000 \n")
    (tmp_path / "labels.txt").write_text("a.JPEG 1\n")
    code = cli.main(
        [
            "aggregate",
            "--results",
            str(folder),
            "--labels",
            str(tmp_path / "labels.txt"),
            "--output",
            str(tmp_path / "out.json"),
        ]
    )
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        f"pnas-eval aggregate: error: No space left on device: {tmp_path / 'out.json'}; free some space, then run it again to resume"
    )


def test_an_endpoint_with_a_scheme(tmp_path, sample_set):
    data = tiny(
        "t",
        sample_set["images"],
        sample_set["labels"],
        sample_set["planted"].weights,
        "s3://runs/x",
        storage={"endpoint": "http://127.0.0.1:9000"},
    )
    result = run_cli(
        "run",
        str(write(tmp_path / "t.yaml", data)),
        "--local",
        "--workdir",
        str(tmp_path / "w"),
        env={"MINIO_ACCESS_KEY": "abcd", "MINIO_SECRET_KEY": "efghijkl"},
    )
    assert_clean_failure(result)
    assert first_line(result).startswith(
        "pnas-eval run: storage error: spec.storage.endpoint (or PNAS_STORAGE_ENDPOINT) is "
        "'http://127.0.0.1:9000': give host:port only"
    )


def test_snake_case_fields_are_refused_like_the_crd_does(tmp_path, sample_set):
    spec = local_spec(tmp_path, sample_set)
    spec.write_text(spec.read_text().replace("batchSizes", "batch_sizes"))
    result = run_cli("run", str(spec), "--local", "--workdir", str(tmp_path / "w"))
    assert_clean_failure(result, "spec.inference.batch_sizes: unknown field (check the spelling; fields are camelCase)")


def test_a_namespace_that_is_a_path_is_refused(tmp_path, sample_set):
    data = tiny(
        "t",
        sample_set["images"],
        sample_set["labels"],
        sample_set["planted"].weights,
        tmp_path / "a" / "b",
        namespace="../../x",
    )
    result = run_cli("run", str(write(tmp_path / "t.yaml", data)), "--local", "--workdir", str(tmp_path / "w"))
    assert_clean_failure(result, "metadata.namespace: String should match pattern")
    assert not (tmp_path / "x").exists() and not (tmp_path / "w").exists()


def test_weights_of_another_shape(tmp_path, sample_set):
    import timm
    import torch

    other = timm.create_model("test_resnet", pretrained=False)
    torch.save(other.state_dict(), tmp_path / "other.pth")
    result = run_cli(
        "convert", "--root", str(tmp_path / "run"), "--model", TINY_MODEL, "--weights", str(tmp_path / "other.pth")
    )
    assert_clean_failure(result, f"spec.model.weights: {tmp_path / 'other.pth'} does not fit {TINY_MODEL}")
