"""Board power from what a workload makes the card do, and what a power cap costs in clock.

One model, used both by the planner (power, tokens/J and $/1M tokens of a planned workload; "what if I
cap this card") and by the simulated NVML's physics (gpuwatch/telemetry/simulated/physics.py):

    P(f) = P_idle + (P_full - P_idle) x activity x (f/f0) x (V(f)/V(f0))^2,   V linear in f

``activity`` weighs the pipes a workload keeps busy (SM issue, tensor cores, DRAM traffic, FP32):
0.45 SM + 0.45 tensor + 0.35 DRAM + 0.05 FP32, at most 1.15 (a power virus). ``P_full`` is what the card
would draw at activity 1 and its load clock with no limit; an enforced limit below P(f0) lowers the clock to
the highest f with P(f) <= limit, which is what the SW power cap does.

The planner derives the activities from the roofline estimate: DRAM = attained / peak bandwidth, tensor =
attained / peak FLOP/s, SM activity 1 (a running decode or GEMM keeps kernels on every SM: NVML's
utilization.gpu reads ~100 % in decode). Card constants: ``P_idle`` from the card's capture where one
exists, else 5 % (GeForce) / 10 % (datacenter) of TDP; ``P_full`` = 1.24 x TDP (the ratio of the simulated
RTX 4090's 560 W to its 450 W limit, so that an unlimited dense GEMM saturates the cap as gpu-burn does on
the real H100: 629 W average of a 700 W limit in tests/data/captures/).

Under a cap the compute part of a step scales with 1/r (r the clock ratio) and the memory-bound part
with r^-0.433: a GEMV's achieved bandwidth needs the SMs to issue loads fast
enough. 0.433 is FIT to one point, the RTX 4090 keeping 93.4 % of its decode tokens/s at 300 W (below).

How close it is, on published measurements (tests/test_model_power.py holds these):
  * RTX 4090, sustained LLM decode at the stock limit: 390 W (Thorsten Meyer AI's power-limit table,
    quoted in thegeniusfactory.net "Undervolting your GPU for local inference");
  * the same card keeps 93.4 % of its tokens/s at 300 W and 91.5 % at 260 W (same table);
  * RTX 5060 Ti, llama.cpp Qwen2.5-Coder-7B decode: 172.7 W of its 180 W default, and 99 % of the
    tokens/s at its 150 W floor (inventivehq.com, "I capped my GPU to 150W");
  * 6x RTX 3090, llama.cpp decode: 97.4 % of the tokens/s at 250 W and 86.2 % at 150 W of 350 W
    (llmgarage.ai, "power limit tokens per second benchmark").
benchmarks/accuracy.py prints the model's error on each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpuwatch.model.errors import ModelInputError

#: weights of each pipe's activity in the dynamic power (shared with the simulator's physics)
SM_WEIGHT = 0.45
TENSOR_WEIGHT = 0.45
DRAM_WEIGHT = 0.35
FP32_WEIGHT = 0.05
MAX_ACTIVITY = 1.15
#: P_full / TDP: see the module docstring
FULL_LOAD_TDP_RATIO = 1.24
#: P_idle / TDP where no capture gives the card's idle draw
IDLE_TDP_RATIO_GEFORCE = 0.05
IDLE_TDP_RATIO_DATACENTER = 0.10
#: memory-bound step time scales as clock_ratio ** -MEMORY_CLOCK_EXPONENT (FIT: see the module docstring)
MEMORY_CLOCK_EXPONENT = 0.433


def voltage_ratio(clock_ratio: float) -> float:
    """Relative core voltage at clock ratio r (linear V/f curve, 1.0 at the load clock)."""
    return (0.7 + 0.35 * clock_ratio) / 1.05


def dynamic_scale(clock_ratio: float) -> float:
    """f/f0 x (V/V0)^2: how dynamic power scales with the clock."""
    return clock_ratio * voltage_ratio(clock_ratio) ** 2


def activity_weight(
    sm_activity_ratio: float, tensor_ratio: float, dram_bandwidth_ratio: float, fp32_ratio: float = 0.0
) -> float:
    """The share of the card's dynamic power range a workload drives at its load clock."""
    weight = (
        SM_WEIGHT * sm_activity_ratio
        + TENSOR_WEIGHT * tensor_ratio
        + DRAM_WEIGHT * dram_bandwidth_ratio
        + FP32_WEIGHT * fp32_ratio
    )
    return min(MAX_ACTIVITY, max(0.0, weight))


def board_power_w(idle_w: float, full_load_w: float, activity: float, clock_ratio: float = 1.0) -> float:
    return idle_w + (full_load_w - idle_w) * activity * dynamic_scale(clock_ratio)


def clock_ratio_under_limit(
    idle_w: float, full_load_w: float, activity: float, limit_w: float, *, floor_ratio: float = 0.1
) -> float:
    """Highest clock ratio (<= 1) whose power stays at or under ``limit_w`` (the SW power cap's answer)."""
    if board_power_w(idle_w, full_load_w, activity, 1.0) <= limit_w:
        return 1.0
    lo, hi = floor_ratio, 1.0
    if board_power_w(idle_w, full_load_w, activity, lo) > limit_w:
        return lo
    for _ in range(40):
        mid = (lo + hi) / 2
        if board_power_w(idle_w, full_load_w, activity, mid) > limit_w:
            hi = mid
        else:
            lo = mid
    return lo


@dataclass(frozen=True)
class CardPower:
    """The constants of one card's power model and where they come from."""

    idle_w: float
    full_load_w: float
    default_limit_w: float
    source: str


def card_power(tdp_w: float, segment: str, idle_w: float | None = None, idle_source: str = "") -> CardPower:
    if idle_w is None:
        ratio = IDLE_TDP_RATIO_GEFORCE if segment == "geforce" else IDLE_TDP_RATIO_DATACENTER
        idle_w = tdp_w * ratio
        idle_source = f"idle assumed {ratio:.0%} of TDP (no capture of this card)"
    return CardPower(
        idle_w=idle_w,
        full_load_w=tdp_w * FULL_LOAD_TDP_RATIO,
        default_limit_w=tdp_w,
        source=f"{idle_source}; full load {FULL_LOAD_TDP_RATIO:g} x TDP",
    )


@dataclass(frozen=True)
class PowerEstimate:
    power_w: float  # board power the workload draws (at most the limit)
    limit_w: float  # enforced limit
    clock_ratio: float  # SM clock / load clock under that limit
    activity: float
    capped: bool  # the limit holds the clock down
    provenance: str = "modelled"


def workload_activity(dram_bandwidth_ratio: float, tensor_ratio: float) -> float:
    """Activity of a roofline-described workload (see the module docstring)."""
    dram = min(1.0, max(0.0, dram_bandwidth_ratio))
    tensor = min(1.0, max(0.0, tensor_ratio))
    return activity_weight(1.0, tensor, dram)


def estimate_power(card: CardPower, activity: float, limit_w: float | None = None) -> PowerEstimate:
    """Power and clock of a workload of this activity under a limit (default: the card's default limit)."""
    limit = card.default_limit_w if limit_w is None else limit_w
    if not (math.isfinite(limit) and limit > 0):
        raise ModelInputError(f"power limit must be a positive number of watts, got {limit_w}")
    ratio = clock_ratio_under_limit(card.idle_w, card.full_load_w, activity, limit)
    power = min(limit, board_power_w(card.idle_w, card.full_load_w, activity, ratio))
    return PowerEstimate(power, limit, ratio, activity, ratio < 1.0)
