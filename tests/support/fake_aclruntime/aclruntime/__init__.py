"""A stand-in for aclruntime, ais_bench's compiled runtime (a separate wheel), for tests only.

`InferenceSession(model_path, device_id, options)` opens the device first, as upstream's
PyInferenceSession does through aclrtSetDevice (Ascend/tools ais_bench backend
PyInferenceSession.cpp, DeviceManager.cpp): ACL numbers the NPUs a container sees from 0, so only
0..count-1 exist, and a failed aclrtSetDevice surfaces in Python as RuntimeError. The NPUs a
container sees are those in ASCEND_VISIBLE_DEVICES, read as the Ascend container runtime reads it
(Ascend/mind-cluster ascend-docker-runtime process.go checkVisibleDevice: "Ascend310P-3,..." names
from Volcano's annotation, else ids and ranges "3,5", "0-3"). Unset: a host with FAKE_NPU_COUNT NPUs
(default 1). The model (an ONNX copy, see tests/support/fake_atc.py) runs with onnxruntime on the CPU.
"""

import os
import re
import time

import onnxruntime as ort


class session_options:  # noqa: N801 (upstream's name)
    def __init__(self):
        self.loop, self.log_level, self.acl_json_path = 1, 2, ""


def visible_devices():
    value = os.environ.get("ASCEND_VISIBLE_DEVICES")
    if value is None:
        return list(range(int(os.environ.get("FAKE_NPU_COUNT", "1"))))
    devices = set()
    for entry in (e.strip() for e in value.split(",")):
        named = re.fullmatch(r"(?:Ascend\w*|npu)-(\d+)", entry)
        if named:
            devices.add(int(named.group(1)))
        elif re.fullmatch(r"\d+-\d+", entry):
            low, high = map(int, entry.split("-"))
            devices.update(range(low, high + 1))
        elif entry.isdigit():
            devices.add(int(entry))
        else:
            raise RuntimeError(f"the container runtime refused ASCEND_VISIBLE_DEVICES={value!r}")
    return sorted(devices)


class InferenceSession:
    def __init__(self, model_path, device_id, options):
        count = len(visible_devices())
        if not 0 <= device_id < count:
            raise RuntimeError(f"aclrtSetDevice failed: device {device_id}, {count} device(s) visible")
        self.device_id = device_id
        self.options = options
        self.model = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        self.exec_times = []  # (start, end) ms of each run

    def get_inputs(self):
        return self.model.get_inputs()

    def run(self, feeds):
        start = time.perf_counter() * 1000
        outputs = self.model.run(None, {self.model.get_inputs()[0].name: feeds[0]})
        self.exec_times.append((start, time.perf_counter() * 1000))
        return outputs
