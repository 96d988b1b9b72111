"""A stand-in for Ascend's ais_bench, for tests only: no NPU, CANN or aclruntime can run here.

It keeps ais_bench's shape where pnas-eval touches it, after the upstream sources
(Ascend/tools ais-bench_workload/tool/ais_bench and Ascend/msit ait/components/benchmark/ais_bench):

- `ais_bench.infer.interface` imports the compiled `aclruntime` at its top, so without that wheel
  the import fails, as upstream (the stand-in runtime is tests/support/fake_aclruntime: put both
  folders on PYTHONPATH, or only this one to see the import fail);
- `InferSession(device_id, model_path, acl_json_path=None, debug=False, loop=1)` hands the device id
  to `aclruntime.InferenceSession`, which refuses ids the container does not have (RuntimeError);
- `infer(feeds, mode='static', custom_sizes=100000, out_array=True)`: modes static, dymbatch,
  dymhw, dymdims, dymshape, anything else RuntimeError('wrong infer_mode...');
- the msit release has `summary()` whose exec_time_list holds (start, end) pairs in ms; the older
  Ascend/tools release has only `sumary()` with durations in ms. FAKE_AIS_BENCH_RELEASE=tools picks
  the older one (default msit);
- `ais_bench.infer.utils.save_data_to_files` writes TXT as ais_bench does (every value followed by
  a space, each row ending " \\n").

The ".om" files the stand-in ATC (tests/support/fake_atc.py) writes are the ONNX model copied; the
stand-in runtime runs them with onnxruntime on the CPU.
"""
