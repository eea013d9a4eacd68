"""Serving per request: Little's law over the engine's batch, latency targets, replicas."""

from __future__ import annotations

import math

import pytest

from gpuwatch.model.catalog import get_gpu
from gpuwatch.model.engine_memory import EngineKnobs
from gpuwatch.model.errors import ModelInputError
from gpuwatch.model.llm import get_model
from gpuwatch.model.serving import plan_serving, plan_serving_best_tp


def test_article_002_70b_design_question() -> None:
    """Article 002, Q4: 1000 requests/min, 200-token responses, p95 under 5 s, a 70B model; it recommends
    pairs of A100 80GB at fp16 (its two answers disagree: 10 pairs, then 4). The arithmetic says no pair
    can: 140 GB of fp16 weights read per token over 2 x 2.04 TB/s is ~45 ms per token, 9 s for 200 tokens,
    and at vLLM's default 0.9 utilisation the pair has no room for a KV cache at all."""
    model, gpu = get_model("llama-3-70b"), get_gpu("a100-80gb-sxm")
    kwargs = dict(rate_requests_per_s=1000 / 60, prompt_tokens=500, output_tokens=200, p95_latency_s=5.0)
    pair = plan_serving(model, "fp16", gpu, count=2, **kwargs)  # type: ignore[arg-type]
    assert pair.replicas is None and pair.budget.max_concurrent_sequences == 0
    roomier = plan_serving(
        model,
        "fp16",
        gpu,
        count=2,
        knobs=EngineKnobs(gpu_memory_utilization=0.95),
        **kwargs,  # type: ignore[arg-type]
    )
    assert roomier.budget.max_concurrent_sequences > 0 and roomier.best is None
    assert min(p.latency_s for p in roomier.sweep) > 5.0
    assert roomier.sweep[0].tpot_s == pytest.approx(2 * 70.6e9 / (2 * 2.04e12 * 0.8), rel=0.25)
    # over every TP degree the planner finds the replica that meets 5 s, and sizes the fleet
    plan = plan_serving_best_tp(model, "fp16", gpu, **kwargs)
    best = plan.best
    assert best is not None and plan.replicas is not None and plan.gpus is not None
    assert plan.gpus_per_replica == 8
    assert best.latency_s <= 5.0 and best.concurrency <= plan.budget.max_concurrent_sequences
    # Little's law: the replicas together carry the rate, one fewer would not
    assert plan.replicas * best.requests_per_s >= 1000 / 60 > (plan.replicas - 1) * best.requests_per_s
    assert best.requests_per_s == pytest.approx(best.concurrency / best.latency_s)
    assert best.latency_s == pytest.approx(best.ttft_s + 200 * best.tpot_s)
    # int4 weights (AWQ) read a quarter of the bytes per token: a pair then meets the target
    awq = plan_serving(model, "int4-awq", gpu, count=2, **kwargs)  # type: ignore[arg-type]
    assert awq.best is not None and awq.best.latency_s <= 5.0


def test_batch_sweep_trades_latency_for_cost() -> None:
    plan = plan_serving(
        get_model("llama-3-8b"), "bf16", get_gpu("h100-sxm"), rate_requests_per_s=10, prompt_tokens=256,
        output_tokens=256, sweep_batches=[1, 4, 16, 64, 100000], gpu_usd_per_h=2.0,
        electricity_usd_per_kwh=0.12,
    )  # fmt: skip
    rows = plan.sweep
    assert [r.concurrency for r in rows] == [1, 4, 16, 64]
    assert any("exceed" in n for n in plan.notes)  # the 100000 row cannot be held
    for slow, fast in zip(rows[1:], rows[:-1], strict=True):
        assert slow.latency_s > fast.latency_s
        assert slow.output_tokens_per_s > fast.output_tokens_per_s
        assert slow.usd_per_mtok < fast.usd_per_mtok
    one = rows[0]
    assert one.usd_per_1k_requests == pytest.approx(one.usd_per_mtok * 256 / 1000, rel=1e-9)
    assert math.isfinite(one.power_w) and one.power_w < 700


def test_requests_longer_than_the_model_allows_are_refused() -> None:
    with pytest.raises(ModelInputError, match="maximum of"):
        plan_serving(
            get_model("llama-2-7b"), "fp16", get_gpu("rtx4090"), rate_requests_per_s=1, prompt_tokens=4000,
            output_tokens=500,
        )  # fmt: skip
    with pytest.raises(ModelInputError, match="rate"):
        plan_serving(
            get_model("llama-2-7b"), "fp16", get_gpu("rtx4090"), rate_requests_per_s=float("nan"),
            prompt_tokens=10, output_tokens=10,
        )  # fmt: skip
