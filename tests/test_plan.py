"""The planner is pure: the same PnasEval always gives the same steps, in the documented order."""
from __future__ import annotations

import pytest

from builders import ascend, planned, pnaseval
from pnas_jobs.plan import cluster_problems
from pnas_jobs.spec import parse_manifest


def test_steps_and_dependencies():
    _, plan = planned(pnaseval(inference={"batchSizes": [1, 4, 8]}))
    assert [s.name for s in plan.steps] == ["convert", "shard", "infer-bs1", "infer-bs4", "infer-bs8", "aggregate"]
    assert [s.after for s in plan.steps] == [(), (), ("convert", "shard"), ("infer-bs1",), ("infer-bs4",), ("infer-bs8",)]
    assert [s.completions for s in plan.steps] == [1, 4, 4, 4, 4, 1]
    assert [s.indexed for s in plan.steps] == [False, True, True, True, True, False]
    assert plan.root == "s3://pnas-eval/runs/ml/eval"
    assert plan.env == {"PNAS_STORAGE_ENDPOINT": "minio.minio.svc:9000", "PNAS_STORAGE_SECURE": "false"}


def test_commands_carry_the_spec():
    _, plan = planned(pnaseval(model={"weights": "s3://models/p.pth"}, dataset={"limit": 100, "preprocess": {"cropPct": 0.9}}))
    convert, shard, infer, aggregate = plan.steps
    assert convert.command[:2] == ["pnas-eval", "convert"] and "s3://models/p.pth" in convert.args
    assert "--index" not in shard.args  # from JOB_COMPLETION_INDEX
    assert shard.args[shard.args.index("--preprocess") + 1] == '{"crop_pct": 0.9}'
    assert infer.args[-4:] == ("--backend", "onnxruntime", "--device", "cpu") and infer.accelerator
    assert aggregate.args[-2:] == ("--limit", "100")
    assert "--input-size" not in convert.args  # the model's own


def test_an_input_size_override_reaches_both_convert_and_shard():
    _, plan = planned(pnaseval(dataset={"preprocess": {"inputSize": 160}}))
    convert, shard = plan.steps[:2]
    assert convert.args[convert.args.index("--input-size") + 1] == "160"
    assert shard.args[shard.args.index("--preprocess") + 1] == '{"input_size": 160}'


def test_ascend_steps_need_the_ascend_image():
    _, plan = planned(ascend(inference={"batchSizes": [4]}))
    assert [(s.name, s.ascend, s.accelerator) for s in plan.steps] == [
        ("convert", True, False), ("shard", False, False), ("infer-bs4", True, True), ("aggregate", False, False)
    ]


def test_same_input_same_plan():
    assert planned(pnaseval())[1] == planned(pnaseval())[1]


@pytest.mark.parametrize(
    "sections, field",
    [
        ({"storage": {"uri": "/data/runs"}}, "spec.storage.uri"),
        ({"dataset": {"images": "/data/val"}}, "spec.dataset.images"),
        ({"model": {"weights": "/tmp/w.pth"}}, "spec.model.weights"),
        ({"storage": {"endpoint": None}}, "spec.storage.endpoint"),
    ],
)
def test_cluster_problems_name_the_field(sections, field):
    data = pnaseval(**sections)
    if sections.get("storage", {}).get("endpoint", 1) is None:
        del data["spec"]["storage"]["endpoint"]
    problems = cluster_problems(parse_manifest(data))
    assert len(problems) == 1 and problems[0].startswith(field)


def test_a_thousand_shards_is_still_six_jobs():
    _, plan = planned(pnaseval(dataset={"shards": 1000}, inference={"batchSizes": [1, 4, 8, 16]}))
    assert len(plan.steps) == 7 and plan.step("infer-bs16").completions == 1000
