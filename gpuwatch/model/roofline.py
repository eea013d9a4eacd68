"""Roofline: compute and memory ceilings per GPU and dtype, and where a workload sits under them.

A step takes at least max(compute time, DRAM time, interconnect time); whichever is largest is
what bounds it. Ceilings are the DENSE spec peaks from the catalog (no sparsity), so a "compute"
bound means "at the datasheet peak", not at what a real kernel reaches (see engine_profiles).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gpuwatch.model import elementwise as ew
from gpuwatch.model.catalog import GpuSpec
from gpuwatch.model.elementwise import ArrayLike
from gpuwatch.model.errors import ModelInputError

#: Bound names, index-aligned with the codes :func:`bound_codes` returns.
BOUND_NAMES = ("memory", "compute", "interconnect")


as_result = ew.result


def peak_flops(gpu: GpuSpec, dtype: str) -> float:
    """Dense peak for a dtype; a one-line ModelInputError naming the dtypes the GPU has."""
    try:
        return gpu.peak(dtype)
    except KeyError as exc:
        raise ModelInputError(str(exc.args[0])) from None


def ridge_point_flop_per_byte(gpu: GpuSpec, dtype: str = "fp16") -> float:
    """Arithmetic intensity above which the GPU is compute-bound: peak FLOP/s over DRAM bytes/s."""
    return peak_flops(gpu, dtype) / gpu.memory_bandwidth_bytes_s


def attainable_flops(
    gpu: GpuSpec,
    dtype: str,
    intensity_flop_per_byte: ArrayLike,
    *,
    peak_flops_override: ArrayLike | None = None,
    bandwidth_bytes_s: ArrayLike | None = None,
) -> ArrayLike:
    """min(peak, intensity x bandwidth). Overrides take e.g. a clock-scaled live peak."""
    peak = peak_flops(gpu, dtype) if peak_flops_override is None else peak_flops_override
    bw = gpu.memory_bandwidth_bytes_s if bandwidth_bytes_s is None else bandwidth_bytes_s
    intensity = ew.floats(intensity_flop_per_byte)
    if ew.anywhere(intensity < 0):
        raise ModelInputError("arithmetic intensity must be >= 0 FLOP/byte")
    return as_result(ew.minimum(ew.floats(peak), intensity * ew.floats(bw)))


@dataclass(frozen=True)
class Ceiling:
    dtype: str
    peak_flops: float
    bandwidth_bytes_s: float
    ridge_flop_per_byte: float


def ceilings(gpu: GpuSpec) -> tuple[Ceiling, ...]:
    """One compute ceiling per dtype the GPU has, all under the same DRAM roof."""
    bw = gpu.memory_bandwidth_bytes_s
    return tuple(Ceiling(dtype, peak, bw, peak / bw) for dtype, peak in gpu.peak_flops.items())


def bound_codes(compute_s: ArrayLike, memory_s: ArrayLike, interconnect_s: ArrayLike) -> Any:
    """Index into BOUND_NAMES of the largest time; ties go to memory, then compute (an int for scalars)."""
    return ew.argmax_first((memory_s, compute_s, interconnect_s))


def bound_names(codes: Any) -> Any:
    """ "memory" | "compute" | "interconnect" for a code; an array of them for an array of codes."""
    if isinstance(codes, int):
        return BOUND_NAMES[codes]
    names = ew.numpy().asarray(BOUND_NAMES)[codes]
    return str(names) if names.ndim == 0 else names


@dataclass(frozen=True)
class RooflinePlacement:
    intensity_flop_per_byte: ArrayLike  # flops / DRAM bytes
    attainable_flops: ArrayLike  # min(peak, AI x bandwidth)
    compute_s: ArrayLike  # flops / peak
    memory_s: ArrayLike  # DRAM bytes / bandwidth
    interconnect_s: ArrayLike  # interconnect bytes / link bandwidth
    step_s: ArrayLike  # max of the three: the resources overlap, the slowest one sets the pace
    bound: Any  # "memory" | "compute" | "interconnect" (an array of them for array inputs)
    ridge_flop_per_byte: ArrayLike


def place_workload(
    gpu: GpuSpec,
    dtype: str,
    *,
    flops: ArrayLike,
    dram_bytes: ArrayLike,
    interconnect_bytes: ArrayLike = 0.0,
    interconnect_bytes_s: ArrayLike | None = None,
    peak_flops_override: ArrayLike | None = None,
    bandwidth_bytes_s: ArrayLike | None = None,
) -> RooflinePlacement:
    """Where one step of a workload (its FLOPs, DRAM bytes, interconnect bytes) sits on the roofline.

    ``interconnect_bytes_s`` defaults to the GPU's NVLink (per direction) or else its PCIe link.
    """
    peak = ew.floats(peak_flops(gpu, dtype) if peak_flops_override is None else peak_flops_override)
    bw = ew.floats(gpu.memory_bandwidth_bytes_s if bandwidth_bytes_s is None else bandwidth_bytes_s)
    if interconnect_bytes_s is None:
        interconnect_bytes_s = gpu.nvlink_bytes_s / 2 if gpu.nvlink_bytes_s else gpu.pcie_bytes_s
    f = ew.floats(flops)
    b = ew.floats(dram_bytes)
    ib = ew.floats(interconnect_bytes)
    if ew.anywhere(f < 0) or ew.anywhere(b < 0) or ew.anywhere(ib < 0):
        raise ModelInputError("flops, dram_bytes and interconnect_bytes must be >= 0")
    compute_s = ew.divide(f, peak)
    memory_s = ew.divide(b, bw)
    link_s = ew.divide(ib, ew.floats(interconnect_bytes_s))
    intensity = ew.divide_where(b > 0, f, b, math.inf)
    codes = bound_codes(compute_s, memory_s, link_s)
    return RooflinePlacement(
        intensity_flop_per_byte=as_result(intensity),
        attainable_flops=as_result(ew.minimum(peak, intensity * bw)),
        compute_s=as_result(compute_s),
        memory_s=as_result(memory_s),
        interconnect_s=as_result(link_s),
        step_s=as_result(ew.maximum(ew.maximum(compute_s, memory_s), link_s)),
        bound=bound_names(codes),
        ridge_flop_per_byte=as_result(ew.divide(peak, bw)),
    )
