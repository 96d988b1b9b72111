"""The local runner and the operator share one scheduler and one retry policy: the same table of
faults, run through both, gives the same outcome, the same steps started and the same attempts.

Local: the real runner (local.execute) with a launcher that plays each unit's exit codes instead
of starting a process. Cluster: the real state derivation and Job builders, with the Job
controller's retry rules played by tests/support/job_controller.py (which follows Kubernetes' Job
documentation; see its docstring). Only the unit's work is scripted, never the decisions.
"""

from __future__ import annotations

import signal

import pytest

from builders import planned, pnaseval
from pnas_jobs import local
from pnas_jobs.report import Summary
from pnas_jobs.schedule import RetryPolicy, decide
from pnas_jobs.status import TERMINAL
from pnas_operator import manifests, state
from pnas_operator.manifests import JobSettings, Owner
from support import job_controller

KILLED = "killed"  # by SIGKILL (the OOM killer): -9 for a local process, exit code 137 for a container
PNASEVAL, PLAN = planned(pnaseval(inference={"batchSizes": [1, 4]}, dataset={"shards": 3}))

SCENARIOS = {
    # name: ({(step, index): exit codes of successive attempts}, outcome, steps started, {(step, index): attempts})
    "everything succeeds": ({}, "Succeeded", {s.name for s in PLAN.steps}, {}),
    "a shard's pod crashes twice, then succeeds alone": (
        {("infer-bs1", 1): [1, 1, 0]},
        "Succeeded",
        {s.name for s in PLAN.steps},
        {("infer-bs1", 1): 3, ("infer-bs1", 0): 1},
    ),
    "an OOM kill is retried like a crash": (
        {("shard", 0): [KILLED, 0]},
        "Succeeded",
        {s.name for s in PLAN.steps},
        {("shard", 0): 2},
    ),
    "bad input fails at once and stops the run": (
        {("shard", 2): [2]},
        "Failed",
        {"convert", "shard"},
        {("shard", 2): 1},
    ),
    "a crash that never ends uses up the retries": (
        {("convert", None): [1, 1, 1, 1]},
        "Failed",
        {"convert", "shard"},
        {("convert", None): 3},
    ),
    "a failure at the second batch size": (
        {("infer-bs4", 0): [KILLED, KILLED, KILLED]},
        "Failed",
        {"convert", "shard", "infer-bs1", "infer-bs4"},
        {("infer-bs4", 0): 3},
    ),
}


def exit_code(script, step: str, index, attempt: int, killed: int) -> int:
    codes = script.get((step, index), [0])
    code = codes[min(attempt, len(codes) - 1)]
    return killed if code == KILLED else code


def run_local(script) -> tuple[str, set[str], dict]:
    def launch(unit: local.Unit, attempt: int) -> int:
        return exit_code(script, unit.step.name, unit.index, attempt - 1, -signal.SIGKILL)

    outcomes = local.execute(PLAN, launch, workers=2, policy=RetryPolicy(), progress=False)
    ok = all(o.code == 0 for o in outcomes) and len(outcomes) == sum(len(local.units(s)) for s in PLAN.steps)
    attempts = {(o.unit.step.name, o.unit.index): o.attempts for o in outcomes}
    return ("Succeeded" if ok else "Failed"), {o.unit.step.name for o in outcomes}, attempts


def run_cluster(script) -> tuple[str, set[str], dict]:
    owner, settings = Owner("eval", "ml", "uid-1"), JobSettings()
    jobs, previous, attempts = {}, None, {}
    for _ in range(len(PLAN.steps) + 2):
        summary = Summary() if PLAN.summary_step.name in jobs else None  # its pod's termination message
        outcome = state.derive(PLAN, list(jobs.values()), previous, "2026-12-01T00:00:00Z", 1, summary)
        previous = outcome.status.dump()
        if outcome.status.phase in TERMINAL:
            break
        for step in outcome.create:
            job = manifests.job_for_step(PLAN, step, PNASEVAL.spec, owner, settings)
            index = (lambda i: i) if step.indexed else (lambda i: None)
            jobs[step.name], pods = job_controller.finish(
                job,
                lambda i, attempt, s=step.name, ix=index: exit_code(script, s, ix(i), attempt, 128 + signal.SIGKILL),
            )
            attempts.update({(step.name, index(i)): n for i, n in pods.items()})
    return str(outcome.status.phase), set(jobs), attempts


@pytest.mark.parametrize("runtime", [run_local, run_cluster], ids=["local", "cluster"])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=list(SCENARIOS))
def test_both_runtimes_schedule_and_retry_alike(runtime, scenario):
    script, outcome, started, attempts = SCENARIOS[scenario]
    got_outcome, got_started, got_attempts = runtime(script)
    assert (got_outcome, got_started) == (outcome, started)
    assert {unit: got_attempts.get(unit) for unit in attempts} == attempts


def test_the_cluster_policy_is_the_shared_one():
    """The Job builders turn the one retry policy into Kubernetes' terms."""
    policy = RetryPolicy()
    for job in manifests.jobs_for_plan(PLAN, PNASEVAL.spec, Owner("eval", "ml", "u"), JobSettings()):
        spec = job["spec"]
        assert spec.get("backoffLimitPerIndex", spec.get("backoffLimit")) == policy.retries
        (fail,) = [r for r in spec["podFailurePolicy"]["rules"] if "onExitCodes" in r]
        assert fail["onExitCodes"]["values"] == list(policy.final_codes)


@pytest.mark.parametrize(
    "done, failed, started, start, finished, stopped",
    [
        (set(), set(), set(), ["convert", "shard"], False, False),
        ({"convert"}, set(), {"convert", "shard"}, [], False, False),
        ({"convert", "shard"}, set(), {"convert", "shard"}, ["infer-bs1"], False, False),
        (
            {"convert", "shard", "infer-bs1"},
            {"infer-bs4"},
            {"convert", "shard", "infer-bs1", "infer-bs4"},
            [],
            False,
            True,
        ),
        ({s.name for s in PLAN.steps}, set(), {s.name for s in PLAN.steps}, [], True, False),
    ],
)
def test_decide(done, failed, started, start, finished, stopped):
    decision = decide(PLAN, done, failed, started)
    assert ([s.name for s in decision.start], decision.finished, decision.stopped) == (start, finished, stopped)
