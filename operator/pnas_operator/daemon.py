"""The loop that reconciles one PnasEval until it finishes (kopf runs one per PnasEval: handlers.py).

kopf 1.45 ends a timer or daemon for good when the status PATCH it applies after the handler fails
(a 5xx after its retries, any 422, a timeout: kopf/_core/engines/daemons.py), so this loop never
hands kopf a patch: it writes the status itself, and no failure ends it. It sleeps until the watches
report a change of one of the PnasEval's Jobs or pods (`Runs.wake`), or until the safety-net pass is
due (which lists the Jobs instead of trusting the watch), or until something time-based must be
looked at again. A pass that fails, or a status write that fails, is retried with bounded
exponential backoff, and the cause is shown (condition Blocked, a rate-limited Event) while it lasts.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from pnas_jobs.status import TERMINAL, ConditionType, Reason, StagePhase, clip, problem_condition
from pnas_operator import kube, metrics, reconcile
from pnas_operator.settings import OperatorSettings

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (namespace, name)
DEBOUNCE = 0.05  # seconds
Post = Callable[[str, str, str], None]  # (type, reason, message)


@dataclass
class Runs:
    """What the daemons share: a wake-up per PnasEval, their heartbeats (liveness) and phases (metrics)."""

    wakeups: dict[Key, asyncio.Event] = field(default_factory=dict)
    beats: dict[Key, float] = field(default_factory=dict)
    phases: dict[Key, str] = field(default_factory=dict)

    def wake(self, key: Key) -> None:
        event = self.wakeups.get(key)
        if event is not None:
            event.set()

    def stalled(self, known: dict[Key, str], limit: float, since: dict[Key, float]) -> list[str]:
        """PnasEvals that should be reconciled but whose loop has not turned for `limit` seconds:
        a loop stuck, or one kopf no longer runs. `since` remembers when a loop was first missed."""
        now, out = time.monotonic(), []
        for key, phase in known.items():
            if phase in TERMINAL:
                continue
            beat = self.beats.get(key) or since.setdefault(key, now)
            if now - beat > limit:
                out.append(f"{key[0]}/{key[1]}: no reconcile for {int(now - beat)} s")
        for key in list(since):
            if key not in known or key in self.beats:
                del since[key]
        return out

    def forget(self, key: Key) -> None:
        for table in (self.wakeups, self.beats, self.phases):
            table.pop(key, None)
        metrics.set_phases({"/".join(k): p for k, p in self.phases.items()})


class EventGate:
    """Rate limit: the same (reason, message) is posted at most once per `interval` seconds."""

    def __init__(self, post: Post, interval: float):
        self.post, self.interval, self.last = post, interval, {}

    def __call__(self, type_: str, reason: str, message: str) -> None:
        now, key = time.monotonic(), (reason, message)
        if now - self.last.get(key, -self.interval - 1) < self.interval:
            return
        self.last[key] = now
        try:
            self.post(type_, reason, clip(message))
        except Exception as error:  # an Event is a courtesy: never let it stop the loop
            log.warning("could not post Event %s: %s", reason, error)


@dataclass
class Loop:
    key: Key
    body: Callable[[], dict]  # the PnasEval as kopf last saw it
    jobs: Callable[[], list[dict]]  # its Jobs, as the watch saw them
    pods: Callable[[], list[dict]]
    post: Post
    runs: Runs
    settings: OperatorSettings
    written: dict = field(default_factory=dict)  # the status as last written (or read at start)
    failures: int = 0

    async def run(self, stopped) -> None:
        self.written = copy.deepcopy(dict(self.body().get("status") or {}))
        gate, wake = (
            EventGate(self.post, self.settings.event_interval),
            self.runs.wakeups.setdefault(self.key, asyncio.Event()),
        )
        delay, relist_at = 0.0, time.monotonic() + self.settings.resync_interval
        try:
            while not stopped:
                self.runs.beats[self.key] = time.monotonic()
                trigger = await self._sleep(wake, delay, relist_at - time.monotonic(), stopped)
                wake.clear()
                relist = time.monotonic() >= relist_at
                if relist:
                    relist_at = time.monotonic() + self.settings.resync_interval
                metrics.PASSES.labels("resync" if relist else trigger).inc()
                delay = await self.once(gate, relist)
                if delay is None:
                    return
        finally:
            self.runs.beats.pop(self.key, None)

    async def _sleep(self, wake: asyncio.Event, delay: float, until_relist: float, stopped) -> str:
        """Wait for a change, the next time-based look, or the safety-net pass, whichever comes first.
        While backing off after failures a change does not cut the wait short (it is not lost: the
        event stays set for the pass after)."""
        timeout = max(0.0, min(delay, until_relist))
        if timeout == 0.0:
            return "start"
        if self.failures:
            await asyncio.sleep(timeout)
            return "retry"
        try:
            await asyncio.wait_for(wake.wait(), timeout)
        except TimeoutError:
            return "timer"
        wake.clear()
        await asyncio.sleep(DEBOUNCE)  # a Job and its pods change together: one pass for the burst
        return "watch"

    async def once(self, gate: EventGate, relist: bool) -> float | None:
        """One pass and its status write; the seconds to wait before the next (None: finished)."""
        body = {**copy.deepcopy(dict(self.body())), "status": self.written}
        try:
            jobs = None if relist else list(self.jobs())
            result = await asyncio.to_thread(reconcile.reconcile, body, self.settings, jobs, list(self.pods()))
        except kube.ApiError as error:
            return await self._blocked(gate, (error.reason, str(error)))
        except Exception as error:  # a bug must not end the loop: say so, back off, try again
            log.exception("reconcile of %s/%s failed", *self.key)
            return await self._blocked(gate, ("InternalError", f"{type(error).__name__}: {error}"))
        if result is None:
            return None
        status = result.outcome.status
        made = problem_condition(
            self.written, ConditionType.BLOCKED, result.blocked, reconcile.now(), status.observed_generation
        )
        status.conditions = [c for c in status.conditions if c.type != ConditionType.BLOCKED] + ([made] if made else [])
        if not await self._write(gate, status.dump()):
            return self._backoff()
        for type_, reason, message in result.outcome.events:
            gate(type_, reason, message)
        if result.blocked:
            metrics.RECONCILE_ERRORS.labels(result.blocked[0]).inc()
            gate("Warning", *result.blocked)
            return self._backoff()
        self.failures = 0
        if status.phase in TERMINAL:
            return None
        return result.recheck or self.settings.resync_interval

    async def _blocked(self, gate: EventGate, problem: tuple[str, str]) -> float:
        """A pass that could not finish: keep the status, say what blocks it, back off."""
        metrics.RECONCILE_ERRORS.labels(problem[0]).inc()
        log.warning("%s/%s: %s", *self.key, problem[1])
        gate("Warning", *problem)
        made = problem_condition(
            self.written, ConditionType.BLOCKED, problem, reconcile.now(), self.written.get("observedGeneration")
        )
        conditions = [c for c in self.written.get("conditions") or [] if c.get("type") != ConditionType.BLOCKED]
        await self._write(
            gate, {**self.written, "conditions": conditions + [made.model_dump(by_alias=True, exclude_none=True)]}
        )
        return self._backoff()

    async def _write(self, gate: EventGate, status: dict) -> bool:
        """Write the status if it changed; False when the API server did not take it."""
        if status == self.written:
            return True
        try:
            await asyncio.to_thread(kube.patch_status, *self.key, status)
        except kube.ApiError as error:
            metrics.RECONCILE_ERRORS.labels(Reason.STATUS_WRITE_FAILED).inc()
            log.warning("%s/%s: %s; retrying", *self.key, error)
            gate("Warning", Reason.STATUS_WRITE_FAILED, f"{error}; retrying with backoff")
            return False
        _observe(self.written, status, self.jobs())
        self.written = status
        self.runs.phases[self.key] = status.get("phase", "Pending")
        metrics.set_phases({"/".join(k): p for k, p in self.runs.phases.items()})
        return True

    def _backoff(self) -> float:
        self.failures += 1
        return min(self.settings.backoff_max, self.settings.backoff_min * 2 ** (self.failures - 1))


def _observe(old: dict, new: dict, jobs: list[dict]) -> None:
    """Stage durations and shard counts, once per stage that just finished (so each is counted once)."""
    before = {s["name"]: s.get("phase") for s in old.get("stages") or []}
    by_name = {j["metadata"]["name"]: j for j in jobs}
    for stage in new.get("stages") or []:
        phase = stage.get("phase")
        if phase not in (StagePhase.SUCCEEDED, StagePhase.FAILED) or before.get(stage["name"]) == phase:
            continue
        job = (by_name.get(stage.get("job")) or {}).get("status") or {}
        if job.get("startTime") and (job.get("completionTime") or phase == StagePhase.FAILED):
            end = job.get("completionTime") or reconcile.now()
            seconds = reconcile.age_at(end)(job["startTime"])
            metrics.STAGE_SECONDS.labels(stage["name"].split("-")[0], phase.lower()).observe(max(0.0, seconds))
        if stage["name"].startswith("infer"):
            metrics.SHARDS.labels("succeeded").inc(stage.get("succeeded", 0))
            metrics.SHARDS.labels("failed").inc(len(new.get("failedShards") or []) if phase == StagePhase.FAILED else 0)
