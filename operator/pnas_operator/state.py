"""Pure state derivation: the Jobs that exist -> the PnasEval's status, the Jobs to create next, and
the Events worth posting. Level-based: nothing is remembered between passes but the status itself,
so an operator restart picks up where the cluster is. What runs next is the shared scheduler's
decision (pnas_jobs.schedule), as in the local runner; stage names come from the plan.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pnas_jobs import layout
from pnas_jobs.plan import Plan, Step
from pnas_jobs.report import Summary
from pnas_jobs.schedule import decide
from pnas_jobs.status import (
    TERMINAL,
    ConditionType,
    Phase,
    PnasEvalStatus,
    ShardCounts,
    StagePhase,
    StageStatus,
    condition,
    step_condition_type,
)
from pnas_operator.manifests import STEP_LABEL


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
    )


def _remembered(stage: dict | None) -> JobView | None:
    """A stage the status records as Succeeded whose Job is gone (ttlSecondsAfterFinished): still done."""
    if not stage or stage.get("phase") != StagePhase.SUCCEEDED or not stage.get("job"):
        return None
    return JobView(stage["job"], StagePhase.SUCCEEDED, succeeded=stage.get("succeeded", 0), failed_pods=stage.get("failedPods", 0))


def _stage(step: Step, v: JobView | None) -> StageStatus:
    return StageStatus(
        name=step.name,
        phase=v.phase if v else StagePhase.PENDING,
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
) -> Outcome:
    """The next status of a PnasEval from its Jobs (and the aggregate's summary once it finished)."""
    previous = previous or {}
    old_stages = {s["name"]: s for s in previous.get("stages") or []}
    by_step = {j["metadata"].get("labels", {}).get(STEP_LABEL): view(j) for j in jobs}
    views = {s.name: by_step.get(s.name) or _remembered(old_stages.get(s.name)) for s in plan.steps}
    done = {name for name, v in views.items() if v and v.phase == StagePhase.SUCCEEDED}
    failed = [s for s in plan.steps if views[s.name] and views[s.name].phase == StagePhase.FAILED]
    decision = decide(plan, done, {s.name for s in failed}, {name for name, v in views.items() if v})
    events = [e for s in plan.steps for e in _events(s, views[s.name], old_stages.get(s.name, {}))]
    shards, current = _shards(plan, views)
    phase, message = _phase(plan, views, failed, summary)
    status = PnasEvalStatus(
        phase=phase,
        message=message,
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
        results=[r.model_copy(update={"json_": f"{plan.root}/{layout.accuracy_json(r.batch_size)}"}) for r in summary.results]
        if summary
        else [],
    )
    ready = True if phase == Phase.SUCCEEDED else (False if phase == Phase.FAILED else None)
    status.conditions = [
        condition(previous, ConditionType.READY, ready, phase, message, now, generation),
        *(
            condition(previous, step_condition_type(s.name), _ok(views[s.name]), _reason(views[s.name]), "", now, generation)
            for s in plan.steps
            if views[s.name]
        ),
    ]
    return Outcome(status, list(decision.start), events)


def _ok(v: JobView | None) -> bool | None:
    return None if v is None or v.phase == StagePhase.RUNNING else v.phase == StagePhase.SUCCEEDED


def _reason(v: JobView | None) -> str:
    if v is None:
        return "NotStarted"
    return {StagePhase.RUNNING: "Running", StagePhase.SUCCEEDED: "Completed"}.get(v.phase) or v.reason or "Failed"


def _failure(step: Step, v: JobView) -> str:
    where = f" (shards {', '.join(map(str, v.failed_indexes))})" if v.failed_indexes else ""
    why = f": {v.reason}" if v.reason else ""
    detail = f" - {v.message}" if v.message else ""
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
        return Phase.SUCCEEDED, f"{len(summary.results)} batch sizes evaluated"
    v = views[pending.name]
    if v is None:
        return (pending.phase, f"starting {pending.name}") if any(views.values()) else (Phase.PENDING, "creating Jobs")
    return pending.phase, f"{pending.name}: {v.succeeded}/{pending.completions} done"
