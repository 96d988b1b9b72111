"""The layers of ARCHITECTURE.md, checked on the source: imports only point down."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JOBS = sorted((ROOT / "jobs" / "pnas_jobs").rglob("*.py"))
OPERATOR = sorted((ROOT / "operator" / "pnas_operator").rglob("*.py"))
HEAVY = {"torch", "timm", "onnx", "onnxsim", "onnxruntime", "torchvision", "ais_bench", "numpy", "PIL", "minio"}


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("path", JOBS, ids=rel)
def test_jobs_never_import_kopf_or_the_kubernetes_client(path):
    assert not imports(path) & {"kopf", "kubernetes"}


@pytest.mark.parametrize("path", [p for p in JOBS if p.name in ("spec.py", "plan.py", "rules.py", "crd.py", "status.py", "layout.py")], ids=rel)
def test_what_the_operator_imports_from_jobs_is_light(path):
    assert not imports(path) & HEAVY


def test_only_storage_talks_to_object_storage():
    assert [rel(p) for p in JOBS + OPERATOR if "minio" in imports(p)] == ["jobs/pnas_jobs/storage.py"]


def test_only_kube_talks_to_the_api_and_only_handlers_and_main_use_kopf():
    assert [rel(p) for p in OPERATOR if "kubernetes" in imports(p)] == ["operator/pnas_operator/kube.py"]
    assert [rel(p) for p in OPERATOR if "kopf" in imports(p)] == [
        "operator/pnas_operator/handlers.py", "operator/pnas_operator/main.py"
    ]  # fmt: skip


@pytest.mark.parametrize("path", [p for p in OPERATOR if p.name in ("manifests.py", "state.py")], ids=rel)
def test_builders_and_state_are_pure(path):
    assert not imports(path) & {"kubernetes", "kopf", "os", "subprocess", "socket", "time", "datetime", "requests"}


@pytest.mark.parametrize("path", JOBS, ids=rel)
def test_heavy_dependencies_are_imported_where_they_are_used(path):
    """torch, timm, onnx* and ais_bench load inside the stage or backend that needs them."""
    assert not imports(path, top_level_only=True) & {"torch", "timm", "onnx", "onnxsim", "onnxruntime", "torchvision", "ais_bench"}
