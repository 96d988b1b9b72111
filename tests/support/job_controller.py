"""Kubernetes' Job controller, for what it decides about failed pods: a pure stand-in.

It follows the Job documentation (kubernetes.io/docs/concepts/workloads/controllers/job/, sections
"Pod failure policy", "Backoff limit per index" and "Pod backoff failure policy"):
- a pod whose container exit code matches a `podFailurePolicy` rule (operator In) takes that rule's
  action: FailJob fails the Job at once, FailIndex fails that index with no further retries, Ignore
  does not count the failure; rules are evaluated in order, the first match wins;
- any other failed pod counts: per index against `backoffLimitPerIndex` (Indexed Jobs that set it),
  otherwise against the Job's `backoffLimit`; an index (a Job) fails once its failures exceed the limit;
- an Indexed Job whose indexes are all finished with some failed ends with condition Failed, reason
  FailedIndexes, and `status.failedIndexes` in interval notation; a Job over backoffLimit ends Failed,
  reason BackoffLimitExceeded;
- a container killed by a signal exits with 128 + the signal number (137 for SIGKILL, as the kernel's
  OOM killer sends), which the pod failure policy sees like any exit code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

SUCCEEDED, RETRY, FAIL_INDEX, FAIL_JOB = "Succeeded", "Retry", "FailIndex", "FailJob"


@dataclass(frozen=True)
class Rules:
    indexed: bool
    limit: int  # retries of an index (backoffLimitPerIndex) or of the Job (backoffLimit)
    exit_code_actions: tuple[tuple[str, frozenset[int]], ...]


def rules_of(job: dict) -> Rules:
    spec = job["spec"]
    indexed = spec.get("completionMode") == "Indexed" and spec.get("backoffLimitPerIndex") is not None
    limit = spec["backoffLimitPerIndex"] if indexed else spec.get("backoffLimit", 6)
    actions = tuple(
        (rule["action"], frozenset(rule["onExitCodes"]["values"]))
        for rule in (spec.get("podFailurePolicy") or {}).get("rules", [])
        if "onExitCodes" in rule and rule["onExitCodes"].get("operator", "In") == "In"
    )
    return Rules(indexed, limit, actions)


def pod_outcome(rules: Rules, code: int, failures_so_far: int) -> str:
    """What the controller does after a pod of an index exits with `code`."""
    if code == 0:
        return SUCCEEDED
    for action, codes in rules.exit_code_actions:
        if code in codes:
            return {"FailJob": FAIL_JOB, "FailIndex": FAIL_INDEX, "Ignore": RETRY}[action]
    return RETRY if failures_so_far + 1 <= rules.limit else FAIL_INDEX


def intervals(indexes: list[int]) -> str:
    """Kubernetes' interval notation: [1, 3, 4, 5] -> "1,3-5"."""
    out, run = [], []
    for i in sorted(indexes):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [i]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def finish(job: dict, exit_code: Callable[[int, int], int]) -> tuple[dict, dict[int, int]]:
    """Run every index to its end with `exit_code(index, attempt)`; the Job with the status the
    controller would report, and the pods run per index."""
    rules, spec = rules_of(job), job["spec"]
    succeeded, failed, pods, failed_pods, job_failed = [], [], {}, 0, False
    for index in range(spec.get("completions", 1)):
        attempt, failures = 0, 0
        while True:
            code = exit_code(index, attempt)
            attempt += 1
            outcome = pod_outcome(rules, code, failures)
            if outcome == SUCCEEDED:
                succeeded.append(index)
                break
            failures += 1
            failed_pods += 1
            if outcome == RETRY:
                continue
            failed.append(index)
            job_failed = job_failed or outcome == FAIL_JOB
            break
        pods[index] = attempt
        if job_failed:
            break
    status = {"succeeded": len(succeeded), "failed": failed_pods, "active": 0}
    if spec.get("completionMode") == "Indexed":
        status["completedIndexes"] = intervals(succeeded)
        status["failedIndexes"] = intervals(failed)
    reason = "PodFailurePolicy" if job_failed else ("FailedIndexes" if rules.indexed else "BackoffLimitExceeded")
    condition = (
        {"type": "Failed", "status": "True", "reason": reason} if failed else {"type": "Complete", "status": "True"}
    )
    status["conditions"] = [condition]
    return {**job, "status": status}, pods
