"""GPU catalog: sourced spec-sheet figures, looked up by NVML name, PCI id or short id.

CONTRACT (shared by every module): the GpuSpec field names below are fixed; add, do not rename.
Peak FLOP/s are DENSE (no sparsity). Dtype keys for ``peak_flops``:
  "fp16"     fp16/bf16 tensor, fp32 accumulate (what training and most engines use; GeForce is half rate)
  "fp16acc"  fp16 tensor with fp16 accumulate (GeForce full rate; equals "fp16" on datacenter parts)
  "bf16"     bf16 tensor, fp32 accumulate
  "fp8"      fp8 tensor (fp32 accumulate), absent where the chip has none
  "int8"     int8 tensor ops/s
  "fp32"     non-tensor fp32 (CUDA cores)
  "tf32"     tf32 tensor where known
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class GpuSpec:
    id: str  # short id, e.g. "rtx4090", "h100-sxm"
    name: str  # display name, e.g. "NVIDIA GeForce RTX 4090"
    vendor: str  # "nvidia" | "amd"
    architecture: str  # "ampere", "ada", "hopper", "blackwell", "cdna3"
    segment: str  # "geforce" | "datacenter" | "workstation"
    memory_bytes: int
    memory_type: str  # "GDDR6X", "HBM3", ...
    memory_bandwidth_bytes_s: float
    memory_bus_width_bits: int
    peak_flops: Mapping[str, float]  # dtype key -> dense FLOP/s (see module docstring)
    tdp_w: float
    boost_clock_hz: float  # spec boost clock the peak_flops assume
    pcie_gen: int
    pcie_lanes: int
    nvlink_bytes_s: float | None  # total (both directions) per GPU; None where no NVLink
    list_price_usd: float | None
    nvml_names: tuple[str, ...] = ()  # exact strings nvmlDeviceGetName returns
    pci_device_ids: tuple[int, ...] = ()  # e.g. 0x268410DE
    planning_only: bool = False  # True for non-NVIDIA parts (no NVML)
    #: field name (or dtype key for peak_flops) -> citation
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / 2**30

    @property
    def pcie_bytes_s(self) -> float:
        """One direction, after 128b/130b encoding (gen3+)."""
        per_lane_gt_s = {3: 8.0, 4: 16.0, 5: 32.0, 6: 64.0}.get(self.pcie_gen, 16.0)
        return per_lane_gt_s * 1e9 * self.pcie_lanes / 8 * (128 / 130)

    def peak(self, dtype: str) -> float:
        """Dense peak FLOP/s for a dtype key; KeyError names the dtypes this GPU has."""
        try:
            return self.peak_flops[dtype]
        except KeyError:
            raise KeyError(f"{self.id} has no {dtype!r} peak; known: {', '.join(self.peak_flops)}") from None
