"""The local runner: a plan's steps as processes on this machine, the embedded default.

Each unit of work (a step, or one index of an indexed step) runs the very command a Job's pod
runs, with the environment a pod gets (`JOB_COMPLETION_INDEX`, the CPUs it may use). What runs
next, when to stop and which failures retry is decided by the shared scheduler (schedule.py), as
in the operator; only how a unit runs differs: a process here, a pod there.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pnas_jobs import layout, records
from pnas_jobs.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_RETRY
from pnas_jobs.params import CPUS_ENV, INDEX_ENV
from pnas_jobs.plan import Plan, Step, make_plan
from pnas_jobs.report import Report
from pnas_jobs.schedule import RetryPolicy, decide
from pnas_jobs.spec import PnasEval
from pnas_jobs.storage import StorageSettings, open_store


@dataclass(frozen=True)
class Unit:
    step: Step
    index: int | None

    @property
    def label(self) -> str:
        return self.step.name + (f"[{self.index}]" if self.index is not None else "")


@dataclass
class Outcome:
    unit: Unit
    code: int
    attempts: int
    log: Path | None
    seconds: float


Launch = Callable[[Unit, int], int]  # (unit, attempt number from 1) -> exit code


def units(step: Step) -> list[Unit]:
    return [Unit(step, i) for i in range(step.completions)] if step.indexed else [Unit(step, None)]


class ProcessLauncher:
    """Runs a unit's command as `python -m pnas_jobs ...` with a pod's environment; one log per unit."""

    def __init__(self, env: dict[str, str], log_dir: Path, cpus: int):
        self.env, self.log_dir, self.cpus = env, log_dir, cpus

    def log_path(self, unit: Unit) -> Path:
        return self.log_dir / f"{unit.label.replace('[', '-').rstrip(']')}.log"

    def __call__(self, unit: Unit, attempt: int) -> int:
        env = {**self.env, CPUS_ENV: str(self.cpus * 1000)}  # millicores, as a pod's downward API gives them
        if unit.index is not None:
            env[INDEX_ENV] = str(unit.index)
        with open(self.log_path(unit), "a") as log:
            log.write(f"--- attempt {attempt}: {' '.join(unit.step.command)}\n")
            log.flush()
            command = [sys.executable, "-m", "pnas_jobs", *unit.step.command[1:]]
            return subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT).returncode


def run_unit(unit: Unit, launch: Launch, policy: RetryPolicy) -> Outcome:
    """A unit, retried alone under the policy (as backoffLimitPerIndex retries one shard)."""
    started = time.perf_counter()
    attempts, code = 0, EXIT_RETRY
    while True:
        attempts += 1
        code = launch(unit, attempts)
        if not policy.again(code, attempts):
            break
    log = launch.log_path(unit) if isinstance(launch, ProcessLauncher) else None
    return Outcome(unit, code, attempts, log, time.perf_counter() - started)


def execute(plan: Plan, launch: Launch, workers: int, policy: RetryPolicy = RetryPolicy(), progress: bool = True) -> list[Outcome]:
    """Run the plan's units, `workers` at a time, as the scheduler decides; stop at the first failure."""
    from tqdm import tqdm

    remaining = {s.name: len(units(s)) for s in plan.steps}
    done: set[str] = set()
    failed: set[str] = set()
    started: set[str] = set()
    outcomes: list[Outcome] = []
    running: dict[Future, Unit] = {}
    bar = tqdm(total=sum(remaining.values()), unit="task", disable=not progress, file=sys.stderr)
    with ThreadPoolExecutor(workers) as pool:
        while True:
            decision = decide(plan, done, failed, started)
            for step in decision.start:
                started.add(step.name)
                running.update({pool.submit(run_unit, unit, launch, policy): unit for unit in units(step)})
            if decision.stopped:  # queued units are not needed any more
                for future in [f for f in running if f.cancel()]:
                    running.pop(future)
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                unit = running.pop(future)
                outcome = future.result()
                outcomes.append(outcome)
                bar.update(1)
                bar.set_postfix_str(f"{unit.label} {'ok' if outcome.code == EXIT_OK else 'FAILED'}")
                if outcome.code != EXIT_OK:
                    failed.add(unit.step.name)
                    continue
                remaining[unit.step.name] -= 1
                if remaining[unit.step.name] == 0:
                    done.add(unit.step.name)
    bar.close()
    return outcomes


def format_table(report: Report) -> str:
    header = ("batch size", "images", "top-1 %", "top-5 %", "throughput img/s", "end-to-end img/s")
    rows = [
        (
            str(r.batch_size),
            str(r.images),
            f"{r.top1 or 0:.2f}",
            f"{r.top5 or 0:.2f}",
            f"{r.timing.throughput:.1f}",
            f"{r.timing.end_to_end:.1f}",
        )
        for r in report.results
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *map(line, rows)])


def storage_uri(pnaseval: PnasEval, workdir: Path) -> str:
    """Where a local run keeps its objects: spec.storage.uri, else the work folder."""
    return pnaseval.spec.storage.uri or str(Path(workdir).absolute())


def _report_failures(failures: list[Outcome]) -> int:
    for outcome in failures:
        where = f"; log {outcome.log}:\n{_tail(outcome.log)}" if outcome.log else ""
        print(f"pnas-eval: {outcome.unit.label} failed (exit {outcome.code}, {outcome.attempts} attempts){where}", file=sys.stderr)
    print("pnas-eval: run it again to resume; finished work is kept.", file=sys.stderr)
    return EXIT_BAD_INPUT if any(o.code == EXIT_BAD_INPUT for o in failures) else EXIT_RETRY


def _tail(path: Path, lines: int = 6) -> str:
    text = path.read_text(errors="replace").strip().splitlines()
    return "\n".join("    " + line for line in text[-lines:])


def _print_results(plan: Plan, env: dict[str, str], seconds: float) -> None:
    store = open_store(plan.root, StorageSettings.from_env(env))
    report = Report.model_validate(records.read(store, layout.REPORT))
    for result in report.results:
        print(f"{result.json_}: {store.read_text(result.json_)}")
    print(format_table(report))
    failed = report.dataset["failed"]
    if failed:
        print(f"{len(failed)} images could not be used (see report.json): e.g. {failed[0]['image']}: {failed[0]['error']}")
    print(f"report: {plan.root}/{layout.REPORT}  ({seconds:.1f} s)")


def evaluate(pnaseval: PnasEval, workdir: Path, workers: int = 0, force: bool = False, progress: bool = True) -> int:
    """`pnas-eval run --local`: evaluate a PnasEval with processes on this machine."""
    workdir = Path(workdir).absolute()
    plan = make_plan(pnaseval, storage_uri(pnaseval, workdir), force=force)
    env = {**os.environ, **plan.env}
    cpus = len(os.sched_getaffinity(0))
    workers = workers or cpus
    print(f"pnas-eval: evaluating {pnaseval.metadata.name} into {plan.root} with {workers} workers", file=sys.stderr)
    log_dir = workdir / "logs" / pnaseval.metadata.namespace / pnaseval.metadata.name
    log_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    # each unit gets its share of the CPUs, as a pod gets its CPU limit
    outcomes = execute(plan, ProcessLauncher(env, log_dir, max(1, cpus // workers)), workers, progress=progress)
    failures = [o for o in outcomes if o.code != EXIT_OK]
    if failures:
        return _report_failures(failures)
    _print_results(plan, env, time.perf_counter() - started)
    return EXIT_OK
