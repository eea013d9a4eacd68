"""GPU memory for inference, full training, LoRA and QLoRA, as named components in bytes.

Every numeric argument broadcasts (numpy, imported only for array inputs: gpuwatch/model/elementwise.py), so a
sweep over batch x context x rank x GPUs is one call; a result component is a ``float`` when every input was a
scalar, else an ``np.ndarray``.

Fixed assumptions, stated once:
  * CUDA_CONTEXT_BYTES (512 MiB) per GPU process: CUDA context + cuBLAS/cuDNN handles and workspaces as
    nvidia-smi shows them for a PyTorch process that has run one GEMM under CUDA 12 lazy module loading
    (typically 300-600 MiB; more on older CUDA without lazy loading).
  * ALLOCATOR_RESERVE_RATIO (5 %) of the card's memory is kept back for caching-allocator fragmentation;
  usable
    capacity = memory_bytes x 0.95. (vLLM's default gpu_memory_utilization=0.9 reserves 10 % for the same
    reason
    plus the CUDA context, which is counted here as its own component.)
  * Activations follow Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
  Models",
    eq. 1: s*b*h*(34 + 5*a*s/h) bytes per layer (16-bit activations, no tensor/sequence parallelism). Flash
    attention never materialises the a*s*s score/softmax tensors, so it drops the 5as/h term. Full activation
    checkpointing keeps each layer's 16-bit input (2sbh) plus one layer's activations during recompute (sec.
    4).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpuwatch.model import elementwise as ew
from gpuwatch.model.catalog import GpuSpec
from gpuwatch.model.errors import ModelInputError
from gpuwatch.model.llm import ModelSpec, check_context, param_breakdown
from gpuwatch.model.plan_inputs import OPTIMIZERS
from gpuwatch.model.quant import QuantFormat, get_kv_dtype, get_quant

ArrayLike = Any  # float | int | np.ndarray

ALLOCATOR_RESERVE_RATIO = 0.05
CUDA_CONTEXT_BYTES = 512 * 2**20
ALL_LINEAR: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: activation bytes per element Korthikanti's coefficients assume (fp16/bf16)
_ACT_BYTES = 2
#: bitsandbytes 8-bit optimizers quantise states block-wise, 2048 values per fp32 absmax
#: (Dettmers et al. 2022, "8-bit Optimizers via Block-wise Quantization", sec. 2)
_ADAM8BIT_BYTES = 1 + 4 / 2048
_PER_GPU = frozenset({"cuda_context", "workspace"})


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes per named component for one model replica; ``per_gpu`` names are held in full on every GPU."""

    components: Mapping[str, ArrayLike]
    mode: str  # "inference" | "train" | "lora" | "qlora"
    per_gpu: frozenset[str] = _PER_GPU
    notes: tuple[str, ...] = field(default=())

    @property
    def total_bytes(self) -> ArrayLike:
        return _collapse(ew.total(self.components.values()))

    @property
    def total_gib(self) -> ArrayLike:
        return _collapse(ew.floats(self.total_bytes) / 2**30)

    def _split(self) -> tuple[ArrayLike, ArrayLike]:
        sharded = ew.total(v for name, v in self.components.items() if name not in self.per_gpu)
        fixed = ew.total(v for name, v in self.components.items() if name in self.per_gpu)
        return sharded, fixed

    def bytes_per_gpu(self, count: ArrayLike = 1) -> ArrayLike:
        """Memory each GPU holds when the replica is split evenly over ``count`` GPUs (tensor/pipeline
        parallel)."""
        n = _as_count(count, "count")
        sharded, fixed = self._split()
        return _collapse(sharded / n + fixed)

    @staticmethod
    def usable_bytes(gpu: GpuSpec, reserve_ratio: float = ALLOCATOR_RESERVE_RATIO) -> float:
        if not 0 <= reserve_ratio < 1:
            raise ModelInputError(f"reserve_ratio must be in [0, 1), got {reserve_ratio}")
        return gpu.memory_bytes * (1 - reserve_ratio)

    def fits(
        self, gpu: GpuSpec, count: ArrayLike = 1, *, reserve_ratio: float = ALLOCATOR_RESERVE_RATIO
    ) -> Any:
        """Whether each of ``count`` GPUs holds its share within the usable capacity (allocator reserve kept
        back): a bool, or an array of them for array inputs."""
        return self.bytes_per_gpu(count) <= self.usable_bytes(gpu, reserve_ratio)

    def gpus_needed(self, gpu: GpuSpec, *, reserve_ratio: float = ALLOCATOR_RESERVE_RATIO) -> Any:
        """Fewest GPUs of this kind that hold the replica (an int, or an array of them for array inputs); 0
        where even the per-GPU part alone does not fit."""
        sharded, fixed = self._split()
        room = self.usable_bytes(gpu, reserve_ratio) - fixed
        needed = ew.where(room > 0, ew.maximum(1, ew.ceil(ew.divide_where(room > 0, sharded, room, 0.0))), 0)
        if ew.is_scalar(needed):
            return int(needed)
        needed = needed.astype(int)
        return int(needed) if needed.ndim == 0 else needed

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (arrays become lists)."""

        plain = ew.to_plain

        return {
            "mode": self.mode,
            "total_bytes": plain(self.total_bytes),
            "total_gib": plain(self.total_gib),
            "breakdown": {name: plain(value) for name, value in self.components.items()},
            "per_gpu": sorted(self.per_gpu & set(self.components)),
            "notes": list(self.notes),
        }


# ----------------------------------------------------------------------------------------------- helpers
_collapse = ew.result


def _nonneg(value: ArrayLike, name: str) -> ArrayLike:
    array = ew.floats(value)
    if not ew.everywhere(ew.isfinite(array)) or ew.anywhere(array < 0):
        raise ModelInputError(f"{name} must be a finite number >= 0, got {value!r}")
    return array


def _as_count(value: ArrayLike, name: str) -> ArrayLike:
    array = ew.floats(value)
    if (
        not ew.everywhere(ew.isfinite(array))
        or ew.anywhere(array < 1)
        or ew.anywhere(array != ew.ceil(array))
    ):
        raise ModelInputError(f"{name} must be a whole number >= 1, got {value!r}")
    return array


def _dtype_bytes(dtype: str, what: str) -> float:
    """Bytes per element for a dtype/quant id; the error names the argument so the CLI message is
    actionable."""
    try:
        return get_quant(dtype).bytes_per_param
    except KeyError as exc:
        raise ModelInputError(f"{what}: {exc}") from None


def _finish(components: dict[str, Any]) -> dict[str, ArrayLike]:
    """Broadcast all components to one shape so every entry indexes the same scenario grid."""
    return dict(zip(components, ew.broadcast_all(components.values()), strict=True))


# ----------------------------------------------------------------------------------------------- weights, KV
def weight_bytes(model: ModelSpec, quant: QuantFormat | str) -> float:
    """Resident weight bytes; all experts of an MoE are resident.

    Weight-only formats that quantise only nn.Linear weights (GPTQ, AWQ, nf4, EXL2, NVFP4) leave embeddings,
    lm_head and norms in 16-bit; MXFP4 as gpt-oss ships it quantises only the routed experts; GGUF
    bits-per-weight figures are whole-file averages and apply to every parameter.
    """
    fmt = get_quant(quant)
    counts = param_breakdown(model)
    if fmt.applies_to == "linear":
        return counts.linear * fmt.bytes_per_param + (counts.total - counts.linear) * 2.0
    if fmt.applies_to == "experts":
        return counts.routed_experts * fmt.bytes_per_param + (counts.total - counts.routed_experts) * 2.0
    return counts.total * fmt.bytes_per_param


def kv_dtype_bytes(kv_dtype: str) -> float:
    """Bytes per cached element; the error names --kv-dtype's choices."""
    try:
        return get_kv_dtype(kv_dtype).bytes_per_element
    except KeyError as exc:
        raise ModelInputError(f"kv_dtype: {exc}") from None


def kv_cache_bytes_per_token(model: ModelSpec, kv_dtype: str = "fp16") -> float:
    """Bytes one token adds to the cache when every layer keeps it (the full-attention rate).

    GQA: 2 (K and V) x layers x KV heads x head_dim x bytes. MLA (DeepSeek-V2/V3): one compressed latent of
    kv_lora_rank plus the shared rope key of qk_rope_head_dim per layer, x bytes (DeepSeek-V2 paper, sec.
    2.1.2). Sliding-window layers stop growing at their window: see :func:`kv_cached_tokens`.
    """
    per_element = kv_dtype_bytes(kv_dtype)
    if model.is_mla:
        return float(model.num_layers * (model.kv_lora_rank + model.qk_rope_head_dim) * per_element)
    return 2.0 * model.num_layers * model.num_kv_heads * model.head_dim * per_element


def kv_cached_tokens(model: ModelSpec, context_tokens: ArrayLike) -> ArrayLike:
    """Tokens a sequence of ``context_tokens`` keeps cached, averaged over the layers: full-attention
    layers keep all of them, sliding-window layers at most the window (Mistral-7B v0.1 on every layer,
    Gemma-2/3 and gpt-oss on their windowed layers)."""
    c = _nonneg(context_tokens, "context_tokens")
    if not model.num_sliding_layers:
        return _collapse(c)
    full = model.num_layers - model.num_sliding_layers
    held = full * c + model.num_sliding_layers * ew.minimum(c, model.sliding_window)
    return _collapse(held / model.num_layers)


def kv_bytes_per_token_at(model: ModelSpec, context_tokens: ArrayLike, kv_dtype: str = "fp16") -> ArrayLike:
    """Cache bytes per token of context for a sequence of ``context_tokens``: the full-attention rate, less
    what sliding windows drop (equal to :func:`kv_cache_bytes_per_token` without windows)."""
    c = ew.maximum(_nonneg(context_tokens, "context_tokens"), 1.0)
    return _collapse(ew.floats(kv_cached_tokens(model, c)) / c * kv_cache_bytes_per_token(model, kv_dtype))


def kv_cache_bytes(
    model: ModelSpec, batch: ArrayLike, context_tokens: ArrayLike, kv_dtype: str = "fp16"
) -> ArrayLike:
    b = _nonneg(batch, "batch")
    held = ew.floats(kv_cached_tokens(model, context_tokens))
    return _collapse(b * held * kv_cache_bytes_per_token(model, kv_dtype))


def _kv_note(model: ModelSpec, kv_dtype: str, context: ArrayLike) -> str:
    rate = kv_cache_bytes_per_token(model, kv_dtype)
    if model.is_mla:
        shape = f"MLA latent {model.kv_lora_rank} + rope {model.qk_rope_head_dim} x {model.num_layers} layers"
    else:
        shape = f"{model.num_kv_heads} KV heads x {model.head_dim} head_dim x {model.num_layers} layers"
    note = f"KV cache {get_kv_dtype(kv_dtype).id}: {rate / 2**10:.1f} KiB/token ({shape})"
    if model.num_sliding_layers:
        at = ew.largest(context)
        at_rate = float(kv_bytes_per_token_at(model, at, kv_dtype)) / 2**10
        note += (
            f"; {model.num_sliding_layers} of {model.num_layers} layers keep only a "
            f"{model.sliding_window:,}-token window: {at_rate:.1f} KiB/token at {at:,.0f} tokens"
        )
    return note


# ----------------------------------------------------------------------------------------------- activations
def activation_bytes_per_layer(
    model: ModelSpec, batch: ArrayLike, seq_len: ArrayLike, *, flash_attention: bool = True
) -> ArrayLike:
    """Korthikanti et al. 2022 eq. 1: s*b*h*(34 + 5*a*s/h) bytes (16-bit, no TP/SP); flash drops the 5as/h
    term.

    The 34sbh coefficient was derived for a GPT block (4h GELU MLP, dropout); for gated-MLP models it is an
    approximation (no dropout masks, but a wider 2.7h-3.5h gated MLP), within about 20 % either way.
    """
    s = _nonneg(seq_len, "seq_len")
    b = _nonneg(batch, "batch")
    h = float(model.hidden_size)
    per_layer = s * b * h * 34.0
    if not flash_attention:
        per_layer = per_layer + 5.0 * model.num_attention_heads * s * s * b
    return _collapse(per_layer)


def _training_activations(
    model: ModelSpec, b: ArrayLike, s: ArrayLike, checkpointing: bool, flash_attention: bool
) -> ArrayLike:
    layer = ew.floats(activation_bytes_per_layer(model, b, s, flash_attention=flash_attention))
    if checkpointing:
        return model.num_layers * _ACT_BYTES * s * b * model.hidden_size + layer
    return model.num_layers * layer


def _logits_bytes(model: ModelSpec, b: ArrayLike, s: ArrayLike) -> ArrayLike:
    """fp32 logits and their gradient for every position (the loss is computed in fp32): 8 bytes x b x s x
    vocab."""
    return 8.0 * b * s * model.vocab_size


# ----------------------------------------------------------------------------------------------- inference
def inference_memory(
    model: ModelSpec,
    quant: QuantFormat | str = "fp16",
    batch: ArrayLike = 1,
    context_tokens: ArrayLike = 4096,
    *,
    kv_dtype: str = "fp16",
    prefill_chunk_tokens: ArrayLike = 2048,
    cuda_context_bytes: float = CUDA_CONTEXT_BYTES,
) -> MemoryBreakdown:
    """Serving memory: weights + KV cache for batch x context tokens + one forward pass's workspace + CUDA
    context.

    The workspace is the transient per-layer buffers (hidden, q/k/v, attention out, gated-MLP intermediates)
    for
    the tokens of one prefill chunk, in 16-bit, plus fp32 logits of the last position per sequence. Engines
    chunk
    prefill (llama.cpp n_batch defaults to 2048, vLLM's max_num_batched_tokens bounds it likewise), so the
    workspace does not grow with the whole prompt.
    """
    fmt = get_quant(quant)
    b = _nonneg(batch, "batch")
    c = _nonneg(context_tokens, "context_tokens")
    check_context(model, c)
    chunk = _nonneg(prefill_chunk_tokens, "prefill_chunk_tokens")
    q_dim = model.num_attention_heads * model.head_dim
    kv_dim = model.num_kv_heads * model.head_dim
    per_token = _ACT_BYTES * (
        2 * model.hidden_size + 2 * q_dim + 2 * kv_dim + 3 * model.intermediate_size * model.experts_per_token
    )
    tokens = ew.minimum(b * c, chunk)
    components = {
        "weights": weight_bytes(model, fmt),
        "kv_cache": kv_cache_bytes(model, b, c, kv_dtype),
        "workspace": tokens * per_token + b * model.vocab_size * 4.0,
        "cuda_context": _nonneg(cuda_context_bytes, "cuda_context_bytes"),
    }
    notes = (
        f"weights {fmt.id} ({fmt.bits_per_param:.3g} bits/param incl. scales)",
        _kv_note(model, kv_dtype, c),
        f"CUDA context {cuda_context_bytes / 2**20:.0f} MiB per GPU; fits() keeps "
        f"{ALLOCATOR_RESERVE_RATIO:.0%} "
        "for allocator fragmentation",
    )
    return MemoryBreakdown(_finish(components), "inference", notes=notes)


# ----------------------------------------------------------------------------------------------- training
def _optimizer_state_bytes(optimizer: str, optimizer_dtype: str) -> float:
    """Optimizer bytes per trainable parameter (AdamW: m and v; SGD: momentum)."""
    if optimizer in ("adamw", "paged_adamw"):
        return 2 * _dtype_bytes(optimizer_dtype, "optimizer_dtype")
    if optimizer in ("adamw8bit", "paged_adamw8bit"):
        return 2 * _ADAM8BIT_BYTES
    if optimizer == "sgd":
        return _dtype_bytes(optimizer_dtype, "optimizer_dtype")
    raise ModelInputError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")


def training_memory(
    model: ModelSpec,
    batch: ArrayLike = 1,
    seq_len: ArrayLike = 2048,
    *,
    weight_dtype: str = "bf16",
    grad_dtype: str = "bf16",
    master_dtype: str | None = "fp32",
    optimizer: str = "adamw",
    optimizer_dtype: str = "fp32",
    zero_stage: int = 0,
    dp_gpus: ArrayLike = 1,
    activation_checkpointing: bool = False,
    flash_attention: bool = True,
    activation_bytes: ArrayLike | None = None,
    include_logits: bool = True,
    cuda_context_bytes: float = CUDA_CONTEXT_BYTES,
) -> MemoryBreakdown:
    """Full fine-tuning / pre-training memory of ONE data-parallel rank.

    Defaults are standard mixed precision (ZeRO paper, Rajbhandari et al. 2020, sec. 3.1: 2 + 2 + 12 = 16
    bytes
    per parameter): bf16 weights, bf16 gradients, fp32 master weights, fp32 AdamW m and v. Gradients live in
    the
    parameter dtype; the fp32 accumulation happens in the master copy, so fp32 gradients (4 bytes) are an
    explicit, non-default choice. ZeRO stage 1 shards master weights + optimizer states over ``dp_gpus``,
    stage 2
    also gradients, stage 3 also the weights. ``batch`` is the micro-batch per GPU. ``activation_bytes``
    replaces the activation model with a fixed figure (to reproduce published tables).
    """
    if zero_stage not in (0, 1, 2, 3):
        raise ModelInputError(f"zero_stage must be 0, 1, 2 or 3, got {zero_stage!r}")
    n = _as_count(dp_gpus, "dp_gpus")
    b = _nonneg(batch, "batch")
    s = _nonneg(seq_len, "seq_len")
    check_context(model, s, "seq_len")
    params = float(model.total_params)
    weight_b = _dtype_bytes(weight_dtype, "weight_dtype")
    master_b = (
        0.0
        if master_dtype is None or master_dtype == weight_dtype
        else _dtype_bytes(master_dtype, "master_dtype")
    )
    weights = params * weight_b / (n if zero_stage >= 3 else 1)
    grads = params * _dtype_bytes(grad_dtype, "grad_dtype") / (n if zero_stage >= 2 else 1)
    shard = n if zero_stage >= 1 else 1
    if activation_bytes is not None:
        acts = _nonneg(activation_bytes, "activation_bytes") + 0 * b * s
    else:
        acts = _training_activations(model, b, s, activation_checkpointing, flash_attention)
    components: dict[str, Any] = {
        "weights": weights,
        "gradients": grads,
        "master_weights": params * master_b / shard,
        "optimizer_states": params * _optimizer_state_bytes(optimizer, optimizer_dtype) / shard,
        "activations": acts,
        "logits": _logits_bytes(model, b, s) if include_logits else 0.0,
        "cuda_context": _nonneg(cuda_context_bytes, "cuda_context_bytes"),
    }
    notes = (
        f"{weight_dtype} weights, {grad_dtype} gradients, {master_dtype or 'no'} master weights, "
        f"{optimizer} ({optimizer_dtype} states), ZeRO-{zero_stage}",
        "activations: fixed figure given" if activation_bytes is not None else
        "activations: Korthikanti et al. 2022 sbh(34+5as/h) per layer"
        + (", flash attention" if flash_attention else "")
        + (", full checkpointing" if activation_checkpointing else ""),
    )  # fmt: skip
    return MemoryBreakdown(_finish(components), "train", notes=notes)


# ----------------------------------------------------------------------------------------------- LoRA / QLoRA
#: LoRA target-module aliases (Mixtral names its expert projections w1/w3/w2)
_MODULE_ALIASES = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}


def _target_list(target_modules: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(target_modules, str):
        if target_modules.lower() in ("all-linear", "all_linear", "all"):
            return ALL_LINEAR
        target_modules = [t.strip() for t in target_modules.split(",") if t.strip()]
    names = tuple(_MODULE_ALIASES.get(t, t) for t in target_modules)
    unknown = [t for t in names if t not in ALL_LINEAR]
    if unknown or not names:
        raise ModelInputError(
            f"unknown LoRA target module {unknown[0] if unknown else '(none)'!r}; "
            f"choose from {', '.join(ALL_LINEAR)} or 'all-linear'"
        )
    return names


def lora_trainable_params(
    model: ModelSpec, rank: ArrayLike, target_modules: str | Sequence[str] = ALL_LINEAR
) -> ArrayLike:
    """r x (in + out) per adapted matrix (A is r x in, B is out x r), per layer; MoE expert projections per
    expert (routed and shared), dense layers of an MoE at their own width.

    MLA models (DeepSeek) name their attention projections differently (q_a/q_b, kv_a/kv_b); their
    q/k/v/o adapters are sized here as if the attention were GQA of the same heads, an approximation."""
    r = _nonneg(rank, "rank")
    h, i = model.hidden_size, model.intermediate_size
    q_dim = model.num_attention_heads * model.head_dim
    kv_dim = model.num_kv_heads * model.head_dim
    layers = model.num_layers
    attention = {"q_proj": h + q_dim, "k_proj": h + kv_dim, "v_proj": h + kv_dim, "o_proj": q_dim + h}
    if model.is_moe:
        dense_i = model.dense_intermediate_size
        shared_i = model.shared_expert_intermediate_size
        mlp_per_matrix = model.num_dense_layers * (h + dense_i) + model.num_moe_layers * (
            model.num_experts * (h + i) + model.num_shared_experts * (h + shared_i)
        )
    else:
        mlp_per_matrix = layers * (h + i)
    per_rank = sum(
        attention[t] * layers if t in attention else mlp_per_matrix for t in _target_list(target_modules)
    )
    return _collapse(r * per_rank)


def lora_memory(
    model: ModelSpec,
    batch: ArrayLike = 1,
    seq_len: ArrayLike = 2048,
    *,
    rank: ArrayLike = 16,
    target_modules: str | Sequence[str] = ALL_LINEAR,
    base_quant: QuantFormat | str = "bf16",
    adapter_dtype: str = "bf16",
    master_dtype: str | None = "fp32",
    optimizer: str = "adamw",
    optimizer_dtype: str = "fp32",
    activation_checkpointing: bool = True,
    flash_attention: bool = True,
    include_logits: bool = True,
    cuda_context_bytes: float = CUDA_CONTEXT_BYTES,
) -> MemoryBreakdown:
    """LoRA: frozen base (bf16 by default), trainable low-rank adapters with their own gradients and
    optimizer.

    Activations still span the whole frozen network, because gradients must flow back through it to the
    adapters of earlier layers; that is why checkpointing (default on) matters even though few weights train.
    """
    b = _nonneg(batch, "batch")
    s = _nonneg(seq_len, "seq_len")
    check_context(model, s, "seq_len")
    trainable = ew.floats(lora_trainable_params(model, rank, target_modules))
    adapter_b = _dtype_bytes(adapter_dtype, "adapter_dtype")
    master_b = (
        0.0
        if master_dtype is None or master_dtype == adapter_dtype
        else _dtype_bytes(master_dtype, "master_dtype")
    )
    fmt = get_quant(base_quant)
    components: dict[str, Any] = {
        "base_weights": weight_bytes(model, fmt),
        "adapter_weights": trainable * adapter_b,
        "gradients": trainable * adapter_b,
        "master_weights": trainable * master_b,
        "optimizer_states": trainable * _optimizer_state_bytes(optimizer, optimizer_dtype),
        "activations": _training_activations(model, b, s, activation_checkpointing, flash_attention),
        "logits": _logits_bytes(model, b, s) if include_logits else 0.0,
        "cuda_context": _nonneg(cuda_context_bytes, "cuda_context_bytes"),
    }
    mode = "qlora" if fmt.id.startswith("nf4") else "lora"
    notes = (
        f"base {fmt.id} frozen; adapters {adapter_dtype} on {', '.join(_target_list(target_modules))}",
        f"{optimizer} on adapters only; activations "
        + ("checkpointed" if activation_checkpointing else "stored") + " (Korthikanti et al. 2022)",
    )  # fmt: skip
    return MemoryBreakdown(_finish(components), mode, notes=notes)


def qlora_memory(
    model: ModelSpec,
    batch: ArrayLike = 1,
    seq_len: ArrayLike = 2048,
    *,
    rank: ArrayLike = 16,
    target_modules: str | Sequence[str] = ALL_LINEAR,
    base_quant: QuantFormat | str = "nf4-dq",
    optimizer: str = "paged_adamw",
    **kwargs: Any,
) -> MemoryBreakdown:
    """QLoRA (Dettmers et al. 2023): nf4 base with double quantisation, bf16 adapters, paged AdamW.

    Paged AdamW states are counted as resident: paging to host only happens under memory pressure, and a plan
    should not rely on it.
    """
    return lora_memory(
        model, batch, seq_len, rank=rank, target_modules=target_modules, base_quant=base_quant,
        optimizer=optimizer, **kwargs,
    )  # fmt: skip
