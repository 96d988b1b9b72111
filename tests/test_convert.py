"""Conversion: export + onnxsim + parity against PyTorch, checkpoints of every kind, ATC."""

from __future__ import annotations

import json
import os

import pytest
import torch

from builders import TINY_MODEL
from conftest import run_cli
from pnas_jobs.params import ConvertParams, ShardParams
from pnas_jobs import layout, records
from pnas_jobs.errors import UserError
from pnas_jobs.stages import convert
from support import fake_atc


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("convert")
    return root, convert.main(ConvertParams(root=str(root), model=TINY_MODEL, weights="random"))


def test_onnx_and_simplified_onnx_agree_with_pytorch(converted):
    root, record = converted
    for variant in ("onnx", "onnx_simplified"):
        assert record["parity"][variant]["max_abs_diff"] <= 1e-4
        assert record["parity"][variant]["top1_agreement"] == 1.0
    assert json.loads((root / layout.CONVERT_RECORD).read_text())["onnx"]["sha256"] == record["onnx"]["sha256"]


def test_model_is_one_self_contained_file_with_the_seed_interface(converted):
    import onnx

    root, _ = converted
    model = onnx.load(str(root / layout.ONNX_MODEL))
    assert not list(root.glob("model/*.data"))
    assert [i.name for i in model.graph.input] == ["image"] and [o.name for o in model.graph.output] == ["class"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "-1" and [d.dim_value for d in dims[1:]] == [3, 160, 160]
    assert model.opset_import[0].version == 11


def test_done_conversion_is_not_redone(converted):
    root, record = converted
    again = convert.main(ConvertParams(root=str(root), model=TINY_MODEL, weights="random"))
    assert again == json.loads((root / layout.CONVERT_RECORD).read_text()) and again["timings"] == record["timings"]


def test_weights_rewritten_in_place_are_converted_again(tmp_path):
    """Same path, other content (the demo regenerates its weights): the old export must not be reused."""
    import timm

    weights, run = tmp_path / "weights.pth", str(tmp_path / "run")
    for seed in (1, 2):
        torch.manual_seed(seed)
        torch.save(timm.create_model(TINY_MODEL).state_dict(), weights)
        record = convert.main(ConvertParams(root=run, model=TINY_MODEL, weights=str(weights)))
        assert record["weights"]["sha256"] == record["inputs"]["weights_sha256"] == records.sha256_file(weights)
    assert (
        convert.main(ConvertParams(root=run, model=TINY_MODEL, weights=str(weights)))["timings"] == record["timings"]
    )  # unchanged: skipped


def test_an_old_1001_class_checkpoint_gets_its_label_offset(tmp_path):
    import timm

    model = timm.create_model(TINY_MODEL, num_classes=1001)
    weights = tmp_path / "cadene-style.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, weights)
    record = convert.main(ConvertParams(root=str(tmp_path / "run"), model=TINY_MODEL, weights=str(weights)))
    assert (record["num_classes"], record["label_offset"]) == (1001, 1)
    assert len(record["weights"]["sha256"]) == 64


def test_weights_that_do_not_fit_say_so(tmp_path):
    weights = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3)}, weights)
    with pytest.raises(UserError, match="does not fit test_efficientnet"):
        convert.main(ConvertParams(root=str(tmp_path / "run"), model=TINY_MODEL, weights=str(weights)))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read .* as a PyTorch state dict"):
        convert.main(ConvertParams(root=str(tmp_path / "run"), model=TINY_MODEL, weights=str(garbage)))
    with pytest.raises(UserError, match="does not exist"):
        convert.main(ConvertParams(root=str(tmp_path / "run"), model=TINY_MODEL, weights=str(tmp_path / "missing.pth")))


def test_unknown_model_and_offline_hub_give_one_line_errors(tmp_path):
    result = run_cli("convert", "--root", str(tmp_path), "--model", "no_such_net", "--weights", "random")
    assert result.returncode == 2 and "is not a timm model" in result.stderr and "Traceback" not in result.stderr
    offline = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")}
    result = run_cli("convert", "--root", str(tmp_path), "--model", TINY_MODEL, "--weights", "timm", env=offline)
    assert result.returncode == 2 and "cannot load pretrained weights" in result.stderr
    assert "spec.model.weights" in result.stderr and "Traceback" not in result.stderr


def test_om_target_without_atc_prints_the_commands(tmp_path):
    with pytest.raises(UserError, match="needs Ascend's ATC") as caught:
        convert.main(
            ConvertParams(root=str(tmp_path), model=TINY_MODEL, weights="random", target="om", batch_sizes=(1, 4))
        )
    text = str(caught.value)
    assert "--input_shape=image:4,3,160,160" in text and "--soc_version=Ascend310P3" in text


def test_om_target_with_a_stand_in_atc(tmp_path, monkeypatch):
    """ATC cannot run here: the stand-in (tests/support/fake_atc.py) records its arguments and writes
    `model_bs<B>_linux_x86_64.om`, as CANN's ATC names models that pack op binaries."""
    fake_atc.install(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("ATC_LOG", str(tmp_path / "atc.log"))
    record = convert.main(
        ConvertParams(
            root=str(tmp_path / "run"),
            model=TINY_MODEL,
            weights="random",
            target="om",
            batch_sizes=(4, 48),
            soc_version="Ascend910B3",
        )
    )
    assert sorted(record["om"]) == ["4", "48"]  # model_bs4_*.om is not model_bs48_*.om
    onnx_bytes = (tmp_path / "run" / layout.ONNX_MODEL).read_bytes()
    assert (tmp_path / "run" / layout.om_model(4)).read_bytes() == onnx_bytes
    calls = (tmp_path / "atc.log").read_text().splitlines()
    assert calls[0] == (
        "--framework=5 --model=model.onnx --input_format=NCHW --input_shape=image:4,3,160,160 "
        "--output=model_bs4 --log=error --soc_version=Ascend910B3"
    )


def test_an_atc_failure_names_the_batch_size_and_what_atc_said(tmp_path, monkeypatch):
    atc = tmp_path / "bin" / "atc"
    atc.parent.mkdir()
    atc.write_text("#!/bin/sh\necho 'E19010: soc_version Ascend999 is not supported' >&2\nexit 1\n")
    atc.chmod(0o755)
    monkeypatch.setenv("PATH", f"{atc.parent}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(
        UserError, match=r"atc failed for batch size 4 \(exit 1, wrote no model_bs4.om or model_bs4_\*.om\): E19010"
    ):
        convert.main(
            ConvertParams(root=str(tmp_path / "run"), model=TINY_MODEL, weights="random", target="om", batch_sizes=(4,))
        )


def test_a_parity_failure_fails_the_stage(tmp_path):
    result = run_cli(
        "convert", "--root", str(tmp_path), "--model", TINY_MODEL, "--weights", "random", "--parity-tolerance", "1e-12"
    )
    assert result.returncode == 2 and "ONNX disagrees with PyTorch" in result.stderr
    assert not (tmp_path / layout.CONVERT_RECORD).exists()
