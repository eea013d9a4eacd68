"""What holds a GPU back: a throttle that costs clock, a busy link, or its side of the roofline's ridge."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from gpuwatch.live.assessment import Bound, BoundKind, Provenance, RooflinePosition
from gpuwatch.model.catalog import GpuSpec
from gpuwatch.model.roofline import place_workload
from gpuwatch.telemetry.sample import THROTTLING_REASONS, GpuSample, reason_names

if TYPE_CHECKING:
    from gpuwatch.model.throughput import ThroughputEstimate

#: a link this busy, and busier than DRAM and the tensor pipes, bounds the workload
INTERCONNECT_BOUND_RATIO = 0.5
#: a power cap (or sync boost) that pulls the SM clock this far under spec boost is the bound
POWER_CAP_BOUND_RATIO = 0.10
_POWER_REASONS = frozenset({"sw_power_cap", "sync_boost"})
#: slowdowns that cut memory clocks too, so they bound memory-bound work as well
_HARDWARE_REASONS = frozenset({"hw_slowdown", "hw_power_brake"})


def bound(
    sample: GpuSample,
    gpu: GpuSpec,
    r: RooflinePosition,
    idle: bool,
    at_live: ThroughputEstimate | None,
) -> Bound:
    if idle:
        return Bound(BoundKind.IDLE, detail="idle")
    throttle = throttle_of(sample, gpu)
    bound = _roofline_bound(sample, gpu, r, at_live)
    # a lower SM clock bounds compute-bound work; memory-bound work (a decode) stays memory-bound and
    # carries the throttle as a warning, unless the slowdown is the hardware's (it cuts every clock)
    binds = bound.kind in (BoundKind.COMPUTE, BoundKind.UNKNOWN) or (
        throttle is not None and bool(set(throttle.reasons) & _HARDWARE_REASONS)
    )
    if throttle is not None and throttle.holding_back and binds:
        return throttle.bound()
    if throttle is not None:  # active but not what holds the work back (a power-cap dip, a memory bound)
        bound = replace(
            bound,
            throttle_reasons=throttle.reasons,
            clock_loss_ratio=throttle.loss_ratio,
            detail=f"{bound.detail}; {throttle.text}",
        )
    return bound


def _roofline_bound(
    sample: GpuSample, gpu: GpuSpec, r: RooflinePosition, at_live: ThroughputEstimate | None
) -> Bound:
    link = _link_ratio(sample, gpu)
    mem_ratio = (
        r.attained_bandwidth_bytes_s / r.peak_bandwidth_bytes_s if r.attained_bandwidth_bytes_s else 0.0
    )
    cmp_ratio = r.attained_flops / r.current_peak_flops if r.attained_flops and r.current_peak_flops else 0.0
    if link is not None and link[0] >= INTERCONNECT_BOUND_RATIO and link[0] >= max(mem_ratio, cmp_ratio):
        return Bound(
            BoundKind.INTERCONNECT, detail=f"interconnect bound: {link[1]} at {link[0]:.0%} of its peak"
        )
    if r.bandwidth_provenance == r.flops_provenance == Provenance.MODELLED and at_live is not None:
        # the model's own verdict: it weighs the engine's effective ceilings, not the datasheet's
        kind = BoundKind(str(at_live.bound))
    elif r.arithmetic_intensity_flop_per_byte is None:
        return Bound(BoundKind.UNKNOWN, detail="no workload declared and no GPM or engine readings")
    else:
        # the model's roofline placement at live clocks (a slower SM clock moves the ridge left): one
        # byte at the attained intensity, against the current compute roof and the card's bandwidth
        placed = place_workload(
            gpu,
            r.dtype,
            flops=r.arithmetic_intensity_flop_per_byte,
            dram_bytes=1.0,
            peak_flops_override=r.current_peak_flops,
            bandwidth_bytes_s=r.peak_bandwidth_bytes_s,
        )
        kind = BoundKind(str(placed.bound))
    if kind == BoundKind.INTERCONNECT:
        return Bound(kind, detail="interconnect bound (modelled)")
    if kind == BoundKind.MEMORY:
        used = f"{mem_ratio:.0%} of " if r.attained_bandwidth_bytes_s else ""
        return Bound(
            BoundKind.MEMORY,
            detail=(
                f"memory-bandwidth bound ({r.bandwidth_provenance.value}): {used}"
                f"{r.peak_bandwidth_bytes_s / 1e9:.0f} GB/s, {1 - mem_ratio:.0%} headroom"
            ),
        )
    return Bound(
        BoundKind.COMPUTE,
        detail=(
            f"compute bound ({r.flops_provenance.value}): {cmp_ratio:.0%} of "
            f"{r.current_peak_flops / 1e12:.0f} TFLOP/s {r.dtype}"
        ),
    )


@dataclass(frozen=True)
class Throttle:
    reasons: tuple[str, ...]
    #: 1 - SM clock / the clock the workload runs at unthrottled: the rated boost clock the roofline's
    #: compute roof assumes (NVML's max is an opportunistic boost a loaded card rarely holds)
    loss_ratio: float | None
    holding_back: bool
    text: str

    def bound(self) -> Bound:
        return Bound(BoundKind.THROTTLED, self.reasons, self.loss_ratio, self.text)


def throttle_of(sample: GpuSample, gpu: GpuSpec | None) -> Throttle | None:
    """The active throttle reasons, and whether they are what holds the card back.

    Heat and hardware slowdown always are. A power cap is only when it pulls the SM clock at least
    POWER_CAP_BOUND_RATIO under the spec boost clock: a datacenter card doing dense GEMMs sits at its
    cap a few % under boost all day, and calling that "throttled" would hide its compute bound.
    """
    reasons = tuple(reason_names((sample.clock_event_reasons or 0) & THROTTLING_REASONS))
    if not reasons:
        return None
    loss = None
    text = f"throttled by {', '.join(reasons)}"
    reference_hz = workload_clock_hz(sample, gpu)
    if sample.sm_clock_hz is not None and reference_hz:
        loss = max(0.0, 1.0 - sample.sm_clock_hz / reference_hz)
        mhz = f"{sample.sm_clock_hz / 1e6:.0f} of {reference_hz / 1e6:.0f} MHz"
        text += f": SM clock {mhz}, {loss:.0%} lost"
    holding = bool(set(reasons) - _POWER_REASONS)
    if not holding:
        holding = (
            gpu is None
            or sample.sm_clock_hz is None
            or sample.sm_clock_hz < (1 - POWER_CAP_BOUND_RATIO) * gpu.boost_clock_hz
        )
    return Throttle(reasons, loss, holding, text)


def workload_clock_hz(sample: GpuSample, gpu: GpuSpec | None) -> float | None:
    """The SM clock the workload runs at unthrottled: the rated boost clock (what the compute roof
    assumes), never above NVML's maximum; NVML's maximum when the card is not in the catalog."""
    if gpu is not None and gpu.boost_clock_hz:
        return min(gpu.boost_clock_hz, sample.sm_clock_max_hz or gpu.boost_clock_hz)
    return sample.sm_clock_max_hz


def _link_ratio(sample: GpuSample, gpu: GpuSpec) -> tuple[float, str] | None:
    """The busiest link's share of its one-direction peak, and its name."""
    best: tuple[float, str] | None = None
    pcie = [v for v in (sample.pcie_tx_bytes_s, sample.pcie_rx_bytes_s) if v is not None]
    if pcie and gpu.pcie_bytes_s > 0:
        best = (max(pcie) / gpu.pcie_bytes_s, "PCIe")
    if sample.gpm is not None and gpu.nvlink_bytes_s:
        nv = [v for v in (sample.gpm.nvlink_tx_bytes_s, sample.gpm.nvlink_rx_bytes_s) if v is not None]
        if nv:
            ratio = max(nv) / (gpu.nvlink_bytes_s / 2)
            if best is None or ratio > best[0]:
                best = (ratio, "NVLink")
    return best
