"""What the faces show: the live assessment of one snapshot.

CONTRACT between live (producer) and tui/exporter (consumers): add fields, do not rename.
Every figure that can be estimated carries a Provenance so that no face presents an
estimate as a measurement.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum


class Provenance(StrEnum):
    MEASURED = "measured"  # GPM DRAM/tensor activity (Hopper+), NVML energy counter
    #: the serving engine's own per-GPU FLOP and byte counters (vLLM/SGLang --enable-mfu-metrics):
    #: computed from model shapes and the batches it ran, so better than ours, not a measurement
    ENGINE_ESTIMATED = "engine-estimated"
    DERIVED = "derived"  # engine tokens/s x the model's FLOPs and bytes per token
    MODELLED = "modelled"  # declared workload projected on the roofline
    UNKNOWN = "unknown"


#: best first; a figure combined from several is only as good as its weakest input
_STRENGTH = (
    Provenance.MEASURED,
    Provenance.ENGINE_ESTIMATED,
    Provenance.DERIVED,
    Provenance.MODELLED,
    Provenance.UNKNOWN,
)


def weakest(provenances: Iterable[Provenance]) -> Provenance:
    """The provenance of a figure combined from several (UNKNOWN when there are none)."""
    return max(provenances, key=_STRENGTH.index, default=Provenance.UNKNOWN)


class BoundKind(StrEnum):
    MEMORY = "memory"
    COMPUTE = "compute"
    INTERCONNECT = "interconnect"
    THROTTLED = "throttled"  # held back by power cap or thermal slowdown
    IDLE = "idle"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class RooflinePosition:
    peak_bandwidth_bytes_s: float
    peak_flops: float  # compute ceiling for the workload's dtype, at spec clocks
    current_peak_flops: float  # compute ceiling scaled by live SM clock / spec boost clock
    ridge_flop_per_byte: float
    attained_bandwidth_bytes_s: float | None
    attained_flops: float | None
    arithmetic_intensity_flop_per_byte: float | None
    attainable_flops: float | None  # min(current compute roof, AI x bandwidth)
    headroom_ratio: float | None  # attained / attainable, 0..1
    bandwidth_provenance: Provenance
    flops_provenance: Provenance
    dtype: str = "fp16"
    #: the engine's own estimate (MFU counters) where it publishes one, kept beside a GPM measurement
    #: so that the two can be held against each other; the same figures as above when GPM is absent
    engine_flops: float | None = None
    engine_bandwidth_bytes_s: float | None = None
    #: engine-estimated / GPM-measured, where both exist (1.0: they agree); None otherwise
    engine_vs_measured_flops_ratio: float | None = None
    engine_vs_measured_bandwidth_ratio: float | None = None


@dataclass(frozen=True)
class Bound:
    kind: BoundKind
    throttle_reasons: tuple[str, ...] = ()  # names from telemetry.sample.reason_names
    clock_loss_ratio: float | None = None  # 1 - live SM clock / the clock the workload runs at, throttled
    detail: str = ""  # one sentence for the faces


@dataclass(frozen=True)
class CostSplit:
    capex_usd_per_h: float
    power_usd_per_h: float
    hosting_usd_per_h: float

    @property
    def total_usd_per_h(self) -> float:
        return self.capex_usd_per_h + self.power_usd_per_h + self.hosting_usd_per_h


@dataclass(frozen=True)
class Alternative:
    gpu_id: str
    gpu_name: str
    tokens_per_s: float | None  # None: the workload does not fit this card
    usd_per_mtok: float | None
    fits: bool


@dataclass(frozen=True)
class CostView:
    """Per-GPU cost. ``live_usd_per_mtok`` and ``tokens_per_joule`` are as good as the GPU's tokens/s
    (``GpuAssessment.tokens_per_s_provenance``: modelled tokens make them estimates too)."""

    live_usd_per_mtok: float | None  # live power x prices / live tokens/s
    projected_usd_per_mtok: float | None  # roofline model of the declared workload
    tokens_per_joule: float | None
    cost_per_hour: CostSplit
    cloud_usd_per_mtok: float | None
    alternatives: tuple[Alternative, ...] = ()
    #: the power in cost_per_hour: MEASURED (live board power) or MODELLED (TDP: no power reading)
    power_provenance: Provenance = Provenance.UNKNOWN
    #: idle burn over the recent window (gpuwatch/live/idle_burn.py), from the engines' token counters
    #: and the energy counter; None where no engine reading says when the card served
    burn: IdleBurn | None = None
    #: concurrent requests on this GPU when tokens_per_joule was taken (the engines' running gauge)
    concurrency: float | None = None


@dataclass(frozen=True)
class IdleBurn:
    """$/1M tokens while serving vs overall (idle hours included), idle power and share, per request."""

    window_s: float
    idle_ratio: float | None  # share of the window with no tokens generated
    idle_power_w: float | None
    usd_per_mtok_serving: float | None  # the hours spent serving, over the tokens made in them
    usd_per_mtok_overall: float | None  # every hour of the window, idle ones included
    joules_per_request: float | None
    usd_per_k_requests: float | None


@dataclass(frozen=True)
class Alert:
    kind: str  # "throttle_started", "throttle_ended", "temperature_near_slowdown", "throughput_below_model"
    gpu_index: int
    severity: str  # "info" | "warning" | "critical"
    message: str
    timestamp_s: float


@dataclass(frozen=True)
class GpuAssessment:
    index: int
    gpu_id: str | None  # catalog id, None when the card is not in the catalog
    roofline: RooflinePosition | None
    bound: Bound
    cost: CostView | None
    tokens_per_s: float | None
    tokens_per_s_provenance: Provenance
    modelled_tokens_per_s: float | None = None
    #: the power cap gpuwatch/live/power_advice.py advises from this poll, once per poll for both faces
    advised_power_limit_w: float | None = None
    #: a bounded word for the outcome (gpuwatch.live.power_advice.ADVICE_KINDS) and the sentence behind it
    power_advice_kind: str = "unknown"
    power_advice_reason: str = ""
    #: tokens/s given up at the advised cap, 0..1
    advised_speed_loss_ratio: float | None = None
    #: whether the declared workload fits this card's memory (None: no workload, or a card outside the
    #: catalog); a workload that cannot load gets no modelled tokens/s, roofline point or $/1M
    workload_fits: bool | None = None


@dataclass(frozen=True)
class BoxAssessment:
    timestamp_s: float
    gpus: tuple[GpuAssessment, ...]
    tokens_per_s: float | None
    usd_per_mtok: float | None
    tokens_per_joule: float | None
    alerts: tuple[Alert, ...] = field(default_factory=tuple)  # raised by THIS snapshot
    #: of tokens_per_s, usd_per_mtok and tokens_per_joule: the weakest of the GPUs' tokens/s
    tokens_per_s_provenance: Provenance = Provenance.UNKNOWN
