"""Where each stage's outputs live under a run's root (`<storage.uri>/<namespace>/<name>/`).

    model/model.onnx            simplified, self-contained ONNX (onnxruntime)
    model/model_bs<B>.om        Ascend models, one per batch size (target om)
    model/state_dict.pth        the weights as exported (only for backends that run the PyTorch model)
    model/convert.json          conversion record: parity, checksums, label offset (written last)
    shards/shard-<i>.pixels     uint8 NHWC crops of shard i
    shards/shard-<i>.json       its record: names, labels, failures, checksum, each image's checksum (written last)
    results/bs<B>/shard-<i>.tar ais_bench TXT files (<stem>_0.txt) of shard i at batch size B
    results/bs<B>/shard-<i>.json  timing and checksum of that tar (written last: the commit marker)
    results/reference/shard-<i>.tar/.json  the fidelity reference's results of a sampled shard, likewise
    result_bs<B>.json           accuracy in the seed's vision_metric format
    report.json                 everything else: counts, failures, throughput, checksums, timings

A marker written last makes each unit of work visible only once complete, so a reader never sees
half a shard and a re-run replaces a unit as a whole.
"""

from __future__ import annotations


def root(storage_uri: str, namespace: str, name: str) -> str:
    return f"{storage_uri.rstrip('/')}/{namespace}/{name}"


CONVERT_RECORD = "model/convert.json"
ONNX_MODEL = "model/model.onnx"
STATE_DICT = "model/state_dict.pth"
REPORT = "report.json"


def om_model(batch_size: int) -> str:
    return f"model/model_bs{batch_size}.om"


def shard_pixels(index: int) -> str:
    return f"shards/shard-{index:05d}.pixels"


def shard_record(index: int) -> str:
    return f"shards/shard-{index:05d}.json"


def result_tar(batch_size: int, index: int) -> str:
    return f"results/bs{batch_size}/shard-{index:05d}.tar"


def result_marker(batch_size: int, index: int) -> str:
    return f"results/bs{batch_size}/shard-{index:05d}.json"


def reference_tar(index: int) -> str:
    return f"results/reference/shard-{index:05d}.tar"


def reference_marker(index: int) -> str:
    return f"results/reference/shard-{index:05d}.json"


def accuracy_json(batch_size: int) -> str:
    return f"result_bs{batch_size}.json"


# What a run root holds: everything under model/, shards/ and results/, and the published files. A
# folder is taken for a run root only when it holds one of RECORDS (cleanup deletes nothing else).
RUN_KEY = r"(model|shards|results)/.+|result_bs[0-9]+\.json|report\.json"
RECORDS = r"model/convert\.json|shards/shard-[0-9]+\.json|report\.json"
