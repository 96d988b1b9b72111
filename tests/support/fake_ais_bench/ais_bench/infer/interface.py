"""Stand-in InferSession (see the package docstring)."""
import os
import time
from types import SimpleNamespace

import onnxruntime as ort


class InferSession:
    def __init__(self, device_id, model_path, acl_json_path=None, debug=False, loop=1):
        self.device_id = device_id
        self.session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        self.times = []
        if os.environ.get("FAKE_AIS_LOG"):
            with open(os.environ["FAKE_AIS_LOG"], "a") as log:
                log.write(f"InferSession device_id={device_id}\n")

    def get_inputs(self):
        return self.session.get_inputs()

    def infer(self, feeds, mode="static"):
        start = time.perf_counter() * 1000
        outputs = self.session.run(None, {self.session.get_inputs()[0].name: feeds[0]})
        self.times.append((start, time.perf_counter() * 1000))
        return outputs

    def summary(self):
        return SimpleNamespace(exec_time_list=list(self.times))

    def finalize(self):
        self.session = None
