"""The Ascend path (ATC, ais_bench), driven by stand-ins that behave like upstream: no NPU or CANN can
run here.

- tests/support/fake_atc.py writes `model_bs<B>_linux_x86_64.om`, as CANN's ATC does for models that
  pack op binaries, and refuses an --input_shape that does not name the graph's input;
- tests/support/fake_ais_bench (ais_bench) and tests/support/fake_aclruntime (its compiled runtime, a
  separate wheel upstream): InferSession refuses device ids outside 0..count-1, count being the NPUs
  in ASCEND_VISIBLE_DEVICES (aclrtSetDevice fails in a container that does not have the device);
  `ais_bench.infer.utils.save_data_to_files` writes TXT with ais_bench's own numpy calls.

The ".om" is the ONNX model copied and the stand-in runtime runs it with onnxruntime, so what is tested
is pnas-eval's side: the model per batch size, the device id, padding, the TXT bytes, the timings.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from builders import TINY_MODEL, tiny, write
from conftest import run_cli
from pnas_jobs import layout, metric, records, transform
from pnas_jobs.backends import aisbench
from pnas_jobs.params import ConvertParams, ShardParams
from pnas_jobs.stages import convert, infer, shard
from pnas_jobs.storage import open_store
from support import fake_atc
from support.fake_ais_bench.ais_bench.infer.utils import save_data_to_files

SUPPORT = Path(__file__).parent / "support"
FAKE_AIS_BENCH, FAKE_ACLRUNTIME = SUPPORT / "fake_ais_bench", SUPPORT / "fake_aclruntime"


def python_path(*folders: Path) -> str:
    """The stand-ins first, then this checkout's packages (what the tests run with)."""
    return os.pathsep.join([*map(str, folders), os.environ.get("PYTHONPATH", "")])


ASCEND = {"PYTHONPATH": python_path(FAKE_AIS_BENCH, FAKE_ACLRUNTIME)}


@pytest.fixture(scope="module")
def om_run(sample_set, tmp_path_factory):
    """A converted run (om for batch sizes 4 and 5, by the stand-in ATC) with shard 1 of 2 (12 images)."""
    root = tmp_path_factory.mktemp("ascend")
    fake_atc.install(root / "bin")
    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{root / 'bin'}{os.pathsep}{old_path}"
    try:
        record = convert.main(
            ConvertParams(
                root=str(root / "run"),
                model=TINY_MODEL,
                weights=str(sample_set["planted"].weights),
                target="om",
                batch_sizes=(4, 5),
            )
        )
    finally:
        os.environ["PATH"] = old_path
    assert record["om"]["5"]["sha256"] == record["onnx"]["sha256"]  # the stand-in's .om is the ONNX copied
    shard.main(
        ShardParams(
            root=str(root / "run"),
            images=str(sample_set["images"]),
            labels=str(sample_set["labels"]),
            model=TINY_MODEL,
            shards=2,
            index=1,
        )
    )
    return root / "run"


def members(path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def what_ais_bench_writes(run: Path, index: int, batch_size: int, tmp_path: Path) -> dict[str, bytes]:
    """The shard through the model as ais_bench runs a folder: batches, the short last one padded
    with its first input (io_oprations.py get_narray_from_files_list), each real output saved by
    save_data_to_files as `<input stem>_0.txt`."""
    import onnxruntime as ort

    store = open_store(run)
    record = records.read(store, layout.shard_record(index))
    pixels = np.asarray(infer.load_pixels(store, record, tmp_path))
    session = ort.InferenceSession(str(run / layout.ONNX_MODEL), providers=["CPUExecutionProvider"])
    config = transform.Preprocess.from_dict(record["preprocess"])
    out = {}
    for start in range(0, len(pixels), batch_size):
        chunk = pixels[start : start + batch_size]
        padded = np.concatenate([chunk, np.repeat(chunk[:1], batch_size - len(chunk), axis=0)])
        scores = session.run(None, {"image": transform.normalize(padded, config)})[0]
        for name, row in zip(record["images"][start:], scores[: len(chunk)]):
            save_data_to_files(tmp_path / f"{name}_0.txt", row)
            out[f"{name}_0.txt"] = (tmp_path / f"{name}_0.txt").read_bytes()
    return out


def infer_cli(run: Path, batch_size: int, env: dict, *extra: str):
    return run_cli(
        "infer",
        "--root",
        str(run),
        "--index",
        "1",
        "--batch-size",
        str(batch_size),
        "--backend",
        "ais_bench",
        "--device",
        "npu",
        *extra,
        env=env,
    )


@pytest.mark.parametrize("release", ["msit", "tools"])  # summary() and (start, end) pairs | sumary() and durations
def test_results_are_the_bytes_ais_bench_writes(om_run, tmp_path, release):
    run = tmp_path / "run"
    shutil.copytree(om_run, run)
    log = tmp_path / "ais.log"
    env = {**ASCEND, "FAKE_AIS_LOG": str(log), "ASCEND_VISIBLE_DEVICES": "3", "FAKE_AIS_BENCH_RELEASE": release}
    result = infer_cli(run, 5, env)  # 12 images: 5 + 5 + 2 padded
    assert result.returncode == 0, result.stderr
    got = members(run / layout.result_tar(5, 1))
    expected = what_ais_bench_writes(run, 1, 5, tmp_path)
    assert len(got) == 12 and got == expected
    assert all(data.endswith(b" \n") and data.count(b"\n") == 1 for data in got.values())
    marker = records.read(open_store(run), layout.result_marker(5, 1))
    assert marker["compute"]["count"] == 3 and 0 < marker["compute"]["mean"] < 60_000  # ms, warm-up excluded
    assert log.read_text().splitlines()[0] == "InferSession device_id=0"  # physical NPU 3 is logical 0


@pytest.mark.parametrize(
    "visible, extra, code, device",
    [
        ("Ascend310P-3", [], 0, 0),  # Volcano's annotation, through the downward API
        ("3,5", ["--device-id", "1"], 0, 1),  # the second of two NPUs
        ("3", ["--device-id", "3"], 2, None),  # a physical id is not a device id inside the container
    ],
)
def test_device_ids_are_logical(om_run, tmp_path, visible, extra, code, device):
    """ASCEND_VISIBLE_DEVICES holds PHYSICAL ids (the device plugin's "3", or Volcano's "Ascend310P-3");
    inside the container ACL numbers the NPUs from 0, so InferSession takes 0..count-1 and a physical id
    fails as aclrtSetDevice does (mind-cluster ascend-device-plugin common.go SetAscendRuntimeEnv,
    ascend-docker-runtime process.go; LOCAL_RANK, the logical ids, only in dynamic vNPU mode)."""
    log = tmp_path / "ais.log"
    env = {**ASCEND, "FAKE_AIS_LOG": str(log), "ASCEND_VISIBLE_DEVICES": visible}
    result = infer_cli(om_run, 4, env, "--force", *extra)
    assert result.returncode == code, result.stderr
    if device is None:
        assert "device id 3 does not exist here" in result.stderr and "spec.inference.deviceId" in result.stderr
        assert "Traceback" not in result.stderr
    else:
        assert log.read_text().splitlines()[0] == f"InferSession device_id={device}"


def test_the_default_device_id_is_the_first_logical_one(monkeypatch):
    monkeypatch.setenv("ASCEND_VISIBLE_DEVICES", "6,7")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert aisbench.default_device_id() == 0
    monkeypatch.setenv("LOCAL_RANK", "1,2")  # dynamic vNPU mode: the plugin's logical ids
    assert aisbench.default_device_id() == 1
    assert [aisbench.visible_count(v) for v in ("3", "3,5", "0-3", "Ascend310P-0,Ascend310P-1", "", "x")] == [
        1,
        2,
        4,
        2,
        None,
        None,
    ]


@pytest.mark.parametrize(
    "path, says",
    [
        ((), "No module named 'ais_bench'"),
        ((FAKE_AIS_BENCH,), "No module named 'aclruntime'"),  # `python -m ais_bench` would fail the same way
    ],
)
def test_without_ais_bench_or_its_runtime_the_error_says_where_to_run(om_run, path, says):
    result = infer_cli(om_run, 4, {"PYTHONPATH": python_path(*path)}, "--force")
    assert result.returncode == 2 and says in result.stderr and "run in the Ascend jobs image" in result.stderr


def test_a_batch_size_without_its_om_model(om_run):
    result = infer_cli(om_run, 8, ASCEND)
    assert result.returncode == 2 and "no Ascend model for batch size 8" in result.stderr


def test_a_short_last_batch_is_padded_with_its_first_image():
    """ais_bench fills a short batch with its first file (io_oprations.py get_narray_from_files_list)."""
    seen = []

    class Recorder:
        def infer(self, batch):
            seen.append(batch.copy())
            return np.zeros((len(batch), 3), np.float32), 1.0

    pixels = np.arange(6 * 2 * 2 * 3, dtype=np.uint8).reshape(6, 2, 2, 3)
    config = transform.Preprocess(input_size=2, crop_pct=1.0, interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3)
    infer._infer(Recorder(), pixels, [f"i{n}" for n in range(6)], 4, config, Path(os.devnull))
    assert len(seen) == 3  # the warm-up, then images 0-3 and 4-5 + 2 pads
    assert np.array_equal(seen[-1], transform.normalize(pixels[[4, 5, 4, 4]], config))


def test_the_ascend_path_end_to_end_gives_the_planted_accuracy(sample_set, tmp_path):
    """convert (stand-in ATC) -> shard -> infer (stand-in ais_bench on physical NPU 3) -> aggregate."""
    fake_atc.install(tmp_path / "bin")
    data = tiny(
        "ascend",
        sample_set["images"],
        sample_set["labels"],
        sample_set["planted"].weights,
        tmp_path / "store",
        convert={"target": "om"},
        inference={"backend": "ais_bench", "device": "npu", "batchSizes": [5]},
    )
    env = {**ASCEND, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", "ASCEND_VISIBLE_DEVICES": "3"}
    result = run_cli(
        "run", str(write(tmp_path / "ascend.yaml", data)), "--local", "--workdir", str(tmp_path / "work"), env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "store" / "test" / "ascend"
    assert (run / layout.accuracy_json(5)).read_text() == metric.seed_json(sample_set["planted"].table())
    convert_record = records.read(open_store(run), layout.CONVERT_RECORD)
    assert "--output=model_bs5 " in convert_record["om"]["5"]["command"] + " "
