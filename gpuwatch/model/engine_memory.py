"""GPU memory as each serving engine budgets it: weights, activation reserve, graphs, the KV pool, and how
many sequences run at once at a given context.

``inference_memory`` (gpuwatch/model/memory.py) answers "do the weights and this batch's KV fit"; an engine
answers a different question. It takes a share of the card, loads the weights, reserves what its profile
run or compute graph needs, and hands the *rest* to the KV cache, whose size then caps concurrency. Each
engine has its own knobs and rule, taken from its documented behaviour:

vLLM (``gpu_memory_utilization``, ``max_num_batched_tokens``, ``max_num_seqs``, ``block_size``, CUDA
graphs): the worker profiles one forward pass of ``max_num_batched_tokens`` tokens plus the sampler over
``max_num_seqs`` sequences, then logs
``total_gpu_memory x gpu_memory_utilization = weights + non_torch_memory + activation peak + KV cache``
(vllm-project/vllm PR #10511, "overhaul memory profiling"). KV is allocated in blocks of ``block_size``
tokens; a sequence of C tokens holds ceil(C / block_size) blocks. CUDA graphs are captured after the KV
cache is allocated, out of the ``1 - gpu_memory_utilization`` headroom.

llama.cpp (``n_ctx``, ``n_ubatch``, ``-ngl``, ``type_k``/``type_v``, flash attention): the KV cache for
the whole ``n_ctx`` is allocated at start for the offloaded layers; the CUDA compute buffer holds one
micro-batch's logits (``n_ubatch x n_vocab`` fp32) and, without flash attention, its KQ scores
(``n_ubatch x n_ctx x n_head`` fp32). Server slots share ``n_ctx``: ``-np N`` gives each n_ctx/N tokens.

SGLang (``mem_fraction_static``): weights plus the KV pool take ``mem_fraction_static`` of the card; the
rest is for activations and CUDA graphs (sglang server_args, "mem_fraction_static").

TensorRT-LLM (``free_gpu_memory_fraction``, default 0.9): after the engine (weights and activation
buffers) is loaded, that fraction of the *free* memory becomes the KV cache (TensorRT-LLM KvCacheConfig).

Per GPU under tensor parallelism: weights and KV heads are split ``count`` ways (KV heads are replicated
when there are fewer of them than GPUs).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gpuwatch.model.catalog import GpuSpec
from gpuwatch.model.engine_knobs import (
    EngineKnobs,
)
from gpuwatch.model.errors import ModelInputError
from gpuwatch.model.llm import ModelSpec
from gpuwatch.model.memory import kv_cache_bytes, weight_bytes
from gpuwatch.model.quant import QuantFormat, get_quant

GIB = 2**30
MIB = 2**20

ENGINES = ("vllm", "llama.cpp", "sglang", "tensorrt-llm")

#: CUDA-visible memory as a share of the card's nominal memory: NVML's FB total less its "Reserved", as
#: the real cards in tests/data/captures/ report it. cudaMemGetInfo's total matches it (vLLM PR #10511
#: logs 79.22 GiB total on an H100 80GB; the H100 capture gives 81559 - 479 MiB = 79.18 GiB).
_VISIBLE_RATIO_BY_KIND = {
    # H100 80GB HBM3 capture: (81559 - 479) MiB / 81920 MiB
    "hbm": (81559 - 479) / 81920,
    # L40S capture (GDDR6 with ECC on: 1/16 of the memory holds the check bits): (46068 - 609) / 49152
    "gddr-ecc": (46068 - 609) / 49152,
    # RTX 4080 SUPER capture (GDDR6X, no ECC): (16376 - 434) / 16384
    "gddr": (16376 - 434) / 16384,
}
_VISIBLE_SOURCE = {
    "hbm": "NVML total less reserved, in the ratio of the H100 80GB HBM3 capture",
    "gddr-ecc": "NVML total less reserved, in the ratio of the L40S capture (GDDR, ECC on)",
    "gddr": "NVML total less reserved, in the ratio of the RTX 4080 SUPER capture (GDDR, no ECC)",
}

# vLLM constants, from the start-up logs in vllm-project/vllm PR #10511 (Meta-Llama-3-8B on an H100 80GB):
#: non-torch memory (CUDA context, cuBLAS workspaces) at TP 1: "non_torch_memory 1.79GiB"
VLLM_NON_TORCH_BYTES = 1.79 * GIB
#: ... and at TP 2 (NCCL and the custom all-reduce buffers join): "non_torch_memory 3.58GiB"
VLLM_NON_TORCH_TP_BYTES = 3.58 * GIB
#: CUDA graph pool for the default capture sizes. ASSUMED, not calibrated: vLLM logs "Graph capturing
#: finished in N secs, took X GiB" with X around 0.3-1 GiB for 7-70B models; 0.5 GiB is taken here.
VLLM_CUDA_GRAPH_BYTES = 0.5 * GIB
#: default max_num_batched_tokens when chunked prefill is on (V1 online serving)
VLLM_MAX_NUM_BATCHED_TOKENS = 8192

#: llama.cpp: CUDA context and cuBLAS handles of a llama.cpp process (ASSUMED; nvidia-smi shows ~300 MiB
#: for llama-server with a tiny model)
LLAMACPP_CONTEXT_BYTES = 300 * MIB

#: TensorRT-LLM runtime context (CUDA context, cuBLAS, runtime buffers); ASSUMED like vLLM's TP-1 figure
TRTLLM_RUNTIME_BYTES = 1.0 * GIB
TRTLLM_MAX_NUM_TOKENS = 8192


@dataclass(frozen=True)
class EngineBudget:
    """One GPU's memory as the engine lays it out (bytes), and the concurrency it allows."""

    engine: str
    context_tokens: int
    visible_bytes: float  # what CUDA sees of the card
    budget_bytes: float  # what the engine lets itself use
    weights_bytes: float
    activation_bytes: float  # profile-run peak (vLLM), compute buffer (llama.cpp), activation buffers
    non_torch_bytes: float  # CUDA context, cuBLAS/NCCL buffers
    cuda_graph_bytes: float
    kv_pool_bytes: float  # <= 0 when the weights and reserves already overflow the budget
    kv_bytes_per_sequence: float  # per GPU, one sequence at context_tokens
    kv_pool_tokens: int
    max_concurrent_sequences: int
    count: int
    knobs: Mapping[str, Any]
    notes: tuple[str, ...] = field(default=())

    @property
    def fits(self) -> bool:
        """The engine starts and can hold at least one sequence of ``context_tokens``."""
        return self.max_concurrent_sequences >= 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "context_tokens": self.context_tokens,
            "gpus": self.count,
            "per_gpu": {
                "visible_bytes": self.visible_bytes,
                "budget_bytes": self.budget_bytes,
                "weights_bytes": self.weights_bytes,
                "activation_bytes": self.activation_bytes,
                "non_torch_bytes": self.non_torch_bytes,
                "cuda_graph_bytes": self.cuda_graph_bytes,
                "kv_pool_bytes": max(0.0, self.kv_pool_bytes),
            },
            "kv_pool_bytes": max(0.0, self.kv_pool_bytes),
            "kv_pool_tokens": self.kv_pool_tokens,
            "kv_bytes_per_sequence": self.kv_bytes_per_sequence,
            "max_concurrent_sequences": self.max_concurrent_sequences,
            "fits": self.fits,
            "knobs": dict(self.knobs),
            "notes": list(self.notes),
            "provenance": "modelled",
        }


def _memory_kind(gpu: GpuSpec) -> str:
    if gpu.memory_type.upper().startswith("HBM"):
        return "hbm"
    # datacenter/workstation GDDR parts ship with ECC on (the L40S capture: "ECC Mode: Enabled")
    return "gddr" if gpu.segment == "geforce" else "gddr-ecc"


def visible_bytes(gpu: GpuSpec) -> tuple[float, str]:
    """CUDA-visible bytes of one card and where the ratio comes from."""
    kind = _memory_kind(gpu)
    return gpu.memory_bytes * _VISIBLE_RATIO_BY_KIND[kind], _VISIBLE_SOURCE[kind]


def _per_gpu_kv(model: ModelSpec, context_tokens: int, kv_dtype: str, count: int) -> float:
    """KV bytes of one sequence on one GPU: KV heads split over the TP group, replicated below one each."""
    whole = float(kv_cache_bytes(model, 1, context_tokens, kv_dtype))
    share = max(1.0, model.num_kv_heads / count) / model.num_kv_heads
    return whole * share


def _forward_bytes_per_token(model: ModelSpec, count: int) -> float:
    """16-bit transient buffers of one token's forward pass (hidden, q/k/v, attention out, gated MLP);
    the same accounting as memory.inference_memory's workspace, split by TP where the tensors are."""
    q_dim = model.num_attention_heads * model.head_dim / count
    kv_dim = max(1.0, model.num_kv_heads / count) * model.head_dim
    mlp = 3 * model.intermediate_size * model.experts_per_token / count
    return 2.0 * (2 * model.hidden_size + 2 * q_dim + 2 * kv_dim + mlp)


def _check(model: ModelSpec, context_tokens: int, count: int) -> None:
    if context_tokens < 1:
        raise ModelInputError(f"context must be >= 1 token, got {context_tokens}")
    if count < 1:
        raise ModelInputError(f"GPU count must be >= 1, got {count}")
    if model.num_attention_heads % count:
        raise ModelInputError(
            f"tensor parallel over {count} GPUs needs the attention heads ({model.num_attention_heads}) "
            f"to divide by {count}; choose a divisor"
        )


def engine_budget(
    engine: str,
    model: ModelSpec,
    quant: QuantFormat | str,
    gpu: GpuSpec,
    context_tokens: int,
    *,
    count: int = 1,
    parallel: str = "tp",
    kv_dtype: str = "fp16",
    knobs: EngineKnobs | None = None,
) -> EngineBudget:
    """The engine's per-GPU memory layout for ``model`` over ``count`` GPUs, tensor (``tp``: heads split)
    or pipeline (``pp``: layers split) parallel."""
    if parallel not in ("tp", "pp"):
        raise ModelInputError(f"parallelism must be tp or pp, got {parallel!r}")
    _check(model, context_tokens, count if parallel == "tp" else 1)
    k = knobs or EngineKnobs()
    fmt = get_quant(quant)
    name = engine.lower()
    if name not in ENGINES:
        raise ModelInputError(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")
    visible, visible_source = visible_bytes(gpu)
    weights = float(weight_bytes(model, fmt)) / count
    if parallel == "tp":
        kv_seq = _per_gpu_kv(model, context_tokens, kv_dtype, count)
    else:  # each stage holds its layers' share of every sequence
        kv_seq = float(kv_cache_bytes(model, 1, context_tokens, kv_dtype)) / count
    notes = [f"CUDA-visible memory {visible / GIB:.2f} GiB per GPU ({visible_source})"]
    if name == "vllm":
        return _vllm(model, gpu, context_tokens, count, k, visible, weights, kv_seq, notes)
    if name == "llama.cpp":
        return _llamacpp(model, context_tokens, count, k, visible, weights, kv_seq, kv_dtype, notes)
    if name == "sglang":
        return _sglang(context_tokens, count, k, visible, weights, kv_seq, notes)
    return _trtllm(model, context_tokens, count, k, visible, weights, kv_seq, notes)


def _tokens_and_seqs(pool: float, kv_seq: float, context: int, block: int, cap: int) -> tuple[int, int]:
    if pool <= 0 or kv_seq <= 0:
        return 0, 0
    per_token = kv_seq / context
    blocks = math.floor(pool / (per_token * block))
    tokens = blocks * block
    seqs = min(cap, blocks // math.ceil(context / block))
    return tokens, seqs


def _vllm(
    model: ModelSpec,
    gpu: GpuSpec,
    context: int,
    count: int,
    k: EngineKnobs,
    visible: float,
    weights: float,
    kv_seq: float,
    notes: list[str],
) -> EngineBudget:
    batched = k.max_num_batched_tokens or VLLM_MAX_NUM_BATCHED_TOKENS
    budget = visible * k.gpu_memory_utilization
    non_torch = VLLM_NON_TORCH_BYTES if count == 1 else VLLM_NON_TORCH_TP_BYTES
    # profile run: one forward of max_num_batched_tokens tokens, then the sampler's fp32 logits, probs and
    # logprobs for max_num_seqs sequences. Not divided by TP: PR #10511's logs show the same 1.26 GiB peak
    # at TP 1 and TP 2 (the full-vocabulary logits are gathered on every rank).
    activation = batched * _forward_bytes_per_token(model, 1) + 3 * k.max_num_seqs * model.vocab_size * 4.0
    graphs = VLLM_CUDA_GRAPH_BYTES if k.cuda_graphs else 0.0
    pool = budget - weights - non_torch - activation
    tokens, seqs = _tokens_and_seqs(pool, kv_seq, context, k.block_size, k.max_num_seqs)
    if pool <= 0:
        notes.append(
            f"weights {weights / GIB:.2f} GiB + reserves exceed gpu_memory_utilization "
            f"{k.gpu_memory_utilization:g} x {visible / GIB:.2f} GiB: vLLM stops with 'No available memory "
            "for the cache blocks'"
        )
    elif tokens < context:
        notes.append(
            f"the KV pool holds {tokens:,} tokens, fewer than one {context:,}-token sequence: vLLM refuses "
            "to start (max seq len larger than the KV cache); lower --context or add GPUs"
        )
    headroom = visible - budget
    if graphs > headroom:
        notes.append(
            f"CUDA graphs (~{graphs / GIB:.1f} GiB, assumed) exceed the {headroom / GIB:.2f} GiB left "
            "outside "
            "gpu_memory_utilization: expect an out-of-memory at graph capture (lower it, or --enforce-eager)"
        )
    notes.append(
        f"vLLM: {k.gpu_memory_utilization:g} of the card; profile run {batched:,} batched tokens and "
        f"{k.max_num_seqs} sequences; non-torch {non_torch / GIB:.2f} GiB (PR #10511 logs); "
        f"KV in {k.block_size}-token blocks"
    )
    knobs = {
        "gpu_memory_utilization": k.gpu_memory_utilization,
        "max_num_batched_tokens": batched,
        "max_num_seqs": k.max_num_seqs,
        "block_size": k.block_size,
        "cuda_graphs": k.cuda_graphs,
    }
    return EngineBudget(
        "vllm", context, visible, budget, weights, activation, non_torch, graphs, pool, kv_seq, tokens,
        seqs, count, knobs, tuple(notes),
    )  # fmt: skip


def _llamacpp(
    model: ModelSpec,
    context: int,
    count: int,
    k: EngineKnobs,
    visible: float,
    weights: float,
    kv_seq: float,
    kv_dtype: str,
    notes: list[str],
) -> EngineBudget:
    n_ctx = k.n_ctx or context * k.n_parallel
    layers = model.num_layers
    ngl = layers + 1 if k.n_gpu_layers is None else min(k.n_gpu_layers, layers + 1)
    # offloaded share of the weights: repeating layers, plus the output layer once ngl passes them all
    layer_share = min(ngl, layers) / layers
    gpu_weights = weights * layer_share
    kv_ctx = kv_seq / context * n_ctx * layer_share
    heads = model.num_attention_heads / count
    compute = 4.0 * k.n_ubatch * model.vocab_size
    if not k.flash_attention:
        compute += 4.0 * k.n_ubatch * n_ctx * heads
    total = gpu_weights + kv_ctx + compute + LLAMACPP_CONTEXT_BYTES
    fits = total <= visible
    per_slot = n_ctx // k.n_parallel
    seqs = k.n_parallel if fits and per_slot >= context else 0
    if not fits:
        notes.append(
            f"llama.cpp needs {total / GIB:.2f} GiB per GPU, more than {visible / GIB:.2f} GiB: lower -ngl "
            "(offload fewer layers), n_ctx, or quantise the KV cache (type_k/type_v)"
        )
    elif per_slot < context:
        notes.append(
            f"each of {k.n_parallel} slots gets {per_slot:,} of n_ctx {n_ctx:,} tokens, < {context:,}"
        )
    notes.append(
        f"llama.cpp: n_ctx {n_ctx:,} allocated up front ({kv_dtype} KV), {ngl} of {layers + 1} layers on "
        f"the GPU, compute buffer n_ubatch {k.n_ubatch} x n_vocab fp32"
        + ("" if k.flash_attention else " + KQ scores (no flash attention)")
    )
    knobs = {
        "n_ctx": n_ctx,
        "n_parallel": k.n_parallel,
        "n_ubatch": k.n_ubatch,
        "n_gpu_layers": ngl,
        "flash_attention": k.flash_attention,
    }
    pool = kv_ctx if fits else visible - gpu_weights - compute - LLAMACPP_CONTEXT_BYTES
    tokens = n_ctx if fits else 0
    return EngineBudget(
        "llama.cpp", context, visible, visible, gpu_weights, compute, LLAMACPP_CONTEXT_BYTES, 0.0, pool,
        kv_seq * layer_share, tokens, seqs, count, knobs, tuple(notes),
    )  # fmt: skip


def _sglang(
    context: int, count: int, k: EngineKnobs, visible: float, weights: float, kv_seq: float, notes: list[str]
) -> EngineBudget:
    static = visible * k.mem_fraction_static
    pool = static - weights
    tokens, seqs = _tokens_and_seqs(pool, kv_seq, context, 1, k.max_num_seqs)
    notes.append(
        f"SGLang: weights + KV pool = mem_fraction_static {k.mem_fraction_static:g} of the card; the "
        f"remaining {(visible - static) / GIB:.2f} GiB hold activations and CUDA graphs"
    )
    if pool <= 0:
        notes.append("the weights alone exceed mem_fraction_static: SGLang stops ('Not enough memory')")
    knobs = {"mem_fraction_static": k.mem_fraction_static, "max_running_requests": k.max_num_seqs}
    return EngineBudget(
        "sglang", context, visible, static, weights, visible - static, 0.0, 0.0, pool, kv_seq, tokens, seqs,
        count, knobs, tuple(notes),
    )  # fmt: skip


def _trtllm(
    model: ModelSpec,
    context: int,
    count: int,
    k: EngineKnobs,
    visible: float,
    weights: float,
    kv_seq: float,
    notes: list[str],
) -> EngineBudget:
    max_tokens = k.max_num_batched_tokens or TRTLLM_MAX_NUM_TOKENS
    activation = max_tokens * _forward_bytes_per_token(model, count)
    free = visible - weights - activation - TRTLLM_RUNTIME_BYTES
    pool = free * k.free_gpu_memory_fraction
    tokens, seqs = _tokens_and_seqs(pool, kv_seq, context, 1, k.max_num_seqs)
    notes.append(
        f"TensorRT-LLM: KV cache = free_gpu_memory_fraction {k.free_gpu_memory_fraction:g} of the memory "
        f"free after the engine (activation buffers for max_num_tokens {max_tokens:,})"
    )
    knobs = {"free_gpu_memory_fraction": k.free_gpu_memory_fraction, "max_num_tokens": max_tokens}
    return EngineBudget(
        "tensorrt-llm", context, visible, visible, weights, activation, TRTLLM_RUNTIME_BYTES, 0.0, pool,
        kv_seq, tokens, seqs, count, knobs, tuple(notes),
    )  # fmt: skip
