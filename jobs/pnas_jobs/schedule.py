"""One scheduler for both runtimes: what runs next, when a run stops, and which failures retry.

Pure: the local runner (processes) and the operator (Jobs) each tell it which steps are done,
failed or started, and do what it decides. A unit of work (a step, or one shard of an indexed
step) is retried alone under one policy: the local runner applies it to processes, the Job
builders turn it into `backoffLimit(PerIndex)` and a pod failure policy, so a crash, an OOM kill
or a signal is retried in both places and bad input (exit 2) in neither.
"""

from __future__ import annotations

from dataclasses import dataclass

from pnas_jobs.errors import EXIT_BAD_INPUT, EXIT_OK
from pnas_jobs.plan import Plan, Step


@dataclass(frozen=True)
class RetryPolicy:
    """A unit runs at most `1 + retries` times; an exit code in `final_codes` fails it at once."""

    retries: int = 2
    final_codes: tuple[int, ...] = (EXIT_BAD_INPUT,)

    def retryable(self, code: int) -> bool:
        """Whether a unit that ended with `code` may run again (a negative code: killed by a signal)."""
        return code != EXIT_OK and code not in self.final_codes

    def again(self, code: int, attempts: int) -> bool:
        return self.retryable(code) and attempts <= self.retries


@dataclass(frozen=True)
class Decision:
    start: tuple[Step, ...]  # steps whose dependencies are done and that have not started
    finished: bool  # every step done: the run succeeded
    stopped: bool  # a step failed for good: start nothing more


def decide(plan: Plan, done: set[str], failed: set[str], started: set[str]) -> Decision:
    """The next steps of a run, from the names of the steps done, failed and started."""
    if failed:
        return Decision((), False, True)
    if all(step.name in done for step in plan.steps):
        return Decision((), True, False)
    ready = tuple(s for s in plan.steps if s.name not in started and s.name not in done and set(s.after) <= done)
    return Decision(ready, False, False)
