"""Resuming goes by content, not by names: after a change to the data, a re-run redoes exactly the
units made from what changed, and its accuracy equals a fresh run's on the changed data. A damaged
or missing output is made again by the next run instead of failing it forever.

Each case starts from a copy of one finished run and its data, changes one thing, then runs the
plan's units again, in this process: which units skip is decided inside the stages, and the
runner's processes (tested with the real runner in test_pipeline.py and test_local_runner.py)
would only add their start-up time. Both on local files and in an S3 bucket (moto's server on
loopback, the real minio SDK).
"""

from __future__ import annotations

import importlib
import itertools

import pytest

from builders import planned, tiny
from pnas_jobs import layout, records
from pnas_jobs.storage import open_store

IMAGE_5, IMAGE_11 = "images/ILSVRC2012_val_00000005.JPEG", "images/ILSVRC2012_val_00000011.JPEG"  # shards 0 and 1 of 3
_cases = itertools.count()


def copy(source, target) -> None:
    for key in source.list():
        target.write_bytes(key, source.read_bytes(key))


def run_here(plan) -> None:
    """Every unit of the plan, in order, in this process: what the runner's processes run."""
    for step in plan.steps:
        for index in range(step.completions) if step.indexed else [None]:
            params = step.params if index is None else step.params.model_copy(update={"index": index})
            module, _, function = params.ENTRY.partition(":")
            getattr(importlib.import_module(module), function)(params)


class Case:
    """A copy of the finished run and of its data, and the plan that evaluates the copy."""

    def __init__(self, base: str, original, weights, endpoint):
        self.base, self.weights, self.endpoint = f"{base}/case-{next(_cases)}", weights, endpoint
        self.data = open_store(f"{self.base}/data")
        copy(original["data"], self.data)
        self.run = open_store(f"{self.base}/store/test/t")
        copy(original["run"], self.run)

    def plan(self, store: str = "store"):
        extra = {"storage": {"endpoint": self.endpoint}} if self.endpoint else {}
        data = tiny(
            "t",
            f"{self.base}/data/images",
            f"{self.base}/data/val_label.txt",
            self.weights,
            f"{self.base}/{store}",
            **extra,
        )
        return planned(data)[1]

    def units(self) -> dict[str, float]:
        """Each unit's record, by its `seconds` (convert: its timings): a unit redone gets a new figure."""
        found = {"convert": str(records.read(self.run, layout.CONVERT_RECORD)["timings"])}
        for index in range(3):
            for name, key in [("shard", layout.shard_record(index))] + [
                (f"infer-bs{b}", layout.result_marker(b, index)) for b in (1, 4)
            ]:
                record = records.read(self.run, key)
                found[f"{name}[{index}]"] = record and record["seconds"]
        return found

    def resume(self) -> set[str]:
        """Run the plan again; the units that did their work again."""
        before = self.units()
        run_here(self.plan())
        return {unit for unit, seconds in self.units().items() if seconds != before[unit]}

    def accuracy(self, run=None) -> str:
        return (run or self.run).read_text(layout.accuracy_json(4))

    def fresh_accuracy(self) -> str:
        """A run from scratch on the same data (the converted model copied: converting it is not in question)."""
        fresh = open_store(f"{self.base}/fresh/test/t")
        for key in (layout.CONVERT_RECORD, layout.ONNX_MODEL):
            fresh.write_bytes(key, self.run.read_bytes(key))
        run_here(self.plan("fresh"))
        return self.accuracy(fresh)


@pytest.fixture(scope="module", params=["file", "s3"])
def original(request, sample_set, tmp_path_factory):
    """One finished run, on data in local folders or in the bucket."""
    folder = tmp_path_factory.mktemp(f"resume-{request.param}")
    server = request.getfixturevalue("s3") if request.param == "s3" else None
    base = f"s3://runs/resume-{folder.name}" if server else f"file://{folder}"
    env = server.env() if server else {}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        data = open_store(f"{base}/data")
        for path in sorted(sample_set["images"].iterdir()):
            data.upload(path, f"images/{path.name}")
        data.upload(sample_set["labels"], "val_label.txt")
        extra = {"storage": {"endpoint": server.endpoint}} if server else {}
        manifest = tiny(
            "t",
            f"{base}/data/images",
            f"{base}/data/val_label.txt",
            sample_set["planted"].weights,
            f"{base}/store",
            **extra,
        )
        run_here(planned(manifest)[1])
        yield dict(
            base=base,
            env=env,
            data=data,
            run=open_store(f"{base}/store/test/t"),
            weights=sample_set["planted"].weights,
            endpoint=server.endpoint if server else None,
        )


@pytest.fixture
def case(original, monkeypatch):
    for key, value in original["env"].items():
        monkeypatch.setenv(key, value)
    return Case(original["base"], original, original["weights"], original["endpoint"])


def test_an_untouched_copy_redoes_nothing(case):
    before = case.accuracy()
    assert case.resume() == set()
    assert case.accuracy() == before


def test_an_image_replaced_in_place_redoes_its_shard_and_its_results(case):
    before = case.accuracy()
    case.data.write_bytes(IMAGE_5, case.data.read_bytes(IMAGE_11))  # same name, other picture
    assert case.resume() == {"shard[0]", "infer-bs1[0]", "infer-bs4[0]"}
    after = case.accuracy()
    assert after != before and after == case.fresh_accuracy()


def test_a_fixed_labels_file_redoes_the_shards_it_touches(case):
    lines = case.data.read_text("val_label.txt").splitlines()
    case.data.write_text("val_label.txt", "\n".join(lines[:20] + lines[21:]) + "\n")  # image 21 (shard 2) unlabelled
    case.resume()
    name, label = lines[0].split()
    lines[0] = f"{name} {(int(label) + 7) % 1000}"  # the fix: image 1 (shard 0) gets another class, image 21 its label
    case.data.write_text("val_label.txt", "\n".join(lines) + "\n")
    before = case.accuracy()
    redone = case.resume()
    # shard 0's pixels are the same: its results stay; shard 2 holds one more image again: its results are redone
    assert redone == {"shard[0]", "shard[2]", "infer-bs1[2]", "infer-bs4[2]"}
    assert case.accuracy() != before and case.accuracy() == case.fresh_accuracy()


def test_a_damaged_shard_is_made_again_by_the_next_run(case):
    key = layout.shard_pixels(1)
    data = bytearray(case.run.read_bytes(key))
    data[100:200] = bytes(100)
    case.run.write_bytes(key, bytes(data))
    before = case.accuracy()
    assert case.resume() == {"shard[1]"}  # the same pixels again: results made from them still hold
    assert case.run.read_bytes(key) != bytes(data) and case.accuracy() == before


def test_a_missing_results_tar_is_made_again_by_the_next_run(case):
    case.run.delete(layout.result_tar(4, 1))
    before = case.accuracy()
    assert case.resume() == {"infer-bs4[1]"}
    assert case.accuracy() == before


def test_a_damaged_model_is_converted_again(case):
    model = bytearray(case.run.read_bytes(layout.ONNX_MODEL))
    model[-64:] = bytes(64)
    case.run.write_bytes(layout.ONNX_MODEL, bytes(model))
    before = case.accuracy()
    assert "convert" in case.resume()
    assert case.run.read_bytes(layout.ONNX_MODEL) != bytes(model) and case.accuracy() == before
