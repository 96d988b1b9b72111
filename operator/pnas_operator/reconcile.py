"""One reconciliation pass over a PnasEval, as a plain function (the daemon in handlers.py calls it).

The story: skip finished evaluations; read the spec; plan; take the Jobs and pods the watches saw
(or list the Jobs, on the safety-net pass); derive the status; create the Jobs whose turn has come;
return one status to write and the Events to post. A call the API server fails does not end the
pass: the status says what blocks it (condition Blocked) and the daemon tries again with backoff.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone

from pydantic import ValidationError

from pnas_jobs import status as status_model
from pnas_jobs.plan import Plan, cluster_plan
from pnas_jobs.report import Summary
from pnas_jobs.spec import PnasEval, SpecError, parse_manifest
from pnas_jobs.status import TERMINAL, ConditionType, Reason
from pnas_operator import kube, manifests, state
from pnas_operator.settings import OperatorSettings
from pnas_operator.starting import PodView, pod_view

log = logging.getLogger(__name__)


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def age_at(when: str):
    """Seconds from a timestamp to `when` (both RFC 3339, as Kubernetes writes them)."""
    moment = datetime.fromisoformat(when.replace("Z", "+00:00"))
    return lambda stamp: (moment - datetime.fromisoformat(stamp.replace("Z", "+00:00"))).total_seconds()


@dataclass
class Result:
    """A pass's outcome plus what the daemon needs: a problem that blocks it, and when to look again."""

    outcome: state.Outcome
    blocked: tuple[str, str] | None = None  # (reason, message): retry with backoff
    recheck: float | None = None  # seconds: something time-based to look at again (pods not started, summary)


def _owner(body: dict) -> manifests.Owner:
    meta = body["metadata"]
    return manifests.Owner(meta["name"], meta.get("namespace", "default"), meta.get("uid", ""))


def rejected(body: dict, message: str, when: str, reason: str) -> state.Outcome:
    """Failed for good: what the spec asks for cannot run, and passing again would not change that."""
    failed = status_model.failed(body.get("status"), reason, message, when, body["metadata"].get("generation"))
    return state.Outcome(failed, events=[("Warning", reason, status_model.clip(message))])


def plan_of(body: dict) -> tuple[PnasEval, Plan]:
    source = f"PnasEval {body['metadata'].get('namespace')}/{body['metadata']['name']}"
    pnaseval = parse_manifest(
        {
            "apiVersion": body.get("apiVersion"),
            "kind": body.get("kind"),
            "metadata": body["metadata"],
            "spec": body.get("spec"),
        },
        source,
    )
    return pnaseval, cluster_plan(pnaseval, source, summary_file=manifests.TERMINATION_LOG)


def reconcile(
    body: dict, settings: OperatorSettings, jobs: list[dict] | None, pods: list[dict], when: str | None = None
) -> Result | None:
    """One pass. `jobs`: the PnasEval's Jobs as the watch saw them, or None to list them from the API."""
    when = when or now()
    previous = dict(body.get("status") or {})
    if previous.get("phase") in TERMINAL:
        return None
    try:
        pnaseval, plan = plan_of(body)
    except SpecError as error:
        return Result(rejected(body, "invalid spec: " + "; ".join(error.problems), when, Reason.INVALID_SPEC))
    owner = _owner(body)
    if jobs is None:
        jobs = kube.list_jobs(owner.namespace, owner.name)
    ours = [job for job in jobs if manifests.owned_by(job, owner)]
    names = {job["metadata"]["name"] for job in ours}
    views = tuple(v for v in map(pod_view, pods) if v.job in names)
    age = age_at(when)
    seen = state.Seen(
        pods=views,
        failed_create=_failed_create(ours, views, settings, age),
        pending_deadline=pnaseval.spec.scheduling.pending_deadline_seconds,
        age=age,
    )
    summary, problem = _summary(plan, ours, views, settings, age)
    seen = state.Seen(**{**seen.__dict__, "summary": summary, "summary_problem": problem})
    outcome = state.derive(plan, ours, previous, when, body["metadata"].get("generation"), seen=seen)
    result = Result(outcome, recheck=settings.start_check_seconds if _waiting(outcome, seen, ours) else None)
    try:
        result.blocked = _create(plan, pnaseval, owner, outcome, settings)
    except kube.JobRejected as error:
        return Result(
            rejected(body, f"the API server refused {error.what}: {error.describe()}", when, Reason.JOB_REJECTED)
        )
    except kube.ApiError as error:
        result.blocked = (error.reason, str(error))
    return _give_up_on_leftovers(body, result, previous, pnaseval, when, age)


def _create(
    plan: Plan, pnaseval: PnasEval, owner: manifests.Owner, outcome: state.Outcome, settings
) -> tuple[str, str] | None:
    """Create the Jobs whose turn has come; a same-name Job of someone else blocks (reported, not fought)."""
    for step in outcome.create:
        job = manifests.job_for_step(plan, step, pnaseval.spec, owner, settings.job_settings())
        name = job["metadata"]["name"]
        try:
            existing = kube.create_job(job)
        except kube.JobRejected as error:
            raise kube.JobRejected(f"Job {name} ({step.name})", error.status, error.message) from None
        if existing is None:
            log.info("created Job %s/%s", owner.namespace, name)
        elif not manifests.owned_by(existing, owner):
            refs = (
                ", ".join(
                    f"{r.get('kind')} uid {r.get('uid')}" for r in existing["metadata"].get("ownerReferences") or []
                )
                or "no owner"
            )
            return Reason.LEFTOVER_JOB, (
                f"Job {name} ({step.name}) exists but belongs to an earlier PnasEval of this name ({refs}); "
                f"waiting for garbage collection to remove it, or `kubectl delete job -n {owner.namespace} {name}`"
            )
    return None


def _give_up_on_leftovers(body, result: Result, previous: dict, pnaseval: PnasEval, when: str, age) -> Result:
    """A leftover Job that is not removed within the pending deadline fails the run, saying which."""
    before = status_model.previous_condition(previous, ConditionType.BLOCKED) or {}
    deadline = pnaseval.spec.scheduling.pending_deadline_seconds
    if result.blocked and result.blocked[0] == Reason.LEFTOVER_JOB and before.get("reason") == Reason.LEFTOVER_JOB:
        if before.get("status") == "True" and age(before["lastTransitionTime"]) >= deadline:
            return Result(
                rejected(body, f"blocked for more than {deadline} s: {result.blocked[1]}", when, Reason.LEFTOVER_JOB)
            )
    return result


def _waiting(outcome: state.Outcome, seen: state.Seen, jobs: list[dict]) -> bool:
    """Whether something time-based is pending: pods not started yet, or a summary not read yet."""
    running = [j for j in jobs if state.view(j).phase == status_model.StagePhase.RUNNING]
    started = {p.job for p in seen.pods if p.started}
    return (
        any(j["metadata"]["name"] not in started for j in running)
        or outcome.status.phase == status_model.Phase.AGGREGATING
    )


def _failed_create(
    jobs: list[dict], pods: tuple[PodView, ...], settings: OperatorSettings, age
) -> dict[str, list[str]]:
    """FailedCreate Events of running Jobs (not queued) that have no pod a while after their creation:
    only they are asked about, so a run whose pods start makes no such call."""
    with_pods = {p.job for p in pods}
    out = {}
    for job in jobs:
        name, view = job["metadata"]["name"], state.view(job)
        created = job["metadata"].get("creationTimestamp")
        if view.phase != status_model.StagePhase.RUNNING or view.queued or name in with_pods or not created:
            continue
        if age(created) >= settings.start_check_seconds:
            out[name] = kube.failed_create_events(job["metadata"]["namespace"], name)
    return out


def _summary(
    plan: Plan, jobs: list[dict], pods: tuple[PodView, ...], settings, age
) -> tuple[Summary | None, str | None]:
    """The run's summary once the step that writes it succeeded (its pod's termination message), or
    why it cannot be read: unreadable, or no pod holds it a grace period after the Job completed."""
    step = plan.summary_step.name
    job = next((j for j in jobs if j["metadata"]["labels"].get(manifests.STEP_LABEL) == step), None)
    if job is None or state.view(job).phase != status_model.StagePhase.SUCCEEDED:
        return None, None
    name = job["metadata"]["name"]
    message = next((p.summary for p in pods if p.job == name and p.summary), None)
    if message is None:
        completed = (job.get("status") or {}).get("completionTime")
        if completed and age(completed) >= settings.summary_grace_seconds:
            return None, f"no pod of Job {name} holds it: deleted or evicted before the operator read it"
        return None, None
    try:
        return Summary.model_validate_json(message), None
    except ValidationError as error:
        log.warning("%s left an unreadable summary: %.200s", step, message)
        return None, f"its pod's termination message is not a summary: {error.error_count()} problem(s)"


def cleanup(body: dict, settings: OperatorSettings) -> tuple[str, str]:
    """On deletion with `spec.cleanup`: start the Job that deletes the run's objects in storage.
    Its name carries the PnasEval's uid, so an earlier cleanup under the same name never hides this one.
    (Event type, message) to post; a refusal is reported, never retried forever (the finalizer must go)."""
    try:
        pnaseval, plan = plan_of(body)
    except SpecError as error:
        return "Warning", f"no cleanup: the spec is invalid ({'; '.join(error.problems)})"
    owner = _owner(body)
    job = manifests.cleanup_job(plan, pnaseval.spec, owner, settings.job_settings())
    job["metadata"]["name"] = cleanup_job_name(owner)
    existing = kube.create_job(job)  # ApiError: the handler retries a few times, then reports
    what = "started" if existing is None else "already started"
    return "Normal", f"{what} Job {job['metadata']['name']} to delete this run's objects in {plan.root}"


def cleanup_job_name(owner: manifests.Owner) -> str:
    return manifests.job_name(owner.name, f"cleanup-{owner.uid[:8]}")
