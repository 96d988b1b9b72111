"""The local runner: a plan's steps as processes on this machine, the embedded default.

Each unit of work (a step, or one index of an indexed step) runs the very command a Job's pod
runs, with `JOB_COMPLETION_INDEX` set as Kubernetes sets it. Units whose dependencies are done run
in parallel up to `--workers`; a unit that fails with a retryable exit code is retried alone, as
`backoffLimitPerIndex` does on a cluster. Stages skip work already done with the same inputs, so
running again resumes.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from pnas_jobs import layout, records
from pnas_jobs.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_RETRY
from pnas_jobs.plan import INDEX_ENV, Plan, Step, make_plan
from pnas_jobs.spec import PnasEval
from pnas_jobs.storage import StorageSettings, open_store

RETRIES = 2  # per unit, for exit code 1 (as backoffLimitPerIndex)


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
    log: Path
    seconds: float


def units(step: Step) -> list[Unit]:
    return [Unit(step, i) for i in range(step.completions)] if step.indexed else [Unit(step, None)]


def _run_unit(unit: Unit, env: dict[str, str], log_dir: Path, threads: int) -> Outcome:
    command = [sys.executable, "-m", "pnas_jobs", unit.step.stage, *unit.step.args]
    if unit.step.stage == "infer" and threads and "--threads" not in unit.step.args:
        command += ["--threads", str(threads)]
    unit_env = dict(env)
    if unit.index is not None:
        unit_env[INDEX_ENV] = str(unit.index)
    log_path = log_dir / f"{unit.label.replace('[', '-').rstrip(']')}.log"
    started = time.perf_counter()
    code, attempt = EXIT_RETRY, 0
    while attempt <= RETRIES:
        attempt += 1
        with open(log_path, "a") as log:
            log.write(f"--- attempt {attempt}: pnas-eval {' '.join(command[3:])}\n")
            log.flush()
            code = subprocess.run(command, env=unit_env, stdout=log, stderr=subprocess.STDOUT).returncode
        if code != EXIT_RETRY:
            break
    return Outcome(unit, code, attempt, log_path, time.perf_counter() - started)


def _tail(path: Path, lines: int = 6) -> str:
    text = path.read_text(errors="replace").strip().splitlines()
    return "\n".join("    " + line for line in text[-lines:])


def execute(plan: Plan, env: dict[str, str], log_dir: Path, workers: int, progress: bool = True) -> list[Outcome]:
    """Run every step once its dependencies are done; stop scheduling at the first failure."""
    from tqdm import tqdm

    log_dir.mkdir(parents=True, exist_ok=True)
    cpus = len(os.sched_getaffinity(0))
    threads = max(1, cpus // workers)
    done_steps: set[str] = set()
    pending = list(plan.steps)
    remaining = {s.name: len(units(s)) for s in plan.steps}
    outcomes: list[Outcome] = []
    failed = False
    bar = tqdm(total=sum(remaining.values()), unit="task", disable=not progress, file=sys.stderr)
    with ThreadPoolExecutor(workers) as pool:
        running = {}
        while pending or running:
            ready = [s for s in pending if set(s.after) <= done_steps] if not failed else []
            for step in ready:
                pending.remove(step)
                for unit in units(step):
                    running[pool.submit(_run_unit, unit, env, log_dir, threads)] = unit
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
                    failed = True
                    # queued units will not be needed: the run stops at this failure
                    for queued in [f for f in running if f.cancel()]:
                        running.pop(queued)
                    continue
                remaining[unit.step.name] -= 1
                if remaining[unit.step.name] == 0:
                    done_steps.add(unit.step.name)
    bar.close()
    return outcomes


def format_table(report: dict) -> str:
    header = ("batch size", "images", "top-1 %", "top-5 %", "throughput img/s", "end-to-end img/s")
    rows = [
        (
            str(r["batch_size"]),
            str(r["images"]),
            f"{r['accuracy'].get('top1', 0):.2f}",
            f"{r['accuracy'].get('top5', 0):.2f}",
            f"{r['timing'].get('throughput', 0):.1f}",
            f"{r['timing'].get('end_to_end_images_per_s', 0):.1f}",
        )
        for r in report["results"]
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *map(line, rows)])


def storage_uri(manifest: PnasEval, workdir: Path) -> str:
    """Where a local run keeps its objects: spec.storage.uri, else the work folder."""
    return manifest.spec.storage.uri or str(Path(workdir).absolute())


def run(manifest: PnasEval, workdir: Path, workers: int = 0, force: bool = False, progress: bool = True) -> int:
    workdir = Path(workdir).absolute()
    plan = make_plan(manifest, storage_uri(manifest, workdir))
    if force:
        plan = Plan(
            plan.name, plan.namespace, plan.root,
            tuple(_with_force(s) for s in plan.steps), plan.shards, plan.batch_sizes, plan.env,
        )  # fmt: skip
    env = {**os.environ, **plan.env}
    workers = workers or len(os.sched_getaffinity(0))
    print(f"pnas-eval: evaluating {manifest.metadata.name} into {plan.root} with {workers} workers", file=sys.stderr)
    log_dir = workdir / "logs" / manifest.metadata.namespace / manifest.metadata.name
    started = time.perf_counter()
    outcomes = execute(plan, env, log_dir, workers, progress)
    failures = [o for o in outcomes if o.code != EXIT_OK]
    if failures:
        for outcome in failures:
            print(
                f"pnas-eval: {outcome.unit.label} failed (exit {outcome.code}, {outcome.attempts} attempts); "
                f"log {outcome.log}:\n{_tail(outcome.log)}",
                file=sys.stderr,
            )
        print("pnas-eval: run it again to resume; finished work is kept.", file=sys.stderr)
        return EXIT_BAD_INPUT if any(o.code == EXIT_BAD_INPUT for o in failures) else EXIT_RETRY
    store = open_store(plan.root, StorageSettings.from_env(env))
    report = records.read(store, layout.REPORT)
    for result in report["results"]:
        print(f"{result['accuracy_json']}: {store.read_text(result['accuracy_json'])}")
    print(format_table(report))
    failed = report["dataset"]["failed"]
    if failed:
        print(f"{len(failed)} images could not be used (see report.json): e.g. {failed[0]['image']}: {failed[0]['error']}")
    print(f"report: {plan.root}/{layout.REPORT}  ({time.perf_counter() - started:.1f} s)")
    return EXIT_OK


def _with_force(step: Step) -> Step:
    if step.stage == "aggregate":
        return step
    from dataclasses import replace

    return replace(step, args=(*step.args, "--force"))

