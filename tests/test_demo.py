"""`pnas-eval demo` (what `make demo` runs), here on the tiny model: it generates the files its manifest
names, runs them locally and checks the accuracy against the planted answer."""

from __future__ import annotations

import subprocess
import sys

from builders import TINY_MODEL, write


def test_demo_without_storage_uri_reruns_on_new_images(tmp_path):
    """No spec.storage.uri: the run lands in ./demo. A second demo with other images regenerates the
    weights at the same path; the conversion must follow them, not reuse the first model."""
    spec = write(
        tmp_path / "demo.yaml",
        {
            "apiVersion": "pnaseval.io/v1alpha1",
            "kind": "PnasEval",
            "metadata": {"name": "tiny-demo", "namespace": "local"},
            "spec": {
                "model": {"name": TINY_MODEL, "weights": "files/planted.pth"},
                "dataset": {"images": "files/images", "labels": "files/val_label.txt", "shards": 2},
                "inference": {"batchSizes": [2]},
            },
        },
    )
    for count in (8, 12):
        demo = subprocess.run(
            [sys.executable, "-m", "pnas_jobs", "demo", str(spec), "--images", str(count), "--workers", "2"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert demo.returncode == 0, demo.stderr[-3000:]
        assert "bs2: matches the planted answer" in demo.stdout
        assert (tmp_path / "demo" / "local" / "tiny-demo" / "result_bs2.json").is_file()
