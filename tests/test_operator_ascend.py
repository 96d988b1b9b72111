"""The operator on Ascend clusters as they are deployed, against kmock with the test-side Job runner
(tests/support/job_runner.py) playing the kubelet, the Ascend device plugin and, for pods with
`schedulerName: volcano`, the annotation Volcano's Ascend plugin writes. The stages run the stand-in
ATC, ais_bench and aclruntime (tests/support), which refuse what the real ones refuse: an NPU id the
container does not have.

- a 310P3 cluster in Volcano mode: ASCEND_VISIBLE_DEVICES reaches the pod as "Ascend310P-3" through
  the downward API, and the stage still opens logical device 0;
- a 910B cluster without Volcano: the device plugin's physical id "3", device 0 inside.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from builders import tiny
from pnas_jobs.spec import parse_manifest
from support import fake_atc
from support.job_runner import clean_env
from test_operator import NS, apply, expected_percentages, finished, jobs_of, operator_cluster

SUPPORT = Path(__file__).parent / "support"


@pytest.fixture(scope="module")
def ascend_cluster(s3, sample_set, tmp_path_factory):
    work = tmp_path_factory.mktemp("ascend-operator")
    fake_atc.install(work / "bin")
    base = clean_env()
    env = {
        **base,
        "PATH": f"{work / 'bin'}{os.pathsep}{base['PATH']}",
        "PYTHONPATH": os.pathsep.join(
            [str(SUPPORT / "fake_ais_bench"), str(SUPPORT / "fake_aclruntime"), base.get("PYTHONPATH", "")]
        ),
        "FAKE_AIS_LOG": str(work / "ais.log"),
    }
    with operator_cluster(s3, sample_set, work, env) as running:
        yield {**running, "log": work / "ais.log"}


def ascend_eval(name: str, cluster, soc: str, shards: int, **sections) -> dict:
    data = tiny(
        name,
        "s3://datasets/operator/val/",
        "s3://datasets/operator/val_label.txt",
        "s3://models/operator/planted.pth",
        "s3://runs/cluster",
        namespace=NS,
        storage={"endpoint": cluster["s3"].endpoint},
        convert={"target": "om", "socVersion": soc},
        dataset={"shards": shards},
        inference={"backend": "ais_bench", "device": "npu", "batchSizes": [4], "parallelism": 2},
        **sections,
    )
    parse_manifest(data)  # what the API server's schema and CEL rules would check on apply
    return data


def infer_envs(cluster, job: str) -> list[dict]:
    runner = cluster["runner"]
    return [env for (name, _, _), env in zip(runner.pods, runner.environments) if name == job]


def check_succeeded(cluster, name: str) -> dict:
    status = finished(cluster, name)["status"]
    assert status["phase"] == "Succeeded", status
    expected = expected_percentages(cluster["planted"])
    assert [(r["images"], r["top1"], r["top5"]) for r in status["results"]] == [
        (24, expected["top1"], expected["top5"])
    ]
    return jobs_of(cluster, name)


def test_310p3_in_volcano_mode_with_a_kueue_queue(ascend_cluster):
    cluster = ascend_cluster
    scheduling = {"schedulerName": "volcano", "queueName": "npu-queue", "priorityClassName": "eval"}
    apply(cluster, ascend_eval("volcano", cluster, "Ascend310P3", 2, scheduling=scheduling))
    jobs = check_succeeded(cluster, "volcano")
    infer = jobs["volcano-infer-bs4"]
    pod = infer["spec"]["template"]["spec"]
    assert pod["schedulerName"] == "volcano" and pod["priorityClassName"] == "eval"
    assert pod["nodeSelector"] == {"accelerator": "huawei-Ascend310P", "node.kubernetes.io/npu.chip.name": "310P3"}
    assert {"key": "huawei.com/Ascend310P", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert all(j["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "npu-queue" for j in jobs.values())
    envs = infer_envs(cluster, "volcano-infer-bs4")
    assert len(envs) == 2 and {e["ASCEND_VISIBLE_DEVICES"] for e in envs} == {"Ascend310P-3"}
    assert "InferSession device_id=0" in cluster["log"].read_text().splitlines()


def test_910b_without_volcano(ascend_cluster):
    cluster = ascend_cluster
    apply(cluster, ascend_eval("a910b", cluster, "Ascend910B3", 1))
    jobs = check_succeeded(cluster, "a910b")
    pod = jobs["a910b-infer-bs4"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["huawei.com/Ascend910"] == "1"
    assert pod["nodeSelector"] == {"accelerator": "huawei-Ascend910", "node.kubernetes.io/npu.chip.name": "910B3"}
    assert pod["tolerations"] == [{"key": "huawei.com/Ascend910", "operator": "Exists", "effect": "NoSchedule"}]
    assert "schedulerName" not in pod
    (env,) = infer_envs(cluster, "a910b-infer-bs4")
    assert env["ASCEND_VISIBLE_DEVICES"] == "3"  # the device plugin's physical id
