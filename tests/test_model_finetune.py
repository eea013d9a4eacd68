"""Fine-tuning: frameworks differ several-fold in the longest context; checkpointing and LoRA compute."""

from __future__ import annotations

import pytest

from gpuwatch.model.errors import ModelInputError
from gpuwatch.model.finetune import longest_context, step_flops_per_token
from gpuwatch.model.llm import get_model

GIB = 2**30


def test_unsloth_trains_about_twelve_times_the_context_of_hf_on_80_gb() -> None:
    """docs.unsloth.ai: Llama 3.1 8B QLoRA r32 on 80 GB, 342,733 tokens with Unsloth vs 28,454 with HF+FA2."""
    m = get_model("llama-3-8b")
    hf = longest_context(m, 80 * GIB, framework="hf")
    unsloth = longest_context(m, 80 * GIB, framework="unsloth")
    assert unsloth.max_context_tokens / hf.max_context_tokens == pytest.approx(342_733 / 28_454, rel=0.10)
    assert (
        hf.fixed_bytes == unsloth.fixed_bytes
    )  # the same weights and adapters; only the per-token part differs


def test_a_card_too_small_for_the_fixed_part_trains_nothing() -> None:
    c = longest_context(get_model("llama-3-70b"), 24 * GIB, framework="unsloth")
    assert c.max_context_tokens == 0


def test_checkpointing_costs_a_third_more_and_lora_less_than_full() -> None:
    m = get_model("llama-3-8b")
    full = step_flops_per_token(m, method="full", checkpointing=False)
    assert full == pytest.approx(6 * m.active_params)
    assert step_flops_per_token(m, method="full", checkpointing=True) / full == pytest.approx(4 / 3)
    lora = step_flops_per_token(m, method="lora", checkpointing=False)
    assert lora / full == pytest.approx(2 / 3)
    with pytest.raises(ModelInputError, match="framework"):
        longest_context(m, 80 * GIB, framework="deepspeed")
