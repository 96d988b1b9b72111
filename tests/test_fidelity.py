"""The fidelity report: the comparison against an independent, plain-Python computation on the same
scores; the reference step in the plan and the verdict in the status (pure); and two local runs on the
planted-head sample: onnxruntime against the PyTorch reference (fp32 both: full agreement), and
ais_bench on a float16 model. No NPU or CANN here: the .om comes from the stand-in ATC at upstream's
default precision (force_fp16, see tests/support/fake_atc.py) and runs on the stand-in runtime, so
what is tested is pnas-eval's side: the sample, the reference's outputs, the figures and the verdict."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from builders import TINY_MODEL, job, planned, pnaseval, tiny, write
from conftest import run_cli
from pnas_jobs import demo, fidelity, layout, plan, transform
from pnas_jobs.report import Report, Summary
from pnas_operator import state
from support import fake_atc
from test_ais_bench import ASCEND


def independent(names, deployed, reference, labels, max_drop):
    """Row by row, no shared helper: agreement with sorted(), accuracy with the seed's own argsort."""

    def best(row, k):
        return [c for c, _ in sorted(enumerate(row.tolist()), key=lambda cv: (-cv[1], cv[0]))[:k]]

    n = len(names)
    top1_same = [best(d, 1) == best(r, 1) for d, r in zip(deployed, reference)]
    top5_same = [set(best(d, 5)) == set(best(r, 5)) for d, r in zip(deployed, reference)]
    # accuracy as the seed's script scores it: the label among np.argsort(-row)[:k] (its own tie order)
    hit = lambda rows, k: sum(int(label in np.argsort(-row)[:k]) for row, label in zip(rows, labels))  # noqa: E731
    top1, ref1 = round(100 * hit(deployed, 1) / n, 2), round(100 * hit(reference, 1) / n, 2)
    diffs = [abs(float(a) - float(b)) for d, r in zip(deployed, reference) for a, b in zip(d, r)]
    return {
        "top1Agreement": round(100 * sum(top1_same) / n, 2),
        "top5Agreement": round(100 * sum(top5_same) / n, 2),
        "top1": top1,
        "referenceTop1": ref1,
        "top1Drop": round(ref1 - top1, 2),
        "maxAbsDiff": max(diffs),
        "meanAbsDiff": sum(diffs) / len(diffs),
        "disagreements": [name for name, same in zip(names, top1_same) if not same][:20],
        "ok": round(ref1 - top1, 2) <= max_drop,
    }


@pytest.mark.parametrize("noise, max_drop", [(0.0, 0.1), (0.02, 0.1), (0.5, 0.1), (0.5, 50.0)])
def test_compare_matches_an_independent_computation(noise, max_drop):
    rng = np.random.default_rng(7)
    reference = rng.normal(0, 1, (300, 1000)).astype(np.float32)
    labels = reference.argmax(axis=1)
    labels[::3] = rng.integers(0, 1000, 100)  # a third of the reference's answers are wrong
    # float16 round trip, as ATC's default precision, plus noise
    deployed = (reference.astype(np.float16).astype(np.float32) + rng.normal(0, noise, reference.shape)).astype(
        np.float32
    )
    names = [f"ILSVRC2012_val_{i:08d}" for i in range(len(labels))]
    got = fidelity.compare(names, deployed, reference, labels, max_drop, batch_size=4)
    want = independent(names, deployed, reference, labels, max_drop)
    assert {k: got[k] for k in want if k not in ("maxAbsDiff", "meanAbsDiff")} == {
        k: v for k, v in want.items() if k not in ("maxAbsDiff", "meanAbsDiff")
    }
    assert got["maxAbsDiff"] == pytest.approx(want["maxAbsDiff"]) and got["meanAbsDiff"] == pytest.approx(
        want["meanAbsDiff"]
    )
    assert (got["batchSize"], got["images"]) == (4, 300)
    if noise == 0.0:  # float16 rounding alone: ties among the best scores flip a few top-1 answers
        assert 99.0 <= got["top1Agreement"] < 100.0 and got["maxAbsDiff"] < 1e-2


def test_identical_outputs_agree_fully():
    scores = np.random.default_rng(1).normal(size=(20, 10)).astype(np.float32)
    got = fidelity.compare(list("abcdefghijklmnopqrst"), scores, scores.copy(), np.zeros(20, np.int64), 0.1, 1)
    assert (got["top1Agreement"], got["top5Agreement"], got["top1Drop"], got["maxAbsDiff"], got["ok"]) == (
        100.0,
        100.0,
        0.0,
        0.0,
        True,
    )


@pytest.mark.parametrize(
    "shards, images, limit, sample",
    [
        (16, 500, 0, (8,)),
        (10, 500, 5000, (5,)),
        (3, 500, 48, (0, 1, 2)),
        (16, 10000, 0, (2, 6, 10, 14)),
        (4, 1, 0, (2,)),
    ],
)
def test_the_sample_is_whole_shards_spread_over_the_set(shards, images, limit, sample):
    assert plan.sample_shards(shards, images, limit) == sample


# --- end to end: the reference step, the report, the verdict ---------------------------------------

FIDELITY = {"reference": "pytorch", "images": 24}  # with limit 24 on 2 shards: both are sampled
SMALL = {"limit": 24, "shards": 2}


def tar_scores(path) -> dict[str, np.ndarray]:
    """Each image's scores from an output tar, read with tarfile and numpy alone (not results.py)."""
    with tarfile.open(path) as tar:
        return {
            m.name[: -len("_0.txt")]: np.array(tar.extractfile(m).read().split(b"\n")[0].split(), dtype=np.float32)
            for m in tar.getmembers()
        }


def independent_from_tars(run, batch_size: int, shards: int, labels_file, max_drop: float) -> dict:
    """The fidelity of a run's outputs recomputed from its tars and the labels file."""
    deployed, reference = {}, {}
    for index in range(shards):
        deployed |= tar_scores(run / layout.result_tar(batch_size, index))
        reference |= tar_scores(run / layout.reference_tar(index))
    labels = dict(line.split() for line in Path(labels_file).read_text().splitlines())
    names = sorted(reference)  # the order does not matter to any figure but the list of names
    got = independent(
        names,
        np.stack([deployed[n] for n in names]),
        np.stack([reference[n] for n in names]),
        [int(labels[f"{n}.JPEG"]) for n in names],
        max_drop,
    )
    return got | {"images": len(names), "disagreements": sorted(got["disagreements"])}


def same_figures(report_section: dict, want: dict) -> None:
    got = {k: report_section[k] for k in want} | {"disagreements": sorted(report_section["disagreements"])}
    assert {k: v for k, v in got.items() if "AbsDiff" not in k} == {k: v for k, v in want.items() if "AbsDiff" not in k}
    assert got["maxAbsDiff"] == pytest.approx(want["maxAbsDiff"]) and got["meanAbsDiff"] == pytest.approx(
        want["meanAbsDiff"]
    )


def test_onnxruntime_agrees_fully_with_the_pytorch_reference(sample_set, tmp_path):
    """The planted-head sample: fp32 against fp32 on the same tensors, so every top-1 is the same."""
    data = tiny(
        "fid",
        sample_set["images"],
        sample_set["labels"],
        sample_set["planted"].weights,
        tmp_path / "store",
        dataset=SMALL,
        inference={"batchSizes": [1, 4]},
        fidelity=FIDELITY,
    )
    result = run_cli("run", str(write(tmp_path / "fid.yaml", data)), "--local", "--workdir", str(tmp_path / "work"))
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "store" / "test" / "fid"
    report = json.loads((run / layout.REPORT).read_text())
    for row in report["results"]:
        section = row["fidelity"]
        assert (section["top1Agreement"], section["top1Drop"], section["ok"], section["images"]) == (
            100.0,
            0.0,
            True,
            24,
        )
        assert section["top1"] == section["referenceTop1"] == row["top1"]  # the whole set is the sample here
        assert (row["top1Agreement"], row["top1Drop"], row["fidelityOk"]) == (100.0, 0.0, True)
        same_figures(section, independent_from_tars(run, row["batchSize"], 2, sample_set["labels"], 0.1))
    assert set(report["checks"]) == {"conversionParity", "fidelity"} and report["checks"]["fidelity"]["shards"] == [
        0,
        1,
    ]
    assert "| agreement % | top-1 drop |" in result.stdout and "100.00 |       0.00 |" in result.stdout
    assert "FIDELITY FAILED" not in result.stderr
    # the status's share of it still fits a 4 KiB termination message at 16 batch sizes
    summary = Report.model_validate(report).summary()
    worst = max(len(r.model_dump_json(by_alias=True, exclude_none=True)) for r in summary.results)
    assert worst > 100 and 16 * (worst + 2) + 40 < 4096


def plant_near_ties(sample_set, weights: Path, runner_up: float):
    """The sample set's images with a head under which every first-ranked label has a runner-up
    `runner_up` points below it: fp32 keeps them apart, float16 (ulp 2**-7 near the label's score
    of 10) may not."""
    labels = {
        n[: -len(".JPEG")]: int(c) for n, c in (line.split() for line in sample_set["labels"].read_text().splitlines())
    }
    names, config = sorted(labels), transform.resolve(TINY_MODEL)
    crops = demo.crops_of(sample_set["images"], names, config)
    return demo.plant_head(
        TINY_MODEL, crops, names, labels, demo.default_ranks(names), weights, config, runner_up=runner_up
    )


@pytest.fixture(scope="module")
def float16_run(sample_set, tmp_path_factory):
    """ais_bench on an .om that the stand-in ATC built at its default precision upstream (force_fp16),
    against the PyTorch reference, with maxTop1Drop 0."""
    root = tmp_path_factory.mktemp("float16")
    weights = plant_near_ties(sample_set, root / "near-ties.pth", runner_up=0.004).weights
    fake_atc.install(root / "bin")
    data = tiny(
        "fp16",
        sample_set["images"],
        sample_set["labels"],
        weights,
        root / "store",
        dataset=SMALL,
        convert={"target": "om"},
        inference={"backend": "ais_bench", "device": "npu", "batchSizes": [4]},
        fidelity=FIDELITY | {"maxTop1Drop": 0.0},
    )
    env = {**ASCEND, "PATH": f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}", "FAKE_ATC_PRECISION": "force_fp16"}
    result = run_cli("run", str(write(root / "fp16.yaml", data)), "--local", "--workdir", str(root / "work"), env=env)
    return dict(result=result, run=root / "store" / "test" / "fp16")


def test_float16_loses_what_an_independent_computation_says_and_the_verdict_follows_max_drop(float16_run, sample_set):
    result, run = float16_run["result"], float16_run["run"]
    assert result.returncode == 0, result.stderr[-3000:]  # a lost-accuracy verdict is a result, not a failure
    report = json.loads((run / layout.REPORT).read_text())
    section = report["results"][0]["fidelity"]
    want = independent_from_tars(run, 4, 2, sample_set["labels"], 0.0)
    same_figures(section, want)
    assert want["top1Drop"] > 0 and want["top1Agreement"] < 100, "the near ties were meant to break in float16"
    assert section["ok"] is False and report["results"][0]["fidelityOk"] is False
    assert "FIDELITY FAILED: batch sizes [4]" in result.stderr and f"{section['top1Drop']:.2f} FAILED" in result.stdout
    # which check caught what: convert's parity (PyTorch against the fp32 ONNX) passed; the fidelity did not
    assert report["checks"]["conversionParity"]["ok"] is True and report["checks"]["fidelity"]["ok"] is False
    # the same outputs judged with a threshold at the drop: the verdict passes, the figures stay
    again = run_cli(
        "aggregate",
        "--root",
        str(run),
        "--labels",
        str(sample_set["labels"]),
        "--batch-sizes",
        "4",
        "--shards",
        "2",
        "--reference-sample",
        "0,1",
        "--max-top1-drop",
        str(want["top1Drop"]),
    )
    assert again.returncode == 0, again.stderr[-2000:]
    passed = json.loads((run / layout.REPORT).read_text())["results"][0]["fidelity"]
    assert passed["ok"] is True and {k: v for k, v in passed.items() if k != "ok"} == {
        k: v for k, v in section.items() if k != "ok"
    }


# --- the plan and the status: pure -----------------------------------------------------------------


def fidelity_plan(**fidelity_spec):
    _, made = planned(pnaseval(inference={"batchSizes": [1, 4]}, fidelity={"reference": "pytorch", **fidelity_spec}))
    return made


def test_the_reference_runs_beside_inference_on_the_sample_and_the_aggregate_waits_for_it():
    made = fidelity_plan(images=500, device="cuda", maxTop1Drop=0.5)
    reference = made.step("reference")
    assert [s.name for s in made.steps] == ["convert", "shard", "infer-bs1", "infer-bs4", "reference", "aggregate"]
    assert reference.after == ("convert", "shard") and made.step("aggregate").after == ("infer-bs4", "reference")
    # 4 shards of (assumed) 50,000: one shard holds 500 images; the reference runs it, on a GPU node
    assert (reference.params.sample, reference.completions, reference.indexed) == ((2,), 1, True)
    assert reference.placement.resources == {"nvidia.com/gpu": 1} and reference.params.device == "cuda"
    assert [s.name for s in made.infer_steps()] == ["infer-bs1", "infer-bs4"]  # shard counts follow these only
    aggregate = made.step("aggregate").params
    assert (aggregate.reference_sample, aggregate.max_top1_drop) == ((2,), 0.5)
    assert "--reference-sample 2 --max-top1-drop 0.5" in " ".join(made.step("aggregate").command)
    _, plain = planned(pnaseval())
    assert "reference" not in [s.name for s in plain.steps] and "--max-top1-drop" not in plain.step("aggregate").command


def status_of(made, jobs, summary=None):
    return state.derive(
        made, jobs, None, "2026-12-02T10:00:00Z", 1, summary and Summary.model_validate(summary)
    ).status.dump()


def test_while_the_reference_runs_the_phase_is_inferring_and_progress_follows_inference():
    made = fidelity_plan()
    prep = [job("eval", "convert", complete=True, succeeded=1), job("eval", "shard", complete=True, succeeded=4)]
    both = status_of(made, prep + [job("eval", "infer-bs1", succeeded=3, active=1), job("eval", "reference", active=1)])
    assert (both["phase"], both["progress"]) == ("Inferring", "3/4 bs1")
    inferred = prep + [
        job("eval", "infer-bs1", complete=True, succeeded=4),
        job("eval", "infer-bs4", complete=True, succeeded=4),
    ]
    waiting = status_of(made, inferred + [job("eval", "reference", active=1)])
    assert (waiting["phase"], waiting["message"], waiting["progress"]) == (
        "Inferring",
        "reference: 0/1 done",
        "4/4 bs4",
    )
    assert not any(c["type"] == "FidelityOK" for c in waiting["conditions"])


def test_a_lost_verdict_is_a_succeeded_run_with_fidelity_ok_false_naming_the_batch_size():
    made = fidelity_plan(maxTop1Drop=0.1)
    jobs = [
        job("eval", s, complete=True, succeeded=1)
        for s in ("convert", "shard", "infer-bs1", "infer-bs4", "reference", "aggregate")
    ]
    results = [
        {"batchSize": 1, "images": 9, "top1": 81.76, "top1Agreement": 99.1, "top1Drop": 1.02, "fidelityOk": False},
        {"batchSize": 4, "images": 9, "top1": 82.7, "top1Agreement": 99.8, "top1Drop": 0.08, "fidelityOk": True},
    ]
    status = status_of(made, jobs, {"results": results})
    assert status["phase"] == "Succeeded" and status["worstAgreement"] == 99.1
    assert "accuracy lost against the fidelity reference at bs1" in status["message"]
    lost = next(c for c in status["conditions"] if c["type"] == "FidelityOK")
    assert (lost["status"], lost["reason"]) == ("False", "AccuracyLost")
    assert lost["message"].startswith("bs1: top-1 drop 1.02 points, agreement 99.10%") and "bs4" not in lost["message"]
