"""The power-cap advisor: decode is advised a cap below the default, compute-bound work keeps it."""

from __future__ import annotations

import pytest

from gpuwatch.model.errors import ModelInputError
from gpuwatch.model.power import board_power_w, card_power
from gpuwatch.model.power_advice import PowerAdvice, activity_from_measurement, advise_power_limit

CARD = card_power(450, "geforce", idle_w=22)  # an RTX 4090
CAPEX_USD_PER_H = 1599 / (3 * 8760)


def _advise(power_w: float, clock_ratio: float, bound: str, **kw: object) -> PowerAdvice:
    return advise_power_limit(
        CARD, activity=activity_from_measurement(CARD, power_w, clock_ratio), bound=bound, min_limit_w=150,
        tokens_per_s_at_default=100.0, fixed_usd_per_h=CAPEX_USD_PER_H, electricity_usd_per_kwh=0.12, **kw,
    )  # type: ignore[arg-type]  # fmt: skip


def test_memory_bound_decode_is_advised_a_lower_cap() -> None:
    adv = _advise(397, 1.0, "memory")
    assert adv.advised_limit_w < 450
    assert 0 < adv.expected_speed_loss_ratio < 0.2
    assert adv.usd_per_mtok_advised < adv.usd_per_mtok_default
    assert adv.tokens_per_j_gain_ratio > 0.15
    assert "memory-bound" in adv.reason


def test_compute_bound_training_keeps_the_default() -> None:
    adv = _advise(450, 0.9, "compute")
    assert adv.advised_limit_w == 450
    assert adv.expected_speed_loss_ratio == 0
    assert "keep the default" in adv.reason


def test_tokens_per_joule_with_a_loss_ceiling() -> None:
    free = _advise(397, 1.0, "memory", objective="tokens_per_j")
    assert free.advised_limit_w == 150  # efficiency alone: the floor
    bounded = _advise(397, 1.0, "memory", objective="tokens_per_j", max_speed_loss_ratio=0.07)
    assert 150 < bounded.advised_limit_w < 450
    assert bounded.expected_speed_loss_ratio <= 0.07


def test_activity_inverts_the_power_model() -> None:
    a = activity_from_measurement(CARD, 300.0, 0.8)
    assert board_power_w(CARD.idle_w, CARD.full_load_w, a, 0.8) == pytest.approx(300.0)
    with pytest.raises(ModelInputError):
        activity_from_measurement(CARD, float("nan"), 1.0)
    with pytest.raises(ModelInputError, match="bound"):
        advise_power_limit(CARD, activity=0.5, bound="io", min_limit_w=150)
