"""Fine-tuning as frameworks run it: the longest context a card trains, and the compute a step costs.

The memory of a fine-tuning step has a fixed part (frozen base weights, adapters, their gradients and
optimizer states, CUDA context: gpuwatch/model/memory.py's lora/qlora accounting) and a part that grows
with every token of the sequence. That per-token part is where frameworks differ several-fold:

``hf`` (Hugging Face Transformers + FlashAttention-2, gradient checkpointing on): each layer's bf16 input
  is kept (2h bytes x layers), one layer's activations are live during recompute (34h, Korthikanti et al.
  2022 without the attention-score term), and the loss materialises the logits: bf16 logits (2 bytes per
  vocabulary entry), their fp32 upcast (4), fp32 log-softmax (4), its fp32 gradient (4) and the bf16
  gradient (2) = 16 bytes x vocabulary per token.
``unsloth`` (offloaded gradient checkpointing + Apple's Cut Cross-Entropy): layer inputs go to host
  memory and the logits are never materialised, leaving the working set of one layer: 51.8h bytes per
  token, FIT to the slope of Unsloth's published Llama-3.1-8B table (below).

Held against Unsloth's published maximum context lengths (docs.unsloth.ai "Unsloth Benchmarks", QLoRA on
all linear layers, rank 32, batch 1; tests/test_model_finetune.py):
  Llama-3.1-8B:  Unsloth 21,848 / 40,724 / 78,475 / 153,977 / 191,728 / 342,733 tokens and HF+FA2
                 932 / 2,551 / 5,789 / 12,264 / 15,502 / 28,454 at 12 / 16 / 24 / 40 / 48 / 80 GB;
  Llama-3.3-70B: Unsloth 12,106 / 89,389 and HF+FA2 OOM / 6,916 at 48 / 80 GB (held out).

Compute per trained token: a full fine-tune is 6N FLOPs (forward 2N, backward 4N); LoRA and QLoRA skip the
frozen weights' gradients, 4N (forward 2N, backward through the activations 2N; the adapters' own FLOPs
are under 1 % at rank <= 64). Gradient checkpointing recomputes the forward once more: +2N, i.e. a full
fine-tune costs 8N, a third more, and LoRA 6N, half again.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpuwatch.model.errors import ModelInputError
from gpuwatch.model.llm import ModelSpec
from gpuwatch.model.memory import ALLOCATOR_RESERVE_RATIO, lora_memory, qlora_memory
from gpuwatch.model.plan_inputs import FRAMEWORKS

METHODS = ("full", "lora", "qlora")
#: Unsloth's working set per token, in bytes per hidden unit (FIT, see the module docstring)
UNSLOTH_BYTES_PER_HIDDEN = 51.8
#: HF's loss path per token, in bytes per vocabulary entry (2 + 4 + 4 + 4 + 2, see the module docstring)
HF_LOGITS_BYTES_PER_VOCAB = 16.0
#: Korthikanti et al. 2022 eq. 1 without the attention-score term (FlashAttention)
_LAYER_ACTIVATION_BYTES_PER_HIDDEN = 34.0


@dataclass(frozen=True)
class ContextLimit:
    framework: str
    method: str
    fixed_bytes: float
    per_token_bytes: float
    usable_bytes: float
    max_context_tokens: int  # 0: the fixed part alone does not fit
    notes: tuple[str, ...]


def per_token_bytes(model: ModelSpec, framework: str) -> float:
    """Bytes each token of the training sequence adds on the GPU (batch 1)."""
    h = model.hidden_size
    if framework == "unsloth":
        return UNSLOTH_BYTES_PER_HIDDEN * h
    if framework == "hf":
        checkpoints = 2.0 * h * model.num_layers
        layer = _LAYER_ACTIVATION_BYTES_PER_HIDDEN * h
        return checkpoints + layer + HF_LOGITS_BYTES_PER_VOCAB * model.vocab_size
    raise ModelInputError(f"unknown framework {framework!r}; choose from {', '.join(FRAMEWORKS)}")


def longest_context(
    model: ModelSpec,
    gpu_memory_bytes: float,
    *,
    method: str = "qlora",
    framework: str = "hf",
    rank: int = 32,
    reserve_ratio: float = ALLOCATOR_RESERVE_RATIO,
) -> ContextLimit:
    """The longest sequence (batch 1) a card of ``gpu_memory_bytes`` trains with this framework."""
    if method not in ("lora", "qlora"):
        raise ModelInputError(f"longest_context covers LoRA and QLoRA; got {method!r}")
    build = qlora_memory if method == "qlora" else lora_memory
    fixed_parts = build(model, 1, 0, rank=rank)
    fixed = float(fixed_parts.total_bytes)
    per_token = per_token_bytes(model, framework)
    usable = gpu_memory_bytes * (1.0 - reserve_ratio)
    tokens = max(0, int((usable - fixed) // per_token))
    notes = (
        f"{framework}: {per_token / 1024:.0f} KiB per token on the GPU; fixed {fixed / 2**30:.2f} GiB "
        f"({method}, rank {rank})",
    )
    return ContextLimit(framework, method, fixed, per_token, usable, tokens, notes)


def step_flops_per_token(model: ModelSpec, *, method: str, checkpointing: bool) -> float:
    """Training FLOPs per token of a step (see the module docstring)."""
    if method not in METHODS:
        raise ModelInputError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    n = model.active_params
    base = 6.0 * n if method == "full" else 4.0 * n
    return base + (2.0 * n if checkpointing else 0.0)
