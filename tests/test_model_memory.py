"""Memory accounting: inference, training (ZeRO, optimizers), LoRA/QLoRA, fits(), and the articles'
examples."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from gpuwatch.model.catalog import get_gpu
from gpuwatch.model.errors import ModelInputError
from gpuwatch.model.llm import get_model, param_breakdown
from gpuwatch.model.memory import (
    ALLOCATOR_RESERVE_RATIO,
    CUDA_CONTEXT_BYTES,
    MemoryBreakdown,
    activation_bytes_per_layer,
    inference_memory,
    kv_cache_bytes,
    kv_cache_bytes_per_token,
    lora_memory,
    lora_trainable_params,
    qlora_memory,
    training_memory,
    weight_bytes,
)

GIB = 2**30
SEVEN_B = replace(get_model("llama-2-7b"), total_params=7e9)  # the article's round "7B"


def article_002_breakdown() -> MemoryBreakdown:
    """Article 002's assumptions: 2 B weights, 4 B (fp32) gradients, 12 B optimizer (fp32 master + m + v),
    activations = 2 x weight bytes, nothing else (no CUDA context, no logits)."""
    return training_memory(
        SEVEN_B,
        weight_dtype="bf16",
        grad_dtype="fp32",
        master_dtype="fp32",
        optimizer="adamw",
        activation_bytes=2 * 7e9 * 2,
        include_logits=False,
        cuda_context_bytes=0,
    )


def test_article_002_fig_7b_mixed_precision_adamw_143_4() -> None:
    """Article 002 '7B model': Weights 13.0, Gradients 26.1, Optimizer states 78.2, Activations 26.1,
    TOTAL 143.4 ('GB' printed, but it divides by 1024**3: GiB)."""
    parts = {name: value / GIB for name, value in article_002_breakdown().components.items()}
    assert parts["weights"] == pytest.approx(13.0, abs=0.05)
    assert parts["gradients"] == pytest.approx(26.1, abs=0.05)
    assert parts["master_weights"] + parts["optimizer_states"] == pytest.approx(78.2, abs=0.05)
    assert parts["activations"] == pytest.approx(26.1, abs=0.05)
    assert article_002_breakdown().total_gib == pytest.approx(143.4, abs=0.05)


def test_default_accounting_corrects_article_002_gradients() -> None:
    """Correction to article 002: mixed-precision AdamW keeps gradients in the parameter dtype (bf16, 2 B),
    the
    fp32 accumulation living in the master copy (ZeRO paper: 2 + 2 + 12 = 16 B/param, not 18). Same
    activations:
    gradients 13.0 GiB instead of 26.1, total 130.4 GiB instead of 143.4."""
    ours = training_memory(SEVEN_B, activation_bytes=2 * 7e9 * 2, include_logits=False, cuda_context_bytes=0)
    assert ours.components["gradients"] / GIB == pytest.approx(13.04, abs=0.01)
    assert ours.total_gib == pytest.approx(130.4, abs=0.05)
    assert ours.total_bytes < article_002_breakdown().total_bytes
    static = sum(ours.components[k] for k in ("weights", "gradients", "master_weights", "optimizer_states"))
    assert static == pytest.approx(16 * 7e9)


def test_article_kv_cache_70b_batch32_context8192() -> None:
    """Article 002: 'KV cache = 32 x 8192 x 80 x 128 x 2 x 2 bytes = ~85 GB'. The product as written is 10.7
    GB:
    it omits the KV-head count. Llama-2-70B has GQA with 8 KV heads, and x8 gives the true 85.9 GB (80 GiB),
    so
    the figure is right and the formula is wrong. Article 000's '4096 context, batch 8 -> ~80 GB' assumes 64
    KV
    heads (no GQA); the true Llama-2-70B figure there is 10.7 GB."""
    llama70 = get_model("llama-2-70b")
    assert pytest.approx(10.7e9, rel=0.01) == 32 * 8192 * 80 * 128 * 2 * 2  # the article's product
    assert kv_cache_bytes(llama70, 32, 8192) == pytest.approx(85.9e9, rel=0.001)
    assert kv_cache_bytes(llama70, 32, 8192) / GIB == pytest.approx(80.0)
    no_gqa = replace(llama70, num_kv_heads=64)
    assert kv_cache_bytes(no_gqa, 8, 4096) == pytest.approx(85.9e9, rel=0.001)  # article 000's assumption
    assert kv_cache_bytes(llama70, 8, 4096) == pytest.approx(10.7e9, rel=0.01)  # true figure
    assert kv_cache_bytes_per_token(llama70, "fp8") == pytest.approx(
        kv_cache_bytes_per_token(llama70) / 2, rel=1e-6
    )


def test_article_001_lora_and_qlora_7b_ranges() -> None:
    """Article 001: 7B LoRA r16 ~18-20 GB, QLoRA ~8-10 GB. Assumptions that reproduce both: Llama-2-7B,
    micro-batch 2 x 2048 tokens, r16 on all linear layers, gradient checkpointing, eager attention (the
    article warns FlashAttention silently falls back), bf16 adapters with fp32 master + AdamW states."""
    model = get_model("llama-2-7b")
    lora = lora_memory(model, 2, 2048, rank=16, flash_attention=False)
    qlora = qlora_memory(model, 2, 2048, rank=16, flash_attention=False)
    assert 18e9 <= lora.total_bytes <= 20e9
    assert 8e9 <= qlora.total_bytes <= 10e9
    assert lora.mode == "lora" and qlora.mode == "qlora"
    # the nf4-dq base is 4.127 bits on linear weights, embeddings/lm_head stay 16-bit
    counts = param_breakdown(model)
    expected = counts.linear * 4.127 / 8 + (counts.total - counts.linear) * 2
    assert qlora.components["base_weights"] == pytest.approx(expected, rel=1e-4)
    # adapters are a fraction of a percent of the model (article: 0.1-1 %)
    assert 0.001 < lora_trainable_params(model, 16) / model.total_params < 0.01


def test_lora_trainable_params_follow_rank_and_targets() -> None:
    model = get_model("llama-2-7b")
    # q and v only (PEFT's Llama default): r x (4096 + 4096) x 2 modules x 32 layers
    assert lora_trainable_params(model, 8, ("q_proj", "v_proj")) == 8 * 8192 * 2 * 32
    ranks = np.array([8, 16, 64])
    assert np.allclose(lora_trainable_params(model, ranks), ranks * lora_trainable_params(model, 1))
    # GQA: k/v adapters are narrower on Llama-3-8B (1024-wide KV)
    assert lora_trainable_params(get_model("llama-3-8b"), 1, "k_proj") == (4096 + 1024) * 32
    with pytest.raises(ModelInputError, match="unknown LoRA target module 'qkv'"):
        lora_trainable_params(model, 8, ("qkv",))


def test_eight_bit_adamw_cuts_optimizer_states_by_three_quarters() -> None:
    model = get_model("llama-2-7b")
    full = training_memory(model).components["optimizer_states"]
    eight = training_memory(model, optimizer="adamw8bit").components["optimizer_states"]
    assert 1 - eight / full == pytest.approx(0.75, abs=0.002)  # article 001: -75 %
    sgd = training_memory(model, optimizer="sgd").components["optimizer_states"]
    assert sgd == pytest.approx(full / 2)
    with pytest.raises(ModelInputError, match="unknown optimizer 'adam9'"):
        training_memory(model, optimizer="adam9")


def test_zero_stages_shard_progressively() -> None:
    model = get_model("llama-2-7b")
    p = model.total_params
    per_stage = [training_memory(model, zero_stage=z, dp_gpus=8, include_logits=False) for z in (0, 1, 2, 3)]
    static = [sum(b.components[k] for k in ("weights", "gradients", "master_weights", "optimizer_states"))
              for b in per_stage]  # fmt: skip
    assert static[0] == pytest.approx(16 * p)
    assert static[1] == pytest.approx(2 * p + 2 * p + 12 * p / 8)
    assert static[2] == pytest.approx(2 * p + (2 + 12) * p / 8)
    assert static[3] == pytest.approx(16 * p / 8)
    # activations are per rank: ZeRO does not touch them
    assert per_stage[0].components["activations"] == per_stage[3].components["activations"]
    with pytest.raises(ModelInputError, match="zero_stage"):
        training_memory(model, zero_stage=4)


def test_korthikanti_activations_and_checkpointing() -> None:
    model = get_model("llama-2-7b")
    s, b, h, a = 2048, 1, 4096, 32
    assert activation_bytes_per_layer(model, b, s, flash_attention=False) == s * b * h * (34 + 5 * a * s / h)
    assert activation_bytes_per_layer(model, b, s) == s * b * h * 34
    full = training_memory(model, 1, 2048).components["activations"]
    ckpt = training_memory(model, 1, 2048, activation_checkpointing=True).components["activations"]
    assert ckpt == pytest.approx(32 * 2 * s * b * h + 34 * s * b * h)
    assert ckpt < 0.2 * full


def test_inference_breakdown_and_fits() -> None:
    model = get_model("llama-2-7b")
    rtx4090 = get_gpu("rtx4090")
    mem = inference_memory(model, "fp16", batch=1, context_tokens=4096)
    assert mem.components["weights"] == pytest.approx(model.total_params * 2)
    assert mem.components["kv_cache"] == pytest.approx(4096 * 2 * 32 * 32 * 128 * 2)  # 2 GiB
    assert mem.components["cuda_context"] == CUDA_CONTEXT_BYTES
    assert mem.fits(rtx4090)
    assert not inference_memory(model, "fp16", batch=16, context_tokens=4096).fits(rtx4090)
    # weight-only 4-bit leaves embeddings/lm_head in fp16; GGUF figures cover the whole file
    counts = param_breakdown(model)
    assert weight_bytes(model, "int4-awq") == pytest.approx(
        counts.linear * 4.15625 / 8 + (counts.total - counts.linear) * 2
    )
    assert weight_bytes(model, "q4_0") == pytest.approx(model.total_params * 4.5 / 8)
    # MoE: every expert is resident
    mixtral = get_model("mixtral-8x7b")
    assert weight_bytes(mixtral, "fp16") == pytest.approx(2 * 46.7e9, rel=0.001)


def test_fits_keeps_the_allocator_reserve_and_splits_over_gpus() -> None:
    h100 = get_gpu("h100-sxm")
    usable = MemoryBreakdown.usable_bytes(h100)
    assert usable == pytest.approx(80 * GIB * (1 - ALLOCATOR_RESERVE_RATIO))
    just_over = MemoryBreakdown({"weights": usable + 1.0}, "inference")
    assert not just_over.fits(h100) and just_over.fits(h100, reserve_ratio=0.0)
    llama70 = inference_memory(get_model("llama-2-70b"), "fp16", batch=64, context_tokens=4096)
    assert not llama70.fits(h100, 2)
    assert llama70.fits(h100, 3)
    assert llama70.gpus_needed(h100) == 3
    # the CUDA context does not shrink with more GPUs
    per_gpu = llama70.bytes_per_gpu(4)
    sharded = llama70.total_bytes - llama70.components["cuda_context"] - llama70.components["workspace"]
    assert per_gpu == pytest.approx(sharded / 4 + CUDA_CONTEXT_BYTES + llama70.components["workspace"])


def test_everything_broadcasts_like_a_loop() -> None:
    model = get_model("llama-3.1-8b")
    batches = np.array([1, 4, 16])[:, None]
    contexts = np.array([512, 2048, 8192, 32768])
    grid = inference_memory(model, "q4_K_M", batches, contexts)
    assert np.shape(grid.total_bytes) == (3, 4)
    for i, b in enumerate([1, 4, 16]):
        for j, c in enumerate([512, 2048, 8192, 32768]):
            one = inference_memory(model, "q4_K_M", b, c)
            assert np.asarray(grid.total_bytes)[i, j] == pytest.approx(one.total_bytes)
    fits = np.asarray(grid.fits(get_gpu("rtx4090")))
    assert fits.shape == (3, 4) and fits[0, 0] and not fits[2, 3]
    dp = training_memory(model, zero_stage=3, dp_gpus=np.array([1, 2, 4, 8]))
    assert np.all(np.diff(dp.total_bytes) < 0)
    assert isinstance(inference_memory(model).total_bytes, float)
    assert grid.as_dict()["breakdown"]["kv_cache"][0][0] == pytest.approx(
        512 * kv_cache_bytes_per_token(model)
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: inference_memory(get_model("llama-2-7b"), batch=-1), "batch must be"),
        (lambda: inference_memory(get_model("llama-2-7b"), kv_dtype="fp5"), "kv_dtype: unknown"),
        (lambda: training_memory(get_model("llama-2-7b"), dp_gpus=0), "dp_gpus must be a whole number"),
        (lambda: inference_memory(get_model("llama-2-7b")).bytes_per_gpu(1.5), "count must be"),
    ],
)
def test_bad_inputs_raise_one_line_errors(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelInputError, match=message):
        call()
