"""The code is as the configured formatter ([tool.ruff] in pyproject.toml) writes it: no hand-kept layout."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_code_is_formatted():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is not installed: pip install -e '.[test]'"
    result = subprocess.run([ruff, "format", "--check", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, f"run `ruff format .`:\n{result.stdout}{result.stderr}"


def test_no_formatter_markers():
    marker = "# fmt: " + "skip"  # spelled apart, so that this file does not match itself
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    marked = [name for name in tracked.stdout.split() if marker in (ROOT / name).read_text()]
    assert not marked, f"formatter markers in {marked}"
