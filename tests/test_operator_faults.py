"""The operator (`pnas-operator`, its own process) on a bad day: the API server fails, hangs, refuses,
pods cannot start, a queue holds Jobs. One row per fault; each PnasEval must reach its correct final
phase without an operator restart, with the cause in its status or Events while it lasted.

Faults are the emulator's (support/kube_emulator.py Fault: answered as kube-apiserver answers, before
anything is stored) and the test kubelet's (support/job_runner.py: pods reported as Kubernetes
reports them). No stage runs here (`execute=False`: pods succeed at once): the reactions are the
operator's. Time scales are shortened through the operator's settings (API timeout 3 s, backoff
0.2..1 s, safety-net pass every 3 s); the production values only stretch the same mechanism.
What the emulator cannot show (a real API server's GC, quota accounting, admission, the scheduler,
Kueue itself) is listed in the README's troubleshooting section.
"""

from __future__ import annotations

import json
import time
import urllib.request

import kubernetes
import pytest

from builders import pnaseval as manifest
from support.job_runner import USER_AGENT, JobRunner, clean_env, secret, service_account
from support.kube_emulator import KmockThread
from test_operator import G, P, V, Operator, wait_for

NS = "faults"
SUMMARY = {
    "results": [{"batchSize": 1, "images": 8, "top1": 50.0, "top5": 87.5, "throughput": 12.5}],
    "failedImages": 0,
}
QUOTA = 'jobs.batch "{name}" is forbidden: exceeded quota: jobs, requested: count/jobs.batch=1, used: count/jobs.batch=4, limited: count/jobs.batch=4'


def summary(job: dict) -> str:
    """The aggregate's termination message; a PnasEval named `garbled` gets one that is not a summary."""
    return (
        "Traceback (most recent call last): ..."
        if job["metadata"]["name"].startswith("garbled")
        else json.dumps(SUMMARY)
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    emulator = KmockThread(port=None).start()
    api = kubernetes.config.new_client_from_config(config_file=emulator.kubeconfig_path)
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespaced_secret(
        NS, secret("minio-credentials", NS, {"accessKey": "test-access", "secretKey": "test-secret-key"})
    )
    core.create_namespaced_service_account(NS, service_account("pnas-eval-jobs", NS))
    runner = JobRunner(
        kubernetes.config.new_client_from_config(config_file=emulator.kubeconfig_path),
        NS,
        clean_env(),
        workers=8,
        execute=False,
        summary=summary,
        poll=0.05,
    ).start()
    operator = Operator(
        emulator.kubeconfig_path,
        tmp_path_factory.mktemp("operator-faults"),
        resync_interval=3,
        api_timeout=3,
        api_connect_timeout=1,
        backoff_min=0.2,
        backoff_max=1,
        event_interval=2,
        start_check_seconds=1,
        summary_grace_seconds=5,
    )
    operator.start()
    yield dict(api=api, runner=runner, operator=operator, emulator=emulator.emulator)
    operator.stop()
    runner.stop()
    emulator.stop()


def apply(cluster, name: str, **sections) -> None:
    sections = {"dataset": {"shards": 3}, "inference": {"batchSizes": [1]}, **sections}
    kubernetes.client.CustomObjectsApi(cluster["api"]).create_namespaced_custom_object(
        G, V, NS, P, manifest(name, NS, **sections)
    )


def get(cluster, name: str) -> dict:
    return kubernetes.client.CustomObjectsApi(cluster["api"]).get_namespaced_custom_object(G, V, NS, P, name)


def delete(cluster, name: str) -> None:
    kubernetes.client.CustomObjectsApi(cluster["api"]).delete_namespaced_custom_object(G, V, NS, P, name)


def events(cluster, name: str) -> list[tuple[str, str]]:
    found = kubernetes.client.CoreV1Api(cluster["api"]).list_namespaced_event(NS).items
    return [
        (e.reason, e.message) for e in found if e.involved_object.name == name and e.involved_object.kind == "PnasEval"
    ]


def condition(cluster, name: str, type_: str) -> dict:
    return next((c for c in get(cluster, name).get("status", {}).get("conditions", []) if c["type"] == type_), {})


def problem(cluster, name: str, type_: str, reason: str | None = None) -> dict | None:
    """The condition while it reports a problem (status True, and that reason if given)."""
    found = condition(cluster, name, type_)
    return found if found.get("status") == "True" and found.get("reason") == (reason or found.get("reason")) else None


def final(cluster, name: str, timeout: float = 60) -> dict:
    body = wait_for(
        lambda: (o := get(cluster, name)).get("status", {}).get("phase") in ("Succeeded", "Failed") and o,
        timeout=timeout,
        what=f"{name} to finish",
        cluster=cluster,
    )
    return body["status"]


def event_with(cluster, name: str, reason: str, text: str = "") -> str:
    return wait_for(
        lambda: next((m for r, m in events(cluster, name) if r == reason and text in m), None),
        timeout=30,
        what=f"a {reason} Event on {name}",
        cluster=cluster,
    )


def jobs(cluster) -> dict[str, dict]:
    batch = kubernetes.client.BatchV1Api(cluster["api"])
    return {j.metadata.name: cluster["api"].sanitize_for_serialization(j) for j in batch.list_namespaced_job(NS).items}


def test_status_writes_failing_for_a_while_then_recovering(cluster):
    """An etcd outage: every status PATCH of this PnasEval answers 500 for a while (90 s in the issue,
    8 s here), then the server recovers; the loop retries with backoff and finishes by itself."""
    cluster["emulator"].inject("PATCH", f"/namespaces/{NS}/pnasevals/outage/status", status=500, seconds=8)
    apply(cluster, "outage")
    assert "etcdserver: mvcc: database space exceeded" in event_with(cluster, "outage", "StatusWriteFailed")
    assert get(cluster, "outage").get("status") is None  # nothing written while it lasted
    status = final(cluster, "outage")
    assert status["phase"] == "Succeeded" and status["results"][0]["top1"] == 50.0
    assert cluster["operator"].process.poll() is None and cluster["operator"].starts == 1  # no restart


def test_one_status_write_refused_with_422(cluster):
    cluster["emulator"].inject(
        "PATCH",
        f"/namespaces/{NS}/pnasevals/refused-once/status",
        status=422,
        times=1,
        message='PnasEval.pnaseval.io "refused-once" is invalid: status.phase: Unsupported value',
    )
    apply(cluster, "refused-once")
    assert "HTTP 422" in event_with(cluster, "refused-once", "StatusWriteFailed")
    assert final(cluster, "refused-once")["phase"] == "Succeeded"


def test_a_hung_list_times_out_and_the_pass_is_retried(cluster):
    """The safety-net pass lists the Jobs; that list hangs (10 s, past the 3 s timeout)."""
    cluster["runner"].hold.add("hung-convert")
    fault = cluster["emulator"].inject(
        "GET", rf"/namespaces/{NS}/jobs\?.*labelSelector=pnaseval.io%2Fname%3Dhung\b", hang=10, times=1
    )
    apply(cluster, "hung")
    message = event_with(cluster, "hung", "ApiError", "listing Jobs")
    assert "no answer from the API server" in message and fault.hits == 1
    cluster["runner"].release("hung-convert")
    status = final(cluster, "hung")
    assert status["phase"] == "Succeeded"
    # the condition was set once the call timed out, and cleared by the next pass (the Event stays)
    assert condition(cluster, "hung", "Blocked")["reason"] == "Resolved"


def test_job_creations_failing_with_500_are_retried_quickly(cluster):
    cluster["emulator"].inject("POST", f"/namespaces/{NS}/jobs$", status=500, times=3)
    started = time.monotonic()
    apply(cluster, "flaky-api")
    assert "creating Job flaky-api-preflight: HTTP 500" in event_with(
        cluster, "flaky-api", "ApiError"
    )  # the run's first Job
    assert final(cluster, "flaky-api")["phase"] == "Succeeded"
    assert time.monotonic() - started < 30  # bounded backoff (0.2, 0.4, 0.8 s here), not 60 s per failure


def test_a_quota_refusal_shows_until_it_frees_up(cluster):
    cluster["emulator"].inject(
        "POST", f"/namespaces/{NS}/jobs$", status=403, seconds=4, message=QUOTA.format(name="quota-convert")
    )
    apply(cluster, "quota")
    blocked = wait_for(
        lambda: problem(cluster, "quota", "Blocked", "QuotaExceeded"),
        timeout=10,
        what="the QuotaExceeded condition",
        cluster=cluster,
    )
    assert "exceeded quota: jobs" in blocked["message"]
    assert "exceeded quota" in event_with(cluster, "quota", "QuotaExceeded")
    assert final(cluster, "quota")["phase"] == "Succeeded"


def test_same_name_again_leftover_jobs_then_a_second_cleanup(cluster):
    """kmock has no garbage collector: the first PnasEval's Jobs stay after it is deleted, as they do
    on a cluster while the collector lags or after an orphaning delete. The second PnasEval of that
    name reports them and proceeds once they are gone; each deletion starts its own cleanup Job."""
    apply(cluster, "reuse", cleanup=True)
    first = final(cluster, "reuse")
    assert first["phase"] == "Succeeded"
    uid1 = get(cluster, "reuse")["metadata"]["uid"]
    delete(cluster, "reuse")
    wait_for(
        lambda: f"reuse-cleanup-{uid1[:8]}" in jobs(cluster), timeout=20, what="the first cleanup Job", cluster=cluster
    )
    apply(cluster, "reuse", cleanup=True)
    message = event_with(cluster, "reuse", "LeftoverJob")
    assert "Job reuse-preflight (preflight) exists but belongs to an earlier PnasEval" in message and uid1 in message
    assert condition(cluster, "reuse", "Blocked")["reason"] == "LeftoverJob"
    batch = kubernetes.client.BatchV1Api(cluster["api"])
    for name in [n for n in jobs(cluster) if n.startswith("reuse-") and "cleanup" not in n]:
        batch.delete_namespaced_job(name, NS)  # what the garbage collector does
    assert final(cluster, "reuse")["phase"] == "Succeeded"
    uid2 = get(cluster, "reuse")["metadata"]["uid"]
    delete(cluster, "reuse")
    wait_for(
        lambda: f"reuse-cleanup-{uid2[:8]}" in jobs(cluster), timeout=20, what="the second cleanup Job", cluster=cluster
    )
    assert f"reuse-cleanup-{uid1[:8]}" in jobs(cluster)


def test_a_refused_cleanup_job_is_an_event_and_the_deletion_completes(cluster):
    apply(cluster, "no-cleanup", cleanup=True)
    assert final(cluster, "no-cleanup")["phase"] == "Succeeded"
    cluster["emulator"].inject(
        "POST",
        f"/namespaces/{NS}/jobs$",
        status=403,
        times=1,
        message='jobs.batch "no-cleanup-cleanup" is forbidden: violates PodSecurity "restricted:latest"',
    )
    delete(cluster, "no-cleanup")
    assert "violates PodSecurity" in event_with(cluster, "no-cleanup", "CleanupRefused")

    def gone() -> bool:
        try:
            get(cluster, "no-cleanup")
            return False
        except kubernetes.client.exceptions.ApiException as error:
            return error.status == 404

    wait_for(gone, timeout=20, what="the PnasEval to be deleted (its finalizer released)", cluster=cluster)


CANNOT_START = [  # (PnasEval, what keeps its pods from starting, the reason, what the message says, the stage and phase stuck)
    (
        "unschedulable",
        "unschedulable",
        "Unschedulable",
        "0/3 nodes are available: 3 Insufficient huawei.com/Ascend310P",
        "convert",
        "Converting",
    ),
    ("no-image", "image_pull", "ImagePullBackOff", "the image cannot be pulled", "convert", "Converting"),
    # every pod of the run needs the Secret and the ServiceAccount: the first, the preflight's, is stuck
    ("no-secret", "secret", "CreateContainerConfigError", 'secret "s3-keys" not found', "preflight", "Pending"),
    ("no-account", "account", "FailedCreate", 'serviceaccount "pnas-eval-jobs" not found', "preflight", "Pending"),
]


def test_pods_that_cannot_start_show_the_cause_and_the_stage(cluster):
    """Four PnasEvals at once, each stuck for its own reason; each shows it, then goes on once it is gone."""
    runner, core = cluster["runner"], kubernetes.client.CoreV1Api(cluster["api"])
    runner.unschedulable["unschedulable-convert"] = "0/3 nodes are available: 3 Insufficient huawei.com/Ascend310P."
    runner.image_pull.add("no-image-convert")
    for name, fault, reason, says, stage, phase in CANNOT_START:
        if fault == "account":  # the Jobs' ServiceAccount is the operator's: missing for this one's pods only
            core.delete_namespaced_service_account("pnas-eval-jobs", NS)
        apply(cluster, name, **({"storage": {"credentialsSecret": "s3-keys"}} if fault == "secret" else {}))
        stalled = wait_for(
            lambda: problem(cluster, name, "Stalled"),
            timeout=20,
            what=f"{name}: the Stalled condition",
            cluster=cluster,
        )
        assert (
            stalled["reason"] == reason and says in stalled["message"] and stalled["message"].startswith(f"{stage}: ")
        )
        assert says in event_with(cluster, name, reason)
        status = get(cluster, name)["status"]
        assert status["phase"] == phase and says in status["message"], name
    # the causes go away: the runs go on (after pendingDeadlineSeconds they fail instead: test_state.py)
    runner.unschedulable.clear()
    runner.image_pull.clear()
    core.create_namespaced_secret(NS, secret("s3-keys", NS, {"accessKey": "a-key", "secretKey": "a-secret-key"}))
    core.create_namespaced_service_account(NS, service_account("pnas-eval-jobs", NS))
    for name, *_ in CANNOT_START:
        status = final(cluster, name)
        assert status["phase"] == "Succeeded", (name, status["message"])
        assert condition(cluster, name, "Stalled")["status"] == "False"


def test_a_job_held_by_kueue_is_queued_and_its_suspend_never_touched(cluster):
    runner, emulator = cluster["runner"], cluster["emulator"]
    runner.kueue.add("queued-convert")
    apply(cluster, "queued")
    queued = wait_for(
        lambda: problem(cluster, "queued", "Queued"), timeout=15, what="the Queued condition", cluster=cluster
    )
    assert queued["reason"] == "Suspended" and "convert: Job queued-convert is suspended" in queued["message"]
    status = get(cluster, "queued")["status"]
    assert status["phase"] == "Converting" and "queued" in status["message"]
    assert next(s for s in status["stages"] if s["name"] == "convert")["phase"] == "Queued"
    assert problem(cluster, "queued", "Stalled") is None  # queued is not stuck
    time.sleep(2)  # longer than start_check_seconds: a queued Job is still not stuck
    assert get(cluster, "queued")["status"]["phase"] == "Converting"
    runner.admit("queued-convert")
    assert final(cluster, "queued")["phase"] == "Succeeded"
    writes = [
        (m, p)
        for _, m, p, agent in emulator.log
        if agent != USER_AGENT and "/jobs/queued" in p and m in ("PATCH", "PUT")
    ]
    assert writes == []  # the operator never wrote a Job, so never spec.suspend


def test_an_unreadable_summary_fails_the_run_clearly(cluster):
    apply(cluster, "garbled")
    status = final(cluster, "garbled")
    assert status["phase"] == "Failed" and status["conditions"][0]["reason"] == "SummaryUnreadable"
    assert (
        "aggregate succeeded but its summary cannot be read" in status["message"] and "report.json" in status["message"]
    )


def test_metrics_and_probes(cluster):
    operator = cluster["operator"]
    text = urllib.request.urlopen(f"http://127.0.0.1:{operator.probe_port}/metrics", timeout=5).read().decode()
    for name in (
        "pnas_eval_evaluations{",
        "pnas_eval_stage_duration_seconds_bucket{",
        "pnas_eval_shards_total{",
        "pnas_eval_reconcile_errors_total{",
        "pnas_eval_api_request_duration_seconds_bucket{",
    ):
        assert name in text, name
    assert 'pnas_eval_evaluations{phase="Succeeded"}' in text
    assert urllib.request.urlopen(f"http://127.0.0.1:{operator.probe_port}/readyz", timeout=5).status == 200
    assert urllib.request.urlopen(operator.health, timeout=5).status == 200
