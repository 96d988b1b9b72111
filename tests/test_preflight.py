"""Preflight checks of storage and data, against the loopback S3 server (credentials enforced)."""

from __future__ import annotations

import pytest

from builders import tiny
from pnas_jobs import preflight
from pnas_jobs.spec import parse_manifest

PREFIX = "preflight"


@pytest.fixture(scope="module")
def bucket(s3, sample_set):
    s3.upload_dir(sample_set["images"], "datasets", f"{PREFIX}/val")
    client = s3.client()
    client.fput_object("datasets", f"{PREFIX}/val_label.txt", str(sample_set["labels"]))
    client.fput_object("models", f"{PREFIX}/planted.pth", str(sample_set["planted"].weights))
    return s3


def spec(s3, **sections):
    storage = {"endpoint": s3.endpoint, **sections.pop("storage", {})}
    data = tiny(
        "pf",
        f"s3://datasets/{PREFIX}/val/",
        f"s3://datasets/{PREFIX}/val_label.txt",
        f"s3://models/{PREFIX}/planted.pth",
        "s3://runs/preflight",
        storage=storage,
        **sections,
    )
    return parse_manifest(data).spec


def checks(s3, monkeypatch, **sections):
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    return preflight.run_checks(spec(s3, **sections))


def test_storage_and_data_that_can_run(bucket, monkeypatch):
    found = checks(bucket, monkeypatch)
    assert [f.level for f in found] == ["ok"] * 4, [f.line() for f in found]
    assert found[1].detail.startswith("24 images under s3://datasets/preflight/val/")
    assert preflight.exit_code(found) == 0
    assert bucket.secret_key not in "".join(f.line() for f in found)


@pytest.mark.parametrize(
    "sections, check, says, fix",
    [
        (
            {"storage": {"uri": "s3://no-such-bucket/runs"}},
            "storage: outputs",
            "does not exist",
            "mc mb <alias>/no-such-bucket",
        ),
        (
            {"dataset": {"images": "s3://datasets/nothing-here/"}},
            "dataset: images",
            "no images under",
            "fix the named field",
        ),
        (
            {"dataset": {"labels": "s3://datasets/preflight/missing.txt"}},
            "dataset: labels",
            "does not exist",
            "fix the named field",
        ),
        (
            {"model": {"weights": "s3://models/preflight/none.pth"}},
            "model: weights",
            "does not exist",
            "spec.model.weights",
        ),
        ({"dataset": {"shards": 40}}, "dataset: shards", "40 shards for 24 images", "at most 24"),
    ],
)
def test_each_problem_is_named_with_its_fix(bucket, monkeypatch, sections, check, says, fix):
    found = checks(bucket, monkeypatch, **sections)
    (problem,) = [f for f in found if f.level == "problem"]
    assert (problem.check, says in problem.detail, fix in problem.fix) == (check, True, True), problem.line()
    assert preflight.exit_code(found) == 2


def test_labels_that_name_none_of_the_images(bucket, monkeypatch, tmp_path):
    other = tmp_path / "labels.txt"
    other.write_text("".join(f"n{i:08d}.JPEG {i}\n" for i in range(10)))
    bucket.client().fput_object("datasets", f"{PREFIX}/other_label.txt", str(other))
    found = checks(bucket, monkeypatch, dataset={"labels": f"s3://datasets/{PREFIX}/other_label.txt"})
    (problem,) = [f for f in found if f.level == "problem"]
    assert problem.check == "dataset: labels" and "has a label in" in problem.detail, problem.line()


def test_an_endpoint_that_does_not_answer_is_unreachable_not_a_problem(bucket, monkeypatch):
    from support.s3 import free_port

    found = checks(bucket, monkeypatch, storage={"endpoint": f"127.0.0.1:{free_port()}"})
    assert {f.level for f in found} == {"unreachable"} and preflight.exit_code(found) == 1


def test_the_preflight_stage_in_a_pod_passes_or_stops_the_run_with_the_problems(bucket, tmp_path):
    """`pnas-eval preflight` as the first Job of a run runs it: findings in its termination log, exit 0 or 2."""
    from conftest import s3_cli

    log = tmp_path / "termination-log"
    base = [
        "preflight",
        "--root",
        "s3://runs/preflight/ml/pf",
        "--labels",
        f"s3://datasets/{PREFIX}/val_label.txt",
        "--weights",
        f"s3://models/{PREFIX}/planted.pth",
        "--shards",
        "3",
        "--summary-file",
        str(log),
    ]
    passed = s3_cli(bucket, *base, "--images", f"s3://datasets/{PREFIX}/val/", PNAS_STORAGE_ENDPOINT=bucket.endpoint)
    assert passed.returncode == 0, passed.stderr
    assert log.read_text() == "" and "ok          dataset: images: 24 images" in passed.stderr
    failed = s3_cli(bucket, *base, "--images", f"s3://datasets/{PREFIX}/none/", PNAS_STORAGE_ENDPOINT=bucket.endpoint)
    assert failed.returncode == 2, failed.stderr
    assert log.read_text().startswith("problem: dataset: images: ") and "(fix: " in log.read_text()
    assert "pnas-eval preflight: error: preflight: problem: dataset: images" in failed.stderr
    assert bucket.secret_key not in failed.stderr + log.read_text()


def test_the_preflight_stage_imports_nothing_heavy():
    import subprocess
    import sys

    code = "import sys, pnas_jobs.stages.preflight; print(sorted(m for m in ('torch', 'timm', 'onnx', 'onnxruntime') if m in sys.modules))"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    )
