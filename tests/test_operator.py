"""The operator for real (`pnas-operator`, kopf) against kmock, an in-memory Kubernetes API, with a
test-side Job runner playing the Job controller and the kubelet: it runs each index's container
command here, against the loopback S3 server, and writes the Jobs' status.

What only a real cluster shows (scheduling, the device plugin, garbage collection, the API server's
own validation and pruning) is left to tests/test_cluster_e2e.py; here the status is checked to be
fully declared in the CRD's schema, since kmock would not prune what a real API server drops.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import kubernetes
import pytest
import yaml

from builders import tiny
from conftest import REPO
from pnas_jobs import crd, metric
from pnas_jobs.spec import parse_manifest
from support.job_runner import JobRunner, clean_env, secret, service_account
from support.kube_emulator import KmockThread
from support.s3 import free_port

G, V, P = "pnaseval.io", "v1alpha1", "pnasevals"
NS = "evals"


class Operator:
    """`pnas-operator --all-namespaces` as its own process, as the chart's Deployment runs it."""

    def __init__(self, kubeconfig: str, log_dir, **env: str):
        self.kubeconfig, self.log_dir, self.process, self.starts = kubeconfig, log_dir, None, 0
        self.health = f"http://127.0.0.1:{free_port()}/healthz"
        self.probe_port = free_port()
        self.env = {f"PNAS_OPERATOR_{k.upper()}": str(v) for k, v in env.items()}

    def start(self) -> None:
        self.starts += 1
        env = {
            **clean_env(),
            "KUBECONFIG": self.kubeconfig,
            "PNAS_OPERATOR_JOBS_IMAGE": "registry.test/pnas-eval/jobs:ci",
            "PNAS_OPERATOR_PROBE_PORT": str(self.probe_port),
            **self.env,
        }
        log = open(self.log_dir / f"operator-{self.starts}.log", "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pnas_operator.main", "--all-namespaces", "--liveness", self.health],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def log(self) -> str:
        return "".join(p.read_text() for p in sorted(self.log_dir.glob("operator-*.log")))


@contextlib.contextmanager
def operator_cluster(s3, sample_set, work: Path, env: dict[str, str]):
    """The sample set in the bucket, an emulated API server with the namespace as the chart leaves it,
    the test kubelet running Jobs with `env`, and the real operator process."""
    s3.upload_dir(sample_set["images"], "datasets", "operator/val")
    s3.client().fput_object("datasets", "operator/val_label.txt", str(sample_set["labels"]))
    s3.client().fput_object("models", "operator/planted.pth", str(sample_set["planted"].weights))
    emulator = KmockThread(port=None).start()
    api = kubernetes.config.new_client_from_config(config_file=emulator.kubeconfig_path)
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespaced_secret(
        NS, secret("minio-credentials", NS, {"accessKey": s3.access_key, "secretKey": s3.secret_key})
    )
    core.create_namespaced_service_account(NS, service_account("pnas-eval-jobs", NS))  # as the chart makes it
    runner = JobRunner(api, NS, env).start()
    operator = Operator(emulator.kubeconfig_path, work)
    operator.start()
    yield dict(api=api, runner=runner, operator=operator, s3=s3, planted=sample_set["planted"])
    operator.stop()
    runner.stop()
    api.close()
    emulator.stop()
    log = operator.log()
    assert log and s3.secret_key not in log and s3.access_key not in log  # whatever the operator logged


@pytest.fixture(scope="module")
def cluster(s3, sample_set, tmp_path_factory):
    with operator_cluster(s3, sample_set, tmp_path_factory.mktemp("operator"), clean_env()) as running:
        yield running


def pnaseval(name: str, s3, batch_sizes=(1,), **sections) -> dict:
    """The tiny model on the bucket the cluster fixture filled, 3 shards, 3 pods at once."""
    data = tiny(
        name,
        "s3://datasets/operator/val/",
        "s3://datasets/operator/val_label.txt",
        "s3://models/operator/planted.pth",
        "s3://runs/cluster",
        namespace=NS,
        storage={"endpoint": s3.endpoint},
        inference={"batchSizes": list(batch_sizes), "parallelism": 3},
        **sections,
    )
    parse_manifest(data)  # what the API server's schema and CEL rules would check on apply
    return data


def apply(cluster, data) -> None:
    kubernetes.client.CustomObjectsApi(cluster["api"]).create_namespaced_custom_object(G, V, NS, P, data)


def get(cluster, name) -> dict:
    return kubernetes.client.CustomObjectsApi(cluster["api"]).get_namespaced_custom_object(G, V, NS, P, name)


def wait_for(check, timeout=240, what="condition", cluster=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        process = cluster and cluster["operator"].process
        if process and process.poll() is not None:
            raise AssertionError(f"the operator exited ({process.returncode}):\n{cluster['operator'].log()[-3000:]}")
        time.sleep(0.3)
    detail = cluster["operator"].log()[-3000:] if cluster else ""
    raise AssertionError(
        f"timed out waiting for {what}\n{detail}\nrunner errors: {cluster and cluster['runner'].errors}"
    )


def finished(cluster, name) -> dict:
    return wait_for(
        lambda: (o := get(cluster, name)).get("status", {}).get("phase") in ("Succeeded", "Failed") and o,
        what=f"{name} to finish",
        cluster=cluster,
    )


def jobs_of(cluster, name) -> dict[str, dict]:
    batch = kubernetes.client.BatchV1Api(cluster["api"])
    items = [cluster["api"].sanitize_for_serialization(j) for j in batch.list_namespaced_job(NS).items]
    return {j["metadata"]["name"]: j for j in items if j["metadata"]["labels"].get("pnaseval.io/name") == name}


def events_of(cluster, name) -> list[tuple[str, str]]:
    """The PnasEval's Events so far: the operator posts them after the status write that caused them
    (kopf's poster queue), so a test waits for the one it expects rather than reading once."""
    core = kubernetes.client.CoreV1Api(cluster["api"])
    return [(e.reason, e.message) for e in core.list_namespaced_event(NS).items if e.involved_object.name == name]


def undeclared(value, schema, path="status") -> list[str]:
    """Fields a real API server would prune because the CRD's schema does not declare them."""
    if isinstance(value, dict) and "properties" in schema:
        out = []
        for key, item in value.items():
            if key not in schema["properties"]:
                out.append(f"{path}.{key}")
            else:
                out += undeclared(item, schema["properties"][key], f"{path}.{key}")
        return out
    if isinstance(value, list) and "items" in schema:
        return [p for i, item in enumerate(value) for p in undeclared(item, schema["items"], f"{path}[{i}]")]
    return []


def expected_percentages(planted) -> dict[str, float]:
    return metric.percentages(planted.table())


def test_apply_to_succeeded_with_the_planted_accuracy(cluster):
    s3, planted = cluster["s3"], cluster["planted"]
    apply(cluster, pnaseval("happy", s3, batch_sizes=(1, 4), cleanup=True))
    body = finished(cluster, "happy")
    status = body["status"]
    assert status["phase"] == "Succeeded", status
    expected = expected_percentages(planted)
    assert [(r["batchSize"], r["images"], r["top1"], r["top5"]) for r in status["results"]] == [
        (1, 24, expected["top1"], expected["top5"]),
        (4, 24, expected["top1"], expected["top5"]),
    ]
    assert all(
        r["throughput"] > 0 and r["json"].startswith("s3://runs/cluster/evals/happy/") for r in status["results"]
    )
    assert (
        status["shards"] == {"total": 3, "succeeded": 3, "failed": 0, "active": 0} and status["progress"] == "3/3 bs4"
    )
    assert [s["phase"] for s in status["stages"]] == ["Succeeded"] * 6
    ready = status["conditions"][0]
    assert (ready["type"], ready["status"], ready.get("observedGeneration")) == (
        "Ready",
        "True",
        body["metadata"].get("generation"),
    )
    assert status["startTime"] <= status["completionTime"]
    assert (
        undeclared(status, crd.definition()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"])
        == []
    )

    jobs = jobs_of(cluster, "happy")
    assert sorted(jobs) == [
        "happy-aggregate",
        "happy-convert",
        "happy-infer-bs1",
        "happy-infer-bs4",
        "happy-preflight",
        "happy-shard",
    ]
    preflight = next(c for c in status["conditions"] if c["type"] == "Preflight")
    assert (preflight["status"], preflight["reason"], preflight["message"]) == (
        "True",
        "Passed",
        "storage and data checked",
    )
    for job in jobs.values():
        (ref,) = job["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"]) == ("PnasEval", "happy", body["metadata"]["uid"])
        assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.test/pnas-eval/jobs:ci"
    reasons = lambda: [r for r, _ in events_of(cluster, "happy")]  # noqa: E731
    wait_for(lambda: reasons().count("StageSucceeded") == 6, 20, "six StageSucceeded events", cluster)
    assert reasons().count("StageStarted") == 6

    client = s3.client()
    assert client.get_object("runs", "cluster/evals/happy/result_bs4.json").read().decode() == metric.seed_json(
        planted.table()
    )
    assert urllib.request.urlopen(cluster["operator"].health, timeout=5).status == 200

    # spec.cleanup: deleting the PnasEval starts a Job (named after its uid) that deletes the run's objects in storage
    kubernetes.client.CustomObjectsApi(cluster["api"]).delete_namespaced_custom_object(G, V, NS, P, "happy")
    uid = body["metadata"]["uid"]
    wait_for(lambda: f"happy-cleanup-{uid[:8]}" in cluster["runner"].started, what="the cleanup Job", cluster=cluster)
    wait_for(
        lambda: not list(client.list_objects("runs", prefix="cluster/evals/happy/", recursive=True)),
        what="the run's objects to be deleted",
        cluster=cluster,
    )


def test_operator_restart_mid_inference_resumes_without_duplicates(cluster):
    runner, operator = cluster["runner"], cluster["operator"]
    runner.hold.add("restart-infer-bs1")
    apply(cluster, pnaseval("restart", cluster["s3"]))
    wait_for(lambda: "restart-infer-bs1" in runner.started, what="inference to start", cluster=cluster)
    before = {name: job["metadata"]["uid"] for name, job in jobs_of(cluster, "restart").items()}
    assert get(cluster, "restart")["status"]["phase"] == "Inferring"
    operator.kill()
    operator.start()
    time.sleep(2)  # the new operator resumes while inference is still held
    runner.release("restart-infer-bs1")
    status = finished(cluster, "restart")["status"]
    assert status["phase"] == "Succeeded"
    after = jobs_of(cluster, "restart")
    assert sorted(after) == [
        "restart-aggregate",
        "restart-convert",
        "restart-infer-bs1",
        "restart-preflight",
        "restart-shard",
    ]
    assert {n: after[n]["metadata"]["uid"] for n in before} == before
    assert status["results"][0]["top1"] == expected_percentages(cluster["planted"])["top1"]
    assert len([p for p in runner.pods if p[0] == "restart-infer-bs1"]) == 3


def test_a_shard_that_fails_twice_then_succeeds_is_counted_once(cluster):
    runner = cluster["runner"]
    runner.fail[("flaky-infer-bs1", 1)] = 2
    apply(cluster, pnaseval("flaky", cluster["s3"]))
    status = finished(cluster, "flaky")["status"]
    assert status["phase"] == "Succeeded", status
    assert [c for j, i, c in runner.pods if j == "flaky-infer-bs1" and i == 1] == [1, 1, 0]
    assert status["results"][0]["images"] == 24
    assert status["results"][0]["top5"] == expected_percentages(cluster["planted"])["top5"]
    infer = next(s for s in status["stages"] if s["name"] == "infer-bs1")
    assert infer["failedPods"] == 2
    wait_for(lambda: any(r == "StageRetry" for r, _ in events_of(cluster, "flaky")), 20, "a StageRetry event", cluster)


def test_a_shard_that_fails_for_good_fails_the_evaluation_naming_it(cluster):
    runner = cluster["runner"]
    runner.fail[("broken-infer-bs1", 2)] = 3  # backoffLimitPerIndex 2: three pods, all fail
    apply(cluster, pnaseval("broken", cluster["s3"], batch_sizes=(1, 4)))
    status = finished(cluster, "broken")["status"]
    assert status["phase"] == "Failed"
    assert status["failedShards"] == [2]
    assert "infer-bs1 failed (shards 2): FailedIndexes" in status["message"]
    assert status["conditions"][0]["status"] == "False"
    assert sorted(jobs_of(cluster, "broken")) == [
        "broken-convert",
        "broken-infer-bs1",
        "broken-preflight",
        "broken-shard",
    ]  # nothing after
    wait_for(
        lambda: any(r == "StageFailed" and "shards 2" in m for r, m in events_of(cluster, "broken")),
        20,
        "a StageFailed event",
        cluster,
    )


def test_a_dataset_prefix_without_images_stops_the_run_at_the_preflight(cluster):
    data = pnaseval("no-images", cluster["s3"])
    data["spec"]["dataset"]["images"] = "s3://datasets/operator/nothing-here/"
    apply(cluster, data)
    status = finished(cluster, "no-images")["status"]
    preflight = next(c for c in status["conditions"] if c["type"] == "Preflight")
    assert (status["phase"], preflight["status"], preflight["reason"]) == ("Failed", "False", "ProblemsFound")
    assert preflight["message"].startswith(
        "problem: dataset: images: spec.dataset.images: no images under s3://datasets/operator/nothing-here/"
    )
    assert status["message"].startswith("preflight found problems: problem: dataset: images")
    assert sorted(jobs_of(cluster, "no-images")) == ["no-images-preflight"]  # nothing converted or sharded
    assert [c for j, _, c in cluster["runner"].pods if j == "no-images-preflight"] == [2]  # exit 2: not retried


def test_an_invalid_spec_for_a_cluster_fails_with_the_field(cluster):
    data = pnaseval("local-paths", cluster["s3"])
    data["spec"]["dataset"]["images"] = "/data/imagenet/val"
    apply(cluster, data)
    status = finished(cluster, "local-paths")["status"]
    assert status["phase"] == "Failed" and "spec.dataset.images" in status["message"]
    assert status["conditions"][0]["reason"] == "InvalidSpec"
    assert jobs_of(cluster, "local-paths") == {}


def test_plan_prints_the_jobs_the_operator_creates(tmp_path, cluster):
    data = pnaseval("planned", cluster["s3"], batch_sizes=(1, 4))
    path = tmp_path / "planned.yaml"
    path.write_text(yaml.safe_dump(data))
    result = subprocess.run(
        [sys.executable, "-m", "pnas_jobs", "plan", str(path)], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    printed = list(yaml.safe_load_all(result.stdout))
    assert [j["metadata"]["name"] for j in printed] == [
        "planned-preflight",
        "planned-convert",
        "planned-shard",
        "planned-infer-bs1",
        "planned-infer-bs4",
        "planned-aggregate",
    ]
    assert all(j["kind"] == "Job" for j in printed)
    assert os.environ.get("MINIO_SECRET_KEY") is None and cluster["s3"].secret_key not in result.stdout


def test_fidelity_runs_the_reference_beside_inference_and_shows_the_verdict(cluster):
    """spec.fidelity: one more Indexed Job (the PyTorch reference on the sampled shard), its verdict in status."""
    s3 = cluster["s3"]
    apply(cluster, pnaseval("faithful", s3, batch_sizes=(4,), fidelity={"reference": "pytorch", "images": 8}))
    body = finished(cluster, "faithful")
    status = body["status"]
    assert status["phase"] == "Succeeded", status
    (result,) = status["results"]
    assert (result["top1Agreement"], result["top1Drop"], result["fidelityOk"], status["worstAgreement"]) == (
        100.0,
        0.0,
        True,
        100.0,
    )
    fidelity_ok = next(c for c in status["conditions"] if c["type"] == "FidelityOK")
    assert (fidelity_ok["status"], fidelity_ok["reason"]) == ("True", "WithinMaxTop1Drop")
    assert status["progress"] == "3/3 bs4" and [s["name"] for s in status["stages"]][-2:] == ["reference", "aggregate"]
    assert (
        undeclared(status, crd.definition()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"])
        == []
    )
    reference = jobs_of(cluster, "faithful")["faithful-reference"]["spec"]
    # 3 shards of (assumed) 50,000 images: one whole shard holds the 8 images asked for, the middle one
    assert (reference["completions"], reference["completionMode"]) == (1, "Indexed")
    assert "--sample 1 --reference" in " ".join(reference["template"]["spec"]["containers"][0]["command"])
    report = yaml.safe_load(s3.client().get_object("runs", "cluster/evals/faithful/report.json").read())
    assert report["results"][0]["fidelity"]["images"] == 8 and report["checks"]["fidelity"]["shards"] == [1]
