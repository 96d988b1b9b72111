"""The ais_bench backend, driven by stand-ins of ais_bench and ATC (no NPU or CANN can run here).

The stand-in ATC copies the ONNX model as the ".om" and the stand-in ais_bench runs it with
onnxruntime, so the results must equal the onnxruntime backend's to the byte; what is tested is
pnas-eval's side: model per batch size, device id, padding, TXT layout, timings.
"""
from __future__ import annotations

import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest

from builders import TINY_MODEL
from conftest import run_cli
from pnas_jobs.params import ConvertParams, ShardParams
from pnas_jobs import layout, records
from pnas_jobs.stages import convert, shard
from pnas_jobs.storage import open_store

SUPPORT = Path(__file__).parent / "support"


@pytest.fixture(scope="module")
def om_run(sample_set, tmp_path_factory):
    root = tmp_path_factory.mktemp("ascend")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    atc = bin_dir / "atc"
    atc.write_text(
        "#!/bin/sh\nfor a in \"$@\"; do case $a in --output=*) out=${a#--output=};; --model=*) m=${a#--model=};; esac; done\n"
        "cp \"$m\" \"$out.om\"\n"
    )
    atc.chmod(atc.stat().st_mode | stat.S_IEXEC)
    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{old_path}"
    try:
        convert.main(ConvertParams(root=str(root / "run"), model=TINY_MODEL, weights=str(sample_set["planted"].weights), target="om", batch_sizes=(4,)))
    finally:
        os.environ["PATH"] = old_path
    shard.main(ShardParams(root=str(root / "run"), images=str(sample_set["images"]), labels=str(sample_set["labels"]), model=TINY_MODEL, shards=2, index=1))
    return root


def txt_members(path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def reference(om_run, tmp_path) -> dict[str, bytes]:
    copy = tmp_path / "onnxruntime"
    shutil.copytree(om_run / "run", copy)
    run_cli("infer", "--root", str(copy), "--index", "1", "--batch-size", "4", "--backend", "onnxruntime", check=True)
    return txt_members(copy / layout.result_tar(4, 1))


@pytest.mark.parametrize("fake", ["fake_ais_bench", "fake_ais_bench_cli"])
def test_ais_bench_results_equal_onnxruntime(om_run, tmp_path, fake):
    run = tmp_path / "run"
    shutil.copytree(om_run / "run", run)
    log = tmp_path / "ais.log"
    env = {"PYTHONPATH": str(SUPPORT / fake), "FAKE_AIS_LOG": str(log), "ASCEND_VISIBLE_DEVICES": "3,5"}
    result = run_cli("infer", "--root", str(run), "--index", "1", "--batch-size", "4", "--backend", "ais_bench",
                     "--device", "npu", env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    got = txt_members(run / layout.result_tar(4, 1))
    assert len(got) == 12 and got == reference(om_run, tmp_path)
    marker = records.read(open_store(run), layout.result_marker(4, 1))
    assert marker["compute"]["count"] == 3 and marker["compute"]["throughput"] > 0
    first = log.read_text().splitlines()[0]
    assert first in ("InferSession device_id=3", "cli device=3 batchsize=4")


def test_without_ais_bench_the_error_says_where_to_run(om_run, tmp_path):
    result = run_cli("infer", "--root", str(om_run / "run"), "--index", "1", "--batch-size", "4", "--backend", "ais_bench",
                     "--device", "npu")  # fmt: skip
    assert result.returncode == 2 and "run in the Ascend jobs image" in result.stderr


def test_a_batch_size_without_its_om_model(om_run):
    result = run_cli("infer", "--root", str(om_run / "run"), "--index", "1", "--batch-size", "8", "--backend", "ais_bench",
                     "--device", "npu", env={"PYTHONPATH": str(SUPPORT / "fake_ais_bench")})  # fmt: skip
    assert result.returncode == 2 and "no Ascend model for batch size 8" in result.stderr
