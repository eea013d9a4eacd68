"""LLM catalog: real architecture shapes, and loading a local Hugging Face config.json.

CONTRACT: ModelSpec field names are fixed; add, do not rename.

Parameter counts are COMPUTED from the shapes (:func:`param_breakdown`), never typed in, so a config.json
loaded
from disk gets the same accounting as the catalog; tests check the result against each model's published
count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gpuwatch.model.errors import ModelInputError, UnknownIdError


@dataclass(frozen=True)
class ModelSpec:
    id: str  # "llama-2-7b"
    name: str  # "Llama-2-7B"
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int  # == num_attention_heads without GQA
    head_dim: int
    intermediate_size: int  # per expert for MoE
    vocab_size: int
    total_params: float  # parameter count, all experts
    active_params: float  # parameters touched per token (== total for dense)
    num_experts: int = 1
    experts_per_token: int = 1
    tie_word_embeddings: bool = False
    max_context_tokens: int = 4096
    source: str = ""  # citation (HF config.json of the official repo, paper)
    #: q/k/v projections carry biases (Qwen2); adds (heads + 2*kv_heads)*head_dim params per layer
    attention_bias: bool = False


@dataclass(frozen=True)
class ParamBreakdown:
    """Parameter counts by part; LoRA targets and weight-only quantisation need the parts, not just the
    total."""

    embedding: int
    attention: int  # all layers: q, k, v, o weights (+ q/k/v biases)
    mlp: int  # all layers, all experts, + MoE router
    norms: int  # RMSNorm weights: 2 per layer + final
    lm_head: int  # 0 when tied to the embedding
    total: int
    active: int  # per token: attention + top-k experts + router + embedding + norms + lm_head
    linear: int  # the transformer blocks' nn.Linear weights (what GPTQ/AWQ/nf4 quantise), biases excluded


def param_breakdown(model: ModelSpec) -> ParamBreakdown:
    """Count parameters from shapes: GQA-aware attention, gated (SwiGLU) MLP, RMSNorm, untied lm_head."""
    h, layers = model.hidden_size, model.num_layers
    q_dim = model.num_attention_heads * model.head_dim
    kv_dim = model.num_kv_heads * model.head_dim
    attn_weights = h * q_dim + 2 * h * kv_dim + q_dim * h
    attn_bias = (q_dim + 2 * kv_dim) if model.attention_bias else 0
    expert = 3 * h * model.intermediate_size  # gate_proj, up_proj, down_proj
    router = h * model.num_experts if model.num_experts > 1 else 0
    embedding = model.vocab_size * h
    lm_head = 0 if model.tie_word_embeddings else model.vocab_size * h
    norms = layers * 2 * h + h
    attention = layers * (attn_weights + attn_bias)
    mlp = layers * (model.num_experts * expert + router)
    active_mlp = layers * (min(model.experts_per_token, model.num_experts) * expert + router)
    total = embedding + attention + mlp + norms + lm_head
    active = embedding + attention + active_mlp + norms + lm_head
    linear = layers * (attn_weights + model.num_experts * expert + router)
    return ParamBreakdown(embedding, attention, mlp, norms, lm_head, total, active, linear)


def _spec(
    model_id: str,
    name: str,
    *,
    layers: int,
    hidden: int,
    heads: int,
    kv_heads: int,
    intermediate: int,
    vocab: int,
    max_context: int,
    source: str,
    head_dim: int | None = None,
    experts: int = 1,
    experts_per_token: int = 1,
    tie: bool = False,
    attention_bias: bool = False,
) -> ModelSpec:
    draft = ModelSpec(
        id=model_id,
        name=name,
        num_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim if head_dim is not None else hidden // heads,
        intermediate_size=intermediate,
        vocab_size=vocab,
        total_params=0.0,
        active_params=0.0,
        num_experts=experts,
        experts_per_token=experts_per_token if experts > 1 else 1,
        tie_word_embeddings=tie,
        max_context_tokens=max_context,
        source=source,
        attention_bias=attention_bias,
    )
    counts = param_breakdown(draft)
    return replace(draft, total_params=float(counts.total), active_params=float(counts.active))


_HF = "config.json of the official Hugging Face repo "
_MODELS: tuple[ModelSpec, ...] = (
    _spec("llama-2-7b", "Llama-2-7B", layers=32, hidden=4096, heads=32, kv_heads=32, intermediate=11008,
          vocab=32000, max_context=4096,
          source=_HF + "meta-llama/Llama-2-7b-hf; Touvron et al. 2023, Table 1"),
    _spec("llama-2-13b", "Llama-2-13B", layers=40, hidden=5120, heads=40, kv_heads=40, intermediate=13824,
          vocab=32000, max_context=4096, source=_HF + "meta-llama/Llama-2-13b-hf"),
    _spec("llama-2-70b", "Llama-2-70B", layers=80, hidden=8192, heads=64, kv_heads=8, intermediate=28672,
          vocab=32000, max_context=4096,
          source=_HF + "meta-llama/Llama-2-70b-hf (GQA: 8 KV heads); Touvron et al. 2023, sec. 2.2"),
    _spec("llama-3-8b", "Llama-3-8B", layers=32, hidden=4096, heads=32, kv_heads=8, intermediate=14336,
          vocab=128256, max_context=8192, source=_HF + "meta-llama/Meta-Llama-3-8B"),
    _spec("llama-3-70b", "Llama-3-70B", layers=80, hidden=8192, heads=64, kv_heads=8, intermediate=28672,
          vocab=128256, max_context=8192, source=_HF + "meta-llama/Meta-Llama-3-70B"),
    _spec("mistral-7b", "Mistral-7B-v0.1", layers=32, hidden=4096, heads=32, kv_heads=8, intermediate=14336,
          vocab=32000, max_context=32768,
          source=_HF + "mistralai/Mistral-7B-v0.1 (sliding window 4096); Jiang et al. 2023, Table 1"),
    _spec("mixtral-8x7b", "Mixtral-8x7B-v0.1", layers=32, hidden=4096, heads=32, kv_heads=8,
          intermediate=14336, vocab=32000, max_context=32768, experts=8, experts_per_token=2,
          source=_HF + "mistralai/Mixtral-8x7B-v0.1 (num_local_experts 8, num_experts_per_tok 2); "
          "Jiang et al. 2024: 47B total / 13B active"),
    _spec("qwen2.5-7b", "Qwen2.5-7B", layers=28, hidden=3584, heads=28, kv_heads=4, intermediate=18944,
          vocab=152064, max_context=131072, attention_bias=True,
          source=_HF + "Qwen/Qwen2.5-7B (q/k/v biases, untied lm_head); model card: 7.61B parameters"),
)  # fmt: skip
_BY_ID = {m.id: m for m in _MODELS}


def get_model(key: str) -> ModelSpec:
    """A catalog model by id, case-insensitively."""
    try:
        return _BY_ID[key.strip().lower()]
    except KeyError:
        raise UnknownIdError("model", key, _BY_ID) from None


def all_models() -> tuple[ModelSpec, ...]:
    return _MODELS


def model_ids() -> tuple[str, ...]:
    return tuple(_BY_ID)


def resolve_model(key_or_path: str) -> ModelSpec:
    """A catalog id, or else an existing local config.json (or a directory holding one)."""
    if key_or_path.strip().lower() in _BY_ID:
        return get_model(key_or_path)
    if Path(key_or_path).exists():
        return load_hf_config(key_or_path)
    return get_model(key_or_path)  # raises UnknownIdError with close matches


def _positive_int(config: dict[str, Any], key: str, origin: str) -> int:
    if key not in config:
        raise ModelInputError(f"{origin}: missing key {key!r} (needed for the model shape)")
    value = config[key]
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ModelInputError(f"{origin}: key {key!r} must be a positive integer, got {value!r}")
    return value


def load_hf_config(path: str | Path, *, model_id: str | None = None) -> ModelSpec:
    """Build a ModelSpec from a LOCAL Hugging Face config.json (a file, or a directory containing one).

    Understands the Llama / Mistral / Mixtral / Qwen2 key set: ``num_key_value_heads`` defaults to the
    attention
    heads (no GQA) and ``head_dim`` to hidden/heads, as in transformers. Never touches the network.
    """
    file = Path(path)
    if file.is_dir():
        file = file / "config.json"
    origin = str(file)
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelInputError(f"{origin}: cannot read config.json ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise ModelInputError(f"{origin}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(config, dict):
        raise ModelInputError(f"{origin}: expected a JSON object at the top level")
    if "hidden_size" not in config and isinstance(config.get("text_config"), dict):
        config = config["text_config"]  # multimodal wrappers keep the LM shape here
    hidden = _positive_int(config, "hidden_size", origin)
    layers = _positive_int(config, "num_hidden_layers", origin)
    heads = _positive_int(config, "num_attention_heads", origin)
    kv_heads = (
        _positive_int(config, "num_key_value_heads", origin) if "num_key_value_heads" in config else heads
    )
    head_dim = config.get("head_dim")
    if head_dim is None:
        if hidden % heads:
            raise ModelInputError(
                f"{origin}: hidden_size {hidden} is not divisible by num_attention_heads {heads}; "
                "give head_dim explicitly"
            )
        head_dim = hidden // heads
    else:
        head_dim = _positive_int(config, "head_dim", origin)
    if heads % kv_heads:
        raise ModelInputError(
            f"{origin}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
        )
    intermediate = _positive_int(config, "intermediate_size", origin)
    vocab = _positive_int(config, "vocab_size", origin)
    experts_key = "num_local_experts" if "num_local_experts" in config else "num_experts"
    experts = _positive_int(config, experts_key, origin) if config.get(experts_key) is not None else 1
    top_k = _positive_int(config, "num_experts_per_tok", origin) if experts > 1 else 1
    max_context = config.get("max_position_embeddings", 4096)
    if not isinstance(max_context, int) or max_context <= 0:
        raise ModelInputError(
            f"{origin}: key 'max_position_embeddings' must be a positive integer, got {max_context!r}"
        )
    model_type = str(config.get("model_type", ""))
    tie = config.get("tie_word_embeddings", False)  # Llama/Mistral/Qwen2 configs default to untied
    if not isinstance(tie, bool):
        raise ModelInputError(f"{origin}: key 'tie_word_embeddings' must be true or false, got {tie!r}")
    bias = bool(config.get("attention_bias", model_type in ("qwen2", "qwen2_moe")))
    name = model_id or str(config.get("_name_or_path") or file.parent.name or "local-model")
    return _spec(
        model_id or name.lower().replace("/", "-").replace(" ", "-"),
        name,
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        intermediate=intermediate,
        vocab=vocab,
        max_context=max_context,
        head_dim=head_dim,
        experts=experts,
        experts_per_token=top_k,
        tie=tie,
        attention_bias=bias,
        source=f"local config.json {origin}",
    )
