"""`pnas-eval doctor` against the API emulator (kmock) and the loopback S3 server (moto): a cluster
that passes, one broken in each way (each shows its fix), what may not be read, an API server that
does not answer, and the command end to end as a process (exit codes 0 / 1 / 2).

The emulated cluster is made of the objects a real one holds, as their owners write them: the chart's
operator Deployment (labels app.kubernetes.io/part-of=pnas-eval, component=operator; its command
`pnas-operator --namespace ...`), the device plugin's DaemonSet as Ascend/mind-cluster's
build/ascendplugin-310P[-volcano].yaml writes it (flags inside one `bash -c` string), nodes labelled
and tainted as that plugin labels them (accelerator, node.kubernetes.io/npu.chip.name; allocatable
huawei.com/Ascend310P), Kueue's LocalQueue kind served at kueue.x-k8s.io/v1beta2 (Kueue >= 0.15) and
Volcano's PodGroup at scheduling.volcano.sh/v1beta1. Status fields (readyReplicas, allocatable) are
written through the status subresource, as their controllers do. kmock answers 404 for a kind it does
not serve, as kube-apiserver does for a group/version nobody installed.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import kmock
import kubernetes
import pytest
import yaml

from builders import ascend
from conftest import REPO
from pnas_jobs import crd
from pnas_jobs.plan import cluster_plan
from pnas_jobs.preflight import exit_code
from pnas_jobs.spec import parse_manifest
from pnas_operator import doctor, kube
from support.job_runner import clean_env, secret, service_account
from support.kube_emulator import KmockThread
from support.s3 import free_port

NS, PREFIX = "ml", "doctor"
PLUGIN_ARGS = "device-plugin {}-logFile=/var/log/mindx-dl/devicePlugin/devicePlugin.log -logLevel=0"


@pytest.fixture(scope="module")
def data(s3, sample_set):
    s3.upload_dir(sample_set["images"], "datasets", f"{PREFIX}/val")
    s3.client().fput_object("datasets", f"{PREFIX}/val_label.txt", str(sample_set["labels"]))
    s3.client().fput_object("models", f"{PREFIX}/planted.pth", str(sample_set["planted"].weights))
    return s3


def manifest(s3, **sections) -> dict:
    """The seed's kind of run (ais_bench on 310P3) on the loopback bucket, 3 shards, 8 pods at once."""
    return ascend(
        model={"weights": f"s3://models/{PREFIX}/planted.pth"},
        dataset={
            "images": f"s3://datasets/{PREFIX}/val/",
            "labels": f"s3://datasets/{PREFIX}/val_label.txt",
            "shards": 3,
        },
        storage={"uri": "s3://runs/doctor", "endpoint": s3.endpoint},
        inference={"parallelism": 8, **sections.pop("inference", {})},
        **sections,
    )


class Cluster:
    """A kmock API server holding a cluster that can run the manifest; `api`: a kubernetes client on it."""

    def __init__(self, s3, kueue: bool = True, volcano: bool = True):
        self.emulator = KmockThread().start()
        k = self.emulator.emulator
        if volcano:
            k.resources["scheduling.volcano.sh/v1beta1/podgroups"] = kmock.ResourceInfo(
                kind="PodGroup", singular="podgroup", namespaced=True
            )
        self.api = kubernetes.config.new_client_from_config(config_file=self.emulator.kubeconfig_path)
        self.core, self.apps = kubernetes.client.CoreV1Api(self.api), kubernetes.client.AppsV1Api(self.api)
        self.custom = kubernetes.client.CustomObjectsApi(self.api)
        self.core.create_namespace(
            {"metadata": {"name": NS, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
        )
        kubernetes.client.ApiextensionsV1Api(self.api).create_custom_resource_definition(crd.definition())
        self.operator()
        self.core.create_namespaced_secret(
            NS, secret("minio-credentials", NS, {"accessKey": s3.access_key, "secretKey": s3.secret_key})
        )
        self.core.create_namespaced_service_account(NS, service_account("pnas-eval-jobs", NS))
        for name in ("npu-1", "npu-2"):
            self.node(name)
        self.node("cpu-1", labels={}, taints=[], allocatable={"cpu": "16"})
        self.device_plugin()
        if kueue:
            k.resources["kueue.x-k8s.io/v1beta2/localqueues"] = kmock.ResourceInfo(
                kind="LocalQueue", singular="localqueue", namespaced=True
            )
            self.custom.create_namespaced_custom_object(
                "kueue.x-k8s.io",
                "v1beta2",
                NS,
                "localqueues",
                {
                    "apiVersion": "kueue.x-k8s.io/v1beta2",
                    "kind": "LocalQueue",
                    "metadata": {"name": "team-a", "namespace": NS},
                    "spec": {"clusterQueue": "npus"},
                },
            )

    def operator(self, watch: str = NS, ready: int = 1) -> None:
        labels = {"app.kubernetes.io/part-of": "pnas-eval", "app.kubernetes.io/component": "operator"}
        container = {
            "name": "operator",
            "image": "ghcr.io/pnas-eval/operator:0.1.0",
            "command": ["pnas-operator", "--namespace", watch, "--liveness", "http://0.0.0.0:8080/healthz"],
            "env": [
                {"name": "PNAS_OPERATOR_JOBS_SERVICE_ACCOUNT", "value": "pnas-eval-jobs"},
                {"name": "PNAS_OPERATOR_ASCEND_DRIVER_PATH", "value": ""},
            ],
        }
        body = {
            "metadata": {"name": "pnas-eval-operator", "namespace": "pnas-eval", "labels": labels},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
            },
        }
        self.apps.create_namespaced_deployment("pnas-eval", body)
        self.apps.patch_namespaced_deployment_status(
            "pnas-eval-operator", "pnas-eval", {"status": {"readyReplicas": ready, "replicas": 1}}
        )

    def node(self, name: str, chip="310P3", npus="4", labels=None, taints=None, allocatable=None) -> None:
        labels = (
            {"accelerator": "huawei-Ascend310P", "node.kubernetes.io/npu.chip.name": chip} if labels is None else labels
        )
        taints = [{"key": "huawei.com/Ascend310P", "effect": "NoSchedule"}] if taints is None else taints
        self.core.create_node({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}})
        allocatable = {"cpu": "64", "huawei.com/Ascend310P": npus} if allocatable is None else allocatable
        self.core.patch_node_status(name, {"status": {"allocatable": allocatable}})

    def device_plugin(self, volcano: bool = False) -> None:
        flags = "-volcanoType=true -presetVirtualDevice=true " if volcano else ""
        container = {
            "name": "device-plugin-01",
            "image": "ascend-k8sdeviceplugin:v3.0.0",
            "command": ["/bin/bash", "-c", "--"],
            "args": [PLUGIN_ARGS.format(flags)],
        }
        labels = {"name": "ascend-device-plugin-ds"}
        self.apps.create_namespaced_daemon_set(
            "kube-system",
            {
                "metadata": {
                    "name": "ascend-device-plugin3-daemonset-310p" if volcano else "ascend-device-plugin-daemonset"
                },
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
                },
            },
        )

    def stop(self) -> None:
        self.api.close()
        self.emulator.stop()


def use_kubeconfig(monkeypatch, path: str) -> None:
    """kube.py in this process talks to `path` (the client reads $KUBECONFIG when imported; kube.py
    keeps its clients: both are reset)."""
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", path)
    kube._clients.cache_clear(), kube._readers.cache_clear()


@pytest.fixture
def cluster(data, monkeypatch):
    made = Cluster(data)
    use_kubeconfig(monkeypatch, made.emulator.kubeconfig_path)
    yield made
    kube._clients.cache_clear(), kube._readers.cache_clear()
    made.stop()


def examine(s3, **sections):
    pnaseval = parse_manifest(manifest(s3, **sections))
    return doctor.cluster(pnaseval, cluster_plan(pnaseval, "test"))


def test_a_cluster_that_can_run_it(cluster, data):
    found = examine(data)
    assert [f.level for f in found] == ["ok"] * len(found), [f.line() for f in found]
    assert [f.check for f in found] == [
        "namespace",
        "CRD",
        "operator",
        "credentials Secret",
        "Jobs' ServiceAccount",
        "nodes: resources",
        "nodes: taints",
        "Pod Security",
        "device plugin",
    ]
    assert "8 x huawei.com/Ascend310P allocatable on 2 nodes" in found[5].detail
    assert data.secret_key not in "".join(f.line() for f in found)


def _delete_secret_key(c):
    c.core.patch_namespaced_secret("minio-credentials", NS, [{"op": "remove", "path": "/data/secretKey"}])


BROKEN = {  # how to break the cluster, the spec's sections, the check that fails, a piece of its fix
    "no namespace": (lambda c: c.core.delete_namespace(NS), {}, "namespace", "kubectl create namespace ml"),
    "no CRD": (
        lambda c: kubernetes.client.ApiextensionsV1Api(c.api).delete_custom_resource_definition(
            "pnasevals.pnaseval.io"
        ),
        {},
        "CRD",
        "kubectl apply --server-side -f crds/pnaseval.yaml",
    ),
    "an older CRD": (
        lambda c: kubernetes.client.ApiextensionsV1Api(c.api).patch_custom_resource_definition(
            "pnasevals.pnaseval.io",
            [{"op": "replace", "path": "/spec/versions/0/schema/openAPIV3Schema/description", "value": "old"}],
        ),
        {},
        "CRD",
        "kubectl apply --server-side",
    ),
    "no operator": (
        lambda c: c.apps.delete_namespaced_deployment("pnas-eval-operator", "pnas-eval"),
        {},
        "operator",
        "helm install",
    ),
    "an operator not ready": (
        lambda c: c.apps.patch_namespaced_deployment_status(
            "pnas-eval-operator", "pnas-eval", {"status": {"readyReplicas": 0}}
        ),
        {},
        "operator",
        "helm install",
    ),
    "an operator for another namespace": (
        lambda c: (c.apps.delete_namespaced_deployment("pnas-eval-operator", "pnas-eval"), c.operator(watch="team-b")),
        {},
        "operator",
        "--set watchNamespace=ml",
    ),
    "no Secret": (
        lambda c: c.core.delete_namespaced_secret("minio-credentials", NS),
        {},
        "credentials Secret",
        "kubectl create secret generic minio-credentials -n ml",
    ),
    "a Secret without secretKey": (_delete_secret_key, {}, "credentials Secret", "--from-literal=secretKey"),
    "no Jobs' ServiceAccount": (
        lambda c: c.core.delete_namespaced_service_account("pnas-eval-jobs", NS),
        {},
        "Jobs' ServiceAccount",
        "kubectl create serviceaccount pnas-eval-jobs -n ml",
    ),
    "no node of the chip family": (
        lambda c: [c.core.delete_node(n) for n in ("npu-1", "npu-2")],
        {},
        "nodes",
        "spec.inference.nodeSelector",
    ),
    "nodes of another chip": (
        lambda c: ([c.core.delete_node(n) for n in ("npu-1", "npu-2")], c.node("npu-3", chip="310P1")),
        {},
        "nodes: chip",
        "set spec.convert.socVersion to Ascend310P1",
    ),
    "no NPU allocatable": (
        lambda c: [
            c.core.patch_node_status(n, {"status": {"allocatable": {"huawei.com/Ascend310P": "0"}}})
            for n in ("npu-1", "npu-2")
        ],
        {},
        "nodes: resources",
        "install the device plugin",
    ),
    "an untolerated taint": (
        lambda c: [
            c.core.patch_node(n, {"spec": {"taints": [{"key": "dedicated", "value": "infer", "effect": "NoSchedule"}]}})
            for n in ("npu-1", "npu-2")
        ],
        {},
        "nodes: taints",
        "[{key: huawei.com/Ascend310P, operator: Exists, effect: NoSchedule}, {key: dedicated, operator: Exists",
    ),
    "Pod Security refuses the driver hostPath": (
        lambda c: (
            c.apps.delete_namespaced_deployment("pnas-eval-operator", "pnas-eval"),
            c.operator(),
            c.apps.patch_namespaced_deployment(
                "pnas-eval-operator",
                "pnas-eval",
                [
                    {
                        "op": "replace",
                        "path": "/spec/template/spec/containers/0/env/1/value",
                        "value": "/usr/local/Ascend/driver",
                    }
                ],
            ),
        ),
        {},
        "Pod Security",
        "jobs.ascendDriverPath",
    ),
    "no such LocalQueue": (
        lambda c: None,
        {"scheduling": {"queueName": "team-b"}},
        "Kueue",
        "kubectl get localqueues -n ml",
    ),
    "device plugin in Volcano mode": (
        lambda c: (
            c.apps.delete_namespaced_daemon_set("ascend-device-plugin-daemonset", "kube-system"),
            c.device_plugin(volcano=True),
        ),
        {},
        "device plugin",
        "schedulerName: volcano",
    ),
}


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_each_broken_cluster_names_the_problem_and_the_fix(cluster, data, case):
    change, sections, check, fix = BROKEN[case]
    cluster.emulator.call(lambda: None)  # the emulator is up
    change(cluster)
    found = examine(data, **sections)
    problems = [f for f in found if f.level == "problem"]
    assert [f.check for f in problems] == [check], [f.line() for f in found]
    assert fix in problems[0].fix, problems[0].line()
    assert exit_code(found) == 2


@pytest.mark.parametrize(
    "scheduling, check, fix",
    [({"queueName": "team-a"}, "Kueue", "install Kueue"), ({"schedulerName": "volcano"}, "Volcano", "install Volcano")],
)
def test_a_queue_or_scheduler_named_but_not_installed(data, monkeypatch, scheduling, check, fix):
    bare = Cluster(data, kueue=False, volcano=False)  # neither kind served: 404 on its group/version
    try:
        use_kubeconfig(monkeypatch, bare.emulator.kubeconfig_path)
        found = examine(data, scheduling=scheduling)
    finally:
        kube._clients.cache_clear(), kube._readers.cache_clear()
        bare.stop()
    problems = [f for f in found if f.level == "problem"]
    assert [f.check for f in problems] == [check] and fix in problems[0].fix, [f.line() for f in found]


def test_a_local_queue_of_an_older_kueue_is_found(data, monkeypatch):
    older = Cluster(data, kueue=False)  # Kueue <= 0.14 serves LocalQueue at v1beta1 only
    older.emulator.emulator.resources["kueue.x-k8s.io/v1beta1/localqueues"] = kmock.ResourceInfo(
        kind="LocalQueue", singular="localqueue", namespaced=True
    )
    older.custom.create_namespaced_custom_object(
        "kueue.x-k8s.io",
        "v1beta1",
        NS,
        "localqueues",
        {
            "apiVersion": "kueue.x-k8s.io/v1beta1",
            "kind": "LocalQueue",
            "metadata": {"name": "team-old", "namespace": NS},
        },
    )
    try:
        use_kubeconfig(monkeypatch, older.emulator.kubeconfig_path)
        found = {f.check: f for f in examine(data, scheduling={"queueName": "team-old"})}
    finally:
        kube._clients.cache_clear(), kube._readers.cache_clear()
        older.stop()
    assert (found["Kueue"].level, found["Kueue"].detail) == ("ok", "LocalQueue team-old exists")


def test_what_may_not_be_read_is_not_checked_and_no_secret_value_is_read(cluster, data):
    cluster.emulator.emulator.inject(
        "GET", r"/namespaces/ml/secrets/", status=403, message='secrets "minio-credentials" is forbidden'
    )
    cluster.emulator.emulator.inject(
        "GET", r"/apis/apps/v1/deployments", status=403, message="deployments.apps is forbidden"
    )
    found = {f.check: f for f in examine(data)}
    assert found["credentials Secret"].level == found["operator"].level == "warning"
    assert "not checked" in found["credentials Secret"].detail and "not checked" in found["operator"].detail
    assert not [f for f in found.values() if f.level == "problem"]


def test_an_api_server_that_does_not_answer_is_unreachable(data, monkeypatch):
    use_kubeconfig(monkeypatch, _kubeconfig_to(f"http://127.0.0.1:{free_port()}"))
    try:
        found = examine(data)
    finally:
        kube._clients.cache_clear(), kube._readers.cache_clear()
    assert [(f.check, f.level) for f in found] == [("Kubernetes API", "unreachable")] and exit_code(found) == 1


def _kubeconfig_to(url: str):
    import tempfile

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": url}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }
    fd, path = tempfile.mkstemp(suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(config, f)
    return path


def run_doctor(cluster, s3, *args) -> subprocess.CompletedProcess:
    env = {**clean_env(), **s3.env(), "KUBECONFIG": cluster.emulator.kubeconfig_path}
    command = [
        sys.executable,
        "-m",
        "pnas_jobs",
        "doctor",
        str(REPO / "examples" / "seed-310p.yaml"),
        "--namespace",
        NS,
        "--storage-endpoint",
        s3.endpoint,
        *args,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO, timeout=120)
    s3.outputs += [result.stdout, result.stderr]
    print(
        f"$ pnas-eval doctor examples/seed-310p.yaml --namespace {NS} --storage-endpoint localhost:9000\n{result.stdout}{result.stderr}"
    )
    return result


@pytest.fixture
def seed_data(data, sample_set):
    """What examples/seed-310p.yaml reads, on the loopback bucket: the sample images and labels, weights."""
    client = data.client()
    if not client.bucket_exists("pnas-eval"):
        client.make_bucket("pnas-eval")
        data.upload_dir(sample_set["images"], "datasets", "imagenet/val")
        client.fput_object("datasets", "imagenet/val_label.txt", str(sample_set["labels"]))
        client.fput_object("models", "pnasnet5large.pth", str(sample_set["planted"].weights))
    return data


def test_doctor_end_to_end_on_the_seed_example(cluster, seed_data):
    passing = run_doctor(cluster, seed_data)
    assert passing.returncode == 0, passing.stdout + passing.stderr
    lines = passing.stdout.splitlines()
    assert lines[0] == f"pnas-eval doctor: PnasEval {NS}/pnasnet5large-310p" and lines[-1] == "=> the run can start"
    assert "ok          dataset: images: 24 images under s3://datasets/imagenet/val/" in passing.stdout

    cluster.core.delete_namespaced_secret("minio-credentials", NS)
    for name in ("npu-1", "npu-2"):
        cluster.core.patch_node(
            name, {"spec": {"taints": [{"key": "dedicated", "value": "infer", "effect": "NoSchedule"}]}}
        )
    seed_data.client().remove_object("models", "pnasnet5large.pth")
    broken = run_doctor(cluster, seed_data)
    assert broken.returncode == 2, broken.stdout + broken.stderr
    assert [line.split()[1] for line in broken.stdout.splitlines() if line.startswith("PROBLEM")] == [
        "credentials",
        "nodes:",
        "model:",
    ]
    assert "fix: kubectl create secret generic minio-credentials -n ml" in broken.stdout
    assert broken.stdout.splitlines()[-1] == "=> 3 problems to fix before the run can start"
    assert seed_data.secret_key not in broken.stdout + broken.stderr and seed_data.access_key not in broken.stdout
    readme = (REPO / "README.md").read_text()  # "Before your first run" shows these two outputs as they are
    assert passing.stdout in readme and broken.stdout in readme


def test_doctor_end_to_end_without_an_api_server(data, tmp_path):
    env = {**clean_env(), **data.env(), "KUBECONFIG": _kubeconfig_to(f"http://127.0.0.1:{free_port()}")}
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(manifest(data)))
    result = subprocess.run(
        [sys.executable, "-m", "pnas_jobs", "doctor", str(path)], env=env, capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "UNREACHABLE Kubernetes API" in result.stdout and result.stdout.splitlines()[-1].startswith(
        "=> could not reach"
    )
