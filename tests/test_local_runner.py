"""The local runner with real processes: clean stops, one run of a name at a time, logs and progress.

A stop (the first Ctrl-C or SIGTERM) must end the runner and every stage process it started within
a few seconds, say so, leave no process and no scratch folder behind, and leave a state that the
next run resumes to the planted answer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builders import tiny, write
from conftest import REPO, run_cli
from pnas_jobs import layout, metric


def start(spec: Path, workdir: Path, *options: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pnas_jobs", "run", str(spec), "--local", "--workdir", str(workdir), *options],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def processes_mentioning(text: str) -> list[str]:
    """Processes whose command line mentions `text` (a run's own folder), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if entry.name.isdigit() and text in command:
            found.append(f"{entry.name}: {command}")
    return found


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_ends_every_process_says_so_and_resumes(sample_set, tmp_path, signum):
    spec = write(
        tmp_path / "t.yaml",
        tiny(
            "t",
            sample_set["images"],
            sample_set["labels"],
            sample_set["planted"].weights,
            tmp_path / "store",
            inference={"batchSizes": [4]},
        ),
    )
    runner = start(spec, tmp_path / "work", "--workers", "2")
    wait_for(lambda: list((tmp_path / "store" / "test" / "t" / "shards").glob("*.json")))  # stage processes are at work
    assert processes_mentioning(str(tmp_path / "store"))
    sent = time.monotonic()
    runner.send_signal(signum)
    _, stderr = runner.communicate(timeout=30)
    took = time.monotonic() - sent
    assert runner.returncode == 128 + signum and took < 10, (runner.returncode, took, stderr)
    assert f"stopped by {signal.Signals(signum).name}" in stderr and "run the same command again to resume" in stderr
    assert "Traceback" not in stderr
    assert not processes_mentioning(str(tmp_path / "store"))  # no orphan keeps writing
    assert not list((tmp_path / "work" / "tmp").rglob("*"))  # the units' scratch folders are gone
    assert not list((tmp_path / "store").rglob("*.pnas-tmp"))
    again = run_cli("run", str(spec), "--local", "--workdir", str(tmp_path / "work"), "--quiet")
    assert again.returncode == 0, again.stderr
    expected = metric.seed_json(sample_set["planted"].table())
    assert (tmp_path / "store" / "test" / "t" / layout.accuracy_json(4)).read_text() == expected


def test_a_second_run_of_the_same_name_waits_then_resumes(sample_set, tmp_path):
    """Also: progress in plain lines when stderr is no terminal, and logs of this run only."""
    spec = write(
        tmp_path / "t.yaml",
        tiny(
            "t",
            sample_set["images"],
            sample_set["labels"],
            sample_set["planted"].weights,
            tmp_path / "store",
            inference={"batchSizes": [4]},
        ),
    )
    first = start(spec, tmp_path / "work")
    wait_for(lambda: (tmp_path / "work" / "logs" / "test" / "t" / "run.lock").is_file())
    second = start(spec, tmp_path / "work", "--quiet")
    (out1, err1), (out2, err2) = first.communicate(timeout=300), second.communicate(timeout=300)
    assert first.returncode == second.returncode == 0, (err1, err2)
    assert f"is being evaluated by another run (pid {first.pid}) in this work folder; waiting" in err2
    assert out1.split("report:")[0] == out2.split("report:")[0]  # the same results, found done
    # progress: one line per finished unit, no carriage returns
    assert "\r" not in err1 and "pnas-eval: [8/8] aggregate ok in" in err1
    log = (tmp_path / "work" / "logs" / "test" / "t" / "shard-0.log").read_text()
    assert log.count("--- attempt") == 1 and "already done" in log  # the second run's log only


def test_outputs_are_readable_like_any_file_the_user_writes(sample_set, tmp_path):
    from pnas_jobs.storage import FILE_MODE, open_store

    store = open_store(tmp_path)
    store.write_text("report.json", "{}")
    store.upload(sample_set["labels"], "model/x.txt")
    modes = {oct(p.stat().st_mode & 0o777) for p in tmp_path.rglob("*") if p.is_file()}
    umask = os.umask(0)
    os.umask(umask)
    assert modes == {oct(0o666 & ~umask)} == {oct(FILE_MODE)}
