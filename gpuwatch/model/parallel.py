"""Multi-GPU arithmetic: links, ring all-reduce, tensor-parallel limit, pipeline bubble, GPUs to hold a model.

Link bandwidths are per GPU and ONE direction: a ring all-reduce step sends to one neighbour while
receiving from the other, so a full-duplex link's one-way rate is what limits it. Spec sheets often
quote both directions together (H100 NVLink "900 GB/s" = 450 GB/s each way).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gpuwatch.model import elementwise as ew
from gpuwatch.model import memory
from gpuwatch.model.catalog import GpuSpec
from gpuwatch.model.errors import ModelInputError
from gpuwatch.model.llm import ModelSpec
from gpuwatch.model.quant import QuantFormat
from gpuwatch.model.roofline import ArrayLike, as_result, peak_flops

#: PCIe transfer rate per lane (GT/s); gen3+ use 128b/130b encoding.
_PCIE_GT_S = {3: 8.0, 4: 16.0, 5: 32.0, 6: 64.0}
#: One-way latency of a GPU-to-GPU hop. PCIe through the root complex: several µs (NCCL measures ~5-10 µs
#: small-message all-reduce latency on PCIe boxes); NVLink ~1 µs; kernel TCP/RoCE Ethernet tens of µs.
PCIE_LATENCY_S = 10e-6
NVLINK_LATENCY_S = 1e-6
ETHERNET_LATENCY_S = 20e-6


@dataclass(frozen=True)
class Link:
    kind: str  # "pcie" | "nvlink" | "ethernet" | "custom"
    bandwidth_bytes_s: float  # per GPU, one direction
    latency_s: float  # per message hop
    description: str


def pcie_link(gen: int = 4, lanes: int = 16, latency_s: float = PCIE_LATENCY_S) -> Link:
    if gen not in _PCIE_GT_S or lanes not in (1, 2, 4, 8, 16):
        raise ModelInputError(f"PCIe gen {gen} x{lanes} is not a PCIe link; use gen 3-6 and x1/x2/x4/x8/x16")
    bw = _PCIE_GT_S[gen] * 1e9 * lanes / 8 * (128 / 130)
    return Link(
        "pcie", bw, latency_s, f"PCIe {gen}.0 x{lanes} ({bw / 1e9:.1f} GB/s/dir, {latency_s * 1e6:g} µs)"
    )


def nvlink_link(gpu: GpuSpec, latency_s: float = NVLINK_LATENCY_S) -> Link:
    total = gpu.nvlink_bytes_s or getattr(gpu, "nvlink_bridge_bytes_s", None)
    if not total:
        raise ModelInputError(f"{gpu.id} has no NVLink; use --link pcie or ethernet")
    bw = total / 2
    return Link("nvlink", bw, latency_s, f"NVLink ({bw / 1e9:.0f} GB/s/dir, {latency_s * 1e6:g} µs)")


def ethernet_link(gbit_s: float = 100.0, latency_s: float = ETHERNET_LATENCY_S) -> Link:
    if gbit_s <= 0:
        raise ModelInputError(f"Ethernet speed must be > 0 Gbit/s, got {gbit_s}")
    bw = gbit_s * 1e9 / 8
    return Link(
        "ethernet", bw, latency_s, f"Ethernet {gbit_s:g} Gbit/s ({bw / 1e9:.2f} GB/s, {latency_s * 1e6:g} µs)"
    )


def default_link(gpu: GpuSpec) -> Link:
    """NVLink where the GPU has it, else the PCIe generation and lanes it has."""
    if gpu.nvlink_bytes_s:
        return nvlink_link(gpu)
    return pcie_link(gpu.pcie_gen, gpu.pcie_lanes)


def parse_link(text: str, gpu: GpuSpec) -> Link:
    """CLI form: "pcie", "pcie4", "pcie5x8", "nvlink", "ethernet", "ethernet:25" (Gbit/s)."""
    t = text.strip().lower()
    if t == "nvlink":
        return nvlink_link(gpu)
    m = re.fullmatch(r"pcie(\d)?(?:x(\d+))?", t)
    if m:
        return pcie_link(int(m.group(1) or gpu.pcie_gen), int(m.group(2) or gpu.pcie_lanes))
    m = re.fullmatch(r"ethernet(?::(\d+(?:\.\d+)?))?", t)
    if m:
        return ethernet_link(float(m.group(1) or 100.0))
    raise ModelInputError(
        f"unknown link {text!r}; use pcie, pcie4, pcie5x8, nvlink, ethernet or ethernet:GBIT"
    )


def allreduce_time_s(message_bytes: ArrayLike, n_gpus: ArrayLike, link: Link) -> ArrayLike:
    """Ring all-reduce: 2(n-1)/n x bytes over the link plus 2(n-1) hop latencies; 0 for one GPU."""
    n = ew.floats(n_gpus)
    if ew.anywhere(n < 1):
        raise ModelInputError("GPU count must be >= 1")
    b = ew.floats(message_bytes)
    t = 2 * (n - 1) / n * b / link.bandwidth_bytes_s + 2 * (n - 1) * link.latency_s
    return as_result(t)


def pipeline_bubble_ratio(stages: ArrayLike, microbatches: ArrayLike) -> ArrayLike:
    """Idle fraction of a GPipe/1F1B schedule: (p-1)/(m+p-1)."""
    p = ew.floats(stages)
    m = ew.floats(microbatches)
    if ew.anywhere(p < 1) or ew.anywhere(m < 1):
        raise ModelInputError("pipeline stages and micro-batches must be >= 1")
    return as_result((p - 1) / (m + p - 1))


def max_tensor_parallel_degree(
    gpu: GpuSpec,
    link: Link,
    *,
    hidden_size: int,
    tokens: ArrayLike = 1,
    dtype: str = "fp16",
    activation_bytes: float = 2.0,
    peak_flops_override: float | None = None,
    exact_ring: bool = True,
    n_max: int = 256,
) -> Any:
    """Largest n whose per-layer all-reduce time stays under the per-GPU matmul time of that layer.

    Per token and layer: 24 x hidden^2 FLOPs (12 h^2 weights: QKV+O = 4h^2, MLP 8h^2, 2 FLOP/MAC),
    split n ways, at the dense peak; and two all-reduces (after attention and after the MLP) of
    hidden x activation_bytes each. ``exact_ring`` uses the ring factor 2(n-1)/n and the link latency;
    ``exact_ring=False`` uses its large-n limit 2 and no latency (the back-of-envelope form).
    Returns 1 when even two GPUs are communication-bound (an int; an array of them for array ``tokens``).
    The degrees are searched as one array, so this imports numpy.
    """
    np = ew.numpy()
    peak = peak_flops(gpu, dtype) if peak_flops_override is None else peak_flops_override
    tok = np.asarray(tokens, float)
    n = np.arange(1, n_max + 1, dtype=float).reshape((-1,) + (1,) * tok.ndim)
    compute_s = 24.0 * hidden_size**2 * tok / (n * peak)
    message = hidden_size * activation_bytes * tok
    if exact_ring:
        comm_s = 2 * np.asarray(allreduce_time_s(message, n, link))
    else:
        comm_s = 2 * 2 * message / link.bandwidth_bytes_s * (n > 1)
    ok = comm_s <= compute_s
    # largest n such that every degree up to n is fine (comm/compute grows with n)
    best = np.where(ok.all(axis=0), n_max, np.argmin(ok, axis=0))
    best = np.maximum(best, 1)
    return int(best) if np.ndim(best) == 0 else best


def gpus_to_hold(
    model: ModelSpec,
    quant: QuantFormat | str,
    gpu: GpuSpec,
    *,
    batch: ArrayLike = 1,
    context_tokens: ArrayLike = 4096,
    kv_dtype: str = "fp16",
    reserve_ratio: float = memory.ALLOCATOR_RESERVE_RATIO,
) -> Any:
    """Fewest GPUs holding weights + KV cache (memory.inference_memory); 0 if none can."""
    breakdown = memory.inference_memory(model, quant, batch, context_tokens, kv_dtype=kv_dtype)
    return breakdown.gpus_needed(gpu, reserve_ratio=reserve_ratio)
