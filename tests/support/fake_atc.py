"""A stand-in for Ascend's ATC model converter, for tests only: CANN cannot be installed here.

`install(bin_dir)` puts an `atc` on a PATH folder that runs this file. Like ATC it takes
`--framework=5 --model=X.onnx --input_shape=<input name>:<dims> --output=STEM --soc_version=...`,
refuses an --input_shape whose name is not the ONNX graph's input (ATC wants the graph's own input
name), and writes `STEM_linux_x86_64.om`: Graph Engine inserts "_<os>_<cpu>" before ".om" when the
model packs op binaries (mindspore-ai/graphengine base/common/helper/model_helper.cc,
SaveSoStoreModelPartitionInfo), which current CANN releases do for many models. The ".om" is the
ONNX model copied, which the stand-in runtime (tests/support/fake_aclruntime) runs with onnxruntime.
With ATC_LOG set, each call's arguments are appended to that file.

Precision. ATC's `--precision_mode` defaults to force_fp16 (`--precision_mode_v2` to fp16): "forces
float16 for operators supporting both float16 and float32" (CANN ATC reference, precision_mode /
precision_mode_v2, "参数默认值: fp16"; hiascend.com CANN 8.0 atlasatc_16_0098/0099), while the
model's input stays float32 unless --input_fp16_nodes says otherwise. The stand-in follows it only
when asked: with FAKE_ATC_PRECISION=force_fp16 (or --precision_mode=force_fp16 /
--precision_mode_v2=fp16) its ".om" is the ONNX model rewritten to compute as in float16: weights
rounded to float16, the input and every float tensor an operator produces rounded to float16
(Cast to float16 and back), inputs and outputs still float32. It approximates the NPU: each
operator still computes in float32 on the rounded values (the Cube unit multiplies float16 and
accumulates in float32, so matrix products are close; elementwise operators computed natively in
float16 may round differently). Without either, the model is copied (origin precision), as the
tests of pnas-eval's own side (bytes, padding, devices) want.
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
    if _precision(args) in ("force_fp16", "fp16"):
        as_float16(args["model"], args["output"] + SUFFIX)
    else:
        shutil.copyfile(args["model"], args["output"] + SUFFIX)
    return 0


def _precision(args: dict) -> str:
    return args.get("precision_mode_v2") or args.get("precision_mode") or os.environ.get("FAKE_ATC_PRECISION", "origin")


def as_float16(source: str, target: str) -> None:
    """The ONNX model computing as in float16 (see the module docstring): weights and every float
    tensor rounded to float16 values, the graph's input and output types unchanged (float32)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.shape_inference.infer_shapes(onnx.load(source))
    graph = model.graph
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            init.CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16).astype(np.float32), init.name)
            )
    floats = {
        v.name
        for v in [*graph.value_info, *graph.output, *graph.input]
        if v.type.tensor_type.elem_type == TensorProto.FLOAT
    }
    nodes = []

    def rounded(name: str) -> list:  # name_raw -> float16 -> name
        return [
            helper.make_node("Cast", [f"{name}__raw"], [f"{name}__fp16"], to=TensorProto.FLOAT16),
            helper.make_node("Cast", [f"{name}__fp16"], [name], to=TensorProto.FLOAT),
        ]

    for graph_input in graph.input:  # the first operators read the input as float16
        if graph_input.name in floats:
            nodes += [helper.make_node("Identity", [graph_input.name], [f"{graph_input.name}__in__raw"])]
            nodes += rounded(f"{graph_input.name}__in")
    renamed = {i.name: f"{i.name}__in" for i in graph.input if i.name in floats}
    for node in graph.node:
        node.input[:] = [renamed.get(n, n) for n in node.input]
        outputs = list(node.output)
        node.output[:] = [f"{o}__raw" if o in floats else o for o in outputs]
        nodes += [node, *(c for o in outputs if o in floats for c in rounded(o))]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, target)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
