"""Which power limit to set: the cap that minimises $ per 1M tokens (or maximises tokens per joule).

A memory-bound decode does not need full SM clocks: below its natural draw a cap lowers the clock, which
costs the memory-bound step only ``r ** power.MEMORY_CLOCK_EXPONENT``, while power falls with
``r x V(r)^2``. A compute-bound prefill or training step slows in proportion to r. Whether a cap pays
depends on what an hour costs besides electricity: capex and hosting are paid whatever the clock, so a
box whose capex dominates keeps its default limit unless the speed loss is tiny.

The advisor works from what a running card shows: its measured board power and clock ratio at the current
limit (which give the workload's activity through the power model), and the bound (memory or compute). A
measured tokens/s, where an engine gives one, anchors the absolute figures; without one they are ratios of
the current speed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gpuwatch.model.errors import ModelInputError
from gpuwatch.model.power import (
    MEMORY_CLOCK_EXPONENT,
    CardPower,
    board_power_w,
    clock_ratio_under_limit,
    dynamic_scale,
)

OBJECTIVES = ("usd_per_mtok", "tokens_per_j")


@dataclass(frozen=True)
class CapOption:
    limit_w: float
    power_w: float
    clock_ratio: float
    speed_ratio: float  # tokens/s relative to the default limit
    tokens_per_s: float | None
    tokens_per_j: float | None
    usd_per_mtok: float | None
    usd_per_h: float


@dataclass(frozen=True)
class PowerAdvice:
    default_limit_w: float
    advised_limit_w: float
    objective: str
    bound: str
    expected_speed_loss_ratio: float  # 1 - tokens/s at the advised cap / at the default limit
    power_saving_w: float
    usd_per_mtok_default: float | None  # None without an absolute tokens/s
    usd_per_mtok_advised: float | None
    tokens_per_j_gain_ratio: float  # tokens/J at the advised cap / at the default - 1
    usd_per_mtok_change_ratio: float  # $/1M at the advised cap / at the default - 1 (needs no tokens/s)
    reason: str
    options: tuple[CapOption, ...] = field(default=())
    provenance: str = "modelled"

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "options"}
        out["options"] = [o.__dict__ for o in self.options]
        return out


def activity_from_measurement(card: CardPower, power_w: float, clock_ratio: float) -> float:
    """Invert the power model: the activity that draws ``power_w`` at ``clock_ratio``."""
    if not (math.isfinite(power_w) and math.isfinite(clock_ratio) and clock_ratio > 0):
        raise ModelInputError(f"need a measured power and clock ratio, got {power_w} W at {clock_ratio}")
    dynamic = max(0.0, power_w - card.idle_w)
    return dynamic / ((card.full_load_w - card.idle_w) * dynamic_scale(min(1.0, clock_ratio)))


def speed_ratio(bound: str, clock_ratio: float) -> float:
    """Tokens/s at clock ratio r relative to r = 1 for a workload of this bound."""
    if bound == "compute":
        return clock_ratio
    return clock_ratio**MEMORY_CLOCK_EXPONENT


def advise_power_limit(
    card: CardPower,
    *,
    activity: float,
    bound: str,
    min_limit_w: float,
    max_limit_w: float | None = None,
    step_w: float = 10.0,
    tokens_per_s_at_default: float | None = None,
    fixed_usd_per_h: float = 0.0,
    electricity_usd_per_kwh: float = 0.0,
    pue: float = 1.0,
    objective: str = "usd_per_mtok",
    max_speed_loss_ratio: float | None = None,
    candidates_w: Sequence[float] | None = None,
) -> PowerAdvice:
    """Evaluate caps from ``min_limit_w`` to the default limit and pick the best for ``objective``.

    Both objectives are ratios of the figures at the default limit, so neither needs an absolute tokens/s:
    ``tokens_per_s_at_default`` (measured or modelled) only turns them into $ and tokens/s figures. Tokens
    per joule alone always favours the lowest cap; ``max_speed_loss_ratio`` bounds what may be given up.
    """
    if objective not in OBJECTIVES:
        raise ModelInputError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if bound not in ("memory", "compute"):
        raise ModelInputError(f"bound must be 'memory' or 'compute', got {bound!r}")
    default = card.default_limit_w
    top = default if max_limit_w is None else min(max_limit_w, default)
    if not (0 < min_limit_w <= top):
        raise ModelInputError(f"power limit range {min_limit_w}-{top} W is empty")
    limits = sorted(
        set(candidates_w or [])
        | {min(top, min_limit_w + i * step_w) for i in range(int((top - min_limit_w) // step_w) + 1)}
        | {top, default}
    )

    def option(limit: float) -> CapOption:
        r = clock_ratio_under_limit(card.idle_w, card.full_load_w, activity, limit)
        watts = min(limit, board_power_w(card.idle_w, card.full_load_w, activity, r))
        ratio = speed_ratio(bound, r)
        usd_h = fixed_usd_per_h + watts / 1000.0 * pue * electricity_usd_per_kwh
        tok_s = None if tokens_per_s_at_default is None else tokens_per_s_at_default * ratio
        return CapOption(
            limit_w=limit,
            power_w=watts,
            clock_ratio=r,
            speed_ratio=ratio,
            tokens_per_s=tok_s,
            tokens_per_j=None if tok_s is None else tok_s / watts,
            usd_per_mtok=None if tok_s is None else usd_h / (tok_s * 3600.0) * 1e6,
            usd_per_h=usd_h,
        )

    options = tuple(option(w) for w in limits if w <= default)
    base = next(o for o in options if o.limit_w == default)
    base_speed_per_w = base.speed_ratio / base.power_w

    def score(o: CapOption) -> float:
        if objective == "usd_per_mtok":
            return o.usd_per_h / o.speed_ratio  # $ per token, up to the unknown tokens/s at the default
        return -(o.speed_ratio / o.power_w)

    allowed = [
        o
        for o in options
        if max_speed_loss_ratio is None or 1.0 - o.speed_ratio / base.speed_ratio <= max_speed_loss_ratio
    ]
    best = min(allowed, key=lambda o: (round(score(o), 12), -o.limit_w))
    # a cap that changes the objective by less than 0.5 % is not worth a setting: keep the default
    if best is not base and abs(score(best) - score(base)) <= 0.005 * abs(score(base)):
        best = base
    loss = 1.0 - best.speed_ratio / base.speed_ratio
    gain = (best.speed_ratio / best.power_w) / base_speed_per_w - 1.0
    what = "$ per 1M tokens" if objective == "usd_per_mtok" else "tokens per joule"
    if best is base:
        reason = (
            f"{bound}-bound: every lower cap costs more tokens/s than it saves in power; keep the default "
            f"{default:.0f} W (best {what} at the default)"
        )
    else:
        reason = (
            f"{bound}-bound: at {best.limit_w:.0f} W the clock drops to {best.clock_ratio:.0%} but tokens/s "
            f"only {loss:.1%}, power {base.power_w - best.power_w:.0f} W less; best {what}"
        )
    return PowerAdvice(
        default_limit_w=default,
        advised_limit_w=best.limit_w,
        objective=objective,
        bound=bound,
        expected_speed_loss_ratio=loss,
        power_saving_w=base.power_w - best.power_w,
        usd_per_mtok_default=base.usd_per_mtok,
        usd_per_mtok_advised=best.usd_per_mtok,
        tokens_per_j_gain_ratio=gain,
        usd_per_mtok_change_ratio=(best.usd_per_h / best.speed_ratio) / (base.usd_per_h / base.speed_ratio)
        - 1.0,
        reason=reason,
        options=options,
    )
