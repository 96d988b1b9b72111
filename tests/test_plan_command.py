"""`pnas-eval plan`: the Jobs the operator would create, for clusters as they are deployed: a 310P3
cluster (the seed's example), Volcano mode, a Kueue queue, Ascend 910B. Run in-process through the
CLI's own entry (the `plan` command comes from the operator package's entry point)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from builders import ascend, write
from pnas_jobs import cli

REPO = Path(__file__).resolve().parents[1]


def plan(capsys, path) -> dict[str, dict]:
    assert cli.main(["plan", str(path)]) == 0
    return {job["metadata"]["labels"]["pnaseval.io/step"]: job for job in yaml.safe_load_all(capsys.readouterr().out)}


def pod(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


def env(job: dict) -> dict[str, dict]:
    return {e["name"]: e for e in pod(job)["containers"][0]["env"]}


def test_a_310p3_cluster_from_the_seed_example(capsys):
    jobs = plan(capsys, REPO / "examples" / "seed-310p.yaml")
    assert list(jobs) == [
        "preflight",
        "convert",
        "shard",
        *(f"infer-bs{b}" for b in (1, 4, 8, 16, 32, 64)),
        "aggregate",
    ]
    infer = pod(jobs["infer-bs4"])
    assert infer["containers"][0]["resources"]["limits"]["huawei.com/Ascend310P"] == "1"
    assert infer["nodeSelector"] == {"accelerator": "huawei-Ascend310P", "node.kubernetes.io/npu.chip.name": "310P3"}
    assert infer["tolerations"] == [{"key": "huawei.com/Ascend310P", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod(jobs["convert"])["nodeSelector"] == infer["nodeSelector"]  # ATC builds on the chip's nodes
    assert "ASCEND_VISIBLE_DEVICES" not in env(jobs["infer-bs4"])  # the device plugin sets it
    for job in jobs.values():  # restricted Pod Security: no hostPath for the driver, no Volcano, no queue
        assert [v["name"] for v in pod(job)["volumes"]] == ["scratch"]
        assert "schedulerName" not in pod(job) and "kueue.x-k8s.io/queue-name" not in job["metadata"]["labels"]


def test_ascend_910b_in_volcano_mode_from_its_example(capsys):
    jobs = plan(capsys, REPO / "examples" / "seed-910b.yaml")
    infer = jobs["infer-bs64"]
    assert pod(infer)["containers"][0]["resources"]["limits"]["huawei.com/Ascend910"] == "1"
    assert pod(infer)["nodeSelector"] == {
        "accelerator": "huawei-Ascend910",
        "node.kubernetes.io/npu.chip.name": "910B3",
    }
    assert pod(infer)["tolerations"] == [{"key": "huawei.com/Ascend910", "operator": "Exists", "effect": "NoSchedule"}]
    assert all(pod(job)["schedulerName"] == "volcano" for job in jobs.values())
    assert all(
        job["spec"]["template"]["metadata"]["labels"]["ring-controller.atlas"] == "ascend-910b" for job in jobs.values()
    )
    assert env(infer)["ASCEND_VISIBLE_DEVICES"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.annotations['huawei.com/Ascend910']"}
    }
    assert "ASCEND_VISIBLE_DEVICES" not in env(jobs["convert"])  # ATC needs no NPU
    assert "--soc_version" not in " ".join(
        pod(jobs["convert"])["containers"][0]["command"]
    )  # the stage builds ATC's call
    assert "--soc-version Ascend910B3" in " ".join(pod(jobs["convert"])["containers"][0]["command"])


@pytest.mark.parametrize("scheduler", [None, "volcano"])
def test_a_kueue_queue_labels_every_job_and_never_suspends_one(capsys, tmp_path, scheduler):
    scheduling = {
        "queueName": "npu-queue",
        "activeDeadlineSeconds": 86400,
        **({"schedulerName": scheduler} if scheduler else {}),
    }
    jobs = plan(capsys, write(tmp_path / "queued.yaml", ascend(scheduling=scheduling)))
    for job in jobs.values():
        assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "npu-queue"
        assert "suspend" not in job["spec"] and job["spec"]["activeDeadlineSeconds"] == 86400
    assert ("ASCEND_VISIBLE_DEVICES" in env(jobs["infer-bs4"])) == (scheduler == "volcano")


def test_a_bad_queue_name_is_refused_naming_the_field(capsys, tmp_path):
    code = cli.main(["plan", str(write(tmp_path / "bad.yaml", ascend(scheduling={"queueName": "team a"})))])
    assert code == 2 and "spec.scheduling.queueName" in capsys.readouterr().err
