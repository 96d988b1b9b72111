"""The whole local evaluation, end to end, on generated images with a planted classifier head.

The dataset holds the 24 planted images plus the kinds of trouble real data brings: a truncated
JPEG, an image with no label, and a label for an image that does not exist. The accuracy must be
exactly the planted one over the usable images, and every problem must be recorded.
"""
from __future__ import annotations

import json
import os
import shutil
import tarfile

import pytest

from builders import tiny, write
from conftest import run_cli
from pnas_jobs import layout, metric


@pytest.fixture(scope="module")
def completed_run(sample_set, tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    images = root / "images"
    shutil.copytree(sample_set["images"], images)
    good = (images / "ILSVRC2012_val_00000003.JPEG").read_bytes()
    (images / "ILSVRC2012_val_00000900.JPEG").write_bytes(good[: len(good) // 3])  # truncated
    shutil.copy(images / "ILSVRC2012_val_00000004.JPEG", images / "unlabelled_0001.JPEG")
    labels = root / "val_label.txt"
    labels.write_text(
        sample_set["labels"].read_text() + "ILSVRC2012_val_00000900.JPEG 7\nILSVRC2012_val_00000999.JPEG 3\n"
    )
    spec = write(
        root / "pnaseval.yaml", tiny("tiny", images, labels, sample_set["planted"].weights, root / "store")
    )
    first = run_cli("run", str(spec), "--local", "--workdir", str(root / "work"), "--workers", "2", check=True)
    run_root = root / "store" / "test" / "tiny"
    return dict(root=root, spec=spec, run=run_root, stdout=first.stdout, labels=labels, images=images)


def test_accuracy_json_is_exactly_the_planted_answer(completed_run, sample_set):
    expected = metric.seed_json(sample_set["planted"].table())
    for batch_size in (1, 4):
        assert (completed_run["run"] / layout.accuracy_json(batch_size)).read_text() == expected
    assert expected in completed_run["stdout"]
    assert "| batch size |" in completed_run["stdout"]


def test_bad_images_are_recorded_not_lost(completed_run):
    report = json.loads((completed_run["run"] / layout.REPORT).read_text())
    failed = {f["image"]: f["error"] for f in report["dataset"]["failed"]}
    assert set(failed) == {"ILSVRC2012_val_00000900.JPEG", "unlabelled_0001.JPEG"}
    assert "cannot decode" in failed["ILSVRC2012_val_00000900.JPEG"]
    assert "no label" in failed["unlabelled_0001.JPEG"]
    assert report["dataset"]["images"] == 26 and report["dataset"]["scored"] == 24
    assert report["dataset"]["labels_without_image"] == ["ILSVRC2012_val_00000999"]
    assert "2 images could not be used" in completed_run["stdout"]


def test_report_has_counts_checksums_and_timings(completed_run):
    report = json.loads((completed_run["run"] / layout.REPORT).read_text())
    # 26 images in 3 contiguous shards; the two bad ones sort last
    assert [(s["images"], s["failed"]) for s in report["shards"]] == [(9, 0), (9, 0), (6, 2)]
    assert len(report["model"]["onnx_sha256"]) == 64 and len(report["model"]["weights"]["sha256"]) == 64
    assert report["model"]["parity"]["passed"]
    for result in report["results"]:
        assert result["images"] == 24 and result["classes"] == 1000
        timing = result["timing"]
        assert timing["throughput"] > 0 and timing["endToEnd"] > 0
        assert timing["batches"] == sum(-(-n // result["batchSize"]) for n in (9, 9, 6))
        assert result["throughput"] == round(timing["throughput"], 2) and result["json"] == f"result_bs{result['batchSize']}.json"
    assert report["timings"]["aggregate_s"] > 0


def test_results_are_ais_bench_txt_files_grouped_per_shard(completed_run):
    with tarfile.open(completed_run["run"] / layout.result_tar(4, 0)) as tar:
        members = tar.getmembers()
        assert all(m.name.endswith("_0.txt") for m in members)
        text = tar.extractfile(members[0]).read().decode()
    assert text.endswith("\n") and text.count("\n") == 1
    values = text.split()
    assert len(values) == 1000 and all(len(v.split(".")[1]) == 6 for v in values)  # "%f"


def test_shard_pixels_are_a_quarter_of_the_seed_bin(completed_run):
    record = json.loads((completed_run["run"] / layout.shard_record(0)).read_text())
    per_image = record["pixels"]["bytes"] / record["shape"][0]
    seed_bin = 4 * 3 * 160 * 160  # the seed's float32 CHW .bin at this model's 160x160 input
    assert per_image == 160 * 160 * 3 == seed_bin / 4


def test_rerun_resumes_without_recomputing(completed_run):
    markers = sorted(completed_run["run"].glob("**/shard-*.json")) + [completed_run["run"] / layout.CONVERT_RECORD]
    before = {p: p.stat().st_mtime_ns for p in markers}
    again = run_cli(
        "run", str(completed_run["spec"]), "--local", "--workdir", str(completed_run["root"] / "work"), "--quiet",
        check=True,
    )  # fmt: skip
    assert {p: p.stat().st_mtime_ns for p in markers} == before
    assert again.stdout.split("report:")[0] == completed_run["stdout"].split("report:")[0]


def test_aggregate_scores_a_plain_ais_bench_folder(completed_run, tmp_path):
    folder = tmp_path / "2023_01_06-02_56_00"
    folder.mkdir()
    for index in range(3):
        with tarfile.open(completed_run["run"] / layout.result_tar(4, index)) as tar:
            tar.extractall(folder, filter="data")
    out = tmp_path / "result_bs4.json"
    result = run_cli("aggregate", "--results", str(folder), "--labels", str(completed_run["labels"]), "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_text() == (completed_run["run"] / layout.accuracy_json(4)).read_text()


def test_a_missing_shard_blocks_publication(completed_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(completed_run["run"], copy)
    (copy / layout.result_marker(4, 1)).unlink()
    (copy / layout.accuracy_json(4)).unlink()
    result = run_cli(
        "aggregate", "--root", str(copy), "--labels", str(completed_run["labels"]), "--batch-sizes", "1,4", "--shards", "3"
    )
    assert result.returncode == 2
    assert "missing for shards [1]" in result.stderr and "Traceback" not in result.stderr
    assert not (copy / layout.accuracy_json(4)).exists()


def test_the_aggregate_summary_fits_a_termination_message(completed_run, tmp_path):
    """The operator reads the summary from the aggregate pod's termination message, which Kubernetes
    cuts at 4 KiB: even 16 batch sizes (the most a spec allows) must fit, whatever the run's URI."""
    copy = tmp_path / "a-run-folder-with-a-rather-long-name-to-make-the-uri-long"
    shutil.copytree(completed_run["run"], copy)
    summary = tmp_path / "termination-log"
    result = run_cli("aggregate", "--root", str(copy), "--labels", str(completed_run["labels"]),
                     "--batch-sizes", "1,4", "--shards", "3", "--summary-file", str(summary))  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = summary.read_text()
    results = json.loads(text)["results"]
    assert [r["batchSize"] for r in results] == [1, 4] and str(copy) not in text
    worst = max(len(json.dumps(r)) for r in results)
    assert len(text) + 14 * (worst + 2) < 4096


def test_each_infer_unit_runs_the_threads_of_its_cpu_share(completed_run):
    """Two workers on this machine: each unit is given its CPUs / 2 (PNAS_CPU_MILLICORES, as a pod's
    downward API gives its request), and onnxruntime runs that many intra-op threads, not one per core."""
    share = max(1, len(os.sched_getaffinity(0)) // 2)
    for batch_size in (1, 4):
        for index in range(3):
            marker = json.loads((completed_run["run"] / layout.result_marker(batch_size, index)).read_text())
            assert marker["threads"] == share, (batch_size, index)
