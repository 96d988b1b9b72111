"""Object storage through the real minio SDK against a real S3-protocol server on loopback (moto),
with credentials enforced and a proxy that can take the server away mid-request."""

from __future__ import annotations

import hashlib
import json
import os
import threading

import pytest

from builders import tiny, write
from conftest import s3_cli
from pnas_jobs.params import ShardParams
from pnas_jobs import layout, metric
from pnas_jobs.stages import infer, shard
from pnas_jobs.storage import StorageError, StorageSettings, open_store

TINY = "test_efficientnet"


@pytest.fixture
def s3_env(s3, monkeypatch):
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    return s3


@pytest.fixture(scope="module")
def s3_run(s3, sample_set, tmp_path_factory):
    """The same PnasEval twice: all in the bucket (data, weights, results), and all on local disk."""
    root = tmp_path_factory.mktemp("s3run")
    s3.upload_dir(sample_set["images"], "datasets", "sample/val")
    client = s3.client()
    client.fput_object("datasets", "sample/val_label.txt", str(sample_set["labels"]))
    client.fput_object("models", "tiny/planted.pth", str(sample_set["planted"].weights))
    in_bucket = tiny(
        "tiny-s3",
        "s3://datasets/sample/val/",
        "s3://datasets/sample/val_label.txt",
        "s3://models/tiny/planted.pth",
        "s3://runs/evals",
        inference={"batchSizes": [4]},
        storage={"endpoint": s3.endpoint},
    )
    on_disk = tiny(
        "tiny-file",
        sample_set["images"],
        sample_set["labels"],
        sample_set["planted"].weights,
        f"file://{root}/store",
        inference={"batchSizes": [4]},
    )
    for name, data in (("s3", in_bucket), ("file", on_disk)):
        spec = write(root / f"{name}.yaml", data)
        result = s3_cli(s3, "run", str(spec), "--local", "--workdir", str(root / name), "--workers", "2", "--quiet")
        assert result.returncode == 0, result.stderr
    return dict(root=root, run="s3://runs/evals/test/tiny-s3", file_run=root / "store" / "test" / "tiny-file")


def test_run_from_and_into_the_bucket_gives_the_planted_accuracy(s3_run, s3, sample_set):
    client = s3.client()
    in_bucket = client.get_object("runs", "evals/test/tiny-s3/result_bs4.json").read().decode()
    assert in_bucket == metric.seed_json(sample_set["planted"].table())
    assert in_bucket == (s3_run["file_run"] / "result_bs4.json").read_text()
    names = {o.object_name for o in client.list_objects("runs", prefix="evals/test/tiny-s3/", recursive=True)}
    expected = {f"evals/test/tiny-s3/{k}" for k in (layout.ONNX_MODEL, layout.CONVERT_RECORD, layout.REPORT)}
    expected |= {f"evals/test/tiny-s3/{layout.result_tar(4, i)}" for i in range(3)}
    assert expected <= names


def test_large_objects_go_multipart_and_stream_back(s3_env, tmp_path):
    data = os.urandom(13 * 1024 * 1024)
    (tmp_path / "big.bin").write_bytes(data)
    store = open_store("s3://runs/big")
    store.upload(tmp_path / "big.bin", "model/big.onnx")
    stat = s3_env.client().stat_object("runs", "big/model/big.onnx")
    assert stat.etag.endswith("-3")  # three 5 MiB parts
    path = store.download("model/big.onnx", tmp_path / "back" / "big.onnx")
    assert path.read_bytes() == data and store.size("model/big.onnx") == len(data)


def test_upload_survives_the_server_going_away_mid_transfer(s3_env, tmp_path):
    data = os.urandom(16 * 1024 * 1024)
    (tmp_path / "model.onnx").write_bytes(data)
    proxy, outage = s3_env.proxy, threading.Event()

    def cut(sent: int) -> None:
        if sent > 6 * 1024 * 1024 and not outage.is_set():
            outage.set()
            proxy.stop()
            threading.Timer(1.0, proxy.start).start()

    proxy.on_bytes, start = cut, proxy.bytes_up
    try:
        open_store("s3://runs/restart").upload(tmp_path / "model.onnx", "model.onnx")
    finally:
        proxy.on_bytes = None
    assert outage.is_set() and proxy.bytes_up - start > len(data)
    got = s3_env.client().get_object("runs", "restart/model.onnx").read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


def test_an_outage_fails_clearly_and_a_rerun_counts_each_image_once(s3_run, s3, sample_set):
    run = s3_run["run"]
    s3.client().remove_object("runs", "evals/test/tiny-s3/" + layout.result_marker(4, 1))
    s3.proxy.stop()
    try:
        down = s3_cli(s3, "infer", "--root", run, "--index", "1", "--batch-size", "4")
    finally:
        s3.proxy.start()
    assert down.returncode == 1 and "Traceback" not in down.stderr
    assert f"cannot reach {s3.endpoint}" in down.stderr and "s3://runs/evals/test/tiny-s3/" in down.stderr
    blocked = s3_cli(
        s3,
        "aggregate",
        "--root",
        run,
        "--labels",
        "s3://datasets/sample/val_label.txt",
        "--batch-sizes",
        "4",
        "--shards",
        "3",
    )
    assert blocked.returncode == 2 and "missing for shards [1]" in blocked.stderr
    assert s3_cli(s3, "infer", "--root", run, "--index", "1", "--batch-size", "4").returncode == 0
    again = s3_cli(
        s3,
        "aggregate",
        "--root",
        run,
        "--labels",
        "s3://datasets/sample/val_label.txt",
        "--batch-sizes",
        "4",
        "--shards",
        "3",
    )
    assert again.returncode == 0, again.stderr
    report = json.loads(s3.client().get_object("runs", "evals/test/tiny-s3/report.json").read())
    assert report["results"][0]["images"] == 24
    assert s3.client().get_object("runs", "evals/test/tiny-s3/result_bs4.json").read().decode() == metric.seed_json(
        sample_set["planted"].table()
    )


def test_a_truncated_shard_object_is_caught_by_its_checksum(s3_env, sample_set, tmp_path):
    run = "s3://runs/truncated"
    record = shard.main(
        ShardParams(
            root=run, images=str(sample_set["images"]), labels=str(sample_set["labels"]), model=TINY, shards=4, index=0
        )
    )
    key = "truncated/" + layout.shard_pixels(0)
    whole = s3_env.client().get_object("runs", key).read()
    import io

    s3_env.client().put_object("runs", key, io.BytesIO(whole[:-7]), len(whole) - 7)
    with pytest.raises(infer.ShardCorrupt, match="corrupt"):
        infer.load_pixels(open_store(run), record, tmp_path)


@pytest.mark.parametrize("which", ["access", "secret"])
def test_wrong_credentials_fail_at_once_in_one_line(s3, sample_set, which):
    wrong = (
        {"MINIO_ACCESS_KEY": "AKIAWRONGWRONGWRONG1"}
        if which == "access"
        else {"MINIO_SECRET_KEY": "not-the-secret-at-all"}
    )
    result = s3_cli(
        s3,
        "shard",
        "--root",
        "s3://runs/denied",
        "--images",
        "s3://datasets/sample/val/",
        "--labels",
        "s3://datasets/sample/val_label.txt",
        "--model",
        TINY,
        "--shards",
        "1",
        "--index",
        "0",
        **wrong,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [l for l in result.stderr.splitlines() if "error" in l]
    assert len(lines) == 1 and "access denied (" in lines[0] and "check the access and secret keys" in lines[0]
    assert "not-the-secret-at-all" not in result.stderr


def test_a_missing_bucket_fails_at_once_in_one_line(s3):
    result = s3_cli(
        s3,
        "aggregate",
        "--root",
        "s3://no-such-bucket/x",
        "--labels",
        "s3://no-such-bucket/val_label.txt",
        "--batch-sizes",
        "4",
        "--shards",
        "1",
    )
    assert result.returncode == 2
    assert f"bucket 'no-such-bucket' does not exist at {s3.endpoint}; create it first" in result.stderr


def test_keys_that_escape_the_prefix_are_refused(s3_env):
    store = open_store("s3://runs/safe")
    for key in ("../other/x", "/abs", "a/../../b"):
        with pytest.raises(StorageError, match="refused object key"):
            store.write_bytes(key, b"x")


def test_missing_endpoint_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("PNAS_STORAGE_ENDPOINT", raising=False)
    with pytest.raises(StorageError, match="needs an endpoint"):
        open_store("s3://runs/x", StorageSettings.from_env({}))


def test_no_credential_appears_in_any_output_or_object(s3, s3_run):
    """Runs last in this module: every CLI output above, every object written and every log file."""
    texts = list(s3.outputs)
    client = s3.client()
    for obj in client.list_objects("runs", recursive=True):
        if obj.object_name.endswith((".json", ".txt")):
            texts.append(client.get_object("runs", obj.object_name).read().decode(errors="replace"))
    for log in s3_run["root"].rglob("*.log"):
        texts.append(log.read_text(errors="replace"))
    assert len(texts) > 20
    for text in texts:
        assert s3.secret_key not in text and s3.access_key not in text
