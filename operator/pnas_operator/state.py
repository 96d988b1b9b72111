"""Pure state derivation: the Jobs that exist -> the PnasEval's status, the Jobs to create next, and
the Events worth posting. Level-based: nothing is remembered between passes but the status itself,
so an operator restart picks up where the cluster is. What runs next is the shared scheduler's
decision (pnas_jobs.schedule), as in the local runner; stage names come from the plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from pnas_jobs import layout
from pnas_jobs.plan import Plan, Step
from pnas_jobs.report import Summary
from pnas_jobs.schedule import decide
from pnas_jobs.status import (
    TERMINAL,
    ConditionType,
    Phase,
    PnasEvalStatus,
    Reason,
    ShardCounts,
    StagePhase,
    StageStatus,
    bounded,
    clip,
    condition,
    fidelity_condition,
    previous_condition,
    problem_condition,
    step_condition_type,
)
from pnas_operator.manifests import STEP_LABEL
from pnas_operator.starting import PodView, queue_message, queued, start_problem


@dataclass(frozen=True)
class JobView:
    """What matters of a Job: its condition, counters and failed indexes."""

    name: str
    phase: StagePhase  # Running | Succeeded | Failed
    succeeded: int = 0
    failed_pods: int = 0
    active: int = 0
    failed_indexes: tuple[int, ...] = ()
    reason: str = ""
    message: str = ""
    queued: bool = False  # suspended by a queue (Kueue)


@dataclass(frozen=True)
class Seen:
    """What a pass sees besides the Jobs: their pods, the FailedCreate Events of Jobs without pods,
    the run's summary (or why it cannot be read), and a clock (`age`: seconds since a timestamp)."""

    pods: tuple[PodView, ...] = ()
    failed_create: dict[str, list[str]] = field(default_factory=dict)  # Job name -> Event messages
    summary: Summary | None = None
    summary_problem: str | None = None  # the summary step succeeded but its summary cannot be read
    pending_deadline: float | None = None  # seconds a stage's pods may fail to start before the run fails
    age: Callable[[str], float] = lambda _: 0.0


@dataclass
class Outcome:
    status: PnasEvalStatus
    create: list[Step] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)


def parse_indexes(text: str | None) -> tuple[int, ...]:
    """Kubernetes' interval notation: "1,3-5" -> (1, 3, 4, 5)."""
    out: list[int] = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        low, _, high = part.partition("-")
        if not (low.isdigit() and (not high or high.isdigit())):
            continue  # unknown notation: ignore rather than guess
        out.extend(range(int(low), int(high or low) + 1))
    return tuple(out)


def view(job: dict) -> JobView:
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    phase, reason, message = StagePhase.RUNNING, "", ""
    for kind, name in (("Failed", StagePhase.FAILED), ("Complete", StagePhase.SUCCEEDED)):
        if kind in conditions:
            phase = name
            reason = conditions[kind].get("reason", "")
            message = conditions[kind].get("message", "")
            break
    return JobView(
        name=job["metadata"]["name"],
        phase=phase,
        succeeded=int(status.get("succeeded") or 0),
        failed_pods=int(status.get("failed") or 0),
        active=int(status.get("active") or 0),
        failed_indexes=parse_indexes(status.get("failedIndexes")),
        reason=reason,
        message=message,
        queued=phase == StagePhase.RUNNING and queued(job),
    )


def _remembered(stage: dict | None) -> JobView | None:
    """A stage the status records as Succeeded whose Job is gone (ttlSecondsAfterFinished): still done."""
    if not stage or stage.get("phase") != StagePhase.SUCCEEDED or not stage.get("job"):
        return None
    return JobView(
        stage["job"], StagePhase.SUCCEEDED, succeeded=stage.get("succeeded", 0), failed_pods=stage.get("failedPods", 0)
    )


def _stage(step: Step, v: JobView | None) -> StageStatus:
    return StageStatus(
        name=step.name,
        phase=(StagePhase.QUEUED if v.queued else v.phase) if v else StagePhase.PENDING,
        job=v.name if v else None,
        succeeded=v.succeeded if v else 0,
        completions=step.completions,
        failed_pods=v.failed_pods if v else 0,
    )


def _events(step: Step, v: JobView | None, old: dict) -> list[tuple[str, str, str]]:
    """Events on transitions only: comparing with the stage as the previous status recorded it."""
    if v is None:
        return []
    events = []
    if old.get("phase") in (None, StagePhase.PENDING):
        events.append(("Normal", "StageStarted", f"{step.name}: Job {v.name} ({step.completions} tasks)"))
    if v.failed_pods > old.get("failedPods", 0) and v.phase != StagePhase.FAILED:
        events.append(("Warning", "StageRetry", f"{step.name}: {v.failed_pods} pod failures so far; retrying"))
    if v.phase != old.get("phase") and v.phase == StagePhase.SUCCEEDED:
        events.append(("Normal", "StageSucceeded", f"{step.name} finished"))
    if v.phase != old.get("phase") and v.phase == StagePhase.FAILED:
        events.append(("Warning", "StageFailed", _failure(step, v)))
    return events


def _shards(plan: Plan, views: dict[str, JobView | None]) -> tuple[ShardCounts, Step | None]:
    """Shard counts of the latest inference step that has a Job."""
    current = next((s for s in reversed(plan.infer_steps()) if views[s.name]), None)
    v = views[current.name] if current else None
    counts = ShardCounts(
        total=plan.shards,
        succeeded=v.succeeded if v else 0,
        failed=len(v.failed_indexes) if v else 0,
        active=v.active if v else 0,
    )
    return counts, current


def derive(
    plan: Plan,
    jobs: list[dict],
    previous: dict | None,
    now: str,
    generation: int | None = None,
    summary: Summary | None = None,
    seen: Seen | None = None,
) -> Outcome:
    """The next status of a PnasEval from its Jobs (and the aggregate's summary once it finished)."""
    seen = seen or Seen()
    summary = summary or seen.summary
    previous = previous or {}
    old_stages = {s["name"]: s for s in previous.get("stages") or []}
    by_step = {j["metadata"].get("labels", {}).get(STEP_LABEL): view(j) for j in jobs}
    views = {s.name: by_step.get(s.name) or _remembered(old_stages.get(s.name)) for s in plan.steps}
    done = {name for name, v in views.items() if v and v.phase == StagePhase.SUCCEEDED}
    failed = [s for s in plan.steps if views[s.name] and views[s.name].phase == StagePhase.FAILED]
    decision = decide(plan, done, {s.name for s in failed}, {name for name, v in views.items() if v})
    events = [e for s in plan.steps for e in _events(s, views[s.name], old_stages.get(s.name, {}))]
    shards, current = _shards(plan, views)
    queued_ = _queued(plan, views, {j["metadata"]["name"]: j for j in jobs})
    stall = _stall(plan, views, seen)
    phase, message = _phase(plan, views, failed, summary)
    preflight = _preflight(plan, views, seen)
    if failed and failed[0].stage == "preflight" and preflight:
        message = f"preflight found problems: {preflight[2]}; fix them, then delete and re-create the PnasEval"
    reason = phase.value
    if stall and phase not in TERMINAL:
        message = stall[1]
    late = _late(plan, views, previous, stall, seen, summary)
    if late and phase not in TERMINAL:
        reason, message = late
        phase = Phase.FAILED
        events.append(("Warning", reason, message))
    status = PnasEvalStatus(
        phase=phase,
        message=clip(message),
        observed_generation=generation,
        start_time=previous.get("startTime") or now,
        completion_time=(previous.get("completionTime") or now) if phase in TERMINAL else None,
        run=plan.root,
        progress=f"{shards.succeeded}/{plan.shards}" + (f" bs{current.batch_size}" if current else ""),
        shards=shards,
        stages=[_stage(s, views[s.name]) for s in plan.steps],
        failed_shards=sorted({i for s in failed for i in views[s.name].failed_indexes}),
        failed_images=summary.failed_images if summary else None,
        # the summary leaves out where the accuracy files are (a termination message holds 4 KiB)
        results=[
            r.model_copy(update={"json_": f"{plan.root}/{layout.accuracy_json(r.batch_size)}"}) for r in summary.results
        ]
        if summary
        else [],
        worst_agreement=_worst_agreement(summary),
    )
    status.conditions = _conditions(plan, views, previous, (phase, reason, message), queued_, stall, now, generation)
    if preflight:
        status.conditions.insert(1, condition(previous, ConditionType.PREFLIGHT, *preflight, now, generation))
    events += _problem_events(previous, queued_, stall)
    status.conditions += _fidelity(plan, summary, previous, now, generation)
    return Outcome(status, [] if phase in TERMINAL else list(decision.start), events)


def _conditions(
    plan: Plan, views: dict, previous: dict, run: tuple[Phase, str, str], queued_, stall, now: str, generation
) -> list:
    """Ready (the run), one <Step>Done per started step, and Queued / Stalled while they apply."""
    phase, reason, message = run
    ready = True if phase == Phase.SUCCEEDED else (False if phase == Phase.FAILED else None)
    problems = [
        problem_condition(previous, ConditionType.QUEUED, queued_, now, generation),
        problem_condition(previous, ConditionType.STALLED, stall, now, generation),
    ]
    return [
        condition(previous, ConditionType.READY, ready, reason, message, now, generation),
        *(
            condition(
                previous, step_condition_type(s.name), _ok(views[s.name]), _reason(views[s.name]), "", now, generation
            )
            for s in plan.steps
            if views[s.name]
        ),
        *(c for c in problems if c is not None),
    ]


def _preflight(plan: Plan, views: dict, seen: Seen) -> tuple[bool | None, str, str] | None:
    """The Preflight condition (ok, reason, message) once the preflight step has a Job: its findings
    are what its pod left as termination message (warnings when it passed, problems when it failed)."""
    step = next((s for s in plan.steps if s.stage == "preflight"), None)
    v = views[step.name] if step else None
    if v is None:
        return None
    left = [p.message for p in seen.pods if p.job == v.name and p.message]
    findings = left[-1].strip().replace("\n", "; ") if left else ""
    if v.phase == StagePhase.RUNNING:
        return None, Reason.PREFLIGHT_RUNNING, "checking storage and data"
    if v.phase == StagePhase.SUCCEEDED:
        return True, Reason.PREFLIGHT_PASSED, findings or "storage and data checked"
    return False, Reason.PREFLIGHT_PROBLEMS, findings or f"{v.reason or 'Failed'}: see `kubectl logs job/{v.name}`"


def _running(plan: Plan, views: dict) -> list[Step]:
    return [s for s in plan.steps if views[s.name] and views[s.name].phase == StagePhase.RUNNING]


def _queued(plan: Plan, views: dict, jobs: dict[str, dict]) -> tuple[str, str] | None:
    held = [queue_message(s.name, jobs[views[s.name].name]) for s in _running(plan, views) if views[s.name].queued]
    return (Reason.SUSPENDED, "; ".join(held)) if held else None


def _stall(plan: Plan, views: dict, seen: Seen) -> tuple[str, str] | None:
    """The first running stage (not queued) whose pods cannot start, and why."""
    for step in _running(plan, views):
        v = views[step.name]
        if v.queued:
            continue
        problem = start_problem(
            step.name, [p for p in seen.pods if p.job == v.name], seen.failed_create.get(v.name, [])
        )
        if problem:
            return problem
    return None


def _late(plan: Plan, views: dict, previous: dict, stall, seen: Seen, summary) -> tuple[str, str] | None:
    """A run that cannot finish by waiting: pods stuck past the deadline, or a summary that cannot be read."""
    before = previous_condition(previous, ConditionType.STALLED)
    if stall and seen.pending_deadline is not None and before and before.get("status") == "True":
        waited = seen.age(before["lastTransitionTime"])
        if waited >= seen.pending_deadline:
            return (
                Reason.PENDING_DEADLINE,
                f"pods could not start for {int(waited)} s (spec.scheduling.pendingDeadlineSeconds): {stall[1]}",
            )
    if (
        summary is None
        and seen.summary_problem
        and all(views[s.name] and views[s.name].phase == StagePhase.SUCCEEDED for s in plan.steps)
    ):
        return Reason.SUMMARY_UNREADABLE, (
            f"{plan.summary_step.name} succeeded but its summary cannot be read ({seen.summary_problem}); the report is at "
            f"{plan.root}/{layout.REPORT}; to evaluate again, delete and re-create the PnasEval"
        )
    return None


def _problem_events(previous: dict, queued_, stall) -> list[tuple[str, str, str]]:
    """An Event when a stage starts waiting in a queue or gets stuck, or the cause changes."""
    events = []
    for type_, problem, kind in ((ConditionType.QUEUED, queued_, "Normal"), (ConditionType.STALLED, stall, "Warning")):
        before = previous_condition(previous, type_) or {}
        if problem and (before.get("status") != "True" or before.get("reason") != problem[0]):
            events.append((kind, problem[0], clip(problem[1])))
    return events


def _ok(v: JobView | None) -> bool | None:
    return None if v is None or v.phase == StagePhase.RUNNING else v.phase == StagePhase.SUCCEEDED


def _reason(v: JobView | None) -> str:
    if v is None:
        return "NotStarted"
    return {StagePhase.RUNNING: "Running", StagePhase.SUCCEEDED: "Completed"}.get(v.phase) or v.reason or "Failed"


def _failure(step: Step, v: JobView) -> str:
    """Bounded at any number of failed shards: the first few and a count (failedShards has them all)."""
    count = len(v.failed_indexes)
    where = (
        f" (shards {bounded(v.failed_indexes)})"
        if 0 < count <= 5
        else (f" ({count} shards: {bounded(v.failed_indexes)})" if count else "")
    )
    why = f": {v.reason}" if v.reason else ""
    detail = f" - {clip(v.message, 300)}" if v.message else ""
    return f"{step.name} failed{where}{why}{detail}"


def _phase(plan: Plan, views: dict, failed: list[Step], summary: Summary | None) -> tuple[Phase, str]:
    """The run's phase: Failed at a failure; else the phase of the first step not yet done."""
    if failed:
        step = failed[0]
        return Phase.FAILED, _failure(step, views[step.name]) + f"; see `kubectl logs job/{views[step.name].name}`"
    pending = next((s for s in plan.steps if not (views[s.name] and views[s.name].phase == StagePhase.SUCCEEDED)), None)
    if pending is None:
        if summary is None:
            return Phase.AGGREGATING, f"{plan.summary_step.name} finished; reading its results"
        lost = [f"bs{r.batch_size}" for r in summary.results if r.fidelity_ok is False]
        verdict = (
            f"; accuracy lost against the fidelity reference at {', '.join(lost)} (see FidelityOK)" if lost else ""
        )
        return Phase.SUCCEEDED, f"{len(summary.results)} batch sizes evaluated{verdict}"
    v = views[pending.name]
    if v is None:
        return (pending.phase, f"starting {pending.name}") if any(views.values()) else (Phase.PENDING, "creating Jobs")
    if v.queued:
        return pending.phase, f"{pending.name}: queued (its Job is suspended until its queue admits it)"
    return pending.phase, f"{pending.name}: {v.succeeded}/{pending.completions} done"


def _worst_agreement(summary: Summary | None) -> float | None:
    agreements = [r.top1_agreement for r in (summary.results if summary else []) if r.top1_agreement is not None]
    return min(agreements) if agreements else None


def _fidelity(plan: Plan, summary: Summary | None, previous: dict, now: str, generation) -> list:
    """FidelityOK from the summary's verdicts (spec.fidelity); a run that lost accuracy still succeeded."""
    max_drop = plan.summary_step.params.max_top1_drop
    if summary is None or max_drop is None:
        return []
    made = fidelity_condition(previous, summary.results, max_drop, now, generation)
    return [made] if made else []
