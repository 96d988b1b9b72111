"""A stand-in for Ascend's ATC model converter, for tests only: CANN cannot be installed here.

`install(bin_dir)` puts an `atc` on a PATH folder that runs this file. Like ATC it takes
`--framework=5 --model=X.onnx --input_shape=<input name>:<dims> --output=STEM --soc_version=...`,
refuses an --input_shape whose name is not the ONNX graph's input (ATC wants the graph's own input
name), and writes `STEM_linux_x86_64.om`: Graph Engine inserts "_<os>_<cpu>" before ".om" when the
model packs op binaries (mindspore-ai/graphengine base/common/helper/model_helper.cc,
SaveSoStoreModelPartitionInfo), which current CANN releases do for many models. The ".om" is the
ONNX model copied, which the stand-in runtime (tests/support/fake_aclruntime) runs with onnxruntime.
With ATC_LOG set, each call's arguments are appended to that file.
"""
from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path

SUFFIX = "_linux_x86_64.om"


def install(bin_dir: Path) -> Path:
    """An executable `atc` in bin_dir that runs this stand-in with this Python."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    atc = bin_dir / "atc"
    atc.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).resolve()}" "$@"\n')
    atc.chmod(atc.stat().st_mode | stat.S_IEXEC)
    return atc


def main(argv: list[str]) -> int:
    if os.environ.get("ATC_LOG"):
        with open(os.environ["ATC_LOG"], "a") as log:
            log.write(" ".join(argv) + "\n")
    args = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    missing = [k for k in ("framework", "model", "output", "soc_version", "input_shape") if k not in args]
    if missing or args["framework"] != "5":
        print(f"ATC run failed: missing or wrong {', '.join(missing) or 'framework'}", file=sys.stderr)
        return 1
    import onnx

    graph_inputs = [i.name for i in onnx.load(args["model"], load_external_data=False).graph.input]
    name = args["input_shape"].split(":", 1)[0]
    if name not in graph_inputs:
        print(f"E10001: input_shape name {name} is not an input of the model ({graph_inputs})", file=sys.stderr)
        return 1
    shutil.copyfile(args["model"], args["output"] + SUFFIX)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
