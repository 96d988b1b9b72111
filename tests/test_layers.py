"""The layers of docs/architecture.md, checked on the source.

The import contracts live in pyproject.toml ([tool.importlinter]) and import-linter reads the real
import graph; what it cannot see (an import at the top of a module, not inside the function that
needs it) is checked here with the ast module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JOBS = sorted((ROOT / "jobs" / "pnas_jobs").rglob("*.py"))
LINT = [
    sys.executable,
    "-c",
    "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
]


def lint(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*LINT, *args], cwd=ROOT, capture_output=True, text=True)


def test_import_contracts_are_kept():
    result = lint()
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout and "7 kept" in result.stdout


def test_a_broken_contract_is_reported(tmp_path):
    """The check reads the real graph: forbidding an import that exists must fail."""
    config = tmp_path / "contracts.ini"
    config.write_text(
        "[importlinter]\nroot_packages =\n    pnas_jobs\n\n"
        "[importlinter:contract:x]\nname = plan without spec\ntype = forbidden\n"
        "source_modules =\n    pnas_jobs.plan\nforbidden_modules =\n    pnas_jobs.spec\n"
    )
    result = lint("--config", str(config))
    assert result.returncode == 1 and "pnas_jobs.plan -> pnas_jobs.spec" in result.stdout


def top_level_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_heavy_dependencies_are_imported_where_they_are_used(path):
    """torch, timm, onnx* and ais_bench load inside the stage or backend that needs them."""
    heavy = {"torch", "timm", "onnx", "onnxsim", "onnxruntime", "torchvision", "ais_bench"}
    assert not top_level_imports(path) & heavy
