"""Alerts fire on transitions, once, and re-arm only after the condition clears; and open_session wiring."""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

from gpuwatch.commands.common import add_source_options, open_live_session
from gpuwatch.live.alerts import AlertTracker
from gpuwatch.live.assessment import Bound, BoundKind, GpuAssessment, Provenance
from gpuwatch.live.config import AlertThresholds
from gpuwatch.telemetry.sample import ClockEventReason, GpuSample, Snapshot

BASE = GpuSample(
    index=0,
    uuid="GPU-0",
    name="NVIDIA GeForce RTX 4090",
    pci_bus_id="0",
    temperature_c=70.0,
    slowdown_margin_c=20.0,
    sm_clock_hz=2.7e9,
    sm_clock_max_hz=3.105e9,
    clock_event_reasons=0,
)


def feed(
    tracker: AlertTracker, t: float, assessment: GpuAssessment | None = None, **changes: Any
) -> list[str]:
    snap = Snapshot(t, "sim", (dataclasses.replace(BASE, **changes),))
    return [f"{a.kind}:{a.severity}" for a in tracker.update(snap, [assessment] if assessment else [])]


def test_throttle_started_and_ended_once_each() -> None:
    tracker = AlertTracker(AlertThresholds())
    thermal = int(ClockEventReason.SW_THERMAL)
    assert feed(tracker, 0) == []
    assert feed(tracker, 1, clock_event_reasons=thermal, sm_clock_hz=2.0e9) == ["throttle_started:warning"]
    assert feed(tracker, 2, clock_event_reasons=thermal, sm_clock_hz=1.9e9) == []
    assert feed(tracker, 3, clock_event_reasons=None) == []  # unknown is not "ended"
    assert feed(tracker, 4, clock_event_reasons=int(ClockEventReason.GPU_IDLE)) == ["throttle_ended:info"]
    hw = int(ClockEventReason.HW_SLOWDOWN | ClockEventReason.HW_THERMAL)
    assert feed(tracker, 5, clock_event_reasons=hw) == ["throttle_started:critical"]


def test_temperature_warning_uses_the_margin_with_hysteresis() -> None:
    tracker = AlertTracker(AlertThresholds(temperature_margin_c=5, temperature_hysteresis_c=2))
    assert feed(tracker, 0, slowdown_margin_c=6.0) == []
    assert feed(tracker, 1, slowdown_margin_c=4.0) == ["temperature_near_slowdown:warning"]
    assert feed(tracker, 2, slowdown_margin_c=3.0) == []
    assert feed(tracker, 3, slowdown_margin_c=6.5) == []  # not cooled past 5 + 2: still armed off
    assert feed(tracker, 4, slowdown_margin_c=4.5) == []
    assert feed(tracker, 5, slowdown_margin_c=7.5) == []  # re-armed
    assert feed(tracker, 6, slowdown_margin_c=-1.0) == ["temperature_near_slowdown:critical"]


def test_temperature_falls_back_to_threshold_minus_temperature() -> None:
    tracker = AlertTracker(AlertThresholds(temperature_margin_c=5))
    fired = feed(tracker, 0, slowdown_margin_c=None, slowdown_temperature_c=90.0, temperature_c=86.0)
    assert fired == ["temperature_near_slowdown:warning"]


def gpu(tokens: float, provenance: Provenance = Provenance.MEASURED) -> GpuAssessment:
    return GpuAssessment(0, "rtx4090", None, Bound(BoundKind.MEMORY), None, tokens, provenance, 100.0)


def test_throughput_below_model_after_the_hold_time_only() -> None:
    tracker = AlertTracker(AlertThresholds(throughput_shortfall_ratio=0.3, throughput_hold_s=30))
    assert feed(tracker, 0, gpu(60.0)) == []
    assert feed(tracker, 20, gpu(60.0)) == []
    assert feed(tracker, 31, gpu(60.0)) == ["throughput_below_model:warning"]
    assert feed(tracker, 40, gpu(60.0)) == []
    assert feed(tracker, 50, gpu(90.0)) == []  # recovered: re-armed
    assert feed(tracker, 60, gpu(50.0)) == []
    assert feed(tracker, 95, gpu(50.0)) == ["throughput_below_model:warning"]


def test_a_modelled_rate_never_falls_short_of_the_model() -> None:
    tracker = AlertTracker(AlertThresholds(throughput_hold_s=0))
    assert feed(tracker, 0, gpu(10.0, Provenance.MODELLED)) == []
    assert feed(tracker, 100, gpu(10.0, Provenance.MODELLED)) == []


def test_open_session_wires_source_config_and_overrides() -> None:
    parser = argparse.ArgumentParser()
    add_source_options(parser, with_prices=True)
    args = parser.parse_args(
        [
            "--sim",
            "rtx4090",
            "--scenario",
            "decode",
            "--workload",
            "llama-2-7b:q4_0",
            "--pue",
            "1.4",
            "--interval",
            "0.2",
            "--config",
            "/dev/null",
        ]
    )
    session = open_live_session(args)
    assert session.source.simulated
    assert session.config.prices.pue == 1.4
    assert session.config.workload is not None and session.config.workload.quant_id == "q4_0"
    assert session.engines is None
    seen = []
    session.add_listener(lambda snap, a: seen.append(a))
    session.start()
    try:
        deadline = time.monotonic() + 10
        while session.latest() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        session.stop()
    latest = session.latest()
    assert latest is not None
    snap, assessment = latest
    assert assessment.gpus[0].gpu_id == "rtx4090"
    assert assessment.timestamp_s == snap.timestamp_s
    assert seen and seen[-1] is not None
