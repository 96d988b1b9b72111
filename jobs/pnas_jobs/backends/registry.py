"""The backend registry: everything pnas-eval knows about an inference backend, in one entry.

An entry says which devices the backend runs on, which model artifact it needs from convert, which
jobs image carries its runtime, where its pods go and what they ask for (per device), whether it
sizes its CPU threads to the pod, and where its session class lives (imported only when used, so
this module stays light enough for the operator). The spec's choices, the cross-field rules, the
planner, the Job builders and the infer stage all read these entries: adding a backend is one
module under `backends/` and one entry here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from pnas_jobs.accelerators import Placement, ascend_npu, nvidia_gpu

CPU = "cpu"


def _anywhere(_soc_version: str = "") -> Placement:
    return Placement()


@dataclass(frozen=True)
class Device:
    name: str
    placement: Callable[[str], Placement] = _anywhere  # the soc version -> default placement of a pod


@dataclass(frozen=True)
class BackendEntry:
    name: str
    devices: tuple[Device, ...]  # the first is the default
    artifact: str  # what it runs, made by convert: "onnx" | "om" | "state_dict" (the PyTorch model's weights)
    image: str  # the jobs image with its runtime: "jobs" | "ascend" (operator settings name the images)
    session: str  # "module:callable" (path, device, batch_size, threads, device_id) -> a Session
    cpu_threads: bool = False  # sizes its intra-op threads to the CPUs the pod was given
    reference: bool = False  # fp32 with the run's own weights: may serve as the fidelity reference

    @property
    def device_names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.devices)

    def device(self, name: str | None) -> Device:
        return next((d for d in self.devices if d.name == name), self.devices[0]) if name else self.devices[0]

    def open(self, *args, **kwargs):
        module, _, attribute = self.session.partition(":")
        return getattr(importlib.import_module(module), attribute)(*args, **kwargs)


BACKENDS: tuple[BackendEntry, ...] = (
    BackendEntry(
        name="onnxruntime",
        devices=(Device(CPU), Device("cuda", nvidia_gpu), Device("tensorrt", nvidia_gpu)),
        artifact="onnx",
        image="jobs",
        session="pnas_jobs.backends.ort:OrtBackend",
        cpu_threads=True,
    ),
    BackendEntry(
        name="ais_bench",
        devices=(Device("npu", ascend_npu),),
        artifact="om",
        image="ascend",
        session="pnas_jobs.backends.aisbench:open_ais_bench",
    ),
    BackendEntry(
        name="pytorch",
        devices=(Device(CPU), Device("cuda", nvidia_gpu)),
        artifact="state_dict",
        image="jobs",
        session="pnas_jobs.backends.pytorch:TorchBackend",
        cpu_threads=True,
        reference=True,
    ),
)

BY_NAME = {b.name: b for b in BACKENDS}
NAMES = tuple(BY_NAME)
DEFAULT = NAMES[0]
DEVICES = tuple(dict.fromkeys(d for b in BACKENDS for d in b.device_names))
# what convert can build, in the order of its default (the first)
ARTIFACTS_BUILT = tuple(dict.fromkeys(b.artifact for b in BACKENDS if b.artifact != "state_dict"))
REFERENCES = tuple(b.name for b in BACKENDS if b.reference)
ARTIFACT_IMAGES = {b.artifact: b.image for b in BACKENDS}  # building an om needs ATC: the Ascend image


def get(name: str) -> BackendEntry:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}: one of {', '.join(NAMES)}") from None


def placement(backend: str, device: str | None, soc_version: str) -> Placement:
    """The default placement of one inference pod; the spec's explicit values override it."""
    return get(backend).device(device).placement(soc_version)
