"""The whole local evaluation, end to end, on generated images with a planted classifier head.

The dataset holds the 24 planted images plus the kinds of trouble real data brings: a truncated
JPEG, an image with no label, and a label for an image that does not exist. The accuracy must be
exactly the planted one over the usable images, and every problem must be recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile

import pytest

from builders import TINY_MODEL, tiny, write
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
    spec = write(root / "pnaseval.yaml", tiny("tiny", images, labels, sample_set["planted"].weights, root / "store"))
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
        assert (
            result["throughput"] == round(timing["throughput"], 2)
            and result["json"] == f"result_bs{result['batchSize']}.json"
        )
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
        "run",
        str(completed_run["spec"]),
        "--local",
        "--workdir",
        str(completed_run["root"] / "work"),
        "--quiet",
        check=True,
    )
    assert {p: p.stat().st_mtime_ns for p in markers} == before
    assert again.stdout.split("report:")[0] == completed_run["stdout"].split("report:")[0]


def test_aggregate_scores_a_plain_ais_bench_folder(completed_run, tmp_path):
    folder = tmp_path / "2023_01_06-02_56_00"
    folder.mkdir()
    for index in range(3):
        with tarfile.open(completed_run["run"] / layout.result_tar(4, index)) as tar:
            tar.extractall(folder, filter="data")
    out = tmp_path / "result_bs4.json"
    result = run_cli(
        "aggregate", "--results", str(folder), "--labels", str(completed_run["labels"]), "--output", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert out.read_text() == (completed_run["run"] / layout.accuracy_json(4)).read_text()


def test_a_missing_shard_blocks_publication(completed_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(completed_run["run"], copy)
    (copy / layout.result_marker(4, 1)).unlink()
    (copy / layout.accuracy_json(4)).unlink()
    result = run_cli(
        "aggregate",
        "--root",
        str(copy),
        "--labels",
        str(completed_run["labels"]),
        "--batch-sizes",
        "1,4",
        "--shards",
        "3",
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
    result = run_cli(
        "aggregate",
        "--root",
        str(copy),
        "--labels",
        str(completed_run["labels"]),
        "--batch-sizes",
        "1,4",
        "--shards",
        "3",
        "--summary-file",
        str(summary),
    )
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


def copy_of(completed_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(completed_run["run"], copy)
    return copy


def aggregate(root, labels, batch_sizes="1,4"):
    return run_cli(
        "aggregate", "--root", str(root), "--labels", str(labels), "--batch-sizes", batch_sizes, "--shards", "3"
    )


def test_nothing_is_published_unless_everything_is(completed_run, tmp_path):
    """New labels and one shard's results missing at batch size 4: batch size 1 could be scored, but the
    run's folder must keep the earlier publication whole, not a mix of the two."""
    copy = copy_of(completed_run, tmp_path)
    published = {p.name: p.read_bytes() for p in copy.glob("*.json")}
    labels = tmp_path / "labels.txt"
    labels.write_text(
        "".join(
            f"{line.split()[0]} {(int(line.split()[1]) + 1) % 1000}\n"
            for line in completed_run["labels"].read_text().splitlines()
        )
    )
    (copy / layout.result_marker(4, 1)).unlink()
    result = aggregate(copy, labels)
    assert (
        result.returncode == 2
        and "missing for shards [1]" in result.stderr
        and "nothing was published" in result.stderr
    )
    assert {p.name: p.read_bytes() for p in copy.glob("*.json")} == published


def test_a_run_publishes_its_own_batch_sizes_only(completed_run, tmp_path):
    copy = copy_of(completed_run, tmp_path)
    result = aggregate(copy, completed_run["labels"], batch_sizes="4")
    assert result.returncode == 0, result.stderr
    assert not (copy / layout.accuracy_json(1)).exists()  # from the earlier run with batch sizes 1 and 4
    (row,) = json.loads((copy / layout.REPORT).read_text())["results"]
    assert (
        row["batchSize"] == 4
        and row["jsonSha256"] == hashlib.sha256((copy / layout.accuracy_json(4)).read_bytes()).hexdigest()
    )


def test_labels_outside_the_model_stop_inference_naming_the_line(completed_run, tmp_path):
    copy = copy_of(completed_run, tmp_path)
    lines = completed_run["labels"].read_text().splitlines()
    lines[2] = lines[2].split()[0] + " 1000"  # image 3, in shard 0; the model has 1000 classes
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(lines) + "\n")
    marker = (copy / layout.result_marker(4, 0)).read_bytes()
    run_cli(
        "shard",
        "--root",
        str(copy),
        "--images",
        str(completed_run["images"]),
        "--labels",
        str(labels),
        "--model",
        TINY_MODEL,
        "--shards",
        "3",
        "--index",
        "0",
        check=True,
    )
    result = run_cli("infer", "--root", str(copy), "--index", "0", "--batch-size", "4")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        f"spec.dataset.labels: {labels}:3: class 1000 of ILSVRC2012_val_00000003 is outside the model's 1000 classes "
        "(0..999)"
    ) in result.stderr
    assert (copy / layout.result_marker(4, 0)).read_bytes() == marker


def test_no_scored_image_is_an_error_that_says_why(sample_set, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in sample_set["names"][:3]:
        (images / f"{name}.JPEG").write_bytes((sample_set["images"] / f"{name}.JPEG").read_bytes()[:300])
    spec = write(
        tmp_path / "t.yaml",
        tiny(
            "t",
            images,
            sample_set["labels"],
            sample_set["planted"].weights,
            tmp_path / "store",
            dataset={"shards": 1},
            inference={"batchSizes": [1]},
        ),
    )
    result = run_cli("run", str(spec), "--local", "--workdir", str(tmp_path / "work"), "--quiet")
    assert result.returncode == 2
    assert (
        "aggregate failed (exit 2, 1 attempt): no image could be scored: of 3 images, 3 could not be decoded and 0 have no label"
        in result.stderr
    )
    assert not list((tmp_path / "store").rglob("result_bs*.json")) and not list(
        (tmp_path / "store").rglob("report.json")
    )


def test_aggregate_results_refuses_a_folder_without_results(tmp_path, completed_run):
    outer = tmp_path / "result"
    inner = outer / "2023_01_06-02_56_00"
    inner.mkdir(parents=True)
    refused = [
        run_cli(
            "aggregate",
            "--results",
            str(folder),
            "--labels",
            str(completed_run["labels"]),
            "--output",
            str(tmp_path / "out.json"),
        )
        for folder in (inner, outer)
    ]
    assert [r.returncode for r in refused] == [2, 2] and not (tmp_path / "out.json").exists()
    assert f"--results: no ais_bench TXT results (<image>_0.txt) in {inner}" in refused[0].stderr
    (inner / "ILSVRC2012_val_00000001_0.txt").write_text("0.100000 0.200000 \n")
    parent = run_cli(
        "aggregate",
        "--results",
        str(outer),
        "--labels",
        str(completed_run["labels"]),
        "--output",
        str(tmp_path / "out.json"),
    )
    assert parent.returncode == 2
    assert f"--results: {outer} holds no TXT results, but its folder 2023_01_06-02_56_00 does" in parent.stderr


def test_cleanup_deletes_what_a_run_wrote_and_says_so(completed_run, tmp_path):
    copy = copy_of(completed_run, tmp_path)
    (copy / "notes.txt").write_text("mine")
    result = run_cli("cleanup", "--root", str(copy))
    assert result.returncode == 0, result.stderr
    assert "cleanup: deleting " in result.stderr and f"objects of the run at {copy}: model/ (" in result.stderr
    assert "keeping 1 object a run does not write, e.g. notes.txt" in result.stderr
    assert sorted(p.name for p in copy.iterdir()) == ["notes.txt"]  # and no empty folders


@pytest.mark.parametrize("where", ["not a run", "parent of runs"])
def test_cleanup_refuses_a_folder_that_is_not_a_run(completed_run, tmp_path, where):
    if where == "parent of runs":
        folder = tmp_path / "runs"
        shutil.copytree(completed_run["run"], folder / "test" / "tiny")
    else:
        folder = tmp_path / "thesis"
        (folder / "chapters").mkdir(parents=True)
        (folder / "chapters" / "one.tex").write_text("x")
    files = sorted(folder.rglob("*"))
    result = run_cli("cleanup", "--root", str(folder))
    assert (
        result.returncode == 2
        and "is not the root of a pnas-eval run" in result.stderr
        and "nothing was deleted" in result.stderr
    )
    assert sorted(folder.rglob("*")) == files


def test_one_image_is_one_image(completed_run, tmp_path, capsys):
    from types import SimpleNamespace

    from pnas_jobs import local

    copy = copy_of(completed_run, tmp_path)
    report = json.loads((copy / layout.REPORT).read_text())
    report["dataset"]["failed"] = report["dataset"]["failed"][:1]
    (copy / layout.REPORT).write_text(json.dumps(report))
    local._print_results(SimpleNamespace(root=str(copy)), {}, 1.0)
    assert "\n1 image could not be used (see report.json): e.g. " in capsys.readouterr().out
