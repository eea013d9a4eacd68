"""What-if sweep: batch x context x GPU x quantisation in one vectorised evaluation.

Runs the same array kernel as :func:`throughput.estimate_throughput` (``throughput.step_times``)
once over a 4-D grid instead of once per scenario, so 100,000+ scenarios cost one numpy pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gpuwatch.model.catalog import GpuSpec
from gpuwatch.model.engine_profiles import DEFAULT_ENGINE, EngineProfile, get_engine_profile
from gpuwatch.model.errors import ModelInputError
from gpuwatch.model.llm import ModelSpec, check_context
from gpuwatch.model.parallel import default_link
from gpuwatch.model.quant import QuantFormat, get_quant
from gpuwatch.model.roofline import ArrayLike, bound_codes, bound_names
from gpuwatch.model.throughput import kv_bytes_per_token, prefill_peak_flops, step_times, weight_bytes_read


@dataclass(frozen=True)
class SweepResult:
    """Arrays shaped (len(gpu_ids), len(quant_ids), len(batches), len(contexts))."""

    gpu_ids: tuple[str, ...]
    quant_ids: tuple[str, ...]
    batches: np.ndarray
    contexts: np.ndarray
    decode_tokens_per_s: np.ndarray  # aggregate
    time_per_output_token_s: np.ndarray
    prefill_tokens_per_s: np.ndarray
    time_to_first_token_s: np.ndarray
    bound: np.ndarray  # "memory" | "compute" | "interconnect"

    @property
    def size(self) -> int:
        return int(self.decode_tokens_per_s.size)


def sweep(
    model: ModelSpec,
    gpus: Sequence[GpuSpec],
    quants: Sequence[QuantFormat | str],
    batches: ArrayLike,
    contexts: ArrayLike,
    *,
    engine: str | EngineProfile = DEFAULT_ENGINE,
    kv_dtype: str = "fp16",
) -> SweepResult:
    """Single-GPU serving estimates over the full grid; prompt length = context."""
    prof = get_engine_profile(engine)
    qs = [get_quant(q) if isinstance(q, str) else q for q in quants]
    b = np.atleast_1d(np.asarray(batches, float))
    c = np.atleast_1d(np.asarray(contexts, float))
    if not gpus or not qs or b.ndim != 1 or c.ndim != 1:
        raise ModelInputError("sweep needs at least one GPU and one quant, and 1-D batches and contexts")
    if np.any(b < 1) or np.any(c < 1):
        raise ModelInputError("sweep batches and contexts must be >= 1")
    bw = np.array([prof.bandwidth_ratio(g.memory_type) * g.memory_bandwidth_bytes_s for g in gpus])
    peak = np.array([[prof.effective_peak_flops(g, q.compute_dtype) for q in qs] for g in gpus])
    pre_peak = np.array([[prefill_peak_flops(prof, g, q) for q in qs] for g in gpus])
    check_context(model, c)
    links = {default_link(g) for g in gpus}
    b4 = b.reshape(1, 1, -1, 1)
    c4 = c.reshape(1, 1, 1, -1)
    w_dec = np.stack([np.asarray(weight_bytes_read(model, q, b)) for q in qs]).reshape(1, len(qs), -1, 1)
    w_pre = np.stack([np.asarray(weight_bytes_read(model, q, b4 * c4)) for q in qs]).reshape(
        1, len(qs), len(b), len(c)
    )
    r = step_times(
        model,
        weights_read_decode=w_dec,
        weights_read_prefill=w_pre,
        kv_per_token_bytes=kv_bytes_per_token(model, kv_dtype),
        effective_bandwidth_bytes_s=bw.reshape(-1, 1, 1, 1),
        effective_peak_flops=peak.reshape(len(gpus), len(qs), 1, 1),
        effective_prefill_peak_flops=pre_peak.reshape(len(gpus), len(qs), 1, 1),
        per_layer_overhead_s=prof.per_layer_overhead_s,
        batch=b4,
        context_tokens=c4,
        prompt_tokens=c4,
        count=1,
        parallel="tp",
        link=next(iter(links)),  # unused at count 1
    )
    shape = (len(gpus), len(qs), len(b), len(c))
    step = np.broadcast_to(r["step_s"], shape)
    codes = bound_codes(r["compute_s"], r["memory_s"], r["comm_s"])
    return SweepResult(
        gpu_ids=tuple(g.id for g in gpus),
        quant_ids=tuple(q.id for q in qs),
        batches=b,
        contexts=c,
        decode_tokens_per_s=np.broadcast_to(b4 / step, shape).copy(),
        time_per_output_token_s=step.copy(),
        prefill_tokens_per_s=np.broadcast_to(r["prefill_tokens"] / r["prefill_s"], shape).copy(),
        time_to_first_token_s=np.broadcast_to(r["prefill_s"], shape).copy(),
        bound=np.asarray(np.broadcast_to(bound_names(np.broadcast_to(codes, shape)), shape)).copy(),
    )
