"""The vectorised what-if sweep equals scalar estimates scenario by scenario."""

from __future__ import annotations

import numpy as np
import pytest

from gpuwatch.model.catalog import get_gpu
from gpuwatch.model.errors import ModelInputError
from gpuwatch.model.llm import get_model
from gpuwatch.model.sweep import sweep
from gpuwatch.model.throughput import estimate_throughput

GPUS = ("rtx3090", "rtx4090", "a100-80gb-sxm", "h100-sxm", "l40s")
QUANTS = ("fp16", "int8", "int4-awq", "q4_0", "fp8")


def test_sweep_covers_100k_scenarios_and_matches_scalar_calls() -> None:
    model = get_model("llama-3.1-8b")  # contexts up to 32K: Llama-3-8B stops at 8K
    gpus = [get_gpu(g) for g in GPUS]
    batches = np.arange(1, 81)
    contexts = np.linspace(128, 32768, 50)
    res = sweep(model, gpus, list(QUANTS), batches, contexts, engine="vllm")
    assert res.size == len(GPUS) * len(QUANTS) * 80 * 50 == 100_000
    rng = np.random.default_rng(0)
    for _ in range(40):
        gi, qi, bi, ci = (int(rng.integers(n)) for n in res.decode_tokens_per_s.shape)
        est = estimate_throughput(
            model, QUANTS[qi], gpus[gi], int(batches[bi]), float(contexts[ci]), engine="vllm"
        )
        assert res.decode_tokens_per_s[gi, qi, bi, ci] == pytest.approx(est.decode_tokens_per_s, rel=1e-9)
        assert res.time_to_first_token_s[gi, qi, bi, ci] == pytest.approx(est.time_to_first_token_s, rel=1e-9)
        assert res.prefill_tokens_per_s[gi, qi, bi, ci] == pytest.approx(est.prefill_tokens_per_s, rel=1e-9)
        assert res.bound[gi, qi, bi, ci] == est.bound


def test_sweep_rejects_empty_or_bad_axes() -> None:
    with pytest.raises(ModelInputError):
        sweep(get_model("llama-2-7b"), [], ["fp16"], [1], [512])
    with pytest.raises(ModelInputError):
        sweep(get_model("llama-2-7b"), [get_gpu("rtx4090")], ["fp16"], [0], [512])
