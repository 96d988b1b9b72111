"""The PyTorch backend (an entry of the backend registry like any other): the timm model with the
run's weights, fed the shards' tensors, gives the planted accuracy end to end, and the same scores
as onnxruntime on the same images up to float rounding."""

from __future__ import annotations

import json
import tarfile

import numpy as np

from builders import tiny, write
from conftest import run_cli
from pnas_jobs import layout, metric


def scores(tar_path) -> dict[str, np.ndarray]:
    with tarfile.open(tar_path) as tar:
        return {m.name: np.array(tar.extractfile(m).read().split(), dtype=np.float32) for m in tar.getmembers()}


def test_pytorch_gives_the_planted_answer_and_onnxruntimes_scores(sample_set, tmp_path):
    runs = {}
    for backend in ("pytorch", "onnxruntime"):
        data = tiny(
            backend,
            sample_set["images"],
            sample_set["labels"],
            sample_set["planted"].weights,
            tmp_path / "store",
            inference={"backend": backend, "batchSizes": [4]},
            dataset={"shards": 2},
        )
        result = run_cli(
            "run", str(write(tmp_path / f"{backend}.yaml", data)), "--local", "--workdir", str(tmp_path), "--quiet"
        )
        assert result.returncode == 0, result.stderr[-2000:]
        runs[backend] = tmp_path / "store" / "test" / backend
    expected = metric.seed_json(sample_set["planted"].table())
    assert (runs["pytorch"] / layout.accuracy_json(4)).read_text() == expected
    assert (runs["pytorch"] / layout.STATE_DICT).is_file() and not (runs["onnxruntime"] / layout.STATE_DICT).exists()
    report = json.loads((runs["pytorch"] / layout.REPORT).read_text())
    assert report["results"][0]["backend"] == "pytorch" and report["results"][0]["device"] == "cpu"
    for index in range(2):
        torch_scores = scores(runs["pytorch"] / layout.result_tar(4, index))
        ort_scores = scores(runs["onnxruntime"] / layout.result_tar(4, index))
        assert torch_scores.keys() == ort_scores.keys()
        worst = max(float(np.abs(torch_scores[k] - ort_scores[k]).max()) for k in torch_scores)
        assert worst < 1e-4, worst  # fp32 both, the same tensors: rounding only
