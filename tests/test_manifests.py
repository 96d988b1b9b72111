"""The Job builders: pure, deterministic, and secure by construction."""

from __future__ import annotations

import json

import pytest

from builders import ascend, planned, pnaseval
from pnas_operator import manifests
from pnas_operator.manifests import JobSettings, Owner
from pnas_jobs.params import CPUS_ENV, cpu_share
from pnas_operator import pod_security
from support.job_runner import cpu_field, millicores

CHIP_310P3 = {"accelerator": "huawei-Ascend310P", "node.kubernetes.io/npu.chip.name": "310P3"}
OWNER = Owner("eval", "ml", "1b4e28ba-2fa1-11d2-883f-0016d3cca427")


def jobs(data, settings=JobSettings()):
    pnaseval_, plan = planned(data, summary_file=manifests.TERMINATION_LOG)
    return {
        j["metadata"]["labels"]["pnaseval.io/step"]: j
        for j in manifests.jobs_for_plan(plan, pnaseval_.spec, OWNER, settings)
    }


def pod(job):
    return job["spec"]["template"]["spec"]


def test_names_labels_and_owner():
    built = jobs(pnaseval())
    assert sorted(j["metadata"]["name"] for j in built.values()) == [
        "eval-aggregate",
        "eval-convert",
        "eval-infer-bs4",
        "eval-shard",
    ]
    for step, job in built.items():
        labels = job["metadata"]["labels"]
        assert labels["pnaseval.io/name"] == "eval" and labels["app.kubernetes.io/managed-by"] == "pnas-operator"
        assert job["spec"]["template"]["metadata"]["labels"] == labels
        (ref,) = job["metadata"]["ownerReferences"]
        assert ref == {
            "apiVersion": "pnaseval.io/v1alpha1",
            "kind": "PnasEval",
            "name": "eval",
            "uid": OWNER.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert manifests.owned_by(job, OWNER)
        # a PnasEval deleted and created again under the same name: the old one's Jobs are not its own
        assert not manifests.owned_by(job, Owner(OWNER.name, OWNER.namespace, "another-uid"))


def test_long_names_stay_valid_and_distinct():
    a = manifests.job_name("x" * 60, "infer-bs16")
    b = manifests.job_name("x" * 59 + "y", "infer-bs16")
    assert len(a) <= 63 and len(b) <= 63 and a != b and a.endswith("-infer-bs16")


def test_inference_is_an_indexed_job_with_per_index_retries():
    job = jobs(pnaseval(inference={"parallelism": 3}), JobSettings(retries=5))["infer-bs4"]
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"], spec["backoffLimitPerIndex"]) == (
        "Indexed",
        4,
        3,
        5,
    )
    assert "backoffLimit" not in spec
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "FailIndex",
        "onExitCodes": {"containerName": "infer", "operator": "In", "values": [2]},
    }
    assert rules[1]["action"] == "Ignore" and rules[1]["onPodConditions"][0]["type"] == "DisruptionTarget"
    assert pod(job)["restartPolicy"] == "Never"


@pytest.mark.parametrize(
    "data, limits, selector, image",
    [
        (pnaseval(), {"memory": "16Gi"}, None, "jobs"),
        (pnaseval(inference={"device": "cuda"}), {"memory": "16Gi", "nvidia.com/gpu": "1"}, None, "jobs"),
        (ascend(), {"memory": "16Gi", "huawei.com/Ascend310P": "1"}, CHIP_310P3, "ascend"),
        (
            ascend(
                inference={
                    "resources": {"huawei.com/Ascend910": 2},
                    "nodeSelector": {"pool": "a910"},
                    "tolerations": [{"key": "npu", "operator": "Exists", "effect": "NoSchedule"}],
                }
            ),
            {"memory": "16Gi", "huawei.com/Ascend910": "2"},
            {"pool": "a910"},
            "ascend",
        ),
    ],
)
def test_inference_resources_follow_the_device(data, limits, selector, image):
    settings = JobSettings()
    job = jobs(data, settings)["infer-bs4"]
    container = pod(job)["containers"][0]
    assert container["resources"]["limits"] == limits
    extended = {k: v for k, v in limits.items() if "/" in k}
    assert {k: v for k, v in container["resources"]["requests"].items() if "/" in k} == extended
    assert pod(job).get("nodeSelector") == selector
    assert container["image"] == (settings.ascend_image if image == "ascend" else settings.jobs_image)
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]  # the Ascend runtime mounts the driver
    if "tolerations" in data["spec"].get("inference", {}):
        assert pod(job)["tolerations"] == data["spec"]["inference"]["tolerations"]


def test_cpu_stages_stay_off_accelerators():
    built = jobs(ascend())
    assert "nodeSelector" not in pod(built["shard"]) and "nodeSelector" not in pod(built["aggregate"])
    assert pod(built["convert"])["nodeSelector"] == CHIP_310P3  # ATC lives on the chip's nodes
    assert "huawei.com/Ascend310P" not in pod(built["convert"])["containers"][0]["resources"]["limits"]


def test_every_pod_is_locked_down_and_credentials_come_from_the_secret():
    for job in jobs(pnaseval(storage={"credentialsSecret": "my-minio"})).values():
        spec = pod(job)
        assert spec["securityContext"]["runAsNonRoot"] is True
        container = spec["containers"][0]
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        }
        env = {e["name"]: e for e in container["env"]}
        assert env["MINIO_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "my-minio", "key": "accessKey"}
        assert env["MINIO_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "my-minio", "key": "secretKey"}
        assert all("value" not in e for e in container["env"] if e["name"].startswith("MINIO"))
        assert {"name": "scratch", "mountPath": "/tmp"} in container["volumeMounts"]


def test_aggregate_reports_through_its_termination_log():
    container = pod(jobs(pnaseval())["aggregate"])["containers"][0]
    assert container["command"][-2:] == ["--summary-file", "/dev/termination-log"]
    assert container["terminationMessagePath"] == "/dev/termination-log"


def test_cpu_and_memory_limits_of_the_spec_are_also_the_requests():
    """A limit below the default request (cpu 1, memory 4Gi) would make the API server refuse the Job."""
    built = jobs(pnaseval(inference={"resources": {"cpu": "500m", "memory": "2Gi", "nvidia.com/gpu": 1}}))
    resources = pod(next(j for step, j in built.items() if step.startswith("infer")))["containers"][0]["resources"]
    assert resources["limits"] == {"cpu": "500m", "memory": "2Gi", "nvidia.com/gpu": "1"}
    assert resources["requests"] == resources["limits"]
    assert pod(built["shard"])["containers"][0]["resources"]["requests"] == {"cpu": "1", "memory": "4Gi"}


def test_ttl_is_configurable_and_can_be_off():
    assert jobs(pnaseval(), JobSettings(job_ttl_seconds=600))["shard"]["spec"]["ttlSecondsAfterFinished"] == 600
    assert "ttlSecondsAfterFinished" not in jobs(pnaseval(), JobSettings(job_ttl_seconds=None))["shard"]["spec"]
    with pytest.raises(ValueError, match="job_ttl_seconds"):
        JobSettings(job_ttl_seconds=0)  # gone before the operator could read the aggregate's summary


def test_builders_are_deterministic():
    assert json.dumps(jobs(pnaseval()), sort_keys=True) == json.dumps(jobs(pnaseval()), sort_keys=True)


def test_cleanup_job_outlives_its_owner():
    data = pnaseval()
    data["spec"]["cleanup"] = True
    manifest, plan = planned(data)
    job = manifests.cleanup_job(plan, manifest.spec, OWNER, JobSettings())
    assert "ownerReferences" not in job["metadata"]
    assert pod(job)["containers"][0]["command"] == ["pnas-eval", "cleanup", "--root", "s3://pnas-eval/runs/ml/eval"]


def test_pods_mount_no_api_token():
    assert all(pod(j)["automountServiceAccountToken"] is False for j in jobs(pnaseval()).values())


def test_the_ascend_driver_is_left_to_the_runtime_unless_a_host_path_is_given():
    """The Ascend Docker Runtime mounts the driver; a hostPath volume is an opt-in for clusters without it."""
    bare = pod(jobs(ascend())["infer-bs4"])
    assert [v["name"] for v in bare["volumes"]] == ["scratch"]
    assert all(e["name"] != "ASCEND_DRIVER_PATH" for e in bare["containers"][0]["env"])
    mounted = pod(jobs(ascend(), JobSettings(ascend_driver_path="/opt/ascend/driver"))["infer-bs4"])
    assert {"name": "ASCEND_DRIVER_PATH", "value": "/opt/ascend/driver"} in mounted["containers"][0]["env"]
    assert {"name": "ascend-driver", "mountPath": "/opt/ascend/driver", "readOnly": True} in mounted["containers"][0][
        "volumeMounts"
    ]
    assert mounted["volumes"][1] == {
        "name": "ascend-driver",
        "hostPath": {"path": "/opt/ascend/driver", "type": "Directory"},
    }
    with pytest.raises(ValueError, match="ascend_driver_path"):
        JobSettings(ascend_driver_path="usr/local/Ascend/driver")  # a host path is absolute


@pytest.mark.parametrize(
    "data",
    [
        pnaseval(),
        pnaseval(inference={"device": "cuda"}),
        ascend(),
        ascend(convert={"socVersion": "Ascend910B3"}),
        ascend(scheduling={"schedulerName": "volcano", "queueName": "team-a"}),
    ],
)
def test_every_pod_passes_pod_security_restricted(data):
    for step, job in jobs(data).items():
        template = job["spec"]["template"]
        assert pod_security.violations(template["spec"], "restricted", template["metadata"].get("annotations")) == [], (
            step
        )
    opted_in = jobs(data, JobSettings(ascend_driver_path="/usr/local/Ascend/driver"))
    for step, job in opted_in.items():  # the opt-in costs exactly the hostPath rule, and only on Ascend pods
        found = pod_security.violations(pod(job))
        ascend_pod = job["spec"]["template"]["spec"]["containers"][0]["image"] == JobSettings().ascend_image
        assert found == (["volume ascend-driver: hostPath"] if ascend_pod else []), step


def test_empty_settings_mean_none(monkeypatch):
    from pnas_operator.settings import OperatorSettings

    monkeypatch.setenv("PNAS_OPERATOR_JOB_TTL_SECONDS", "")
    monkeypatch.setenv("PNAS_OPERATOR_JOBS_SERVICE_ACCOUNT", "")
    settings = OperatorSettings().job_settings()
    assert settings.job_ttl_seconds is None and settings.jobs_service_account is None


# ------------------------------------------------------------------ scheduling: Kueue, Volcano, priorities

SCHEDULING = {
    "queueName": "team-a",
    "priorityClassName": "eval-low",
    "activeDeadlineSeconds": 7200,
    "podLabels": {"team": "vision", "pnaseval.io/name": "not-this"},
    "podAnnotations": {"example.com/cost-center": "42"},
}


def test_scheduling_reaches_every_job_and_pod():
    built = jobs(ascend(scheduling=SCHEDULING))
    assert len(built) == 4
    for step, job in built.items():
        assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a", step
        assert "suspend" not in job["spec"]  # Kueue's webhook suspends the Job and admits it: never the operator
        assert job["spec"]["activeDeadlineSeconds"] == 7200
        template = job["spec"]["template"]
        assert template["metadata"]["labels"]["team"] == "vision"
        assert template["metadata"]["labels"]["pnaseval.io/name"] == "eval"  # the operator's own labels stay
        assert "kueue.x-k8s.io/queue-name" not in template["metadata"]["labels"]
        assert template["metadata"]["annotations"] == {"example.com/cost-center": "42"}
        assert template["spec"]["priorityClassName"] == "eval-low" and "schedulerName" not in template["spec"]


def test_without_scheduling_the_jobs_carry_none_of_it():
    for job in jobs(ascend()).values():
        assert "kueue.x-k8s.io/queue-name" not in job["metadata"]["labels"]
        assert not {"activeDeadlineSeconds", "suspend"} & set(job["spec"])
        assert not {"schedulerName", "priorityClassName"} & set(pod(job))
        assert "annotations" not in job["spec"]["template"]["metadata"]


def test_the_operator_defaults_apply_unless_the_spec_says_otherwise():
    settings = JobSettings(scheduler_name="volcano", queue_name="site-queue", priority_class_name="batch")
    default = jobs(ascend(), settings)["infer-bs4"]
    assert default["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "site-queue"
    assert (pod(default)["schedulerName"], pod(default)["priorityClassName"]) == ("volcano", "batch")
    own = jobs(ascend(scheduling={"queueName": "team-a", "schedulerName": "default-scheduler"}), settings)["infer-bs4"]
    assert own["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert pod(own)["schedulerName"] == "default-scheduler"
    assert all(e["name"] != "ASCEND_VISIBLE_DEVICES" for e in pod(own)["containers"][0]["env"])


def visible_devices(job) -> dict | None:
    env = {e["name"]: e for e in pod(job)["containers"][0]["env"]}
    return env.get("ASCEND_VISIBLE_DEVICES")


@pytest.mark.parametrize(
    "soc, resource",
    [
        ("Ascend310P3", "huawei.com/Ascend310P"),
        ("Ascend910B3", "huawei.com/Ascend910"),
        ("Ascend310", "huawei.com/Ascend310"),
    ],
)
def test_volcano_mode_reads_the_npus_from_the_annotation_volcano_writes(soc, resource):
    built = jobs(ascend(convert={"socVersion": soc}, scheduling={"schedulerName": "volcano"}))
    assert all(pod(job)["schedulerName"] == "volcano" for job in built.values())
    assert visible_devices(built["infer-bs4"]) == {
        "name": "ASCEND_VISIBLE_DEVICES",
        "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{resource}']"}},
    }
    assert pod(built["infer-bs4"])["containers"][0]["resources"]["limits"][resource] == "1"
    for step in ("convert", "shard", "aggregate"):  # no NPU asked for: nothing to read
        assert visible_devices(built[step]) is None, step


@pytest.mark.parametrize(
    "data",
    [
        ascend(),  # the device plugin sets ASCEND_VISIBLE_DEVICES itself
        ascend(
            scheduling={"schedulerName": "volcano"}, inference={"resources": {"huawei.com/Ascend310P-2c": 1}}
        ),  # a vNPU
        pnaseval(inference={"device": "cuda"}, scheduling={"schedulerName": "volcano"}),
    ],
)
def test_no_downward_api_devices_outside_volcano_whole_npu_pods(data):
    assert all(visible_devices(job) is None for job in jobs(data).values())


# ------------------------------------------------------------------ CPU threads: the pod's share, never the node's


def cpu_env(job) -> dict:
    (item,) = [e for e in pod(job)["containers"][0]["env"] if e["name"] == CPUS_ENV]
    return item["valueFrom"]["resourceFieldRef"]


@pytest.mark.parametrize(
    "resources, field, expected_threads",
    [
        (None, "requests.cpu", 1),  # the operator's default request, 1 CPU
        ({"cpu": "2"}, "limits.cpu", 2),
        ({"cpu": "1500m"}, "limits.cpu", 1),  # rounded down: three such pods fit 4.5 CPUs with 3 threads, not 6
        ({"cpu": "500m"}, "limits.cpu", 1),  # at least one
        ({"cpu": 4, "memory": "8Gi"}, "limits.cpu", 4),
    ],
)
def test_an_infer_pod_sizes_its_threads_to_its_cpu_share(monkeypatch, resources, field, expected_threads):
    """From the Job to the thread count: the builder's downward-API field, resolved as the kubelet
    resolves it (support/job_runner.cpu_field), read by the stage (params.cpu_share)."""
    inference = {"resources": resources} if resources else {}
    job = jobs(pnaseval(inference=inference))["infer-bs4"]
    ref = cpu_env(job)
    assert ref == {"containerName": "infer", "resource": field, "divisor": "1m"}
    monkeypatch.setenv(CPUS_ENV, cpu_field(pod(job)["containers"][0], ref))
    assert cpu_share() == expected_threads


def test_pods_on_one_node_never_ask_for_more_threads_than_their_cpus(monkeypatch):
    """The scheduler places pods by their requests (= their limits when the spec sets cpu), so threads
    that never exceed a pod's request never oversubscribe the node, whatever the mix."""
    for cpu in ("1", "1100m", "1999m", "2", "2500m", "3", "7900m"):
        job = jobs(pnaseval(inference={"resources": {"cpu": cpu}}))["infer-bs4"]
        container = pod(job)["containers"][0]
        monkeypatch.setenv(CPUS_ENV, cpu_field(container, cpu_env(job)))
        assert 1000 * cpu_share() <= millicores(container["resources"]["requests"]["cpu"]), cpu
