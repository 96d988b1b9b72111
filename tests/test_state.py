"""The state function, table-driven: Jobs that exist -> status, next Jobs, Events."""

from __future__ import annotations

import dataclasses

import pytest

from builders import job, planned, pnaseval
from pnas_jobs.report import Summary
from pnas_operator import state
from pnas_operator.starting import PodView, pod_view

NOW, LATER = "2026-11-29T10:00:00Z", "2026-11-29T11:00:00Z"
_, PLAN = planned(pnaseval(inference={"batchSizes": [1, 4]}))
DONE_PREP = [job("eval", "convert", complete=True, succeeded=1), job("eval", "shard", complete=True, succeeded=4)]


def derive(jobs, previous=None, summary=None, when=NOW):
    """The outcome, with the status as the operator writes it (a camelCase mapping)."""
    outcome = state.derive(PLAN, jobs, previous, when, 1, summary and Summary.model_validate(summary))
    return dataclasses.replace(outcome, status=outcome.status.dump())


@pytest.mark.parametrize(
    "jobs, phase, create",
    [
        ([], "Pending", ["convert", "shard"]),
        ([job("eval", "convert"), job("eval", "shard")], "Converting", []),
        ([job("eval", "convert", complete=True), job("eval", "shard", active=4)], "Sharding", []),
        ([job("eval", "convert", complete=True)], "Sharding", ["shard"]),  # restarted operator: create what is missing
        (DONE_PREP, "Inferring", ["infer-bs1"]),
        (DONE_PREP + [job("eval", "infer-bs1", succeeded=2, active=2)], "Inferring", []),
        (DONE_PREP + [job("eval", "infer-bs1", complete=True, succeeded=4)], "Inferring", ["infer-bs4"]),
        (
            DONE_PREP + [job("eval", "infer-bs1", complete=True), job("eval", "infer-bs4", complete=True)],
            "Aggregating",
            ["aggregate"],
        ),
        (
            DONE_PREP
            + [
                job("eval", "infer-bs1", complete=True),
                job("eval", "infer-bs4", complete=True),
                job("eval", "aggregate"),
            ],
            "Aggregating",
            [],
        ),
        (
            DONE_PREP + [job("eval", "infer-bs1", failed=True, failed_indexes="1,3", reason="FailedIndexes")],
            "Failed",
            [],
        ),
        ([job("eval", "convert", failed=True), job("eval", "shard", active=2)], "Failed", []),
    ],
)
def test_phase_and_next_jobs(jobs, phase, create):
    outcome = derive(jobs)
    assert outcome.status["phase"] == phase
    assert [s.name for s in outcome.create] == create


def test_finished_stages_stay_done_when_their_jobs_expire():
    """ttlSecondsAfterFinished deletes finished Jobs; the status remembers them, so nothing is redone."""
    running = derive(DONE_PREP + [job("eval", "infer-bs1", succeeded=1, active=3)])
    assert [s.get("job") for s in running.status["stages"]][:3] == ["eval-convert", "eval-shard", "eval-infer-bs1"]
    assert "job" not in running.status["stages"][3]  # pending: no Job yet, and no null either
    expired = derive([job("eval", "infer-bs1", complete=True, succeeded=4)], previous=running.status, when=LATER)
    assert [s.name for s in expired.create] == ["infer-bs4"]
    assert expired.status["phase"] == "Inferring"
    assert [s["phase"] for s in expired.status["stages"][:3]] == ["Succeeded"] * 3
    assert not [e for e in expired.events if e[1] in ("StageStarted", "StageSucceeded") and "infer-bs1" not in e[2]]


def test_failure_names_the_shards_and_the_reason():
    outcome = derive(
        DONE_PREP + [job("eval", "infer-bs1", failed=True, failed_indexes="1,3-4", reason="FailedIndexes", succeeded=1)]
    )
    status = outcome.status
    assert status["failedShards"] == [1, 3, 4] and status["shards"]["failed"] == 3
    assert "infer-bs1 failed (shards 1, 3, 4): FailedIndexes" in status["message"]
    assert "kubectl logs job/eval-infer-bs1" in status["message"]
    assert ("Warning", "StageFailed", "infer-bs1 failed (shards 1, 3, 4): FailedIndexes - x") in outcome.events
    ready = status["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "Failed")
    assert status["completionTime"] == NOW


def test_success_needs_the_aggregate_summary():
    finished = DONE_PREP + [job("eval", s, complete=True, succeeded=1) for s in ("infer-bs1", "infer-bs4", "aggregate")]
    assert derive(finished).status["phase"] == "Aggregating"  # the summary is not readable yet
    summary = {
        "results": [{"batchSize": 1, "images": 50000, "top1": 81.76, "top5": 95.5, "throughput": 66.3}],
        "failedImages": 0,
    }
    status = derive(finished, summary=summary).status
    assert status["phase"] == "Succeeded"
    # the summary leaves the accuracy file's location out (4 KiB of termination message); the status has it
    assert status["results"] == [{**summary["results"][0], "json": "s3://pnas-eval/runs/ml/eval/result_bs1.json"}]
    assert status["conditions"][0]["status"] == "True"


def test_progress_and_shard_counts_follow_the_current_batch_size():
    status = derive(
        DONE_PREP
        + [
            job("eval", "infer-bs1", complete=True, succeeded=4),
            job("eval", "infer-bs4", succeeded=1, active=3, failed_pods=1),
        ]
    ).status
    assert status["shards"] == {"total": 4, "succeeded": 1, "failed": 0, "active": 3}
    assert status["progress"] == "1/4 bs4"


def test_events_fire_on_transitions_only():
    first = derive([job("eval", "convert"), job("eval", "shard")])
    assert [e[1] for e in first.events] == ["StageStarted", "StageStarted"]
    again = derive([job("eval", "convert"), job("eval", "shard")], previous=first.status, when=LATER)
    assert again.events == []
    retry = derive([job("eval", "convert"), job("eval", "shard", failed_pods=1)], previous=again.status, when=LATER)
    assert retry.events == [("Warning", "StageRetry", "shard: 1 pod failures so far; retrying")]


def test_condition_times_change_only_on_transitions():
    first = derive([job("eval", "convert")])
    second = derive([job("eval", "convert")], previous=first.status, when=LATER)
    assert second.status["conditions"][0]["lastTransitionTime"] == NOW
    assert second.status["startTime"] == NOW
    done = derive([job("eval", "convert", complete=True)], previous=second.status, when=LATER)
    convert = next(c for c in done.status["conditions"] if c["type"] == "ConvertDone")
    assert (convert["status"], convert["lastTransitionTime"]) == ("True", LATER)


@pytest.mark.parametrize(
    "text, indexes", [("", ()), (None, ()), ("0", (0,)), ("1,3-5,9", (1, 3, 4, 5, 9)), ("x,2", (2,))]
)
def test_failed_index_notation(text, indexes):
    assert state.parse_indexes(text) == indexes


def test_unknown_job_states_count_as_running():
    odd = {
        "metadata": {"name": "eval-convert", "labels": {"pnaseval.io/step": "convert"}},
        "status": {"conditions": [{"type": "Suspended", "status": "True"}, {"type": "Failed", "status": "False"}]},
    }
    assert state.view(odd).phase == state.StagePhase.RUNNING
    assert derive([odd]).status["phase"] == "Converting"


def test_jobs_of_unknown_steps_are_ignored():
    stray = job("eval", "infer-bs64", complete=True)
    assert derive([stray]).status["phase"] == "Pending"


# ----------------------------------------------------------- pods that cannot start, queues, summaries

T0 = "2026-11-29T10:00:00Z"


def pod(job_name: str, *, scheduled=None, waiting=None, started=False) -> dict:
    """A pod as the kubelet and the scheduler report it (see pnas_operator/starting.py for the sources)."""
    status = {"phase": "Running" if started else "Pending", "conditions": [], "containerStatuses": []}
    if scheduled:
        status["conditions"].append(
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": scheduled}
        )
    if waiting:
        status["containerStatuses"].append({"state": {"waiting": {"reason": waiting[0], "message": waiting[1]}}})
    if started:
        status["containerStatuses"].append({"state": {"running": {}}})
    return {
        "metadata": {"name": f"{job_name}-0-x", "labels": {"batch.kubernetes.io/job-name": job_name}},
        "status": status,
    }


def seen(pods=(), failed_create=None, age=0.0, deadline=900.0, **kw) -> state.Seen:
    from pnas_operator.starting import pod_view

    return state.Seen(
        pods=tuple(map(pod_view, pods)),
        failed_create=failed_create or {},
        pending_deadline=deadline,
        age=lambda _: age,
        **kw,
    )


def conditions(status) -> dict:
    return {c["type"]: c for c in status["conditions"]}


@pytest.mark.parametrize(
    "pods, failed_create, reason, says",
    [
        (
            [pod("eval-convert", scheduled="0/3 nodes are available: 3 Insufficient huawei.com/Ascend310P.")],
            None,
            "Unschedulable",
            "no node can take the pod: 0/3 nodes are available",
        ),
        (
            [pod("eval-convert", waiting=("ImagePullBackOff", 'Back-off pulling image "x"'))],
            None,
            "ImagePullBackOff",
            "the image cannot be pulled",
        ),
        (
            [pod("eval-convert", waiting=("CreateContainerConfigError", 'secret "minio-credentials" not found'))],
            None,
            "CreateContainerConfigError",
            'secret "minio-credentials" not found',
        ),
        (
            [],
            {
                "eval-convert": [
                    'Error creating: pods "eval-convert-0-" is forbidden: error looking up service account ml/x: serviceaccount "x" not found'
                ]
            },
            "FailedCreate",
            'serviceaccount "x" not found',
        ),
    ],
)
def test_pods_that_cannot_start_stall_the_stage_with_the_cause(pods, failed_create, reason, says):
    outcome = state.derive(PLAN, [job("eval", "convert")], None, NOW, 1, seen=seen(pods, failed_create))
    status = outcome.status.dump()
    stalled = conditions(status)["Stalled"]
    assert (stalled["status"], stalled["reason"]) == ("True", reason) and says in stalled["message"]
    assert stalled["message"].startswith("convert: ") and says in status["message"] and status["phase"] == "Converting"
    assert [e[:2] for e in outcome.events if e[1] == reason] == [("Warning", reason)]


def test_a_stage_whose_pods_run_is_not_stalled_by_pods_still_waiting_for_room():
    pods = [pod("eval-convert", started=True), pod("eval-convert", scheduled="0/3 nodes are available")]
    assert "Stalled" not in conditions(
        state.derive(PLAN, [job("eval", "convert")], None, NOW, 1, seen=seen(pods)).status.dump()
    )


def test_stalled_past_the_pending_deadline_fails_the_run_with_the_cause():
    pods = [pod("eval-convert", scheduled="0/3 nodes are available")]
    first = state.derive(PLAN, [job("eval", "convert")], None, T0, 1, seen=seen(pods)).status.dump()
    waiting = state.derive(PLAN, [job("eval", "convert")], first, LATER, 1, seen=seen(pods, age=899)).status.dump()
    assert waiting["phase"] == "Converting"
    late = state.derive(PLAN, [job("eval", "convert")], waiting, LATER, 1, seen=seen(pods, age=901))
    status = late.status.dump()
    assert status["phase"] == "Failed" and conditions(status)["Ready"]["reason"] == "PendingDeadlineExceeded"
    assert (
        "pods could not start for 901 s (spec.scheduling.pendingDeadlineSeconds): convert: 1 pod(s) cannot start"
        in status["message"]
    )
    assert late.create == [] and late.events[-1][1] == "PendingDeadlineExceeded"


def test_a_job_held_by_a_queue_is_queued_not_stalled_and_never_times_out():
    held = job("eval", "convert")
    held["spec"] = {"suspend": True}
    held["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] = "team-a"
    held["status"]["conditions"] = [{"type": "Suspended", "status": "True", "reason": "JobSuspended"}]
    outcome = state.derive(PLAN, [held, job("eval", "shard", active=4)], None, NOW, 1, seen=seen(age=10**6))
    status = outcome.status.dump()
    queued = conditions(status)["Queued"]
    assert (queued["status"], queued["reason"]) == ("True", "Suspended")
    assert queued["message"] == "convert: Job eval-convert is suspended, waiting in queue team-a for admission"
    assert (
        status["stages"][0]["phase"] == "Queued" and status["phase"] == "Converting" and "queued" in status["message"]
    )
    assert "Stalled" not in conditions(status)
    assert ("Normal", "Suspended") in [e[:2] for e in outcome.events]
    admitted = state.derive(
        PLAN, [job("eval", "convert"), job("eval", "shard", active=4)], status, LATER, 1
    ).status.dump()
    assert (conditions(admitted)["Queued"]["status"], conditions(admitted)["Queued"]["reason"]) == ("False", "Resolved")


def test_a_summary_that_cannot_be_read_fails_the_run_clearly_instead_of_aggregating_forever():
    finished = DONE_PREP + [job("eval", s, complete=True, succeeded=1) for s in ("infer-bs1", "infer-bs4", "aggregate")]
    status = state.derive(
        PLAN, finished, None, NOW, 1, seen=seen(summary_problem="no pod of Job eval-aggregate holds it")
    ).status.dump()
    assert status["phase"] == "Failed" and conditions(status)["Ready"]["reason"] == "SummaryUnreadable"
    assert (
        "aggregate succeeded but its summary cannot be read (no pod of Job eval-aggregate holds it)"
        in status["message"]
    )
    assert "s3://pnas-eval/runs/ml/eval/report.json" in status["message"]


def test_failure_messages_stay_bounded_at_any_number_of_shards():
    _, big = planned(pnaseval(dataset={"shards": 10000}, inference={"batchSizes": [1]}))
    failed = job("eval", "infer-bs1", failed=True, failed_indexes="0-9999", reason="FailedIndexes")
    status = state.derive(big, DONE_PREP + [failed], None, NOW, 1).status.dump()
    assert "infer-bs1 failed (10000 shards: 0, 1, 2, 3, 4 and 9995 more): FailedIndexes" in status["message"]
    assert len(status["message"]) < 300 and len(status["failedShards"]) == 10000  # the list once, in failedShards


# the preflight step of a cluster's plan: storage and data checked first, reported as condition Preflight
_, CLUSTER_PLAN = planned(
    pnaseval(inference={"batchSizes": [1, 4]}), preflight=True, summary_file="/dev/termination-log"
)
PROBLEM = "problem: dataset: images: no images under s3://datasets/val/ (fix: fix the named field or file)"
WARNING = (
    "warning: dataset: labels: 2 of 50 images have no label (e.g. a.JPEG); they are recorded as failed, not scored"
)


def preflight_pod(message: str | None, code: int) -> PodView:
    """Its pod as the kubelet reports it: terminated, with the findings as termination message."""
    terminated = {"exitCode": code, **({"message": message} if message else {})}
    return pod_view(
        {
            "metadata": {"name": "eval-preflight-x", "labels": {"batch.kubernetes.io/job-name": "eval-preflight"}},
            "status": {
                "phase": "Failed" if code else "Succeeded",
                "containerStatuses": [{"state": {"terminated": terminated}}],
            },
        }
    )


@pytest.mark.parametrize(
    "jobs, pods, phase, create, preflight, ready_message",
    [
        ([], [], "Pending", ["preflight"], None, "creating Jobs"),
        (
            [job("eval", "preflight", active=1)],
            [],
            "Pending",
            [],
            ("Unknown", "Checking", "checking storage and data"),
            "preflight: 0/1 done",
        ),
        (
            [job("eval", "preflight", complete=True, succeeded=1)],
            [preflight_pod(None, 0)],
            "Converting",
            ["convert", "shard"],
            ("True", "Passed", "storage and data checked"),
            "starting convert",
        ),
        (
            [job("eval", "preflight", complete=True, succeeded=1)],
            [preflight_pod(WARNING, 0)],
            "Converting",
            ["convert", "shard"],
            ("True", "Passed", WARNING),
            "starting convert",
        ),
        (
            [job("eval", "preflight", failed=True, reason="PodFailurePolicy")],
            [preflight_pod(PROBLEM + "\n" + WARNING, 2)],
            "Failed",
            [],
            ("False", "ProblemsFound", f"{PROBLEM}; {WARNING}"),
            f"preflight found problems: {PROBLEM}; {WARNING}; fix them",
        ),
        (
            [job("eval", "preflight", failed=True, reason="BackoffLimitExceeded")],
            [],
            "Failed",
            [],
            ("False", "ProblemsFound", "BackoffLimitExceeded: see `kubectl logs job/eval-preflight`"),
            "preflight found problems",
        ),
    ],
)
def test_preflight_comes_first_and_is_reported_as_a_condition(jobs, pods, phase, create, preflight, ready_message):
    outcome = state.derive(CLUSTER_PLAN, jobs, None, NOW, 1, seen=state.Seen(pods=tuple(pods)))
    status = outcome.status.dump()
    assert (status["phase"], [s.name for s in outcome.create]) == (phase, create)
    conditions = {c["type"]: c for c in status["conditions"]}
    got = conditions.get("Preflight")
    assert (got and (got["status"], got["reason"], got["message"])) == (preflight or None)
    assert status["message"].startswith(ready_message), status["message"]


def test_convert_and_shard_wait_for_the_preflight():
    assert [(s.name, s.after) for s in CLUSTER_PLAN.steps[:3]] == [
        ("preflight", ()),
        ("convert", ("preflight",)),
        ("shard", ("preflight",)),
    ]
    assert CLUSTER_PLAN.steps[0].command[:2] == ["pnas-eval", "preflight"]
    assert "--summary-file" in CLUSTER_PLAN.steps[0].command
