"""$/1M tokens, buy-vs-rent and training cost, incl. article 002's table and Llama-2-70B's GPU-hours."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from gpuwatch.model.catalog import get_gpu
from gpuwatch.model.cost import (
    OwnershipCost,
    buy_vs_rent,
    cloud_usd_per_mtok,
    cost_per_hour,
    training_cost,
    usd_per_mtok,
)
from gpuwatch.model.errors import ModelInputError

#: the article's prices: $0.12/kWh, 3 years, no PUE, no server, no hosting
ARTICLE = OwnershipCost(electricity_usd_per_kwh=0.12, service_life_years=3, cloud_usd_per_gpu_h=None)

# Article 002, "COST PER 1M TOKENS - 7B FP16 INFERENCE (70% utilization, 3-yr life)": its inputs
# (hw_cost, throughput, tdp; $0.12/kWh, one GPU, TDP drawn every hour, no PUE, no server, no hosting).
# The article prints no figures for this table; the expected values are its formula worked by hand:
# (cost / (3 x 8760 h) + TDP/1000 x 0.12) / (tok/s x 0.7 x 3600) x 1e6.
ARTICLE_002_ROWS = [
    # name, hw_cost_usd, tokens_per_s, tdp_w, expected $/1M tok
    ("RTX 3090 (used)", 700, 65, 350, 0.4190),
    ("RTX 4090", 1600, 70, 450, 0.6513),
    ("A100 40GB SXM", 8000, 114, 400, 1.2267),
    ("H100 SXM", 30000, 239, 700, 2.0349),
]


@pytest.mark.parametrize(("name", "capex", "tps", "tdp", "expected"), ARTICLE_002_ROWS)
def test_article_002_cost_table_rows(
    name: str, capex: float, tps: float, tdp: float, expected: float
) -> None:
    got = usd_per_mtok(ARTICLE, tokens_per_s=tps, gpu_capex_usd=capex, power_w=tdp)
    assert got == pytest.approx(expected, rel=2e-3), name


def test_article_002_throughputs_are_at_full_bandwidth_not_70_percent() -> None:
    # The article says "H100 ... ~239 tokens/sec for 7B FP16 (bandwidth-bound, 70% efficiency)".
    # 239 = 3.35 TB/s / 14 GB at 100 %; at 70 % it is 167.5 tok/s, which makes the H100 row 2.90 $/1M.
    bw_over_bytes = 3.35e12 / 14e9
    assert bw_over_bytes == pytest.approx(239, rel=0.01)
    at_70 = usd_per_mtok(ARTICLE, tokens_per_s=3.35e12 * 0.7 / 14e9, gpu_capex_usd=30000, power_w=700)
    assert at_70 == pytest.approx(2.9035, rel=2e-3)


def test_whole_server_pue_and_idle_power_change_the_bill() -> None:
    base = cost_per_hour(ARTICLE, gpu_capex_usd=8 * 1600, power_w=8 * 450)
    # article 000: 8x4090 GPUs $12,800, whole server ~$40,000 -> overhead 2.125x of the GPU price
    overhead = replace(ARTICLE, server_overhead_ratio=40000 / 12800 - 1)
    server = cost_per_hour(overhead, gpu_capex_usd=12800, power_w=3600)
    # ... or the server's price given whole: the same capex, whatever the GPUs cost
    whole = cost_per_hour(replace(ARTICLE, server_capex_usd=40000), gpu_capex_usd=None, power_w=3600)
    assert whole.capex_usd_per_h == pytest.approx(server.capex_usd_per_h)
    assert server.capex_usd_per_h == pytest.approx(
        40000 / (3 * 8760), rel=1e-6
    )  # $1.52/h as article 000 says
    assert server.capex_usd_per_h == pytest.approx(1.52, abs=0.005)
    assert server.total_usd_per_h > base.total_usd_per_h
    half = replace(ARTICLE, utilisation_ratio=0.5, pue=1.4)
    idle = cost_per_hour(half, gpu_capex_usd=1600, power_w=450, idle_power_w=30)
    assert idle.power_usd_per_h == pytest.approx((0.5 * 450 + 0.5 * 30) / 1000 * 1.4 * 0.12)
    assert idle.total_usd_per_h == pytest.approx(idle.capex_usd_per_h + idle.power_usd_per_h)


def test_usd_per_mtok_broadcasts_over_utilisation() -> None:
    u = np.array([0.1, 0.35, 0.7, 1.0])
    got = usd_per_mtok(
        replace(ARTICLE, utilisation_ratio=u),
        tokens_per_s=70,
        gpu_capex_usd=1600,
        power_w=450,
        idle_power_w=30,
    )
    assert got.shape == (4,)
    assert np.all(np.diff(got) < 0)  # busier box -> cheaper tokens


def test_cloud_cost_per_mtok() -> None:
    assert cloud_usd_per_mtok(tokens_per_s=100, cloud_usd_per_h=3.6) == pytest.approx(10.0)
    assert cloud_usd_per_mtok(tokens_per_s=100, cloud_usd_per_h=3.6, utilisation_ratio=0.5) == pytest.approx(
        20.0
    )


def test_buy_vs_rent_breakeven() -> None:
    # A100 80GB: $12,000, 400 W, $1.50/h rented, 3 years
    r = buy_vs_rent(ARTICLE, cloud_usd_per_h=1.5, gpu_capex_usd=12000, power_w=400, idle_power_w=50)
    capex_h = 12000 / (3 * 8760)
    fixed = capex_h + 50 / 1000 * 0.12
    slope = (400 - 50) / 1000 * 0.12
    assert r.breakeven_utilisation_ratio == pytest.approx(fixed / (1.5 - slope))
    assert r.owning_wins
    running = (0.7 * 400 + 0.3 * 50) / 1000 * 0.12
    assert r.breakeven_months == pytest.approx(12000 / (1.5 * 0.7 - running) / 730)
    # at 10 % busy the purchase never pays off inside its life
    low = buy_vs_rent(
        replace(ARTICLE, utilisation_ratio=0.1),
        cloud_usd_per_h=1.5,
        gpu_capex_usd=12000,
        power_w=400,
        idle_power_w=50,
    )
    assert not low.owning_wins
    assert low.breakeven_months > 36
    # renting cheaper than the electricity alone: owning never wins
    never = buy_vs_rent(
        replace(ARTICLE, utilisation_ratio=1.0), cloud_usd_per_h=0.01, gpu_capex_usd=12000, power_w=400
    )
    assert never.breakeven_utilisation_ratio == np.inf and never.breakeven_months == np.inf


def test_llama2_70b_training_gpu_hours() -> None:
    # 6 x 70e9 x 2e12 = 8.4e23 FLOPs on A100 (312 TFLOPS dense bf16). At MFU 0.44 that is 1.70 M
    # GPU-hours, the article's "≈1.7M". Meta reports 1,720,320 A100-80GB GPU-hours for Llama-2-70B
    # (Llama 2 paper, table 2), i.e. an implied MFU of 8.4e23 / (1,720,320 h x 3600 x 312e12) = 0.435.
    t = training_cost(
        params=70e9, tokens=2e12, gpu=get_gpu("a100-80gb-sxm"), mfu_ratio=0.44, count=2048, usd_per_gpu_h=1.5
    )
    assert t.flops == pytest.approx(8.4e23)
    assert t.gpu_hours == pytest.approx(1.70e6, rel=0.01)
    assert t.wall_clock_h == pytest.approx(t.gpu_hours / 2048)
    assert t.usd == pytest.approx(1.5 * t.gpu_hours)
    implied_mfu = 8.4e23 / (1_720_320 * 3600 * 312e12)
    assert implied_mfu == pytest.approx(0.435, abs=0.001)
    meta = training_cost(params=70e9, tokens=2e12, gpu=get_gpu("a100-80gb-sxm"), mfu_ratio=implied_mfu)
    assert meta.gpu_hours == pytest.approx(1_720_320, rel=1e-3)


def test_cost_input_errors() -> None:
    with pytest.raises(ModelInputError, match="utilisation_ratio"):
        usd_per_mtok(replace(ARTICLE, utilisation_ratio=1.5), tokens_per_s=10, gpu_capex_usd=1, power_w=1)
    with pytest.raises(ModelInputError, match="tokens_per_s"):
        usd_per_mtok(ARTICLE, tokens_per_s=0, gpu_capex_usd=1, power_w=1)
    with pytest.raises(ModelInputError, match="tokens_per_s"):
        usd_per_mtok(ARTICLE, tokens_per_s=float("nan"), gpu_capex_usd=1, power_w=1)
    with pytest.raises(ModelInputError, match="no purchase price"):
        usd_per_mtok(ARTICLE, tokens_per_s=10, gpu_capex_usd=None, power_w=1)
    with pytest.raises(ModelInputError, match="mfu_ratio"):
        training_cost(params=1e9, tokens=1e9, gpu=get_gpu("a100-80gb-sxm"), mfu_ratio=0)
