"""Planner benchmark: one vectorised sweep vs a plain Python loop of scalar estimates, same scenarios."""

from __future__ import annotations

import time

import numpy as np

from gpuwatch.model.catalog import get_gpu
from gpuwatch.model.llm import get_model
from gpuwatch.model.sweep import sweep
from gpuwatch.model.throughput import estimate_throughput

GPUS = ("rtx3090", "rtx4090", "a100-80gb-sxm", "h100-sxm", "l40s")
QUANTS = ("fp16", "int8", "int4-awq", "q4_0", "fp8")


def run(n_scenarios: int = 100_000, loop_sample: int = 2_000) -> list[dict[str, float | int | str]]:
    """Time the sweep over ~n_scenarios and a scalar loop over a sample of them, extrapolated."""
    model = get_model("llama-3-8b")
    gpus = [get_gpu(g) for g in GPUS]
    per_pair = max(1, n_scenarios // (len(GPUS) * len(QUANTS)))
    n_b = min(80, per_pair)
    n_c = -(-per_pair // n_b)
    batches = np.arange(1, n_b + 1)
    contexts = np.linspace(128, min(32768, model.max_context_tokens), n_c)  # the model refuses longer
    t0 = time.perf_counter()
    res = sweep(model, gpus, list(QUANTS), batches, contexts)
    vec_s = time.perf_counter() - t0
    total = res.size
    rng = np.random.default_rng(0)
    sample = min(loop_sample, total)
    idx = [tuple(int(rng.integers(n)) for n in res.decode_tokens_per_s.shape) for _ in range(sample)]
    t0 = time.perf_counter()
    for gi, qi, bi, ci in idx:
        estimate_throughput(model, QUANTS[qi], gpus[gi], int(batches[bi]), float(contexts[ci]))
    loop_s = (time.perf_counter() - t0) / sample * total
    rows: list[dict[str, float | int | str]] = [
        {"name": "planner sweep (vectorised)", "scenarios": total, "seconds": vec_s},
        {
            "name": f"planner loop (scalar, {sample} timed, extrapolated)",
            "scenarios": total,
            "seconds": loop_s,
        },
        {"name": "planner speed-up (loop / vectorised)", "scenarios": total, "ratio": loop_s / vec_s},
    ]
    ratio = loop_s / vec_s
    print(f"planner: {total} scenarios  vectorised {vec_s:.3f} s  loop {loop_s:.1f} s  ratio {ratio:.0f}x")
    return rows
