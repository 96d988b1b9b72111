"""Shared fixtures: generated images, planted weights, a loopback S3 server, CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from builders import TINY_MODEL
from pnas_jobs import demo

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """`pnas-eval ARGS` in a fresh process, as a Job's pod or the local runner runs it."""
    full_env = {**os.environ, **(env or {})}
    result = subprocess.run(
        [sys.executable, "-m", "pnas_jobs", *args], env=full_env, capture_output=True, text=True, cwd=REPO
    )
    if check and result.returncode != 0:
        raise AssertionError(f"pnas-eval {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="session")
def sample_set(tmp_path_factory):
    """24 generated JPEGs named like ImageNet val, their labels and planted tiny-model weights."""
    root = tmp_path_factory.mktemp("sample")
    images, labels_path = root / "images", root / "val_label.txt"
    planted = demo.plant_sample(TINY_MODEL, images, labels_path, root / "planted.pth", 24, seed=1)
    return dict(root=root, images=images, labels=labels_path, names=sorted(planted.ranks), planted=planted)


@pytest.fixture(scope="session")
def s3():
    """moto's S3 server on loopback (credentials enforced) behind a stoppable proxy."""
    from support.s3 import start_server

    server = start_server(buckets=("datasets", "models", "runs"))
    yield server
    server.stop()


def s3_cli(server, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`pnas-eval ARGS` with the server's credentials; its output is kept for the leak check."""
    result = run_cli(*args, env=server.env(**env))
    server.outputs += [result.stdout, result.stderr]
    return result
