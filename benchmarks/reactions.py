"""8. Operator reactions: from a Job's completion to the next stage's Job, and API requests per
PnasEval per minute while running; the event-driven operator against the polling one it replaced.

Both operators run in turn against the same API emulator (tests/support/kube_emulator.py) in this
run, each on its own namespace, with the same test kubelet (tests/support/job_runner.py, no stage
runs: each pod "runs" for a fixed time) and the same PnasEvals. The "before" operator is the code at
BASELINE (git archive of operator/ and jobs/), with its default 10 s timer (1 s in smoke mode).
The emulator times each Job's creation; the kubelet times each Job's Complete condition; requests
are counted on the emulator by User-Agent (the operator's kubernetes client and kopf).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, Context, Row

ROWS = ("9",)  # the row of results.md this module measures
BASELINE = "774b29d"  # the last commit with the timer-based operator (issue 12's "before")
NAME = "Operator reactions: Job completed -> next stage's Job created, and API requests per PnasEval per minute"
SUMMARY = {
    "results": [{"batchSize": 1, "images": 8, "top1": 50.0, "top5": 87.5, "throughput": 12.5}],
    "failedImages": 0,
}
AFTER = ["convert", "shard"], ["infer-bs1"], ["aggregate"]  # each stage's Job waits for the ones before


def _support():
    sys.path.insert(0, str(REPO / "tests"))
    from support import job_runner, kube_emulator

    return job_runner, kube_emulator


def _baseline_tree(work: Path) -> Path | None:
    """The baseline's operator/ and jobs/ (git archive), or None where git or the commit is missing."""
    target = work / f"operator-{BASELINE}"
    if (target / "operator").is_dir():
        return target
    archive = subprocess.run(["git", "-C", str(REPO), "archive", BASELINE, "operator", "jobs"], capture_output=True)
    if archive.returncode != 0:
        return None
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as tar:
        tar.write(archive.stdout)
        tar.seek(0)
        tarfile.open(fileobj=tar).extractall(target, filter="data")
    return target


def _operator(kubeconfig: str, tree: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    path = f"{tree / 'jobs'}{os.pathsep}{tree / 'operator'}"
    full = {**os.environ, "KUBECONFIG": kubeconfig, "PYTHONPATH": path, **env}
    return subprocess.Popen(
        [sys.executable, "-m", "pnas_operator.main", "--all-namespaces"],
        env=full,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        cwd=tree,
    )


def _manifest(name: str, namespace: str) -> dict:
    return {
        "apiVersion": "pnaseval.io/v1alpha1",
        "kind": "PnasEval",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "dataset": {"images": "s3://d/val/", "labels": "s3://d/val_label.txt", "shards": 3},
            "inference": {"batchSizes": [1]},
            "storage": {"uri": "s3://runs", "endpoint": "minio:9000"},
        },
    }


def _operator_requests(log: list, namespace: str, start: float, end: float) -> list:
    """The operator's requests in a time window: everything but this benchmark's and the kubelet's,
    on this namespace or cluster-wide (its watches)."""
    job_runner, _ = _support()
    return [
        e
        for e in log
        if start <= e[0] <= end
        and e[3] not in ("bench", job_runner.USER_AGENT)
        and (f"/namespaces/{namespace}/" in e[2] or "/namespaces/" not in e[2])
    ]


def _quiet_window(emulator, namespace: str, names: list[str], seconds: float) -> tuple[float, float]:
    """A stretch while the inference pods run and nothing changes (they run `seconds`): the steady state."""
    jobs = [f"{name}-infer-bs1" for name in names]
    deadline = time.monotonic() + 300
    while not all(("jobs", namespace, j) in emulator.emulator.created for j in jobs) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # the pods have started and the passes that followed are done
    start = time.monotonic()
    time.sleep(seconds - 6)
    return start, time.monotonic()


def _measure(
    ctx: Context, emulator, tree: Path, namespace: str, env: dict[str, str], evals: int, pod_seconds: float
) -> dict:
    """Run `evals` PnasEvals under one operator; the reaction latencies and the operator's request rate."""
    job_runner, _ = _support()
    import kubernetes

    api = kubernetes.config.new_client_from_config(config_file=emulator.kubeconfig_path)
    api.user_agent = "bench"  # not counted
    core, custom = kubernetes.client.CoreV1Api(api), kubernetes.client.CustomObjectsApi(api)
    core.create_namespaced_secret(
        namespace, job_runner.secret("minio-credentials", namespace, {"accessKey": "a", "secretKey": "b"})
    )
    core.create_namespaced_service_account(namespace, job_runner.service_account("pnas-eval-jobs", namespace))
    runner_api = kubernetes.config.new_client_from_config(config_file=emulator.kubeconfig_path)
    runner = job_runner.JobRunner(
        runner_api,
        namespace,
        job_runner.clean_env(),
        workers=3 * evals + 2,
        execute=False,
        summary=lambda job: json.dumps(SUMMARY),
        pod_seconds=pod_seconds,
    ).start()
    process = _operator(emulator.kubeconfig_path, tree, env, ctx.work / f"operator-{namespace}.log")
    try:
        time.sleep(3)  # the operator is up and watching
        started = time.monotonic()
        names = [f"eval-{i}" for i in range(evals)]
        quiet_seconds = 10.37 if ctx.smoke else 66.37  # every pod at once: the kubelet has a worker per pod
        runner.slow.update({f"{name}-infer-bs1": quiet_seconds for name in names})
        for name in names:
            custom.create_namespaced_custom_object(
                "pnaseval.io", "v1alpha1", namespace, "pnasevals", _manifest(name, namespace)
            )
        quiet = _quiet_window(emulator, namespace, names, quiet_seconds)
        deadline = started + 600
        while time.monotonic() < deadline:
            phases = [
                custom.get_namespaced_custom_object("pnaseval.io", "v1alpha1", namespace, "pnasevals", n)
                .get("status", {})
                .get("phase")
                for n in names
            ]
            if all(p in ("Succeeded", "Failed") for p in phases):
                break
            time.sleep(0.2)
        finished = time.monotonic()
    finally:
        process.terminate()
        process.wait(20)
        runner.stop()
    log = emulator.emulator.log
    ours = _operator_requests(log, namespace, started, finished)
    steady = _operator_requests(log, namespace, *quiet)
    created = emulator.emulator.created
    gaps = []
    for name in names:
        for before, after in zip(AFTER, AFTER[1:]):
            done = max(runner.completed.get(f"{name}-{s}", float("nan")) for s in before)
            made = min(created.get(("jobs", namespace, f"{name}-{s}"), float("nan")) for s in after)
            gaps.append(made - done)
    minutes = (finished - started) / 60
    return {
        "gaps": gaps,
        "requests": len(ours),
        "per_eval_minute": len(ours) / evals / minutes,
        "seconds": finished - started,
        "phases": phases,
        "steady": len(steady) / evals / ((quiet[1] - quiet[0]) / 60),
        "quiet": quiet[1] - quiet[0],
        "kinds": _kinds(ours),
    }


def _kinds(requests: list) -> str:
    """What the requests were, e.g. "status writes 40, Job creations 20, ...": the kinds that matter here."""
    kinds = {
        "status writes": ("PATCH", "/status"),
        "Job creations": ("POST", "/jobs"),
        "Job lists": ("GET", "/jobs?"),
        "Events posted": ("POST", "/events"),
        "Event reads": ("GET", "/events"),
    }
    counts = {k: sum(1 for _, m, p, _ in requests if m == method and part in p) for k, (method, part) in kinds.items()}
    counts["other"] = len(requests) - sum(counts.values())
    return ", ".join(f"{k} {v}" for k, v in counts.items() if v)


def run(ctx: Context) -> list[Row]:
    _, kube_emulator = _support()
    before_tree = _baseline_tree(ctx.work)
    evals, pod_seconds = (1, 0.53) if ctx.smoke else (5, 20.37)  # not multiples of the timer: no lucky alignment
    interval = "1" if ctx.smoke else "10"
    with kube_emulator.KmockThread() as emulator:
        after = _measure(ctx, emulator, REPO, "after", {}, evals, pod_seconds)
        before = None
        if before_tree is not None:
            before = _measure(
                ctx, emulator, before_tree, "before", {"PNAS_OPERATOR_RECONCILE_INTERVAL": interval}, evals, pod_seconds
            )
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    measured = (
        f"{mean(after['gaps']):.2f} s to the next Job (worst {max(after['gaps']):.2f} s); {after['steady']:.1f} requests/PnasEval/min "
        f"while a stage runs ({after['per_eval_minute']:.1f} over the whole run)"
    )
    notes = [
        f"{evals} PnasEval(s) at once, 3 shards, batch size 1, each pod {pod_seconds:g} s; same emulator, one namespace per operator.",
        f"After: this code, default settings (watches, safety-net pass every 120 s): {after['requests']} requests in "
        f"{after['seconds']:.1f} s ({after['kinds']}), phases {after['phases']}.",
        f"While a stage runs: the inference pods run {after['quiet'] + 6:.0f} s; requests counted over {after['quiet']:.0f} s of it, while nothing changes.",
        "Requests counted: the operator's own client and kopf's (watch connections included); the kubelet's are not.",
    ]
    if before is None:
        return [
            Row(
                ROWS[0],
                NAME,
                measured,
                f"baseline {BASELINE} not available (no git history)",
                None,
                "",
                "next Job within about 1 s",
                None,
                notes,
            )
        ]
    notes.append(
        f"Before: the operator at {BASELINE} (a {interval} s timer listing Jobs each pass): {before['requests']} requests in "
        f"{before['seconds']:.1f} s ({before['kinds']}), phases {before['phases']}."
    )
    baseline = (
        f"{mean(before['gaps']):.2f} s (worst {max(before['gaps']):.2f} s); {before['steady']:.1f} requests/PnasEval/min "
        f"while a stage runs ({before['per_eval_minute']:.1f} over the whole run)"
    )
    ratio = mean(before["gaps"]) / mean(after["gaps"])
    met = max(after["gaps"]) <= 1.5
    return [
        Row(ROWS[0], NAME, measured, baseline, ratio, f"{ratio:.0f}x faster", "next Job within about 1 s", met, notes)
    ]
