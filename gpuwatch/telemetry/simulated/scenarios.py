"""Workload scenarios: what the simulated card is asked to do, second by second.

A scenario gives *demand* (how busy the SMs, tensor pipes and memory would be at full clock) and
environment changes (a stuck fan, a lowered power limit). The physics turns demand into power, heat,
clocks and throttle reasons; nothing here knows about NVML.

Activity levels are plausible LLM-serving shapes (inferred, not measured): batch-1 decode is
memory-bound (DRAM ~80 % of peak, few tensor cycles), batched decode mixes both, prefill is
compute-bound bursts, training keeps the tensor pipes busy and power-caps a modern card.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Demand:
    """Fractions 0..1 of what the workload asks for at this instant."""

    kernel_busy_ratio: float  # share of time a kernel runs (NVML utilization.gpu)
    sm_activity_ratio: float  # share of SMs busy (GPM SM_UTIL)
    sm_occupancy_ratio: float
    tensor_ratio: float  # any tensor pipe
    fp16_ratio: float  # non-tensor fp16
    fp32_ratio: float  # non-tensor fp32
    dram_bandwidth_ratio: float  # share of peak DRAM bandwidth
    pcie_tx_bytes_s: float
    pcie_rx_bytes_s: float
    nvlink_ratio: float = 0.0  # share of NVLink bandwidth (per direction)
    encoder_ratio: float = 0.0  # NVENC busy share (NVML encoder utilization)


IDLE_DEMAND = Demand(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2e4, 1e4)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    process_name: str | None  # the simulated serving/training process; None = no process
    memory_used_ratio: float  # of total memory, held by that process
    #: fan stuck at this speed (0..1) instead of following the curve; on passive cards the chassis airflow
    #: falls to this share instead.
    fan_stuck_ratio: float | None = None
    power_limit_ratio: float | None = None  # enforced limit as a share of the default (clamped to min)
    memory_used_mib: float | None = None  # the process holds this much instead of memory_used_ratio
    encoder_sessions: int = 0  # NVENC sessions (nvmlDeviceGetEncoderStats)

    def demand(self, t_s: float) -> Demand:
        return _DEMAND_SHAPES[self.name](t_s)


def _decode(t_s: float) -> Demand:
    # Batch-1 decode: GEMV per token, bandwidth-bound; brief gaps between requests.
    gap = 0.25 if (t_s % 20.0) > 18.5 else 1.0
    return Demand(
        0.97 * gap,
        0.45 * gap,
        0.22 * gap,
        0.08 * gap,
        0.05 * gap,
        0.06 * gap,
        0.80 * gap,
        2.0e6 * gap,
        1.0e6 * gap,
    )


def _decode_batched(t_s: float) -> Demand:
    wobble = 1.0 + 0.04 * math.sin(t_s / 7.0)
    return Demand(0.99, 0.70 * wobble, 0.45, 0.35 * wobble, 0.06, 0.08, 0.75, 2.5e7, 1.2e7, 0.05)


def _prefill(t_s: float) -> Demand:
    # A long prompt every 4 s: 1.5 s compute-bound burst, then short decode.
    phase = t_s % 4.0
    if phase < 1.5:
        return Demand(1.0, 0.95, 0.55, 0.80, 0.05, 0.08, 0.35, 5.0e6, 6.0e7, 0.1)
    return Demand(0.90, 0.40, 0.20, 0.08, 0.04, 0.05, 0.70, 2.0e6, 1.0e6)


def _training(t_s: float) -> Demand:
    # Steps of 10 s with a 0.5 s data-loading / all-reduce dip at the end of each.
    if t_s % 10.0 > 9.5:
        return Demand(0.60, 0.30, 0.15, 0.10, 0.05, 0.10, 0.30, 1.0e7, 1.5e9, 0.8)
    return Demand(1.0, 0.98, 0.62, 0.75, 0.06, 0.12, 0.50, 2.0e7, 4.0e8, 0.35)


def _nvenc(t_s: float) -> Demand:
    # Two 1080p120 NVENC streams (ffmpeg testsrc2), the load of three captured cards: encoder 60-100 %,
    # SMs ~8 % busy (frame generation and colour conversion), little DRAM traffic.
    return Demand(0.08, 0.08, 0.05, 0.0, 0.02, 0.06, 0.03, 2.0e6, 1.5e7, 0.0, 0.65)


def _burn(t_s: float) -> Demand:
    # gpu-burn (back-to-back GEMMs) with memory hogs beside it, the captured H100's load: every SM busy,
    # memory utilization ~10 %, no gaps.
    return Demand(1.0, 1.0, 0.6, 0.5, 0.02, 0.5, 0.08, 1.0e6, 1.0e6)


def _idle(t_s: float) -> Demand:
    return IDLE_DEMAND


_DEMAND_SHAPES = {
    "idle": _idle,
    "decode": _decode,
    "decode-batched": _decode_batched,
    "prefill": _prefill,
    "training": _training,
    "failing-fan": _decode_batched,
    "power-capped": _decode_batched,
    "nvenc": _nvenc,
    "burn": _burn,
}

_VLLM = "python3 -m vllm.entrypoints.openai.api_server"

ALL_SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("idle", "nothing running: idle clocks, P8, fans stopped on GeForce", None, 0.0),
        Scenario("decode", "batch-1 LLM decode: memory-bound, ~80% of peak DRAM bandwidth", _VLLM, 0.90),
        Scenario("decode-batched", "batched LLM decode: bandwidth plus tensor work, high power", _VLLM, 0.90),
        Scenario("prefill", "prompt prefill bursts every 4 s: compute-bound, power spikes", _VLLM, 0.90),
        Scenario(
            "training",
            "training: tensor pipes saturated, power at the cap (SW power cap)",
            "python3 train.py",
            0.85,
        ),
        Scenario(
            "failing-fan",
            "batched decode with the fan stuck at 20%: heats into thermal slowdown",
            _VLLM,
            0.90,
            fan_stuck_ratio=0.20,
        ),
        Scenario(
            "power-capped",
            "batched decode under a power limit lowered to 60% of default",
            _VLLM,
            0.90,
            power_limit_ratio=0.60,
        ),
        Scenario(
            "nvenc",
            "two NVENC video encodes (the load of the captured L40S, 4080 SUPER and 2080 SUPER)",
            "ffmpeg",
            0.0,
            memory_used_mib=700.0,
            encoder_sessions=2,
        ),
        Scenario(
            "burn",
            "gpu-burn plus memory hogs (the load of the captured H100): all SMs busy, ~20 GB held",
            "./gpu_burn",
            0.0,
            memory_used_mib=19818.0,
        ),
    )
}

#: scenario name -> one-line description (the public table).
SCENARIOS: dict[str, str] = {name: s.description for name, s in ALL_SCENARIOS.items()}
