"""A stand-in for Ascend's ais_bench, for tests only: no NPU can run here.

The ".om" files the stand-in ATC writes are the ONNX model copied, and this InferSession runs them
with onnxruntime on the CPU, keeping ais_bench's interface: InferSession(device_id, model_path),
infer(feeds, mode), summary().exec_time_list of (start, end) milliseconds, finalize().
"""
