"""Accelerator families: what the device plugins advertise, one entry per family.

An Ascend `.om` is built for one chip (`atc --soc_version=Ascend310P3`) and runs only there, so
inference pods select the chip label the Ascend device plugin puts on nodes, ask for the family's
resource, and tolerate the taint NPU nodes usually carry (the plugin's own DaemonSet tolerates it).
Sources: Ascend/mind-cluster device plugin (resource names, `accelerator` and
`node.kubernetes.io/npu.chip.name` labels, its DaemonSet's tolerations); see ../shared/REFERENCE.md.
Adding a family (a new Atlas generation) is one entry in FAMILIES.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ACCELERATOR_LABEL = "accelerator"
CHIP_LABEL = "node.kubernetes.io/npu.chip.name"
NVIDIA_GPU = "nvidia.com/gpu"


@dataclass(frozen=True)
class Placement:
    """Where a pod goes and what it asks for: extended resources, node labels, tolerations."""

    resources: dict[str, int | str] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict, ...] = ()


@dataclass(frozen=True)
class AscendFamily:
    name: str  # 310P, 910, 310
    soc_prefix: str  # ATC soc versions of this family start with it: Ascend310P3, Ascend910B3, ...
    resource: str  # what the device plugin advertises
    accelerator: str  # its `accelerator` node label

    @property
    def taint(self) -> dict:
        return {"key": self.resource, "operator": "Exists", "effect": "NoSchedule"}


# Longest prefix first: Ascend310P3 is a 310P, not a 310.
FAMILIES = (
    AscendFamily("310P", "Ascend310P", "huawei.com/Ascend310P", "huawei-Ascend310P"),
    AscendFamily("910", "Ascend910", "huawei.com/Ascend910", "huawei-Ascend910"),  # 910, 910B*, 910_93*
    AscendFamily("310", "Ascend310", "huawei.com/Ascend310", "huawei-Ascend310"),
)


class UnknownChip(ValueError):
    pass


def ascend_family(soc_version: str) -> AscendFamily:
    for family in FAMILIES:
        if soc_version.startswith(family.soc_prefix):
            return family
    known = ", ".join(f"{f.soc_prefix}*" for f in FAMILIES)
    raise UnknownChip(f"convert.socVersion {soc_version!r} names no known Ascend chip family ({known})")


def chip_name(soc_version: str) -> str:
    """The device plugin's chip label value: Ascend310P3 -> 310P3, Ascend910B3 -> 910B3."""
    return soc_version.removeprefix("Ascend")


def ascend_node(soc_version: str) -> Placement:
    """The nodes with this chip, without asking for an NPU (ATC runs there, on the CPU)."""
    family = ascend_family(soc_version)
    selector = {ACCELERATOR_LABEL: family.accelerator, CHIP_LABEL: chip_name(soc_version)}
    return Placement({}, selector, (family.taint,))


def ascend_npu(soc_version: str) -> Placement:
    """One NPU of this chip."""
    node = ascend_node(soc_version)
    return Placement({ascend_family(soc_version).resource: 1}, node.node_selector, node.tolerations)


def whole_npu(resources) -> str | None:
    """The family resource (whole NPUs) among a pod's resources, if it asks for one; not a vNPU slice
    such as huawei.com/Ascend310P-2c (Volcano annotates whole-NPU pods only: mind-cluster's static
    vNPU docs say to drop the ASCEND_VISIBLE_DEVICES fieldRef there)."""
    names = {family.resource for family in FAMILIES}
    return next((name for name in resources if name in names), None)


def nvidia_gpu(_soc_version: str = "") -> Placement:
    return Placement({NVIDIA_GPU: 1})
