"""`gpuwatch advise power-limit` on simulated cards: decode gets a lower cap, training keeps its limit."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gpuwatch.cli import main


def advise(capsys: pytest.CaptureFixture[str], scenario: str, *extra: str) -> dict[str, Any]:
    argv = ["advise", "power-limit", "--sim", "rtx4090", "--scenario", scenario, "--time-scale", "20",
            "--interval", "0.5", "--samples", "6", "--json", *extra]  # fmt: skip
    assert main(argv) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


def test_memory_bound_decode_is_advised_a_cap_below_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    gpu = advise(capsys, "decode")["gpus"][0]
    assert gpu["default_power_limit_w"] == 450
    assert gpu["bound"] == "memory"
    assert gpu["advised_power_limit_w"] < gpu["default_power_limit_w"]
    assert 0 < gpu["expected_tokens_per_s_loss_ratio"] < 0.2
    assert gpu["usd_per_mtok_change_ratio"] < 0
    assert gpu["provenance"] == "modelled" and gpu["power_provenance"] == "measured"


def test_compute_bound_training_keeps_the_default_limit(capsys: pytest.CaptureFixture[str]) -> None:
    gpu = advise(capsys, "training")["gpus"][0]
    assert gpu["bound"] == "compute"
    assert gpu["advised_power_limit_w"] == gpu["default_power_limit_w"] == 450
    assert gpu["expected_tokens_per_s_loss_ratio"] == 0
    assert "keep the default" in gpu["reason"]


def test_an_idle_card_gets_no_advice_and_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    gpu = advise(capsys, "idle")["gpus"][0]
    assert gpu["advised_power_limit_w"] is None
    assert "idle" in gpu["reason"]


def test_a_loss_ceiling_bounds_the_tokens_per_joule_objective(capsys: pytest.CaptureFixture[str]) -> None:
    gpu = advise(capsys, "decode", "--objective", "tokens_per_j", "--max-loss", "0.03")["gpus"][0]
    assert gpu["expected_tokens_per_s_loss_ratio"] <= 0.03
    assert gpu["advised_power_limit_w"] < 450
