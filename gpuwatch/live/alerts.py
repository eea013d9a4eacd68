"""Alerts the faces show, raised on transitions so that a face can notify once, not every poll.

Stateful across snapshots: each kind remembers per GPU whether it is active, and re-arms only
after the condition has cleared (with hysteresis for temperature, a hold time for throughput),
because a notification that flaps with every reading is one the user learns to ignore.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gpuwatch.live.assessment import Alert, GpuAssessment, Provenance
from gpuwatch.live.config import AlertThresholds
from gpuwatch.telemetry.sample import THROTTLING_REASONS, GpuSample, Snapshot, reason_names

#: reasons whose onset means the card is in trouble (cooling or power delivery), not merely at its cap
_CRITICAL_REASONS = frozenset({"hw_slowdown", "hw_thermal", "hw_power_brake"})
_THERMAL_REASONS = frozenset({"sw_thermal", "hw_thermal", "hw_slowdown"})


def slowdown_margin_c(sample: GpuSample) -> float | None:
    """Degrees left before thermal slowdown: NVML's margin where reported (Ada+ report margins,
    not temperatures), else slowdown threshold minus the current temperature."""
    if sample.slowdown_margin_c is not None:
        return sample.slowdown_margin_c
    if sample.slowdown_temperature_c is not None and sample.temperature_c is not None:
        return sample.slowdown_temperature_c - sample.temperature_c
    return None


@dataclass
class _GpuState:
    throttle_reasons: tuple[str, ...] = ()
    temperature_warned: bool = False
    shortfall_since_s: float | None = None
    shortfall_alerted: bool = False


class AlertTracker:
    """Feed it every snapshot in order; it returns the alerts that snapshot raises."""

    def __init__(self, thresholds: AlertThresholds) -> None:
        self.thresholds = thresholds
        self._state: dict[str, _GpuState] = {}  # keyed by UUID: indices can shift after a GPU is lost

    def update(self, snap: Snapshot, assessments: Sequence[GpuAssessment]) -> tuple[Alert, ...]:
        by_index = {a.index: a for a in assessments}
        alerts: list[Alert] = []
        for sample in snap.gpus:
            state = self._state.setdefault(sample.uuid or str(sample.index), _GpuState())
            if sample.lost:
                continue  # a lost card reads nothing; keep its state for when it returns
            alerts += self._throttle(snap.timestamp_s, sample, state)
            alerts += self._temperature(snap.timestamp_s, sample, state)
            assessment = by_index.get(sample.index)
            if assessment is not None:
                alerts += self._throughput(snap.timestamp_s, assessment, state)
        return tuple(alerts)

    def _throttle(self, now_s: float, sample: GpuSample, state: _GpuState) -> list[Alert]:
        if sample.clock_event_reasons is None:
            return []  # unknown is not "ended"
        reasons = tuple(reason_names(sample.clock_event_reasons & THROTTLING_REASONS))
        before, state.throttle_reasons = state.throttle_reasons, reasons
        if reasons and not before:
            # a power cap is the card doing its job; heat or a power brake means something is wrong
            if _CRITICAL_REASONS & set(reasons):
                severity = "critical"
            elif _THERMAL_REASONS & set(reasons):
                severity = "warning"
            else:
                severity = "info"
            clock = ""
            if sample.sm_clock_hz and sample.sm_clock_max_hz:
                clock = f", SM clock {sample.sm_clock_hz / 1e6:.0f}/{sample.sm_clock_max_hz / 1e6:.0f} MHz"
            return [
                Alert(
                    "throttle_started",
                    sample.index,
                    severity,
                    f"GPU {sample.index} throttling: {', '.join(reasons)}{clock}",
                    now_s,
                )
            ]
        if before and not reasons:
            return [
                Alert(
                    "throttle_ended",
                    sample.index,
                    "info",
                    f"GPU {sample.index} no longer throttled (was: {', '.join(before)})",
                    now_s,
                )
            ]
        return []

    def _temperature(self, now_s: float, sample: GpuSample, state: _GpuState) -> list[Alert]:
        margin = slowdown_margin_c(sample)
        if margin is None:
            return []
        limit = self.thresholds.temperature_margin_c
        if state.temperature_warned:
            if margin > limit + self.thresholds.temperature_hysteresis_c:
                state.temperature_warned = False
            return []
        if margin > limit:
            return []
        state.temperature_warned = True
        severity = "critical" if margin <= 0 else "warning"
        temp = f"{sample.temperature_c:.0f} °C, " if sample.temperature_c is not None else ""
        return [
            Alert(
                "temperature_near_slowdown",
                sample.index,
                severity,
                f"GPU {sample.index} {temp}{margin:.0f} °C from its slowdown threshold",
                now_s,
            )
        ]

    def _throughput(self, now_s: float, a: GpuAssessment, state: _GpuState) -> list[Alert]:
        # Only a measured rate can fall short of the model; a modelled one is the model.
        live, ceiling = a.tokens_per_s, a.modelled_tokens_per_s
        if (
            live is None
            or ceiling is None
            or ceiling <= 0
            or a.tokens_per_s_provenance != Provenance.MEASURED
        ):
            state.shortfall_since_s = None
            return []
        floor = (1 - self.thresholds.throughput_shortfall_ratio) * ceiling
        if live >= floor:
            state.shortfall_since_s = None
            state.shortfall_alerted = False
            return []
        if state.shortfall_since_s is None:
            state.shortfall_since_s = now_s
        if state.shortfall_alerted or now_s - state.shortfall_since_s < self.thresholds.throughput_hold_s:
            return []
        state.shortfall_alerted = True
        return [
            Alert(
                "throughput_below_model",
                a.index,
                "warning",
                f"GPU {a.index} at {live:.0f} tokens/s, {1 - live / ceiling:.0%} below the modelled "
                f"{ceiling:.0f} tokens/s",
                now_s,
            )
        ]


_SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}
_KIND_HEADLINE = {
    "throttle_started": "throttling",
    "throttle_ended": "no longer throttled",
    "temperature_near_slowdown": "near their slowdown temperature",
    "throughput_below_model": "below the modelled tokens/s",
}


@dataclass(frozen=True)
class AlertSummary:
    """The alerts of one kind one snapshot raised, as a face shows them: one notice for eight GPUs."""

    kind: str
    severity: str  # the worst of the alerts it stands for
    gpu_indices: tuple[int, ...]
    message: str


def summarise(alerts: Sequence[Alert]) -> list[AlertSummary]:
    """Alerts grouped by kind, in the order the kinds were first raised; a single alert keeps its message,
    several name their GPUs and each one's detail."""
    kinds: dict[str, list[Alert]] = {}
    for alert in alerts:
        kinds.setdefault(alert.kind, []).append(alert)
    out = []
    for kind, group in kinds.items():
        severity = min((a.severity for a in group), key=lambda s: _SEVERITY_RANK.get(s, 3))
        indices = tuple(a.gpu_index for a in group)
        if len(group) == 1:
            message = group[0].message
        else:
            headline = f"{len(group)} GPUs {_KIND_HEADLINE.get(kind, kind.replace('_', ' '))}"
            gpus = ", ".join(str(i) for i in indices)
            # the first one's detail stands for the rest; eight lines would cover the cards they are about
            message = f"{headline} (GPU {gpus})\n{group[0].message}; {len(group) - 1} more alike"
        out.append(AlertSummary(kind, severity, indices, message))
    return out
