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
from pnas_jobs.storage import NotFound, StorageSettings, is_s3, open_object, open_store

log = logging.getLogger(__name__)

INPUT_NAME, OUTPUT_NAME = "image", "class"
PARITY_SAMPLES = 4
ONNX_FILE = "model.onnx"  # the simplified model, as ATC is given it


def _unwrap_state_dict(loaded) -> dict:
    if isinstance(loaded, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not loaded:
        raise UserError("the weights file holds no state dict (expected a mapping of parameter names to tensors)")
    return {k.removeprefix("module."): v for k, v in loaded.items()}


def fetch_weights(weights: str, work: Path) -> Path | None:
    """The weights file on this machine (downloaded when in object storage); None for 'timm' and 'random'."""
    if weights in ("timm", "random"):
        return None
    store, key = open_object(weights, StorageSettings.from_env())
    try:
        return store.fetch(key, work / "weights")
    except NotFound:
        raise UserError(f"spec.model.weights: {weights} does not exist") from None


def load_model(name: str, weights: str, path: Path | None = None):
    """The timm model in eval mode, its weights record, and its number of classes.

    `path` is the fetched weights file when `weights` names one (fetch_weights)."""
    import timm
    import torch

    if not timm.is_model(name):
        raise UserError(f"spec.model.name: {name!r} is not a timm model (see timm.list_models())")
    source = {"weights": weights}
    if weights == "random":
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False)
    elif weights == "timm":
        try:
            model = timm.create_model(name, pretrained=True)
        except Exception as error:  # hub unreachable, no weights published, ...
            raise UserError(
                f"cannot load pretrained weights for {name} from the hub ({type(error).__name__}: {error}); "
                "offline, set spec.model.weights to a local .pth, an s3:// object or 'random'"
            ) from None
    else:
        try:
            state = _unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except UserError:
            raise
        except Exception as error:
            raise UserError(f"spec.model.weights: cannot read {weights} as a PyTorch state dict: {error}") from None
        cfg = timm.models.get_pretrained_cfg(name)
        classifier = cfg.classifier if cfg else None
        head = state.get(f"{classifier}.weight") if classifier else None
        num_classes = int(head.shape[0]) if head is not None else None
        model = timm.create_model(name, pretrained=False, **({"num_classes": num_classes} if num_classes else {}))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise UserError(
                f"spec.model.weights: {weights} does not fit {name}: "
                f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
            )
    model.eval()
    return model, source, int(model.num_classes)


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


def run(
    run_uri: str,
    model_name: str,
    weights: str,
    opset: int = 11,
    target: str = "onnx",
    soc_version: str = "Ascend310P3",
    batch_sizes: tuple[int, ...] = (4,),
    parity_tolerance: float = 1e-4,
    input_size: int | None = None,
    force: bool = False,
) -> dict:
    from pnas_jobs import transform

    store = open_store(run_uri, StorageSettings.from_env())
    input_size = input_size or transform.resolve(model_name).input_size
    timings = {}
    with tempfile.TemporaryDirectory(prefix="pnas-convert-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        weights_path = fetch_weights(weights, work)
        # the weights' content, not only their name: a file rewritten in place is another model
        weights_sha256 = records.sha256_file(weights_path) if weights_path else None
        inputs = dict(
            model=model_name,
            weights=weights,
            weights_sha256=weights_sha256,
            opset=opset,
            target=target,
            soc_version=soc_version if target == "om" else None,
            batch_sizes=sorted(batch_sizes) if target == "om" else None,
            input_size=input_size,
        )
        if not force and (done := records.finished(store, layout.CONVERT_RECORD, inputs)):
            log.info("convert: already done for these inputs (%s); skipping", layout.CONVERT_RECORD)
            return done
        atc_commands = _atc_commands(ONNX_FILE, batch_sizes, input_size, soc_version) if target == "om" else {}

        model, weights_record, num_classes = load_model(model_name, weights, weights_path)
        if weights_sha256:
            weights_record["sha256"] = weights_sha256
        timings["load_s"] = time.perf_counter() - started

        raw, simplified = work / "model_raw.onnx", work / ONNX_FILE
        started = time.perf_counter()
        export_onnx(model, raw, input_size, opset)
        timings["export_s"] = time.perf_counter() - started
        started = time.perf_counter()
        simplify(raw, simplified, input_size)
        timings["simplify_s"] = time.perf_counter() - started

        started = time.perf_counter()
        check = parity(model, {"onnx": raw, "onnx_simplified": simplified}, input_size, parity_tolerance)
        timings["parity_s"] = time.perf_counter() - started
        if not check["passed"]:
            raise ParityError(
                f"ONNX disagrees with PyTorch: max |diff| {check['onnx_simplified']['max_abs_diff']:.3g} "
                f"(raw {check['onnx']['max_abs_diff']:.3g}) > tolerance {parity_tolerance:g} "
                "(spec.convert.parityTolerance)"
            )

        record = dict(
            inputs=inputs,
            model=model_name,
            num_classes=num_classes,
            label_offset=metric.label_offset(num_classes),
            input_size=input_size,
            opset=opset,
            weights=weights_record,
            onnx={
                "key": layout.ONNX_MODEL,
                "sha256": records.sha256_file(simplified),
                "bytes": simplified.stat().st_size,
            },
            parity=check,
            timings=timings,
        )
        store.upload(simplified, layout.ONNX_MODEL)

        if target == "om":
            record["om"] = _atc(store, atc_commands, work, timings)
        records.write(store, layout.CONVERT_RECORD, record)
    log.info(
        "convert: %s -> %s (%d classes, parity max |diff| %.2g) in %.1f s",
        model_name,
        f"{store.uri}/{layout.ONNX_MODEL}" if not is_s3(store.uri) else store.uri,
        num_classes,
        check["onnx_simplified"]["max_abs_diff"],
        sum(timings.values()),
    )
    return record


def _atc_commands(onnx_name: str, batch_sizes, input_size: int, soc_version: str) -> dict[int, list[str]]:
    """ATC's command per batch size; checked before any work, as nothing else can stand in for ATC."""
    commands = {
        bs: atc_command(onnx_name, f"model_bs{bs}", bs, input_size, soc_version) for bs in sorted(batch_sizes)
    }
    if shutil.which("atc") is None:
        printed = "\n".join(" ".join(c) for c in commands.values())
        raise UserError(
            "convert.target om needs Ascend's ATC on PATH (source /usr/local/Ascend/ascend-toolkit/set_env.sh, "
            f"or run in the Ascend jobs image). The commands would be:\n{printed}"
        )
    return commands


def _atc(store, commands: dict[int, list[str]], work: Path, timings: dict) -> dict:
    out = {}
    started = time.perf_counter()
    for bs, command in commands.items():
        result = subprocess.run(command, capture_output=True, text=True, cwd=work)
        produced = work / f"model_bs{bs}.om"
        if result.returncode != 0 or not produced.is_file():
            tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
            raise UserError(f"atc failed for batch size {bs} (exit {result.returncode}): {' | '.join(tail)}")
        store.upload(produced, layout.om_model(bs))
        out[str(bs)] = {
            "key": layout.om_model(bs),
            "sha256": records.sha256_file(produced),
            "command": " ".join(command),
        }
    timings["atc_s"] = time.perf_counter() - started
    return out
