"""The benchmark suite runs (smoke sizes) and writes its table with every row; never a speed."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO

ROWS = ["1", "2a", "2b", "3", "4a", "4b", "5", "6", "7", "8", "9", "10"]


def test_smoke_run_writes_every_row(tmp_path):
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(out), "--work", str(tmp_path / "work")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    text = (out / "results.md").read_text()
    table = text[text.index("| # |") :].split("\n\n")[0].splitlines()[2:]  # the main table's rows
    assert [line.split("|")[1].strip() for line in table] == ROWS
    for line in table:
        measured = line.split("|")[3]
        assert "failed" not in measured and "not run" not in measured, line
    row7 = next(line for line in table if line.split("|")[1].strip() == "7")
    assert "not measured: no GPU" in row7 or "img/s" in row7
    assert (out / "throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
