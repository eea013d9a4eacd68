"""The power-cap advice for one running card, from what it shows: its board power, clock and limit
(NVML), the live bound (gpuwatch/live/bound.py) and its tokens/s (measured, derived or modelled).

The advice itself is the model's (gpuwatch/model/power_advice.py); this module decides what the live
readings say and says so: the bound and where it came from, whether the card is already capped, and
which objective the prices allow.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpuwatch.live.assessment import BoundKind, GpuAssessment, Provenance
from gpuwatch.model import cost
from gpuwatch.model.catalog import GpuSpec
from gpuwatch.model.cost import OwnershipCost
from gpuwatch.model.errors import ModelInputError
from gpuwatch.model.power import card_power
from gpuwatch.model.power_advice import PowerAdvice, activity_from_measurement, advise_power_limit
from gpuwatch.telemetry.sample import ClockEventReason, GpuSample

#: memory-controller busy share above which an unmodelled workload is taken as memory-bound
MEMORY_BUSY_BOUND_RATIO = 0.6
#: without capex (no GPU price) tokens/J is the objective, and at most this tokens/s may be given up
DEFAULT_MAX_SPEED_LOSS_RATIO = 0.05


@dataclass(frozen=True)
class LiveAdvice:
    """Advice for one GPU, or the reason there is none."""

    index: int
    advice: PowerAdvice | None
    reason: str  # why there is no advice, or where the bound came from
    bound_basis: str = ""
    tokens_per_s_provenance: Provenance = Provenance.UNKNOWN


def _bound(sample: GpuSample, g: GpuAssessment) -> tuple[str | None, str]:
    kind = g.bound.kind
    if kind in (BoundKind.MEMORY, BoundKind.COMPUTE):
        return kind.value, f"live bound ({g.bound.detail or kind.value})"
    if kind == BoundKind.IDLE:
        return None, "idle: nothing runs to advise a cap for"
    r = g.roofline
    if r is not None and r.arithmetic_intensity_flop_per_byte is not None:
        side = "memory" if r.arithmetic_intensity_flop_per_byte < r.ridge_flop_per_byte else "compute"
        return side, (
            f"arithmetic intensity {r.arithmetic_intensity_flop_per_byte:,.0f} FLOP/byte against the ridge "
            f"at {r.ridge_flop_per_byte:,.0f} ({r.flops_provenance.value})"
        )
    busy = sample.memory_controller_busy_ratio
    if busy is not None:
        side = "memory" if busy >= MEMORY_BUSY_BOUND_RATIO else "compute"
        return side, f"memory controller busy {busy:.0%} (no workload model: declare --workload for better)"
    return None, "the bound is unknown (no roofline position, no memory-controller reading)"


def advise_gpu(
    sample: GpuSample,
    g: GpuAssessment,
    spec: GpuSpec | None,
    prices: OwnershipCost,
    gpu_price_usd: float | None,
    *,
    power_w: float | None = None,
    objective: str = "usd_per_mtok",
    max_speed_loss_ratio: float | None = None,
    n_gpus: int = 1,
) -> LiveAdvice:
    """``power_w``: the board power to advise from (e.g. averaged over a minute), else the sample's."""
    if sample.lost or sample.stale:
        return LiveAdvice(sample.index, None, "the GPU is lost or its readings are stale")
    watts = power_w if power_w is not None else sample.power_w
    default = sample.power_limit_default_w or (spec.tdp_w if spec else None)
    floor = sample.power_limit_min_w
    if watts is None or default is None or floor is None:
        return LiveAdvice(sample.index, None, "the card reports no power reading or no power-limit range")
    bound, basis = _bound(sample, g)
    if bound is None:
        return LiveAdvice(sample.index, None, basis)
    capped = bool((sample.clock_event_reasons or 0) & ClockEventReason.SW_POWER_CAP)
    ratio = 1.0
    if capped and sample.sm_clock_hz and sample.sm_clock_max_hz:
        ratio = min(1.0, sample.sm_clock_hz / sample.sm_clock_max_hz)
    segment = spec.segment if spec else "datacenter"
    card = card_power(default, segment)
    try:
        activity = activity_from_measurement(card, watts, ratio)
    except ModelInputError as exc:
        return LiveAdvice(sample.index, None, str(exc))
    fixed_usd_h = 0.0
    share = prices.share(n_gpus)
    if share.capex_usd(gpu_price_usd) is not None:
        hourly = cost.cost_per_hour(share, gpu_capex_usd=gpu_price_usd, power_w=0.0)
        fixed_usd_h = float(hourly.capex_usd_per_h) + float(hourly.hosting_usd_per_h)
    elif objective == "usd_per_mtok":
        objective = "tokens_per_j"
        if max_speed_loss_ratio is None:
            max_speed_loss_ratio = DEFAULT_MAX_SPEED_LOSS_RATIO
        basis += f"; no GPU price: most tokens/J within {max_speed_loss_ratio:.0%} of the tokens/s"
    advice = advise_power_limit(
        card,
        activity=activity,
        bound=bound,
        min_limit_w=floor,
        tokens_per_s_at_default=g.tokens_per_s,
        fixed_usd_per_h=fixed_usd_h,
        electricity_usd_per_kwh=prices.electricity_usd_per_kwh,
        pue=prices.pue,
        objective=objective,
        max_speed_loss_ratio=max_speed_loss_ratio,
    )
    return LiveAdvice(sample.index, advice, advice.reason, basis, g.tokens_per_s_provenance)


#: what ``advice_kind`` says, a bounded set fit for a Prometheus label
ADVICE_KINDS = (
    "lower_cap",
    "keep_default",
    "idle",
    "stale",
    "no_power_reading",
    "unknown_bound",
    "no_advice",
)


def advice_kind(live: LiveAdvice) -> str:
    """One of :data:`ADVICE_KINDS` for the advice (or its absence)."""
    a = live.advice
    if a is not None:
        return "lower_cap" if a.advised_limit_w < a.default_limit_w - 0.5 else "keep_default"
    for text, kind in (
        ("idle", "idle"),
        ("stale", "stale"),
        ("no power reading", "no_power_reading"),
        ("bound is unknown", "unknown_bound"),
    ):
        if text in live.reason:
            return kind
    return "no_advice"
