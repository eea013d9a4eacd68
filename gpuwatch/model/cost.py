"""Cost: owning (capex amortised + power + hosting) vs renting, $ per 1M tokens, training cost.

Every function takes one :class:`OwnershipCost` (the prices) whole. Owned hardware costs money every
wall-clock hour whether busy or not; tokens are only produced in the busy share (``utilisation_ratio``).
Power is drawn at ``power_w`` while busy and ``idle_power_w`` otherwise, times the facility PUE. Capex is
the whole server: the GPUs plus ``server_overhead_ratio`` x their price for chassis, CPUs, RAM, network
and integration, unless ``server_capex_usd`` gives it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from gpuwatch.model import elementwise as ew
from gpuwatch.model.catalog import GpuSpec
from gpuwatch.model.errors import ModelInputError
from gpuwatch.model.roofline import ArrayLike, as_result, peak_flops

HOURS_PER_YEAR = 365 * 24  # the article's amortisation convention (no leap days)


@dataclass(frozen=True)
class OwnershipCost:
    """What owning and running a box costs: the ONE set of defaults the live view, the exporter and
    ``gpuwatch plan`` price with (the option registry, gpuwatch/options/settings.py, reads them here).

    ``server_capex_usd`` is the whole server (GPUs, host, PSU, chassis, network); unset, it is the GPUs'
    price x (1 + ``server_overhead_ratio``). ``utilisation_ratio`` is the share of the service life the
    box does paid work; tokens are produced only then, capex and hosting are paid every hour.
    ``cloud_usd_per_gpu_h`` is the rental rate compared against (None: no comparison).
    Fields may hold numpy arrays for a vectorised what-if.
    """

    #: about the US average retail price (EIA Electric Power Monthly, 2024: ~13 c/kWh all sectors,
    #: ~16 c residential); set yours
    electricity_usd_per_kwh: float = 0.15
    pue: float = 1.0  # a box under a desk has no facility overhead; a data hall is ~1.2-1.6
    server_capex_usd: float | None = None
    server_overhead_ratio: float = 0.0
    service_life_years: float = 3.0
    hosting_usd_per_h: float = 0.0
    #: a typical on-demand rate for one rented GPU; real rates differ by GPU and provider
    cloud_usd_per_gpu_h: float | None = 2.0
    utilisation_ratio: float = 0.7

    def share(self, n_gpus: int) -> OwnershipCost:
        """One GPU's share of a box of ``n_gpus``: the server capex and the hosting split evenly."""
        if n_gpus == 1:
            return self
        capex = None if self.server_capex_usd is None else self.server_capex_usd / n_gpus
        return replace(self, server_capex_usd=capex, hosting_usd_per_h=self.hosting_usd_per_h / n_gpus)

    def capex_usd(self, gpu_capex_usd: ArrayLike | None) -> ArrayLike | None:
        """The server's purchase price: ``server_capex_usd`` if set, else the GPUs' x (1 + overhead)."""
        if self.server_capex_usd is not None:
            return _nonneg("server_capex_usd", self.server_capex_usd)
        if gpu_capex_usd is None:
            return None
        return _nonneg("gpu_capex_usd", gpu_capex_usd) * (
            1.0 + _nonneg("server_overhead_ratio", self.server_overhead_ratio)
        )


@dataclass(frozen=True)
class HourlyCost:
    capex_usd_per_h: ArrayLike
    power_usd_per_h: ArrayLike
    hosting_usd_per_h: ArrayLike
    total_usd_per_h: ArrayLike


def _ratio(name: str, value: ArrayLike) -> ArrayLike:
    arr = ew.floats(value)
    if not ew.everywhere(arr > 0) or ew.anywhere(arr > 1):
        raise ModelInputError(f"{name} must be in (0, 1], got {value!r}")
    return arr


def _nonneg(name: str, value: ArrayLike) -> ArrayLike:
    arr = ew.floats(value)
    if not ew.everywhere(arr >= 0) or not ew.everywhere(ew.isfinite(arr)):
        raise ModelInputError(f"{name} must be a finite number >= 0, got {value!r}")
    return arr


def _capex(prices: OwnershipCost, gpu_capex_usd: ArrayLike | None) -> ArrayLike:
    capex = prices.capex_usd(gpu_capex_usd)
    if capex is None:
        raise ModelInputError("no purchase price: give the GPU price or the server capex")
    return ew.floats(capex)


def _hourly(
    prices: OwnershipCost,
    gpu_capex_usd: ArrayLike | None,
    power_w: ArrayLike,
    idle_power_w: ArrayLike | None,
    utilisation_ratio: ArrayLike,
) -> HourlyCost:
    u = _ratio("utilisation_ratio", utilisation_ratio)
    life = ew.floats(prices.service_life_years)
    if not ew.everywhere(life > 0):
        raise ModelInputError(f"service_life_years must be > 0, got {prices.service_life_years!r}")
    busy_w = _nonneg("power_w", power_w)
    idle_w = busy_w if idle_power_w is None else _nonneg("idle_power_w", idle_power_w)
    mean_w = u * busy_w + (1.0 - u) * idle_w
    pue = ew.floats(prices.pue)
    if not ew.everywhere(pue >= 1):
        raise ModelInputError(f"pue must be >= 1, got {prices.pue!r}")
    capex_h = _capex(prices, gpu_capex_usd) / (life * HOURS_PER_YEAR)
    power_h = mean_w / 1000.0 * pue * _nonneg("electricity_usd_per_kwh", prices.electricity_usd_per_kwh)
    hosting_h = _nonneg("hosting_usd_per_h", prices.hosting_usd_per_h)
    total = capex_h + power_h + hosting_h
    return HourlyCost(
        as_result(capex_h), as_result(power_h), as_result(hosting_h + 0 * total), as_result(total)
    )


def cost_per_hour(
    prices: OwnershipCost,
    *,
    gpu_capex_usd: ArrayLike | None,
    power_w: ArrayLike,
    idle_power_w: ArrayLike | None = None,
) -> HourlyCost:
    """Per wall-clock hour at ``prices.utilisation_ratio``. ``idle_power_w=None`` charges ``power_w``
    all hours (the worst case). ``gpu_capex_usd`` may be None when ``prices.server_capex_usd`` is set."""
    return _hourly(prices, gpu_capex_usd, power_w, idle_power_w, prices.utilisation_ratio)


def usd_per_mtok(
    prices: OwnershipCost,
    *,
    tokens_per_s: ArrayLike,
    gpu_capex_usd: ArrayLike | None,
    power_w: ArrayLike,
    idle_power_w: ArrayLike | None = None,
) -> ArrayLike:
    """$ per 1M tokens of an owned box: hourly cost over the tokens its busy share produces."""
    tps = ew.floats(tokens_per_s)
    if not ew.everywhere(tps > 0) or not ew.everywhere(ew.isfinite(tps)):
        raise ModelInputError(f"tokens_per_s must be a finite number > 0, got {tokens_per_s!r}")
    hc = cost_per_hour(prices, gpu_capex_usd=gpu_capex_usd, power_w=power_w, idle_power_w=idle_power_w)
    tokens_per_h = tps * ew.floats(prices.utilisation_ratio) * 3600.0
    return as_result(ew.floats(hc.total_usd_per_h) / tokens_per_h * 1e6)


def cloud_usd_per_mtok(
    *, tokens_per_s: ArrayLike, cloud_usd_per_h: ArrayLike, utilisation_ratio: ArrayLike = 1.0
) -> ArrayLike:
    """Rented: pay every hour held; ``utilisation_ratio`` = busy share of the held hours."""
    tps = ew.floats(tokens_per_s)
    if not ew.everywhere(tps > 0) or not ew.everywhere(ew.isfinite(tps)):
        raise ModelInputError(f"tokens_per_s must be a finite number > 0, got {tokens_per_s!r}")
    u = _ratio("utilisation_ratio", utilisation_ratio)
    return as_result(_nonneg("cloud_usd_per_h", cloud_usd_per_h) / (tps * u * 3600.0) * 1e6)


@dataclass(frozen=True)
class BuyVsRent:
    own_usd_per_h: ArrayLike  # per wall-clock hour, owning (amortised over the service life)
    rent_usd_per_h: ArrayLike  # per wall-clock hour, renting only the busy hours
    breakeven_utilisation_ratio: ArrayLike  # above it owning is cheaper over the service life (inf: never)
    breakeven_months: (
        ArrayLike  # at this utilisation, months until the purchase has paid for itself (inf: never)
    )
    owning_wins: Any  # over the service life at this utilisation (a bool; an array for array inputs)


def buy_vs_rent(
    prices: OwnershipCost,
    *,
    cloud_usd_per_h: ArrayLike,
    gpu_capex_usd: ArrayLike | None,
    power_w: ArrayLike,
    idle_power_w: ArrayLike | None = None,
) -> BuyVsRent:
    """Renting = cloud $/h for the busy hours only; owning = capex up front plus running costs every hour.

    Break-even utilisation solves capex/life + hosting + P(u) = cloud x u, with P linear in u;
    break-even months solves capex = months x (cloud x u - hosting - P(u)).
    """
    u = _ratio("utilisation_ratio", prices.utilisation_ratio)
    own = _hourly(prices, gpu_capex_usd, power_w, idle_power_w, u)
    at_idle = _hourly(prices, gpu_capex_usd, power_w, idle_power_w, 1e-12)
    at_busy = _hourly(prices, gpu_capex_usd, power_w, idle_power_w, 1.0)
    cloud = _nonneg("cloud_usd_per_h", cloud_usd_per_h)
    fixed = ew.floats(at_idle.total_usd_per_h)  # capex share + hosting + idle power
    slope = ew.floats(at_busy.power_usd_per_h) - ew.floats(at_idle.power_usd_per_h)
    u_star = ew.divide_where(cloud > slope, fixed, cloud - slope, math.inf)
    u_star = ew.where(u_star <= 1.0, u_star, math.inf)
    running = ew.floats(own.total_usd_per_h) - ew.floats(own.capex_usd_per_h)
    margin_h = cloud * u - running
    capex_total = _capex(prices, gpu_capex_usd)
    months = ew.where(
        margin_h > 0,
        ew.divide_where(margin_h > 0, capex_total, margin_h, 0.0) / (HOURS_PER_YEAR / 12),
        math.inf,
    )
    rent = cloud * u
    wins = ew.floats(own.total_usd_per_h) < rent
    return BuyVsRent(
        own_usd_per_h=own.total_usd_per_h,
        rent_usd_per_h=as_result(rent),
        breakeven_utilisation_ratio=as_result(u_star),
        breakeven_months=as_result(months),
        owning_wins=wins if isinstance(wins, bool) or wins.ndim else bool(wins),
    )


@dataclass(frozen=True)
class TrainingCost:
    flops: ArrayLike  # 6 x N x D
    gpu_hours: ArrayLike
    wall_clock_h: ArrayLike  # on ``count`` GPUs
    usd: ArrayLike | None  # None without a $/GPU-hour


def training_cost(
    *,
    params: ArrayLike,
    tokens: ArrayLike,
    gpu: GpuSpec,
    mfu_ratio: ArrayLike = 0.4,
    dtype: str = "bf16",
    count: int = 1,
    usd_per_gpu_h: ArrayLike | None = None,
) -> TrainingCost:
    """6·N·D FLOPs (forward 2, backward 4 per parameter and token) at an MFU of the dense peak."""
    n = ew.floats(params)
    d = ew.floats(tokens)
    if ew.anywhere(n <= 0) or ew.anywhere(d <= 0):
        raise ModelInputError("params and tokens must be > 0")
    mfu = _ratio("mfu_ratio", mfu_ratio)
    if count < 1:
        raise ModelInputError(f"GPU count must be >= 1, got {count}")
    flops = 6.0 * n * d
    if dtype == "bf16" and "bf16" not in gpu.peak_flops:
        dtype = "fp16"  # no bf16 tensor path (Turing): mixed precision trains in fp16 with loss scaling
    gpu_h = flops / (mfu * peak_flops(gpu, dtype)) / 3600.0
    usd = None if usd_per_gpu_h is None else as_result(gpu_h * ew.floats(usd_per_gpu_h))
    return TrainingCost(as_result(flops), as_result(gpu_h), as_result(gpu_h / count), usd)
