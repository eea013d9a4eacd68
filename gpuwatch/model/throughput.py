"""Prefill and decode step times, tokens/s, time per output token and time to first token.

Decode step of a batch B at context C (per stream, tokens already in the KV cache):
  bytes = weights read + B x C x KV bytes/token           (GQA: KV heads, not attention heads)
  FLOPs = B x (2 x active params + 4 x layers x C x heads x head_dim)
          (2 FLOP per weight MAC; attention QK^T and AV are 2 x 2 x heads x head_dim x C per layer)
  time  = max(bytes / effective bandwidth, FLOPs / effective tensor peak)
          + layers x engine per-layer overhead + tensor-parallel all-reduces (not overlapped)
Weights read per step: the token-embedding table is excluded (one row per token is gathered) unless
tied to the LM head. MoE: all shared weights plus the experts the batch touches; with uniform
top-k routing of B tokens over E experts the expected number touched is E x (1 - (1 - k/E)^B).
FLOPs use the active parameters.
Prefill of P prompt tokens per stream: FLOPs = B x (P x 2 x active + 2 x layers x heads x head_dim x P^2)
(causal attention: half of the P x P score matrix), bytes = weights once + the KV cache written.
Sliding-window layers cache and attend to at most their window (memory.kv_cached_tokens); MLA caches one
latent per layer and, with the up-projections absorbed, attends over it (heads x (2 x kv_lora_rank +
qk_rope_head_dim) x 2 FLOPs per cached token per layer in decode).
Prefill runs at the peak of the weight format's GEMM path (quant.QuantFormat.prefill_path and
prefill_ratio: fp16 GEMM, dequantise-then-fp16, int8 MMA, fp8, fp4), not always the fp16 peak.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpuwatch.model import elementwise as ew
from gpuwatch.model import llm, memory
from gpuwatch.model.catalog import GpuSpec
from gpuwatch.model.engine_profiles import DEFAULT_ENGINE, EngineProfile, get_engine_profile
from gpuwatch.model.errors import ModelInputError
from gpuwatch.model.llm import ModelSpec
from gpuwatch.model.parallel import Link, allreduce_time_s, default_link
from gpuwatch.model.quant import DEQUANT_FP16_PREFILL_RATIO, QuantFormat
from gpuwatch.model.roofline import ArrayLike, as_result, bound_codes, bound_names

ACTIVATION_BYTES = 2.0  # fp16/bf16 activations cross the links


def _quant(quant: QuantFormat | str) -> QuantFormat:
    from gpuwatch.model.quant import get_quant

    return get_quant(quant) if isinstance(quant, str) else quant


def weight_bytes(model: ModelSpec, quant: QuantFormat | str) -> float:
    """All weights as stored (gpuwatch/model/memory.py's accounting of scales and 16-bit tensors)."""
    return float(memory.weight_bytes(model, _quant(quant)))


def expected_experts_touched(model: ModelSpec, batch: ArrayLike) -> ArrayLike:
    """E x (1 - (1 - k/E)^B): distinct experts B tokens hit under uniform top-k routing."""
    e, k = model.num_experts, model.experts_per_token
    b = ew.floats(batch)
    if e <= 1:
        return as_result(ew.ones_like(b))
    return as_result(e * (1.0 - (1.0 - k / e) ** b))


def _part_bytes(model: ModelSpec, quant: QuantFormat) -> tuple[float, float]:
    """(input-embedding bytes, routed-expert bytes) as stored in this format."""
    counts = llm.param_breakdown(model)
    bpp = quant.bytes_per_param
    emb = counts.embedding * (bpp if quant.applies_to == "all" else 2.0)
    return emb, counts.routed_experts * bpp  # routed experts are nn.Linear weights in every format


def weight_bytes_read(model: ModelSpec, quant: QuantFormat | str, batch: ArrayLike) -> ArrayLike:
    """Weight bytes one forward step over ``batch`` tokens streams from DRAM: everything but the input
    embedding table (one row per token is gathered; tied tables are read whole as the LM head), with
    only the routed experts the batch touches."""
    q = _quant(quant)
    w = weight_bytes(model, q)
    emb, experts = _part_bytes(model, q)
    skipped = 0.0 if model.tie_word_embeddings else emb
    touched = ew.floats(expected_experts_touched(model, batch))
    e = max(model.num_experts, 1)
    return as_result(w - skipped - experts + experts * touched / e)


def attention_width(model: ModelSpec) -> float:
    """Decode attention FLOPs per cached token per layer, over 4: heads x head_dim for GQA (QK^T and AV
    each 2 x heads x head_dim); for MLA with absorbed up-projections, heads x (kv_lora_rank + rope/2)."""
    if model.is_mla:
        return model.num_attention_heads * (model.kv_lora_rank + model.qk_rope_head_dim / 2)
    return float(model.num_attention_heads * model.head_dim)


def _prefill_attention_width(model: ModelSpec) -> float:
    """Prefill attention runs MLA un-absorbed: q.k over nope+rope dims, then AV over v_head_dim."""
    if model.is_mla:
        qk = model.qk_nope_head_dim + model.qk_rope_head_dim
        return model.num_attention_heads * (qk + model.v_head_dim) / 2
    return float(model.num_attention_heads * model.head_dim)


def _attended_pairs(model: ModelSpec, prompt_tokens: ArrayLike) -> ArrayLike:
    """Causal (query, key) pairs of a prompt, averaged over the layers: P^2/2 for full attention, and for a
    window W < P on the sliding layers W x P - W^2/2."""
    p = prompt_tokens
    full = p**2 / 2
    if not model.num_sliding_layers:
        return full
    w = float(model.sliding_window)
    windowed = ew.where(p <= w, full, w * p - w**2 / 2)
    n_full = model.num_layers - model.num_sliding_layers
    return (n_full * full + model.num_sliding_layers * windowed) / model.num_layers


def flops_per_token(model: ModelSpec, context_tokens: ArrayLike) -> ArrayLike:
    """Decode FLOPs of one token: 2 x active params + 4 x layers x cached context x attention width."""
    c = ew.floats(memory.kv_cached_tokens(model, context_tokens))
    return as_result(2.0 * model.active_params + 4.0 * model.num_layers * c * attention_width(model))


def prefill_peak_flops(profile: EngineProfile, gpu: GpuSpec, quant: QuantFormat | str) -> float:
    """The tensor ceiling prefill reaches for this weight format: the engine's share of the peak of the
    format's GEMM path, times the path's own efficiency; a path the GPU lacks (fp8 or fp4 weights on a chip
    without those tensor cores) or the engine lacks (GGUF's int8 MMQ outside llama.cpp) dequantises to
    fp16."""
    q = _quant(quant)
    path = q.prefill_path
    engine_takes_path = not q.prefill_engines or profile.name in q.prefill_engines
    if engine_takes_path and (path in gpu.peak_flops or path in ("fp16", "bf16")):
        return profile.effective_peak_flops(gpu, path) * q.prefill_ratio
    return profile.effective_peak_flops(gpu, "fp16") * DEQUANT_FP16_PREFILL_RATIO


def kv_bytes_per_token(model: ModelSpec, kv_dtype: str = "fp16") -> float:
    return float(memory.kv_cache_bytes_per_token(model, kv_dtype))


def bytes_per_decode_step(
    model: ModelSpec,
    quant: QuantFormat | str,
    batch: ArrayLike,
    context_tokens: ArrayLike,
    *,
    kv_dtype: str = "fp16",
) -> ArrayLike:
    """Weights read plus every stream's KV cache at its current context."""
    b = ew.floats(batch)
    c = ew.floats(context_tokens)
    held = ew.floats(memory.kv_cached_tokens(model, c))
    return as_result(
        ew.floats(weight_bytes_read(model, quant, b)) + b * held * kv_bytes_per_token(model, kv_dtype)
    )


@dataclass(frozen=True)
class ThroughputEstimate:
    decode_step_s: ArrayLike  # one decode step of the whole batch
    time_per_output_token_s: ArrayLike  # = decode_step_s: each stream gets one token per step
    decode_tokens_per_s: ArrayLike  # aggregate over the batch
    decode_tokens_per_s_per_stream: ArrayLike
    prefill_tokens_per_s: ArrayLike  # prompt tokens/s while prefilling
    time_to_first_token_s: ArrayLike  # prefill of batch x prompt_tokens (all prompts arrive together)
    bound: Any  # decode: "memory" | "compute" | "interconnect" (an array of them for array inputs)
    prefill_bound: Any
    flops_per_decode_step: ArrayLike  # whole batch, all GPUs
    bytes_per_decode_step: ArrayLike  # whole batch, all GPUs
    comm_s_per_decode_step: ArrayLike
    arithmetic_intensity_flop_per_byte: ArrayLike
    effective_bandwidth_bytes_s: ArrayLike  # per GPU, after the engine profile
    effective_peak_flops: ArrayLike  # per GPU, after the engine profile
    engine: str
    count: int
    parallel: str


def _check_positive(name: str, value: ArrayLike) -> ArrayLike:
    arr = ew.floats(value)
    if not ew.everywhere(ew.isfinite(arr)) or ew.anywhere(arr < 1):
        raise ModelInputError(f"{name} must be >= 1, got {value!r}")
    return arr


def _hop_s(tokens: ArrayLike, model: ModelSpec, link: Link) -> ArrayLike:
    """One pipeline-stage hand-off of the activations of ``tokens`` tokens."""
    return tokens * model.hidden_size * ACTIVATION_BYTES / link.bandwidth_bytes_s + link.latency_s


def step_times(
    model: ModelSpec,
    *,
    weights_read_decode: ArrayLike,
    weights_read_prefill: ArrayLike,
    kv_per_token_bytes: float,
    effective_bandwidth_bytes_s: ArrayLike,
    effective_peak_flops: ArrayLike,
    per_layer_overhead_s: float,
    batch: ArrayLike,
    context_tokens: ArrayLike,
    prompt_tokens: ArrayLike,
    count: int,
    parallel: str,
    link: Link,
    effective_prefill_peak_flops: ArrayLike | None = None,
) -> dict[str, ArrayLike]:
    """The array kernel every estimate (scalar or swept) goes through; all inputs broadcast.

    ``kv_per_token_bytes`` is the full-attention rate (memory.kv_cache_bytes_per_token); sliding windows
    are applied here. ``effective_prefill_peak_flops`` defaults to ``effective_peak_flops``."""
    b = ew.floats(batch)
    c = ew.floats(context_tokens)
    p = ew.floats(prompt_tokens)
    bw = ew.floats(effective_bandwidth_bytes_s)
    peak = ew.floats(effective_peak_flops)
    pre_peak = peak if effective_prefill_peak_flops is None else ew.floats(effective_prefill_peak_flops)
    n = float(count)
    layers = model.num_layers
    overhead = layers * per_layer_overhead_s

    held = ew.floats(memory.kv_cached_tokens(model, c))
    dec_bytes = ew.floats(weights_read_decode) + b * held * kv_per_token_bytes
    dec_flops = b * ew.floats(flops_per_token(model, c))
    pre_tokens = b * p
    pre_attn = b * 4.0 * layers * _prefill_attention_width(model) * _attended_pairs(model, p)
    pre_flops = pre_tokens * 2.0 * model.active_params + pre_attn
    pre_held = ew.floats(memory.kv_cached_tokens(model, p))
    pre_bytes = ew.floats(weights_read_prefill) + b * pre_held * kv_per_token_bytes

    if parallel == "tp" or n == 1:
        mem_s = ew.divide(dec_bytes, n * bw)
        cmp_s = ew.divide(dec_flops, n * peak)
        comm_s = 2 * layers * ew.floats(allreduce_time_s(b * model.hidden_size * ACTIVATION_BYTES, n, link))
        step = ew.maximum(mem_s, cmp_s) + overhead + comm_s
        pre_mem = ew.divide(pre_bytes, n * bw)
        pre_cmp = ew.divide(pre_flops, n * pre_peak)
        pre_comm = (
            2
            * layers
            * ew.floats(allreduce_time_s(pre_tokens * model.hidden_size * ACTIVATION_BYTES, n, link))
        )
        pre_s = ew.maximum(pre_mem, pre_cmp) + overhead + pre_comm
    elif parallel == "pp":
        # stages hold layers/n each. The batch is split into m = min(B, n) micro-batches that circulate
        # through the stages; token t+1 of a micro-batch needs token t from the last stage, so one decode
        # step of every micro-batch takes n stage slots whatever m is: with B < n stages idle
        # (n - m)/n of the time. Every micro-batch re-reads the stage's weights.
        m = ew.minimum(b, n)
        stage_mem = ew.divide(ew.floats(weights_read_decode) + b / m * held * kv_per_token_bytes, n * bw)
        stage_cmp = ew.divide(dec_flops / m, n * peak)
        comm_s = (n - 1) * _hop_s(b / m, model, link)
        mem_s = n * stage_mem
        cmp_s = n * stage_cmp
        step = n * (ew.maximum(stage_mem, stage_cmp) + overhead / n) + comm_s
        pre_mem = ew.divide(pre_bytes, n * bw)
        pre_cmp = ew.divide(pre_flops, n * pre_peak)
        # one prompt batch: stages run one after another (no overlap without chunking)
        pre_comm = (n - 1) * _hop_s(pre_tokens, model, link)
        pre_s = n * (ew.maximum(pre_mem, pre_cmp) + overhead / n) + pre_comm
    else:
        raise ModelInputError(f"unknown parallel mode {parallel!r}; use tp or pp")
    return {
        "step_s": step,
        "memory_s": mem_s,
        "compute_s": cmp_s,
        "comm_s": comm_s,
        "prefill_s": pre_s,
        "prefill_memory_s": pre_mem,
        "prefill_compute_s": pre_cmp,
        "prefill_comm_s": pre_comm,
        "decode_bytes": dec_bytes,
        "decode_flops": dec_flops,
        "prefill_tokens": pre_tokens,
    }


def estimate_throughput(
    model: ModelSpec,
    quant: QuantFormat | str,
    gpu: GpuSpec,
    batch: ArrayLike = 1,
    context_tokens: ArrayLike = 2048,
    *,
    prompt_tokens: ArrayLike | None = None,
    engine: str | EngineProfile = DEFAULT_ENGINE,
    count: int = 1,
    parallel: str = "tp",
    link: Link | None = None,
    kv_dtype: str = "fp16",
) -> ThroughputEstimate:
    """Serving estimate for ``count`` identical GPUs under an engine profile."""
    q = _quant(quant)
    prof = get_engine_profile(engine)
    b = _check_positive("batch", batch)
    c = ew.floats(context_tokens)
    if ew.anywhere(c < 0):
        raise ModelInputError(f"context_tokens must be >= 0, got {context_tokens!r}")
    p = c if prompt_tokens is None else _check_positive("prompt_tokens", prompt_tokens)
    if count < 1:
        raise ModelInputError(f"GPU count must be >= 1, got {count}")
    llm.check_context(model, c)
    llm.check_context(model, p, "prompt")
    bw_eff = prof.bandwidth_ratio(gpu.memory_type) * gpu.memory_bandwidth_bytes_s
    peak_eff = prof.effective_peak_flops(gpu, q.compute_dtype)
    r = step_times(
        model,
        weights_read_decode=weight_bytes_read(model, q, b),
        weights_read_prefill=weight_bytes_read(model, q, b * p),
        kv_per_token_bytes=kv_bytes_per_token(model, kv_dtype),
        effective_bandwidth_bytes_s=bw_eff,
        effective_peak_flops=peak_eff,
        per_layer_overhead_s=prof.per_layer_overhead_s,
        batch=b,
        context_tokens=c,
        prompt_tokens=p,
        count=count,
        parallel=parallel,
        link=default_link(gpu) if link is None else link,
        effective_prefill_peak_flops=prefill_peak_flops(prof, gpu, q),
    )
    step = r["step_s"]
    return ThroughputEstimate(
        decode_step_s=as_result(step),
        time_per_output_token_s=as_result(step),
        decode_tokens_per_s=as_result(ew.divide(b, step)),
        decode_tokens_per_s_per_stream=as_result(ew.divide(1.0, step)),
        prefill_tokens_per_s=as_result(ew.divide(r["prefill_tokens"], r["prefill_s"])),
        time_to_first_token_s=as_result(r["prefill_s"]),
        bound=bound_names(bound_codes(r["compute_s"], r["memory_s"], r["comm_s"])),
        prefill_bound=bound_names(
            bound_codes(r["prefill_compute_s"], r["prefill_memory_s"], r["prefill_comm_s"])
        ),
        flops_per_decode_step=as_result(r["decode_flops"]),
        bytes_per_decode_step=as_result(r["decode_bytes"]),
        comm_s_per_decode_step=as_result(ew.broadcast_like(r["comm_s"], step)),
        arithmetic_intensity_flop_per_byte=as_result(ew.divide(r["decode_flops"], r["decode_bytes"])),
        effective_bandwidth_bytes_s=bw_eff,
        effective_peak_flops=peak_eff,
        engine=prof.name,
        count=count,
        parallel=parallel,
    )
