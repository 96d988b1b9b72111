"""The real pnasnet5large (86 M parameters, 331x331): export, onnxsim, parity and a small planted
evaluation. Marked slow (about two minutes here); `make test` runs them, `make test-fast` does not."""

from __future__ import annotations

import json

import pytest

from builders import tiny, write
from conftest import run_cli
from pnas_jobs.params import ConvertParams, ShardParams
from pnas_jobs import demo, layout, metric
from pnas_jobs.stages import convert

pytestmark = pytest.mark.slow
MODEL = "pnasnet5large"


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("pnasnet")
    return root, demo.plant_sample(MODEL, root / "images", root / "val_label.txt", root / "planted.pth", 8, seed=3)


def test_export_and_onnxsim_agree_with_pytorch(planted):
    root, weights = planted
    run = root / "store" / "test" / "pnasnet"  # the next test's run: its convert step finds this export done
    record = convert.main(ConvertParams(root=str(run), model=MODEL, weights=str(weights.weights)))
    for variant in ("onnx", "onnx_simplified"):
        assert record["parity"][variant]["max_abs_diff"] <= 1e-4, record["parity"]
    assert record["num_classes"] == 1000 and record["input_size"] == 331
    assert 300e6 < record["onnx"]["bytes"] < 400e6  # one self-contained file (the seed's 344 MB)
    assert not list((run / "model").glob("*.data"))


def test_planted_evaluation_is_exact(planted, tmp_path):
    root, weights = planted
    spec = tiny(
        "pnasnet",
        root / "images",
        root / "val_label.txt",
        weights.weights,
        root / "store",
        inference={"batchSizes": [4]},
        dataset={"shards": 2},
    )
    spec["spec"]["model"]["name"] = MODEL
    result = run_cli("run", str(write(tmp_path / "spec.yaml", spec)), "--local", "--workdir", str(tmp_path), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    run = root / "store" / "test" / "pnasnet"
    assert (run / layout.accuracy_json(4)).read_text() == metric.seed_json(weights.table())
    shard = json.loads((run / layout.shard_record(0)).read_text())
    assert shard["pixels"]["bytes"] / shard["shape"][0] == 331 * 331 * 3  # 328,683 B vs the seed's 1,314,732
