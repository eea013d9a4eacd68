"""Engine memory budgets held against the engines' own start-up logs and documented formulas."""

from __future__ import annotations

import pytest

from gpuwatch.model.catalog import get_gpu
from gpuwatch.model.engine_memory import EngineKnobs, engine_budget
from gpuwatch.model.errors import ModelInputError
from gpuwatch.model.llm import get_model

GIB = 2**30
MIB = 2**20


def test_vllm_h100_budget_matches_its_startup_log() -> None:
    """vllm-project/vllm PR #10511, `vllm serve meta-llama/Meta-Llama-3-8B` on an H100 80GB:
    total_gpu_memory 79.22GiB, gpu_memory_utilization 0.90, can use 71.29GiB, model weights take 14.96GiB,
    non_torch_memory 1.79GiB, PyTorch activation peak memory 1.26GiB, available_kv_cache_memory 53.29GiB."""
    b = engine_budget("vllm", get_model("llama-3-8b"), "bf16", get_gpu("h100-sxm"), 8192)
    assert b.visible_bytes / GIB == pytest.approx(79.22, rel=0.002)  # from the H100 capture's FB total
    assert b.budget_bytes / GIB == pytest.approx(71.29, rel=0.002)
    assert b.weights_bytes / GIB == pytest.approx(14.96, rel=0.005)
    assert b.activation_bytes / GIB == pytest.approx(1.26, rel=0.10)  # modelled profile-run peak
    assert b.kv_pool_bytes / GIB == pytest.approx(53.29, rel=0.01)
    # 16-token blocks of 128 KiB/token (32 layers x 8 KV heads x 128 x 2 x 2 bytes)
    assert b.kv_pool_tokens % 16 == 0
    assert b.kv_pool_tokens == pytest.approx(b.kv_pool_bytes / (128 * 1024), abs=16)
    assert b.max_concurrent_sequences == b.kv_pool_tokens // 8192
    assert b.fits


def test_vllm_tp2_halves_weights_and_keeps_the_activation_peak() -> None:
    """Same PR, `-tp 2`: model weights take 7.48GiB, non_torch_memory 3.58GiB, activation peak 1.26GiB."""
    b = engine_budget("vllm", get_model("llama-3-8b"), "bf16", get_gpu("h100-sxm"), 8192, count=2)
    assert b.weights_bytes / GIB == pytest.approx(7.48, rel=0.005)
    assert b.non_torch_bytes / GIB == pytest.approx(3.58, rel=0.001)
    assert b.kv_pool_bytes / GIB == pytest.approx(71.29 - 7.48 - 3.58 - 1.26, rel=0.01)
    # KV heads split two ways: each GPU holds half of every token, so twice the tokens fit in a larger pool
    one = engine_budget("vllm", get_model("llama-3-8b"), "bf16", get_gpu("h100-sxm"), 8192)
    assert b.kv_pool_tokens > 2 * one.kv_pool_tokens


def test_vllm_l40s_held_out_log_within_15_percent() -> None:
    """vllm-project/vllm PR #17122, Llama-3.1-8B-Instruct on one L40S (V1 engine): "GPU KV cache size:
    158,656 tokens", "Maximum concurrency for 32,768 tokens per request: 4.84x". Not used to set any
    constant: the model is +13 % (V1 reserves more for torch.compile and graphs than the V0 log showed)."""
    b = engine_budget("vllm", get_model("llama-3-8b"), "bf16", get_gpu("l40s"), 32768)
    assert b.kv_pool_tokens == pytest.approx(158_656, rel=0.15)
    assert b.max_concurrent_sequences == b.kv_pool_tokens // 32768 >= 4


def test_vllm_refuses_a_model_that_leaves_no_kv_cache() -> None:
    b = engine_budget("vllm", get_model("llama-3-70b"), "fp16", get_gpu("a100-80gb-sxm"), 4096, count=2)
    assert not b.fits and b.max_concurrent_sequences == 0
    assert any("No available memory for the cache blocks" in n for n in b.notes)
    # giving vLLM more of the card (0.98) leaves room for some sequences
    more = engine_budget(
        "vllm", get_model("llama-3-70b"), "fp16", get_gpu("a100-80gb-sxm"), 4096, count=2,
        knobs=EngineKnobs(gpu_memory_utilization=0.98),
    )  # fmt: skip
    assert more.fits and more.kv_pool_bytes > 0


def test_vllm_max_num_seqs_caps_concurrency() -> None:
    b = engine_budget(
        "vllm", get_model("llama-3-8b"), "bf16", get_gpu("h100-sxm"), 512, knobs=EngineKnobs(max_num_seqs=64)
    )
    assert b.max_concurrent_sequences == 64


def test_llamacpp_kv_is_allocated_for_the_whole_n_ctx() -> None:
    """llama.cpp logs "KV self size = 2048.00 MiB" for Llama-2-7B at n_ctx 4096 with f16 K and V:
    4096 tokens x 32 layers x 2 (K, V) x 4096 x 2 bytes."""
    b = engine_budget("llama.cpp", get_model("llama-2-7b"), "q4_0", get_gpu("rtx4090"), 4096)
    assert b.kv_pool_bytes / MIB == pytest.approx(2048.0)
    # compute buffer with flash attention: n_ubatch 512 x n_vocab 32000 x 4 bytes of fp32 logits
    assert b.activation_bytes / MIB == pytest.approx(512 * 32000 * 4 / MIB)
    assert b.max_concurrent_sequences == 1
    # four server slots share n_ctx: at the same 4096 per request n_ctx grows fourfold
    four = engine_budget(
        "llama.cpp",
        get_model("llama-2-7b"),
        "q4_0",
        get_gpu("rtx4090"),
        4096,
        knobs=EngineKnobs(n_parallel=4),
    )
    assert four.kv_pool_bytes / MIB == pytest.approx(4 * 2048.0) and four.max_concurrent_sequences == 4


def test_llamacpp_partial_offload_and_q8_kv() -> None:
    full = engine_budget("llama.cpp", get_model("llama-2-13b"), "fp16", get_gpu("rtx4090"), 4096)
    assert not full.fits  # 26 GB of fp16 weights
    assert any("-ngl" in n for n in full.notes)
    half = engine_budget(
        "llama.cpp", get_model("llama-2-13b"), "fp16", get_gpu("rtx4090"), 4096,
        knobs=EngineKnobs(n_gpu_layers=20),
    )  # fmt: skip
    assert half.fits
    assert half.weights_bytes == pytest.approx(full.weights_bytes * 20 / 40)
    q8 = engine_budget(
        "llama.cpp", get_model("llama-2-7b"), "q4_0", get_gpu("rtx4090"), 4096, kv_dtype="int8"
    )
    assert q8.kv_pool_bytes / MIB == pytest.approx(1024.0, rel=0.01)  # 8-bit K and V: half the f16 size


def test_sglang_and_tensorrt_llm_follow_their_fractions() -> None:
    m, g = get_model("llama-3-8b"), get_gpu("h100-sxm")
    s = engine_budget("sglang", m, "bf16", g, 8192, knobs=EngineKnobs(mem_fraction_static=0.8))
    assert s.weights_bytes + s.kv_pool_bytes == pytest.approx(0.8 * s.visible_bytes)
    t = engine_budget("tensorrt-llm", m, "bf16", g, 8192, knobs=EngineKnobs(free_gpu_memory_fraction=0.5))
    free = t.visible_bytes - t.weights_bytes - t.activation_bytes - t.non_torch_bytes
    assert t.kv_pool_bytes == pytest.approx(0.5 * free)


def test_bad_knobs_and_tp_degrees_are_refused() -> None:
    with pytest.raises(ModelInputError, match="gpu_memory_utilization"):
        EngineKnobs(gpu_memory_utilization=1.5)
    with pytest.raises(ModelInputError, match="attention heads"):
        engine_budget("vllm", get_model("llama-3-8b"), "bf16", get_gpu("h100-sxm"), 4096, count=3)
    with pytest.raises(ModelInputError, match="unknown engine"):
        engine_budget("ollama", get_model("llama-3-8b"), "bf16", get_gpu("h100-sxm"), 4096)
