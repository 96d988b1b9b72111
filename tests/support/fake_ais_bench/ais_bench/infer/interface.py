"""Stand-in of ais_bench.infer.interface (see the package docstring). Like upstream, it needs
aclruntime at import time (msit ait/components/benchmark/ais_bench/infer/interface.py: `import aclruntime`)."""

import os
from types import SimpleNamespace

import aclruntime  # noqa: F401  (upstream imports it here: no aclruntime, no ais_bench)

MODES = ("static", "dymbatch", "dymhw", "dymdims", "dymshape")
RELEASE = os.environ.get("FAKE_AIS_BENCH_RELEASE", "msit")  # msit: summary(); tools: sumary() only


class InferSession:
    def __init__(self, device_id, model_path, acl_json_path=None, debug=False, loop=1):
        self.device_id = device_id
        self.options = aclruntime.session_options()
        self.options.loop = loop
        self.session = aclruntime.InferenceSession(model_path, device_id, self.options)
        if os.environ.get("FAKE_AIS_LOG"):
            with open(os.environ["FAKE_AIS_LOG"], "a") as log:
                log.write(f"InferSession device_id={device_id}\n")

    def get_inputs(self):
        return self.session.get_inputs()

    def infer(self, feeds, mode="static", custom_sizes=100000, out_array=True):
        if mode not in MODES:
            raise RuntimeError(f"wrong infer_mode:{mode}, only support {', '.join(MODES)}")
        return self.session.run(feeds)

    def sumary(self):
        times = self.session.exec_times
        if RELEASE == "tools":  # durations in ms
            return SimpleNamespace(exec_time_list=[end - start for start, end in times])
        return SimpleNamespace(exec_time_list=list(times))

    if RELEASE != "tools":

        def summary(self):
            return self.sumary()

    @staticmethod
    def finalize():
        pass
