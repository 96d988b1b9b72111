"""Pure state derivation: the Jobs that exist -> the PnasEval's status, the Jobs to create next, and
the Events worth posting. Level-based: nothing is remembered between passes but the status itself,
so an operator restart picks up where the cluster is.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pnas_jobs.plan import Plan, Step
from pnas_jobs.status import TERMINAL
from pnas_operator.manifests import STEP_LABEL

RUNNING, SUCCEEDED, FAILED, PENDING = "Running", "Succeeded", "Failed", "Pending"


@dataclass(frozen=True)
class JobView:
    """What matters of a Job: its condition, counters and failed indexes."""

    name: str
    phase: str  # Running | Succeeded | Failed
    succeeded: int = 0
    failed_pods: int = 0
    active: int = 0
    failed_indexes: tuple[int, ...] = ()
    reason: str = ""
    message: str = ""


@dataclass
class Outcome:
    status: dict
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
    phase, reason, message = RUNNING, "", ""
    for kind, name in (("Failed", FAILED), ("Complete", SUCCEEDED)):
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


def condition(previous: dict, type_: str, ok: bool | None, reason: str, message: str, now: str, generation) -> dict:
    status = "Unknown" if ok is None else ("True" if ok else "False")
    old = next((c for c in previous.get("conditions") or [] if c.get("type") == type_), None)
    since = old["lastTransitionTime"] if old and old.get("status") == status else now
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


def derive(
    plan: Plan,
    jobs: list[dict],
    previous: dict | None,
    now: str,
    generation: int | None = None,
    summary: dict | None = None,
) -> Outcome:
    """The next status of a PnasEval from its Jobs (and the aggregate's summary once it finished)."""
    previous = previous or {}
    old_stages = {s["name"]: s for s in previous.get("stages") or []}
    by_step = {j["metadata"].get("labels", {}).get(STEP_LABEL): view(j) for j in jobs}
    views = {s.name: by_step.get(s.name) or _remembered(old_stages.get(s.name)) for s in plan.steps}
    failed = [s for s in plan.steps if views[s.name] and views[s.name].phase == FAILED]
    done = {s.name for s in plan.steps if views[s.name] and views[s.name].phase == SUCCEEDED}
    create = [] if failed else [s for s in plan.steps if views[s.name] is None and set(s.after) <= done]

    stages, events = [], []
    for step in plan.steps:
        v = views[step.name]
        phase = v.phase if v else PENDING
        stage = {
            "name": step.name,
            "phase": phase,
            **({"job": v.name} if v else {}),  # no null: the API server drops it, and kopf warns of the difference
            "succeeded": v.succeeded if v else 0,
            "completions": step.completions,
            "failedPods": v.failed_pods if v else 0,
        }
        stages.append(stage)
        old = old_stages.get(step.name, {})
        if v and old.get("phase") in (None, PENDING):
            events.append(("Normal", "StageStarted", f"{step.name}: Job {v.name} ({step.completions} tasks)"))
        if v and v.failed_pods > old.get("failedPods", 0) and phase != FAILED:
            events.append(("Warning", "StageRetry", f"{step.name}: {v.failed_pods} pod failures so far; retrying"))
        if phase != old.get("phase") and phase == SUCCEEDED:
            events.append(("Normal", "StageSucceeded", f"{step.name} finished"))
        if phase != old.get("phase") and phase == FAILED:
            events.append(("Warning", "StageFailed", _failure(step, v)))

    current = next((s for s in reversed(plan.infer_steps()) if views[s.name]), None)
    current_view = views[current.name] if current else None
    shards = {
        "total": plan.shards,
        "succeeded": current_view.succeeded if current_view else 0,
        "failed": len(current_view.failed_indexes) if current_view else 0,
        "active": current_view.active if current_view else 0,
    }
    phase, message = _phase(plan, views, failed, summary)
    status = {
        "phase": phase,
        "message": message,
        "observedGeneration": generation,
        "startTime": previous.get("startTime") or now,
        "run": plan.root,
        "progress": f"{shards['succeeded']}/{plan.shards}" + (f" bs{current.batch_size}" if current else ""),
        "shards": shards,
        "stages": stages,
        "failedShards": sorted({i for s in failed for i in views[s.name].failed_indexes}),
    }
    if phase in TERMINAL:
        status["completionTime"] = previous.get("completionTime") or now
    if summary is not None:
        status["results"] = summary.get("results", [])
        status["failedImages"] = summary.get("failedImages")
    ready = True if phase == "Succeeded" else (False if phase == "Failed" else None)
    status["conditions"] = [
        condition(previous, "Ready", ready, phase, message, now, generation),
        *(
            condition(previous, f"{s.name.capitalize()}Done", _ok(views[s.name]), _reason(views[s.name]), "", now, generation)
            for s in plan.steps
            if views[s.name]
        ),
    ]
    return Outcome(status, create, events)


def _remembered(stage: dict | None) -> JobView | None:
    """A stage the status records as Succeeded whose Job is gone (ttlSecondsAfterFinished): still done."""
    if not stage or stage.get("phase") != SUCCEEDED or not stage.get("job"):
        return None
    return JobView(stage["job"], SUCCEEDED, succeeded=stage.get("succeeded", 0), failed_pods=stage.get("failedPods", 0))


def _ok(v: JobView | None) -> bool | None:
    return None if v is None or v.phase == RUNNING else v.phase == SUCCEEDED


def _reason(v: JobView | None) -> str:
    if v is None:
        return "NotStarted"
    return {RUNNING: "Running", SUCCEEDED: "Completed"}.get(v.phase) or v.reason or "Failed"


def _failure(step: Step, v: JobView) -> str:
    where = f" (shards {', '.join(map(str, v.failed_indexes))})" if v.failed_indexes else ""
    why = f": {v.reason}" if v.reason else ""
    detail = f" - {v.message}" if v.message else ""
    return f"{step.name} failed{where}{why}{detail}"


def _phase(plan: Plan, views: dict, failed: list[Step], summary: dict | None) -> tuple[str, str]:
    if failed:
        step = failed[0]
        return "Failed", _failure(step, views[step.name]) + f"; see `kubectl logs job/{views[step.name].name}`"
    aggregate = views["aggregate"]
    if aggregate and aggregate.phase == SUCCEEDED:
        if summary is None:
            return "Aggregating", "aggregate finished; reading its results"
        return "Succeeded", f"{len(summary.get('results', []))} batch sizes evaluated"
    if aggregate:
        return "Aggregating", "scoring the results"
    infers = [s for s in plan.infer_steps() if views[s.name]]
    if infers:
        step = infers[-1]
        v = views[step.name]
        return "Inferring", f"{step.name}: {v.succeeded}/{step.completions} shards done"
    convert, shard = views["convert"], views["shard"]
    if convert and convert.phase != SUCCEEDED:
        return "Converting", "exporting and checking the model"
    if shard and shard.phase == SUCCEEDED and convert:
        return "Inferring", f"starting {plan.infer_steps()[0].name}"
    if shard or convert:
        return "Sharding", f"{shard.succeeded if shard else 0}/{plan.shards} shards prepared"
    return "Pending", "creating Jobs"
