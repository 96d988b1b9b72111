"""The local runner: a plan's steps as processes on this machine, the embedded default.

Each unit of work (a step, or one index of an indexed step) runs the very command a Job's pod
runs, with the environment a pod gets (`JOB_COMPLETION_INDEX`, the CPUs it may use). What runs
next, when to stop and which failures retry is decided by the shared scheduler (schedule.py), as
in the operator; only how a unit runs differs: a process here, a pod there.

Like a pod, each unit runs in its own process group with its own scratch folder (TMPDIR), so that a
stop (the first Ctrl-C or SIGTERM: SIGTERM to every group, SIGKILL after a few seconds) leaves no
process and no scratch behind, only finished units, which the next run skips. One run of a name
holds a lock in the work folder; a second one waits for it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pnas_jobs import layout, records
from pnas_jobs.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_RETRY, UserError
from pnas_jobs.params import CPUS_ENV, INDEX_ENV
from pnas_jobs.plan import Plan, Step, make_plan
from pnas_jobs.report import Report
from pnas_jobs.schedule import RetryPolicy, decide
from pnas_jobs.spec import PnasEval
from pnas_jobs.storage import StorageSettings, open_store

GRACE_S = 3.0  # after SIGTERM, how long a stage may take to clean up before it is killed
STOPPED = -1  # the outcome of a unit that a stop ended or never started


@dataclass(frozen=True)
class Unit:
    step: Step
    index: int | None

    @property
    def label(self) -> str:
        return self.step.name + (f"[{self.index}]" if self.index is not None else "")

    @property
    def slug(self) -> str:
        return self.label.replace("[", "-").rstrip("]")


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


@dataclass
class Stopper:
    """The first SIGINT or SIGTERM stops the run: no unit starts any more, and every running one gets
    SIGTERM (its whole process group), then SIGKILL after GRACE_S; a second signal kills at once."""

    signal: int | None = None
    processes: set = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def popen(self, command: list[str], **options) -> subprocess.Popen | None:
        """Start a process in its own group (a terminal's Ctrl-C reaches only the runner); None once stopping."""
        with self.lock:  # a stop either sees this process or keeps it from starting
            if self.signal is not None:
                return None
            process = subprocess.Popen(command, process_group=0, **options)
            self.processes.add(process)
            return process

    def done(self, process: subprocess.Popen) -> None:
        with self.lock:
            self.processes.discard(process)

    def __call__(self, signum: int, _frame=None) -> None:
        with self.lock:
            first, self.signal = self.signal is None, signum
            running = list(self.processes)
        self.kill(running, signal.SIGTERM if first else signal.SIGKILL)
        if first:
            timer = threading.Timer(GRACE_S, lambda: self.kill(list(self.processes), signal.SIGKILL))
            timer.daemon = True
            timer.start()

    @staticmethod
    def kill(processes: list[subprocess.Popen], signum: int) -> None:
        for process in processes:
            try:
                os.killpg(process.pid, signum)
            except ProcessLookupError:
                pass


class ProcessLauncher:
    """Runs a unit's command as `python -m pnas_jobs ...` with a pod's environment.

    One log per unit and run (a retry appends to it, a new run starts it afresh), and one scratch
    folder per unit (TMPDIR), removed when the unit ends, however it ends.
    """

    def __init__(self, env: dict[str, str], log_dir: Path, cpus: int, scratch: Path, stopper: Stopper | None = None):
        self.env, self.log_dir, self.cpus, self.scratch = env, log_dir, cpus, scratch
        self.stopper = stopper or Stopper()

    def log_path(self, unit: Unit) -> Path:
        return self.log_dir / f"{unit.slug}.log"

    def __call__(self, unit: Unit, attempt: int) -> int:
        scratch = self.scratch / unit.slug
        scratch.mkdir(parents=True, exist_ok=True)
        # millicores, as a pod's downward API gives them
        env = {**self.env, CPUS_ENV: str(self.cpus * 1000), "TMPDIR": str(scratch)}
        if unit.index is not None:
            env[INDEX_ENV] = str(unit.index)
        command = [sys.executable, "-m", "pnas_jobs", *unit.step.command[1:]]
        try:
            with open(self.log_path(unit), "w" if attempt == 1 else "a") as log:
                log.write(f"--- attempt {attempt}: {' '.join(unit.step.command)}\n")
                log.flush()
                process = self.stopper.popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
                if process is None:
                    return STOPPED
                try:
                    return process.wait()
                finally:
                    self.stopper.done(process)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def run_unit(unit: Unit, launch: Launch, policy: RetryPolicy, stopper: Stopper | None = None) -> Outcome:
    """A unit, retried alone under the policy (as backoffLimitPerIndex retries one shard); never after a stop."""
    started = time.perf_counter()
    attempts, code = 0, EXIT_RETRY
    while stopper is None or stopper.signal is None:
        attempts += 1
        code = launch(unit, attempts)
        if not policy.again(code, attempts):
            break
    if stopper is not None and stopper.signal is not None:
        code = STOPPED
    log = launch.log_path(unit) if isinstance(launch, ProcessLauncher) else None
    return Outcome(unit, code, attempts, log, time.perf_counter() - started)


class Progress:
    """A bar on a terminal; one line per finished unit otherwise (a log file, CI); nothing when quiet."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.count = total, 0
        self.bar = None
        self.lines = enabled and not sys.stderr.isatty()
        if enabled and not self.lines:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="task", file=sys.stderr)

    def update(self, outcome: Outcome) -> None:
        self.count += 1
        if outcome.code == STOPPED and self.lines:
            return  # the stop itself is reported once
        verdict = {EXIT_OK: "ok", STOPPED: "stopped"}.get(outcome.code, f"FAILED (exit {outcome.code})")
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"{outcome.unit.label} {verdict}")
        elif self.lines:
            print(
                f"pnas-eval: [{self.count}/{self.total}] {outcome.unit.label} {verdict} in {outcome.seconds:.1f} s",
                file=sys.stderr,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def execute(
    plan: Plan,
    launch: Launch,
    workers: int,
    policy: RetryPolicy = RetryPolicy(),
    progress: bool = True,
    stopper: Stopper | None = None,
) -> list[Outcome]:
    """Run the plan's units, `workers` at a time, as the scheduler decides; stop at the first failure or signal."""
    remaining = {s.name: len(units(s)) for s in plan.steps}
    done: set[str] = set()
    failed: set[str] = set()
    started: set[str] = set()
    outcomes: list[Outcome] = []
    running: dict[Future, Unit] = {}
    bar = Progress(sum(remaining.values()), progress)
    with ThreadPoolExecutor(workers) as pool:
        while True:
            decision = decide(plan, done, failed, started)
            stopping = stopper is not None and stopper.signal is not None
            for step in () if stopping else decision.start:
                started.add(step.name)
                running.update({pool.submit(run_unit, unit, launch, policy, stopper): unit for unit in units(step)})
            if decision.stopped or stopping:  # queued units are not needed any more
                for future in [f for f in running if f.cancel()]:
                    running.pop(future)
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                unit = running.pop(future)
                outcome = future.result()
                outcomes.append(outcome)
                bar.update(outcome)
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
    if any(r.fidelity for r in report.results):  # spec.fidelity: agreement with the reference, and the verdict
        header += ("agreement %", "top-1 drop")
        rows = [row + _fidelity_cells(r) for row, r in zip(rows, report.results)]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *map(line, rows)])


def _fidelity_cells(result) -> tuple[str, str]:
    if not result.fidelity:
        return ("-", "-")
    return (f"{result.top1_agreement:.2f}", f"{result.top1_drop:.2f}" + ("" if result.fidelity_ok else " FAILED"))


def _print_fidelity(report: Report) -> None:
    """A lost-accuracy verdict, loudly (on stderr): the run still succeeded, its numbers are real."""
    check = (report.checks or {}).get("fidelity")
    if not check or check["ok"]:
        return
    print(
        f"pnas-eval: FIDELITY FAILED: batch sizes {check['failingBatchSizes']} lost more than {check['maxTop1Drop']:g} "
        f"points of top-1 against {check['reference']} on {check['images']} images (see report.json, fidelity)",
        file=sys.stderr,
    )


def storage_uri(pnaseval: PnasEval, workdir: Path) -> str:
    """Where a local run keeps its objects: spec.storage.uri, else the work folder."""
    return pnaseval.spec.storage.uri or str(Path(workdir).absolute())


def _report_failures(failures: list[Outcome]) -> int:
    """One line per failed unit with the reason its stage gave last, then where its log is."""
    for outcome in failures:
        attempts = _plural(outcome.attempts, "attempt")
        reason = f": {_reason(outcome.log)}" if outcome.log else ""
        print(f"pnas-eval: {outcome.unit.label} failed (exit {outcome.code}, {attempts}){reason}", file=sys.stderr)
        if outcome.log:
            print(f"    log {outcome.log}:\n{_tail(outcome.log)}", file=sys.stderr)
    print("pnas-eval: run it again to resume; finished work is kept.", file=sys.stderr)
    return EXIT_BAD_INPUT if any(o.code == EXIT_BAD_INPUT for o in failures) else EXIT_RETRY


def _reason(log: Path) -> str:
    """A stage's own last word (`pnas-eval <stage>: error: ...`), else the last line of its log."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    if not lines:
        return "no output"
    last = lines[-1]
    return last.split(": error: ", 1)[-1] if last.startswith("pnas-eval ") else last


def _report_stop(signum: int, outcomes: list[Outcome], total: int) -> int:
    stopped = sum(1 for o in outcomes if o.code == STOPPED and o.attempts)  # not those that never started
    finished = sum(1 for o in outcomes if o.code == EXIT_OK)
    print(
        f"pnas-eval: stopped by {signal.Signals(signum).name}: {finished} of {total} tasks finished and kept, "
        f"{stopped} stopped while running; run the same command again to resume.",
        file=sys.stderr,
    )
    return 128 + signum


def _tail(path: Path, lines: int = 6) -> str:
    text = path.read_text(errors="replace").strip().splitlines()
    return "\n".join("    " + line for line in text[-lines:])


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _print_results(plan: Plan, env: dict[str, str], seconds: float) -> None:
    store = open_store(plan.root, StorageSettings.from_env(env))
    report = Report.model_validate(records.read(store, layout.REPORT))
    for result in report.results:
        print(f"{result.json_}: {store.read_text(result.json_)}")
    print(format_table(report))
    failed = report.dataset["failed"]
    if failed:
        print(
            f"{_plural(len(failed), 'image')} could not be used (see report.json): "
            f"e.g. {failed[0]['image']}: {failed[0]['error']}"
        )
    print(f"report: {plan.root}/{layout.REPORT}  ({seconds:.1f} s)")
    _print_fidelity(report)


def _lock(log_dir: Path, name: str, stopper: Stopper):
    """One run of a name per work folder at a time: a second one waits for the first (then resumes its
    work, mostly done), or until it is stopped itself."""
    handle = open(log_dir / "run.lock", "a+")
    waiting = False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if stopper.signal is not None:
                return handle
            if not waiting:
                handle.seek(0)
                holder = handle.read().strip() or "?"
                print(
                    f"pnas-eval: {name} is being evaluated by another run (pid {holder}) in this work folder; "
                    "waiting for it to finish ...",
                    file=sys.stderr,
                )
                waiting = True
            time.sleep(0.2)
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _work_folders(workdir: Path, namespace: str, name: str) -> tuple[Path, Path]:
    """The run's log folder and scratch folder under the work folder, made (or a clear error)."""
    if workdir.exists() and not workdir.is_dir():
        raise UserError(f"--workdir: {workdir} is a file, not a folder")
    log_dir = workdir / "logs" / namespace / name
    log_dir.mkdir(parents=True, exist_ok=True)
    return log_dir, workdir / "tmp" / f"{namespace}.{name}"  # a '.' is in no Kubernetes name: no two runs share it


def evaluate(pnaseval: PnasEval, workdir: Path, workers: int = 0, force: bool = False, progress: bool = True) -> int:
    """`pnas-eval run --local`: evaluate a PnasEval with processes on this machine."""
    workdir = Path(workdir).absolute()
    meta = pnaseval.metadata
    plan = make_plan(pnaseval, storage_uri(pnaseval, workdir), force=force)
    env = {**os.environ, **plan.env}
    cpus = len(os.sched_getaffinity(0))
    workers = workers or cpus
    log_dir, scratch = _work_folders(workdir, meta.namespace, meta.name)
    stopper = Stopper()
    previous = {s: signal.signal(s, stopper) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with _lock(log_dir, f"{meta.namespace}/{meta.name}", stopper):
            if stopper.signal is not None:  # stopped while waiting for the lock
                return 128 + stopper.signal
            # storage that cannot work (no such bucket, wrong keys, a bad endpoint) fails here, in one line
            open_store(plan.root, StorageSettings.from_env(env)).exists(layout.REPORT)
            print(
                f"pnas-eval: evaluating {meta.name} into {plan.root} with {_plural(workers, 'worker')}", file=sys.stderr
            )
            started = time.perf_counter()
            # each unit gets its share of the CPUs, as a pod gets its CPU limit
            launch = ProcessLauncher(env, log_dir, max(1, cpus // workers), scratch, stopper)
            outcomes = execute(plan, launch, workers, progress=progress, stopper=stopper)
            shutil.rmtree(scratch, ignore_errors=True)
            if stopper.signal is not None:
                return _report_stop(stopper.signal, outcomes, sum(len(units(s)) for s in plan.steps))
            failures = [o for o in outcomes if o.code != EXIT_OK]
            if failures:
                return _report_failures(failures)
            _print_results(plan, env, time.perf_counter() - started)
            return EXIT_OK
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
