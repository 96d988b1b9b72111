"""`python -m ais_bench` stand-in: reads .bin inputs, runs the ".om" (an ONNX copy) with onnxruntime,
writes <output>/<dirname>/<stem>_0.txt and <output>/<dirname>_summary.json like ais_bench."""
import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

parser = argparse.ArgumentParser()
for flag in ("--model", "--input", "--output", "--output_dirname", "--outfmt", "--device", "--batchsize"):
    parser.add_argument(flag)
args = parser.parse_args()
if os.environ.get("FAKE_AIS_LOG"):
    with open(os.environ["FAKE_AIS_LOG"], "a") as log:
        log.write(f"cli device={args.device} batchsize={args.batchsize}\n")
session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
shape = [int(args.batchsize)] + [d for d in session.get_inputs()[0].shape[1:]]
files = sorted(Path(args.input).glob("*.bin"))
batch = np.stack([np.fromfile(f, dtype=np.float32).reshape(shape[1:]) for f in files])
start = time.perf_counter()
scores = session.run(None, {session.get_inputs()[0].name: batch})[0]
ms = (time.perf_counter() - start) * 1000
out = Path(args.output) / args.output_dirname
out.mkdir(parents=True, exist_ok=True)
for f, row in zip(files, scores):
    np.savetxt(out / f"{f.stem}_0.txt", row.reshape(1, -1), fmt="%f")
summary = {"NPU_compute_time": {"min": ms, "max": ms, "mean": ms, "median": ms, "percentile(99%)": ms, "count": 1}}
(Path(args.output) / f"{args.output_dirname}_summary.json").write_text(json.dumps(summary))
