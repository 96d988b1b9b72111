"""Stage 1, convert: timm weights -> ONNX (opset 11, `image` -> `class`, dynamic batch) -> onnxsim ->
one self-contained `.onnx`, checked against PyTorch; for Ascend also ATC -> one `.om` per batch size.

Mirrors the seed's pnasnet5large_onnx.py + `python -m onnxsim --overwrite-input-shape=-1,3,H,W` + atc.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from pnas_jobs import layout, metric, records
from pnas_jobs.errors import ParityError, UserError
from pnas_jobs.models import fetch_weights, load_model
from pnas_jobs.params import ConvertParams
from pnas_jobs.storage import StorageSettings, open_store

log = logging.getLogger(__name__)

INPUT_NAME, OUTPUT_NAME = "image", "class"
PARITY_SAMPLES = 4
ONNX_FILE = "model.onnx"  # the simplified model, as ATC is given it


def export_onnx(model, path: Path, input_size: int, opset: int) -> None:
    import torch

    dummy = torch.randn(1, 3, input_size, input_size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # the legacy exporter, chosen on purpose
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        torch.onnx.export(
            model,
            dummy,
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "-1"}, OUTPUT_NAME: {0: "-1"}},
            opset_version=opset,
            dynamo=False,  # the TorchScript exporter: opset 11 and named dynamic axes, as the seed
        )


def simplify(source: Path, target: Path, input_size: int) -> None:
    import onnx
    import onnxsim

    model, ok = onnxsim.simplify(
        onnx.load(str(source)), overwrite_input_shapes={INPUT_NAME: [-1, 3, input_size, input_size]}
    )
    if not ok:
        raise UserError("onnxsim could not validate the simplified model")
    onnx.save(model, str(target))  # one self-contained file (< 2 GB), what ATC and onnxruntime want


def parity(model, onnx_paths: dict[str, Path], input_size: int, tolerance: float) -> dict:
    """PyTorch against onnxruntime on the same random inputs: max |diff| and top-1 agreement."""
    import onnxruntime as ort
    import torch

    rng = np.random.default_rng(0)
    batch = rng.standard_normal((PARITY_SAMPLES, 3, input_size, input_size), dtype=np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    report = {"samples": PARITY_SAMPLES, "tolerance": tolerance}
    for label, path in onnx_paths.items():
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = np.concatenate([session.run(None, {INPUT_NAME: batch[i : i + 1]})[0] for i in range(len(batch))])
        report[label] = {
            "max_abs_diff": float(np.abs(got - expected).max()),
            "top1_agreement": float((got.argmax(1) == expected.argmax(1)).mean()),
        }
    worst = max(report[label]["max_abs_diff"] for label in onnx_paths)
    report["passed"] = worst <= tolerance
    return report


def atc_command(onnx_name: str, output_stem: str, batch_size: int, input_size: int, soc_version: str) -> list[str]:
    """The seed's ATC call for one batch size (ATC appends `.om` to --output)."""
    return [
        "atc",
        "--framework=5",
        f"--model={onnx_name}",
        "--input_format=NCHW",
        f"--input_shape={INPUT_NAME}:{batch_size},3,{input_size},{input_size}",
        f"--output={output_stem}",
        "--log=error",
        f"--soc_version={soc_version}",
    ]


def _inputs(p: ConvertParams, input_size: int, weights_sha256: str | None) -> dict:
    """Everything the converted model depends on: the same inputs, the same model."""
    om = p.target == "om"
    return dict(
        model=p.model,
        weights=p.weights,
        weights_sha256=weights_sha256,  # the content, not only the name: a file rewritten in place is another model
        opset=p.opset,
        target=p.target,
        soc_version=p.soc_version if om else None,
        batch_sizes=sorted(p.batch_sizes) if om else None,
        input_size=input_size,
        keep_state_dict=p.keep_state_dict,
    )


def _export_checked(p: ConvertParams, work: Path, weights_path: Path | None, input_size: int, timings: dict):
    """Load, export, simplify, check against PyTorch: (model, weights record, classes, parity report, simplified ONNX)."""
    started = time.perf_counter()
    model, weights_record, num_classes = load_model(p.model, p.weights, weights_path)
    timings["load_s"] = time.perf_counter() - started
    raw, simplified = work / "model_raw.onnx", work / ONNX_FILE
    started = time.perf_counter()
    export_onnx(model, raw, input_size, p.opset)
    timings["export_s"] = time.perf_counter() - started
    started = time.perf_counter()
    simplify(raw, simplified, input_size)
    timings["simplify_s"] = time.perf_counter() - started
    started = time.perf_counter()
    check = parity(model, {"onnx": raw, "onnx_simplified": simplified}, input_size, p.parity_tolerance)
    timings["parity_s"] = time.perf_counter() - started
    if not check["passed"]:
        raise ParityError(
            f"ONNX disagrees with PyTorch: max |diff| {check['onnx_simplified']['max_abs_diff']:.3g} "
            f"(raw {check['onnx']['max_abs_diff']:.3g}) > tolerance {p.parity_tolerance:g} "
            "(spec.convert.parityTolerance)"
        )
    return model, weights_record, num_classes, check, simplified


def _keep_state_dict(model, store, work: Path) -> dict:
    """The weights as exported, for backends that run the PyTorch model (and the fidelity reference)."""
    import torch

    path = work / "state_dict.pth"
    torch.save(model.state_dict(), path)
    etag = store.upload(path, layout.STATE_DICT)
    return records.output(layout.STATE_DICT, records.sha256_file(path), path.stat().st_size, etag)


def main(p: ConvertParams) -> dict:
    from pnas_jobs import transform

    store = open_store(p.root, StorageSettings.from_env())
    input_size = p.input_size or transform.resolve(p.model).input_size
    timings: dict = {}
    with tempfile.TemporaryDirectory(prefix="pnas-convert-") as tmp:
        work = Path(tmp)
        weights_path = fetch_weights(p.weights, work)
        weights_sha256 = records.sha256_file(weights_path) if weights_path else None
        inputs = _inputs(p, input_size, weights_sha256)
        if not p.force and (
            done := records.finished(store, layout.CONVERT_RECORD, inputs, outputs=records.model_files)
        ):
            log.info("convert: already done for these inputs (%s); skipping", layout.CONVERT_RECORD)
            return done
        atc_commands = _atc_commands(ONNX_FILE, p.batch_sizes, input_size, p.soc_version) if p.target == "om" else {}
        model, weights_record, num_classes, check, simplified = _export_checked(
            p, work, weights_path, input_size, timings
        )
        if weights_sha256:
            weights_record["sha256"] = weights_sha256
        record = dict(
            inputs=inputs,
            model=p.model,
            num_classes=num_classes,
            label_offset=metric.label_offset(num_classes),
            input_size=input_size,
            opset=p.opset,
            weights=weights_record,
            parity=check,
            timings=timings,
        )
        etag = store.upload(simplified, layout.ONNX_MODEL)
        record["onnx"] = records.output(
            layout.ONNX_MODEL, records.sha256_file(simplified), simplified.stat().st_size, etag
        )
        if p.keep_state_dict:
            record["state_dict"] = _keep_state_dict(model, store, work)
        if p.target == "om":
            record["om"] = _atc(store, atc_commands, work, timings)
        records.write(store, layout.CONVERT_RECORD, record)
    log.info(
        "convert: %s -> %s (%d classes, parity max |diff| %.2g) in %.1f s",
        p.model,
        f"{store.uri}/{layout.ONNX_MODEL}",
        num_classes,
        check["onnx_simplified"]["max_abs_diff"],
        sum(timings.values()),
    )
    return record


def _atc_commands(onnx_name: str, batch_sizes, input_size: int, soc_version: str) -> dict[int, list[str]]:
    """ATC's command per batch size; checked before any work, as nothing else can stand in for ATC."""
    commands = {bs: atc_command(onnx_name, f"model_bs{bs}", bs, input_size, soc_version) for bs in sorted(batch_sizes)}
    if shutil.which("atc") is None:
        printed = "\n".join(" ".join(c) for c in commands.values())
        raise UserError(
            "convert.target om needs Ascend's ATC on PATH (source /usr/local/Ascend/ascend-toolkit/set_env.sh, "
            f"or run in the Ascend jobs image). The commands would be:\n{printed}"
        )
    return commands


def _atc_outputs(work: Path, stem: str) -> list[Path]:
    """The .om ATC wrote for `--output=stem`: `stem.om`, or `stem_<os>_<arch>.om` when the model packs
    op binaries (Graph Engine's ModelHelper inserts the host's os and cpu; it depends on the model and
    the CANN release). Not `stem*.om`: model_bs4*.om would also match model_bs48.om."""
    return sorted(p for p in [work / f"{stem}.om", *work.glob(f"{stem}_*.om")] if p.is_file())


def _atc(store, commands: dict[int, list[str]], work: Path, timings: dict) -> dict:
    out = {}
    started = time.perf_counter()
    for bs, command in commands.items():
        result = subprocess.run(command, capture_output=True, text=True, cwd=work)
        found = _atc_outputs(work, f"model_bs{bs}")
        if result.returncode != 0 or len(found) != 1:
            tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
            wrote = ", ".join(p.name for p in found) or f"no model_bs{bs}.om or model_bs{bs}_*.om"
            raise UserError(
                f"atc failed for batch size {bs} (exit {result.returncode}, wrote {wrote}): {' | '.join(tail)}"
            )
        produced = found[0]
        store.upload(produced, layout.om_model(bs))
        out[str(bs)] = {
            "key": layout.om_model(bs),
            "sha256": records.sha256_file(produced),
            "command": " ".join(command),
        }
    timings["atc_s"] = time.perf_counter() - started
    return out
