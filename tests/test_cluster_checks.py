"""The doctor's cluster checks, pure: a cluster that passes, and one broken in each way, with the fix."""

from __future__ import annotations

import copy

import pytest

from builders import ascend, planned
from pnas_jobs import crd
from pnas_jobs.preflight import exit_code
from pnas_operator import manifests
from pnas_operator.cluster_checks import ClusterSnapshot, cluster_findings, tolerates
from pnas_operator.manifests import JobSettings, Owner


def node(name, chip="310P3", npus=4, taints=True) -> dict:
    return {
        "metadata": {
            "name": name,
            "labels": {"accelerator": "huawei-Ascend310P", "node.kubernetes.io/npu.chip.name": chip},
        },
        "spec": {"taints": [{"key": "huawei.com/Ascend310P", "effect": "NoSchedule"}] if taints else []},
        "status": {"allocatable": {"huawei.com/Ascend310P": str(npus), "cpu": "64"}},
    }


def operator(watch="ml") -> dict:
    command = [
        "pnas-operator",
        *(["--namespace", watch] if watch else ["--all-namespaces"]),
        "--liveness",
        "http://0.0.0.0:8080/healthz",
    ]
    return {
        "metadata": {"name": "pnas-eval-operator", "namespace": "pnas-eval"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "operator",
                            "command": command,
                            "env": [{"name": "PNAS_OPERATOR_JOBS_SERVICE_ACCOUNT", "value": "pnas-eval-jobs"}],
                        }
                    ]
                }
            }
        },
        "status": {"readyReplicas": 1},
    }


def device_plugin(volcano: bool = False) -> dict:
    """As mind-cluster's build/ascendplugin-310P[-volcano].yaml runs it: flags inside one `bash -c` string."""
    flags = "-volcanoType=true -presetVirtualDevice=true " if volcano else ""
    container = {
        "name": "device-plugin-01",
        "command": ["/bin/bash", "-c", "--"],
        "args": [f"device-plugin {flags}-logFile=/var/log/mindx-dl/devicePlugin/devicePlugin.log -logLevel=0"],
    }
    return {
        "metadata": {
            "name": "ascend-device-plugin3-daemonset-310p" if volcano else "ascend-device-plugin-daemonset",
            "namespace": "kube-system",
        },
        "spec": {
            "template": {
                "metadata": {"labels": {"name": "ascend-device-plugin-ds"}},
                "spec": {"containers": [container]},
            }
        },
    }


def good() -> ClusterSnapshot:
    return ClusterSnapshot(
        namespace={"metadata": {"name": "ml", "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
        crd=crd.definition(),
        operators=[operator()],
        secret_keys={"accessKey", "secretKey"},
        service_accounts={"default", "pnas-eval-jobs"},
        nodes=[node("npu-1"), node("npu-2"), {"metadata": {"name": "cpu-1", "labels": {}}, "spec": {}, "status": {}}],
        device_plugins=[device_plugin()],
    )


def findings(snapshot, data=None, settings=JobSettings(ascend_driver_path="")):
    pnaseval, plan = planned(data or ascend(inference={"parallelism": 8}))
    jobs = manifests.jobs_for_plan(plan, pnaseval.spec, Owner("eval", "ml", "u"), settings)
    return cluster_findings(snapshot, pnaseval, plan, jobs, crd.definition())


def test_a_cluster_that_can_run_it():
    got = findings(good())
    assert [f.level for f in got] == ["ok"] * len(got), [f.line() for f in got]
    assert exit_code(got) == 0


def _break(change):
    snapshot = good()
    change(snapshot)
    return snapshot


BROKEN = {
    "no CRD": (lambda s: setattr(s, "crd", None), "CRD", "kubectl apply --server-side -f crds/pnaseval.yaml"),
    "an older CRD": (
        lambda s: s.crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].update(description="old"),
        "CRD",
        "kubectl apply",
    ),
    "no operator": (lambda s: setattr(s, "operators", []), "operator", "helm install"),
    "an operator for another namespace": (
        lambda s: setattr(s, "operators", [operator("team-b")]),
        "operator",
        "watchNamespace=ml",
    ),
    "no Secret": (
        lambda s: setattr(s, "secret_keys", None),
        "credentials Secret",
        "kubectl create secret generic minio-credentials -n ml",
    ),
    "a Secret without secretKey": (
        lambda s: setattr(s, "secret_keys", {"accessKey", "password"}),
        "credentials Secret",
        "--from-literal=secretKey",
    ),
    "no Jobs' ServiceAccount": (
        lambda s: setattr(s, "service_accounts", {"default"}),
        "Jobs' ServiceAccount",
        "jobs.serviceAccount.namespaces",
    ),
    "no NPU node": (lambda s: setattr(s, "nodes", s.nodes[2:]), "nodes", "spec.inference.nodeSelector"),
    "nodes of another chip": (lambda s: setattr(s, "nodes", [node("a", chip="310P1")]), "nodes: chip", "Ascend310P1"),
    "no NPU offered": (lambda s: setattr(s, "nodes", [node("a", npus=0)]), "nodes: resources", "device plugin"),
    "an untolerated taint": (
        lambda s: (
            s.nodes[0]["spec"]["taints"].append({"key": "dedicated", "value": "x", "effect": "NoSchedule"})
            or s.nodes[1]["spec"]["taints"].append({"key": "dedicated", "value": "x", "effect": "NoSchedule"})
        ),
        "nodes: taints",
        "{key: huawei.com/Ascend310P, operator: Exists, effect: NoSchedule}, {key: dedicated, operator: Exists",
    ),
    "Kueue queue named but Kueue absent": (lambda s: None, "Kueue", "install Kueue"),
    "Volcano-mode device plugin": (
        lambda s: setattr(s, "device_plugins", [device_plugin(volcano=True)]),
        "device plugin",
        "schedulerName: volcano",
    ),
    "no namespace": (lambda s: setattr(s, "namespace", None), "namespace", "kubectl create namespace ml"),
}


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_each_broken_cluster_names_the_problem_and_the_fix(case):
    change, check, fix = BROKEN[case]
    data = ascend(inference={"parallelism": 8}, scheduling={"queueName": "team-a"}) if "Kueue" in case else None
    got = findings(_break(change), data)
    problems = [f for f in got if f.level == "problem"]
    assert [f.check for f in problems] == [check], [f.line() for f in got]
    assert fix in problems[0].fix and exit_code(got) == 2


def test_a_namespace_that_enforces_restricted_refuses_a_driver_host_path():
    got = findings(good(), settings=JobSettings(ascend_driver_path="/usr/local/Ascend/driver"))
    (problem,) = [f for f in got if f.level == "problem"]
    assert problem.check == "Pod Security" and "hostPath" in problem.detail


def test_fewer_npus_than_parallelism_is_a_warning():
    snapshot = good()
    snapshot.nodes = [node("npu-1", npus=2)]
    (warning,) = [f for f in findings(snapshot) if f.level == "warning"]
    assert "2 x huawei.com/Ascend310P" in warning.detail and exit_code(findings(snapshot)) == 0


@pytest.mark.parametrize(
    "toleration, taint, expected",
    [
        ({"key": "a", "operator": "Exists"}, {"key": "a", "effect": "NoSchedule"}, True),
        ({"operator": "Exists"}, {"key": "anything", "effect": "NoExecute"}, True),
        (
            {"key": "a", "operator": "Equal", "value": "1", "effect": "NoSchedule"},
            {"key": "a", "value": "1", "effect": "NoSchedule"},
            True,
        ),
        ({"key": "a", "operator": "Equal", "value": "1"}, {"key": "a", "value": "2", "effect": "NoSchedule"}, False),
        ({"key": "a", "operator": "Exists", "effect": "NoExecute"}, {"key": "a", "effect": "NoSchedule"}, False),
    ],
)
def test_toleration_matching_follows_kubernetes(toleration, taint, expected):
    assert tolerates([toleration], taint) is expected


@pytest.mark.parametrize(
    "args, expected",
    [
        ("device-plugin -volcanoType=true -logLevel=0", True),
        ("device-plugin -volcanoType", True),
        ("device-plugin --volcanoType=false", False),
        ("device-plugin -logLevel=0", False),
        ("device-plugin -volcanoType=true -volcanoType=false", False),
        ("device-plugin -volcanoTypeX=true", False),
    ],
)
def test_volcano_mode_reads_the_flag_as_go_parses_it(args, expected):
    from pnas_operator.cluster_checks import volcano_mode

    daemonset = {
        "spec": {"template": {"spec": {"containers": [{"command": ["/bin/bash", "-c", "--"], "args": [args]}]}}}
    }
    assert volcano_mode(daemonset) is expected


def test_what_may_not_be_read_is_a_warning_not_a_problem():
    snapshot = good()
    snapshot.forbidden = {"deployments", "secrets", "nodes", "daemonsets"}
    got = {f.check: f for f in findings(snapshot)}
    assert [c for c, f in got.items() if f.level == "problem"] == []
    assert all("not checked" in got[c].detail for c in ("operator", "credentials Secret", "nodes", "device plugin"))
