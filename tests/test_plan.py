"""The planner is pure: the same PnasEval always gives the same steps, in the documented order,
and each step's command is its parameters' serialisation, which the CLI parses back unchanged."""

from __future__ import annotations

import pytest

from builders import ascend, planned, pnaseval
from pnas_jobs.cli import cli_model
from pnas_jobs.params import STAGES
from pnas_jobs.plan import cluster_problems, inference_placement
from pnas_jobs.spec import parse_manifest
from pydantic_settings import CliApp, get_subcommand


def test_steps_and_dependencies():
    _, plan = planned(pnaseval(inference={"batchSizes": [1, 4, 8]}))
    assert [s.name for s in plan.steps] == ["convert", "shard", "infer-bs1", "infer-bs4", "infer-bs8", "aggregate"]
    assert [s.after for s in plan.steps] == [
        (),
        (),
        ("convert", "shard"),
        ("infer-bs1",),
        ("infer-bs4",),
        ("infer-bs8",),
    ]
    assert [s.completions for s in plan.steps] == [1, 4, 4, 4, 4, 1]
    assert [s.indexed for s in plan.steps] == [False, True, True, True, True, False]
    assert plan.root == "s3://pnas-eval/runs/ml/eval"
    assert plan.env == {"PNAS_STORAGE_ENDPOINT": "minio.minio.svc:9000", "PNAS_STORAGE_SECURE": "false"}


def test_parameters_carry_the_spec():
    _, plan = planned(
        pnaseval(model={"weights": "s3://models/p.pth"}, dataset={"limit": 100, "preprocess": {"cropPct": 0.9}})
    )
    convert, shard, infer, aggregate = plan.steps
    assert convert.command[:2] == ["pnas-eval", "convert"] and convert.params.weights == "s3://models/p.pth"
    assert shard.params.index is None and "--index" not in shard.command  # from JOB_COMPLETION_INDEX
    assert shard.command[shard.command.index("--preprocess") + 1] == '{"cropPct": 0.9}'
    assert (infer.params.backend, infer.params.device, infer.placement.resources) == ("onnxruntime", "cpu", {})
    assert aggregate.params.limit == 100 and aggregate.params.summary_file is None
    assert convert.params.input_size is None and "--input-size" not in convert.command  # the model's own


@pytest.mark.parametrize(
    "data", [pnaseval(inference={"batchSizes": [1, 4]}), ascend(dataset={"preprocess": {"inputSize": 160}})]
)
def test_every_command_parses_back_to_its_parameters(data):
    """The Job command and the local command are the serialisation; the CLI must read back the same model."""
    for force in (False, True):
        _, plan = planned(data, force=force, summary_file="/dev/termination-log")
        for step in plan.steps:
            parsed = get_subcommand(CliApp.run(cli_model(), cli_args=step.command[1:], cli_cmd_method_name="_none"))
            assert parsed == step.params, step.name
            assert type(parsed) is STAGES[step.stage]


def test_force_and_the_summary_file_are_decided_by_the_planner():
    _, plan = planned(pnaseval(), force=True, summary_file="/dev/termination-log")
    assert ["--force" in s.command for s in plan.steps] == [True, True, True, False]  # aggregate always scores
    assert plan.summary_step.params.summary_file == "/dev/termination-log"


def test_an_input_size_override_reaches_both_convert_and_shard():
    _, plan = planned(pnaseval(dataset={"preprocess": {"inputSize": 160}}))
    convert, shard = plan.steps[:2]
    assert convert.params.input_size == 160 and shard.params.preprocess.input_size == 160


def test_ascend_steps_run_in_the_ascend_image_on_the_chip_nodes():
    _, plan = planned(ascend(inference={"batchSizes": [4]}))
    assert [(s.name, s.image) for s in plan.steps] == [
        ("convert", "ascend"),
        ("shard", "jobs"),
        ("infer-bs4", "ascend"),
        ("aggregate", "jobs"),
    ]
    convert, shard, infer, aggregate = plan.steps
    assert convert.placement.resources == {} and convert.placement.node_selector == infer.placement.node_selector
    assert infer.placement.resources == {"huawei.com/Ascend310P": 1}
    assert shard.placement is None and aggregate.placement is None


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


# The Ascend device plugin's names (Ascend/mind-cluster component/ascend-common/api/default_name.go:
# resources huawei.com/Ascend310P|Ascend910|Ascend310, `accelerator` huawei-Ascend310P|huawei-Ascend910
# (910, 910B and 910A3 alike)|huawei-Ascend310; pkg/server/manager.go: node.kubernetes.io/npu.chip.name
# is the chip, e.g. 310P3 or 910B3; build/ascendplugin.yaml tolerates each resource name as a
# NoSchedule taint).
@pytest.mark.parametrize(
    "soc, resource, accelerator, chip",
    [
        ("Ascend310P3", "huawei.com/Ascend310P", "huawei-Ascend310P", "310P3"),
        ("Ascend910B3", "huawei.com/Ascend910", "huawei-Ascend910", "910B3"),
        ("Ascend910B1", "huawei.com/Ascend910", "huawei-Ascend910", "910B1"),
        ("Ascend310", "huawei.com/Ascend310", "huawei-Ascend310", "310"),
    ],
)
def test_npu_placement_follows_the_chip(soc, resource, accelerator, chip):
    spec = parse_manifest(ascend(convert={"socVersion": soc})).spec
    placement = inference_placement(spec)
    assert placement.resources == {resource: 1}
    assert placement.node_selector == {"accelerator": accelerator, "node.kubernetes.io/npu.chip.name": chip}
    assert placement.tolerations == ({"key": resource, "operator": "Exists", "effect": "NoSchedule"},)


def test_explicit_placement_wins_field_by_field():
    explicit = {
        "resources": {"huawei.com/Ascend910": 2},
        "nodeSelector": {"pool": "npu"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "eval", "effect": "NoExecute"}],
    }
    spec = parse_manifest(ascend(convert={"socVersion": "Ascend910B3"}, inference=explicit)).spec
    placement = inference_placement(spec)
    assert placement.resources == {"huawei.com/Ascend910": 2} and placement.node_selector == {"pool": "npu"}
    assert placement.tolerations == ({"key": "dedicated", "operator": "Equal", "value": "eval", "effect": "NoExecute"},)
    only_resources = inference_placement(
        parse_manifest(ascend(inference={"resources": {"huawei.com/Ascend310P": 4}})).spec
    )
    assert only_resources.node_selector["node.kubernetes.io/npu.chip.name"] == "310P3"  # the rest stays derived
    none_at_all = inference_placement(parse_manifest(ascend(inference={"nodeSelector": {}, "tolerations": []})).spec)
    assert none_at_all.node_selector == {} and none_at_all.tolerations == ()  # an empty value is a choice too
