"""`gpuwatch plan` as a running engine answers: its memory budget, its power, requests per second."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gpuwatch.cli import main

GIB = 2**30


def plan_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(["plan", *argv, "--json"]) == 0
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


def plan_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["plan", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_vllm_memory_budget_matches_its_startup_log(capsys: pytest.CaptureFixture[str]) -> None:
    """The vLLM log of PR #10511 (Meta-Llama-3-8B, H100 80GB, gpu_memory_utilization 0.90):
    available_kv_cache_memory 53.29GiB."""
    out = plan_json(
        capsys, "memory", "--model", "llama-3-8b", "--quant", "bf16", "--gpu", "h100-sxm",
        "--engine-profile", "vllm", "--context", "8192",
    )  # fmt: skip
    assert out["kv_pool_bytes"] / GIB == pytest.approx(53.29, rel=0.01)
    assert out["max_concurrent_sequences"] == out["engine_budget"]["kv_pool_tokens"] // 8192
    assert out["engine_budget"]["provenance"] == "modelled"
    # half the card for vLLM: a smaller pool, fewer sequences
    half = plan_json(
        capsys, "memory", "--model", "llama-3-8b", "--quant", "bf16", "--gpu", "h100-sxm",
        "--engine-profile", "vllm", "--context", "8192", "--gpu-memory-utilization", "0.5",
    )  # fmt: skip
    visible = out["engine_budget"]["per_gpu"]["visible_bytes"]
    assert half["kv_pool_bytes"] == pytest.approx(out["kv_pool_bytes"] - 0.4 * visible)
    assert half["max_concurrent_sequences"] < out["max_concurrent_sequences"]


def test_llamacpp_budget_through_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    out = plan_json(
        capsys, "memory", "--model", "llama-2-7b", "--quant", "q4_0", "--gpu", "rtx4090",
        "--engine-profile", "llama.cpp", "--context", "4096", "--n-parallel", "2",
    )  # fmt: skip
    assert out["kv_pool_bytes"] == pytest.approx(2 * 2048 * 2**20)  # n_ctx 8192: "KV self size" x 2
    assert out["max_concurrent_sequences"] == 2


def test_cost_uses_modelled_power_below_tdp_for_batch1_decode(capsys: pytest.CaptureFixture[str]) -> None:
    out = plan_json(capsys, "cost", "--model", "llama-3-8b", "--gpu", "rtx4090", "--batch", "1")
    assert out["power_provenance"] == "modelled"
    assert out["power_w"] < out["tdp_w"] == 450
    assert out["tokens_per_j"] == pytest.approx(out["decode_tokens_per_s"] / out["power_w"])
    capped = plan_json(
        capsys, "cost", "--model", "llama-3-8b", "--gpu", "rtx4090", "--batch", "1", "--power-limit", "300"
    )
    assert capped["power_w"] <= 300 and capped["power_capped"]
    assert 0.85 * out["decode_tokens_per_s"] < capped["decode_tokens_per_s"] < out["decode_tokens_per_s"]
    assert capped["tokens_per_j"] > out["tokens_per_j"]
    # the table says the power is modelled
    assert main(["plan", "cost", "--model", "llama-3-8b", "--gpu", "rtx4090"]) == 0
    assert "power (modelled)" in capsys.readouterr().out


def test_serve_answers_article_002(capsys: pytest.CaptureFixture[str]) -> None:
    """1000 requests/min, 200 output tokens, p95 under 5 s, a 70B model on A100 80GB (article 002, Q4)."""
    out = plan_json(
        capsys, "serve", "--model", "llama-3-70b", "--gpu", "a100-80gb-sxm", "--rate", "1000/min",
        "--prompt-tokens", "500", "--output-tokens", "200", "--p95-latency", "5", "--gpu-price", "15000",
    )  # fmt: skip
    assert out["rate_requests_per_s"] == pytest.approx(1000 / 60)
    assert out["latency_s"] <= 5.0
    assert out["replicas"] * out["replica_requests_per_s"] >= 1000 / 60
    assert out["gpus"] == out["replicas"] * out["gpus_per_replica"]
    assert out["concurrency"] <= out["max_concurrent_sequences"]
    assert out["fleet_usd_per_1k_requests"] == pytest.approx(out["fleet_usd_per_mtok"] * 200 / 1000)
    # a pair of cards at fp16 cannot: no concurrency meets 5 s, and the answer says so (no guess)
    pair = plan_json(
        capsys, "serve", "--model", "llama-3-70b", "--gpu", "a100-80gb-sxm", "--count", "2", "--rate", "16.7",
        "--output-tokens", "200", "--p95-latency", "5", "--gpu-memory-utilization", "0.95",
    )  # fmt: skip
    assert pair["replicas"] is None and pair["gpus"] is None and pair["latency_s"] is None
    assert any("no price" in n for n in pair["notes"])  # no --gpu-price for a datacenter part


def test_serve_batch_sweep_up_to_the_memory_limit(capsys: pytest.CaptureFixture[str]) -> None:
    out = plan_json(
        capsys, "serve", "--model", "llama-3-8b", "--gpu", "rtx4090", "--count", "1", "--rate", "2",
        "--sweep-batch", "1,2,4,8,100000",
    )  # fmt: skip
    batches = [row["concurrency"] for row in out["sweep"]]
    assert batches == [1, 2, 4, 8]
    assert any("exceed" in n for n in out["notes"])
    speeds = [r["output_tokens_per_s"] for r in out["sweep"]]
    assert speeds == sorted(speeds)


def test_train_says_what_checkpointing_and_lora_cost(capsys: pytest.CaptureFixture[str]) -> None:
    full = plan_json(capsys, "train", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--tokens", "1e9")
    assert "8N of hardware work, 33% more" in full["compute_basis"]
    lora = plan_json(
        capsys, "train", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--tokens", "1e9", "--mode", "lora"
    )
    assert lora["flops"] == pytest.approx(full["flops"] * 4 / 6)
    assert "LoRA" in lora["compute_basis"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (("serve", "--model", "llama-3-8b", "--gpu", "rtx4090", "--rate", "lots"), "--rate"),
        (("serve", "--model", "llama-3-8b", "--gpu", "rtx4090", "--rate", "nan"), "--rate"),
        (("serve", "--model", "llama-3-70b", "--gpu", "a100-80gb-sxm", "--count", "3"), "heads"),
        (("cost", "--model", "llama-3-8b", "--gpu", "rtx4090", "--power-limit", "-5"), "--power-limit"),
        (
            ("memory", "--model", "llama-3-8b", "--gpu", "rtx4090", "--gpu-memory-utilization", "2"),
            "utilization",
        ),
    ],
)
def test_bad_engine_and_serving_options_are_one_line(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], needle: str
) -> None:
    assert needle in plan_error(capsys, *argv)


def test_train_says_how_far_each_framework_reaches(capsys: pytest.CaptureFixture[str]) -> None:
    """Unsloth's published table: Llama 3.1 8B QLoRA r32 on 80 GB, 342,733 tokens vs 28,454 with HF+FA2."""
    out = plan_json(
        capsys, "train", "--model", "llama-3-8b", "--gpu", "a100-80gb-sxm", "--mode", "qlora", "--lora-rank",
        "32", "--tokens", "1e8", "--framework", "unsloth",
    )  # fmt: skip
    by = out["longest_context_tokens_by_framework"]
    assert out["longest_context_tokens"] == by["unsloth"] == pytest.approx(342_733, rel=0.10)
    assert by["hf"] == pytest.approx(28_454, rel=0.25)
