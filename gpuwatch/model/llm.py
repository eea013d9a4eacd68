"""LLM catalog: real architecture shapes, and loading a local Hugging Face config.json.

CONTRACT: ModelSpec field names are fixed; add, do not rename.

Parameter counts are COMPUTED from the shapes (:func:`param_breakdown`), never typed in, so a config.json
loaded
from disk gets the same accounting as the catalog; tests check the result against each model's published
count.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from gpuwatch.model.elementwise import largest
from gpuwatch.model.errors import ModelInputError, UnknownIdError
from gpuwatch.model.package_data import read_package_text


@dataclass(frozen=True)
class ModelSpec:
    id: str  # "llama-2-7b"
    name: str  # "Llama-2-7B"
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int  # == num_attention_heads without GQA
    head_dim: int
    intermediate_size: int  # per routed expert for MoE; the MLP width for dense models
    vocab_size: int
    total_params: float  # parameter count, all experts
    active_params: float  # parameters touched per token (== total for dense), input embedding included
    num_experts: int = 1  # routed experts per MoE layer
    experts_per_token: int = 1
    tie_word_embeddings: bool = False
    max_context_tokens: int = 4096
    source: str = ""  # citation (HF config.json of the official repo, paper)
    #: q/k/v projections carry biases (Qwen2); adds (heads + 2*kv_heads)*head_dim params per layer
    attention_bias: bool = False
    # --- added for MoE variants, MLA, sliding windows (defaults describe a plain dense Llama) ---
    family: str = ""  # config.json model_type ("llama", "qwen3_moe", "deepseek_v3", "gpt_oss", ...)
    num_dense_layers: int = 0  # MoE models: layers with a dense MLP (DeepSeek first_k_dense_replace)
    dense_intermediate_size: int = 0  # the MLP width of those dense layers
    num_shared_experts: int = 0  # always-on experts per MoE layer (DeepSeek, Qwen2-MoE)
    shared_expert_intermediate_size: int = 0  # width of ONE shared expert
    shared_expert_gate: bool = False  # Qwen2-MoE: a sigmoid gate (hidden params) on the shared expert
    #: Multi-head latent attention (DeepSeek-V2/V3): the cache holds kv_lora_rank + qk_rope_head_dim per
    #: token per layer instead of 2 x kv_heads x head_dim
    kv_lora_rank: int = 0
    q_lora_rank: int = 0  # 0: q projected directly (DeepSeek-V2-Lite)
    qk_rope_head_dim: int = 0
    qk_nope_head_dim: int = 0
    v_head_dim: int = 0
    sliding_window: int = 0  # tokens a windowed layer attends to (and caches); 0: none
    num_sliding_layers: int = 0  # layers that use the window (the rest attend to the full context)
    qk_norm: bool = False  # per-head RMSNorm on q and k (Qwen3, Gemma-3): 2 x head_dim per layer
    norms_per_layer: int = 2  # RMSNorms per block (Gemma-2/3 have 4)
    #: gpt-oss: biases on o_proj, on every expert projection and on the router, and one learned
    #: attention-sink logit per head
    attention_out_bias: bool = False
    mlp_bias: bool = False
    attention_sinks: bool = False

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def num_moe_layers(self) -> int:
        return self.num_layers - self.num_dense_layers if self.is_moe else 0


@dataclass(frozen=True)
class ParamBreakdown:
    """Parameter counts by part; LoRA targets and weight-only quantisation need the parts, not just the
    total."""

    embedding: int
    attention: int  # all layers: q, k, v, o weights (+ biases, MLA down/up projections, sinks)
    mlp: int  # all layers, all experts, shared experts, dense MLPs, + MoE router
    norms: int  # RMSNorm weights: per layer + final (+ q/k norms)
    lm_head: int  # 0 when tied to the embedding
    total: int
    active: int  # per token: attention + top-k and shared experts + router + embedding + norms + lm_head
    linear: int  # the transformer blocks' nn.Linear weights (what GPTQ/AWQ/nf4 quantise), biases excluded
    #: routed experts' weights, all of them (what MXFP4 quantises in gpt-oss)
    routed_experts: int = 0

    @property
    def active_excluding_embedding(self) -> int:
        """Active parameters without the input embedding table (a lookup reads one row per token);
        OpenAI (gpt-oss) and DeepSeek publish active counts this way, Qwen and Mistral with it."""
        return self.active - (0 if self.lm_head == 0 else self.embedding)


def _attention_params(model: ModelSpec) -> tuple[int, int]:
    """(weights, biases + sinks) of one layer's attention."""
    h = model.hidden_size
    heads = model.num_attention_heads
    if model.is_mla:
        qk_dim = model.qk_nope_head_dim + model.qk_rope_head_dim
        if model.q_lora_rank:
            q = h * model.q_lora_rank + model.q_lora_rank * heads * qk_dim
        else:
            q = h * heads * qk_dim
        kv_a = h * (model.kv_lora_rank + model.qk_rope_head_dim)
        kv_b = model.kv_lora_rank * heads * (model.qk_nope_head_dim + model.v_head_dim)
        o = heads * model.v_head_dim * h
        return q + kv_a + kv_b + o, 0
    q_dim = heads * model.head_dim
    kv_dim = model.num_kv_heads * model.head_dim
    weights = h * q_dim + 2 * h * kv_dim + q_dim * h
    extra = (q_dim + 2 * kv_dim) if model.attention_bias else 0
    extra += h if model.attention_out_bias else 0
    extra += heads if model.attention_sinks else 0
    return weights, extra


def _mlp_params(h: int, width: int, bias: bool) -> tuple[int, int]:
    """(weights, biases) of one gated MLP (gate, up, down)."""
    return 3 * h * width, (2 * width + h) if bias else 0


def param_breakdown(model: ModelSpec) -> ParamBreakdown:
    """Count parameters from shapes: GQA or MLA attention, gated (SwiGLU) MLPs, dense and MoE layers with
    shared experts, RMSNorms, tied or untied lm_head."""
    h, layers = model.hidden_size, model.num_layers
    attn_w, attn_extra = _attention_params(model)
    moe_layers = model.num_moe_layers
    dense_layers = layers - moe_layers
    dense_width = model.dense_intermediate_size if model.is_moe else model.intermediate_size
    dense_w, dense_b = _mlp_params(h, dense_width, model.mlp_bias)
    expert_w, expert_b = _mlp_params(h, model.intermediate_size, model.mlp_bias)
    shared_w, shared_b = _mlp_params(h, model.shared_expert_intermediate_size, model.mlp_bias)
    shared_w *= model.num_shared_experts
    shared_b *= model.num_shared_experts
    router_w = h * model.num_experts + (h if model.shared_expert_gate else 0) if model.is_moe else 0
    router_b = model.num_experts if model.is_moe and model.mlp_bias else 0
    per_moe_layer_fixed = shared_w + shared_b + router_w + router_b
    routed = moe_layers * model.num_experts * (expert_w + expert_b)
    k = min(model.experts_per_token, model.num_experts)
    mlp = dense_layers * (dense_w + dense_b) + routed + moe_layers * per_moe_layer_fixed
    active_mlp = dense_layers * (dense_w + dense_b) + moe_layers * (
        k * (expert_w + expert_b) + per_moe_layer_fixed
    )
    embedding = model.vocab_size * h
    lm_head = 0 if model.tie_word_embeddings else model.vocab_size * h
    norms = layers * model.norms_per_layer * h + h
    if model.qk_norm:
        norms += layers * 2 * model.head_dim
    if model.is_mla:  # kv_a_layernorm (+ q_a_layernorm)
        norms += layers * (model.kv_lora_rank + model.q_lora_rank)
    attention = layers * (attn_w + attn_extra)
    total = embedding + attention + mlp + norms + lm_head
    active = embedding + attention + active_mlp + norms + lm_head
    linear = (
        layers * attn_w
        + dense_layers * dense_w
        + moe_layers * (model.num_experts * expert_w + shared_w + router_w)
    )
    return ParamBreakdown(
        embedding, attention, mlp, norms, lm_head, total, active, linear, routed_experts=routed
    )


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
    **extra: Any,
) -> ModelSpec:
    """A ModelSpec with its parameter counts computed from the shape (never typed in)."""
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
        **extra,
    )
    counts = param_breakdown(draft)
    return replace(draft, total_params=float(counts.total), active_params=float(counts.active))


def check_context(model: ModelSpec, context_tokens: Any, what: str = "context") -> None:
    """Refuse a context longer than the model was built for (its config's max_position_embeddings)."""
    longest = largest(context_tokens)
    if longest > model.max_context_tokens:
        raise ModelInputError(
            f"{what} {longest:,.0f} tokens is beyond {model.name}'s maximum of "
            f"{model.max_context_tokens:,} (max_position_embeddings); use at most that"
        )


def _load_catalog() -> tuple[ModelSpec, ...]:
    origin = "gpuwatch/model/data/models.toml"
    text = read_package_text("gpuwatch.model", "data/models.toml")
    return tuple(
        spec_from_config(
            entry["config"],
            f"{origin} [model.{key}]",
            model_id=key,
            name=entry["name"],
            source=entry["source"],
        )
        for key, entry in tomllib.loads(text)["model"].items()
    )


@cache
def _by_id() -> dict[str, ModelSpec]:
    """The built-in catalog by id, read on first use: a session that declares no workload (most TUI and
    exporter runs) never needs it, and its first frame or first scrape should not wait for it."""
    return {m.id: m for m in _load_catalog()}


def get_model(key: str) -> ModelSpec:
    """A catalog model by id, case-insensitively."""
    try:
        return _by_id()[key.strip().lower()]
    except KeyError:
        raise UnknownIdError("model", key, _by_id()) from None


def all_models() -> tuple[ModelSpec, ...]:
    return tuple(_by_id().values())


def model_ids() -> tuple[str, ...]:
    return tuple(_by_id())


def resolve_model(key_or_path: str) -> ModelSpec:
    """A catalog id, or else an existing local config.json (or a directory holding one)."""
    if key_or_path.strip().lower() in _by_id():
        return get_model(key_or_path)
    path = Path(key_or_path).expanduser()
    if path.exists():
        return load_hf_config(path)
    if key_or_path.endswith(".json") or "/" in key_or_path or key_or_path.startswith((".", "~")):
        raise ModelInputError(
            f"{key_or_path}: no such file or directory (give a local config.json or a catalog id)"
        )
    return get_model(key_or_path)  # raises UnknownIdError with close matches


#: a config.json larger than this is not a model config (published ones are a few KiB); refusing it keeps
#: a hostile file from costing more to read than to reject
MAX_CONFIG_BYTES = 1 << 20
#: the largest value a shape key may take: far beyond any published model (Llama-3.1-405B: 126 layers,
#: hidden 16384, MLP 53248; DeepSeek-V3: 256 experts; Gemma-3: vocab 262208), small enough that counting
#: layers or parameters never runs away
_SHAPE_MAX = 1 << 24
_LAYERS_MAX = 4096


def _positive_int(config: Mapping[str, Any], key: str, origin: str) -> int:
    if key not in config:
        raise ModelInputError(f"{origin}: missing key {key!r} (needed for the model shape)")
    value = config[key]
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ModelInputError(f"{origin}: key {key!r} must be a positive integer, got {value!r:.40}")
    limit = _LAYERS_MAX if key == "num_hidden_layers" else _SHAPE_MAX
    if key == "max_position_embeddings":
        limit = 1 << 30
    if value > limit:
        raise ModelInputError(
            f"{origin}: key {key!r} = {value} is beyond any model the planner can plan (max {limit:,})"
        )
    return value


def _count(config: Mapping[str, Any], key: str, origin: str, default: int = 0) -> int:
    """A whole number >= 0 that may be absent or null (then ``default``)."""
    value = config.get(key)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value > _SHAPE_MAX:
        raise ModelInputError(
            f"{origin}: key {key!r} must be a whole number from 0 to {_SHAPE_MAX:,}, got {value!r:.40}"
        )
    return value


def _flag(config: Mapping[str, Any], key: str, origin: str, default: bool) -> bool:
    value = config.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ModelInputError(f"{origin}: key {key!r} must be true or false, got {value!r}")
    return value


#: config.json model_type values the planner understands, and what each one's config leaves out
#: (transformers' configuration_*.py defaults for the keys the shape needs)
FAMILIES: dict[str, dict[str, Any]] = {
    "llama": {},
    "mistral": {},
    "mixtral": {},
    "qwen2": {"attention_bias": True},
    "qwen2_moe": {"attention_bias": True},
    "qwen3": {},
    "qwen3_moe": {},
    "deepseek_v2": {},
    "deepseek_v3": {},
    "gpt_oss": {"attention_bias": True},
    "gemma": {"tie_word_embeddings": True},
    "gemma2": {"tie_word_embeddings": True, "head_dim": 256},
    "gemma3_text": {
        "tie_word_embeddings": True,
        "vocab_size": 262208,
        "head_dim": 256,
        "max_position_embeddings": 131072,
        "sliding_window": 4096,
        "sliding_window_pattern": 6,
    },
    "phi3": {},
}
_MOE_FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3", "gpt_oss")
_EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")


def _sliding_layers(config: Mapping[str, Any], family: str, layers: int, origin: str) -> int:
    """How many layers attend through a sliding window, from the config's own per-layer pattern."""
    types = config.get("layer_types")
    if types is not None:
        if not isinstance(types, list) or len(types) != layers:
            raise ModelInputError(
                f"{origin}: key 'layer_types' must list one entry per layer ({layers}), got {types!r:.80}"
            )
        unknown = sorted({t for t in types if t not in ("sliding_attention", "full_attention")}, key=str)
        if unknown:
            raise ModelInputError(
                f"{origin}: key 'layer_types' has {unknown[0]!r}; the planner knows sliding_attention "
                "and full_attention"
            )
        return sum(t == "sliding_attention" for t in types)
    if family == "gemma3_text":
        pattern = _positive_int(config, "sliding_window_pattern", origin)
        return sum(1 for i in range(layers) if (i + 1) % pattern)  # every pattern-th layer is global
    if family == "gemma2":
        return (layers + 1) // 2  # even layers slide (transformers Gemma2: layer_idx % 2 == 0)
    if family == "gpt_oss":
        return (layers + 1) // 2  # transformers GptOssConfig default: alternating, sliding first
    if family in ("qwen2", "qwen2_moe", "qwen3", "qwen3_moe"):
        if _flag(config, "use_sliding_window", origin, False):
            raise ModelInputError(
                f"{origin}: key 'use_sliding_window' is true; the planner does not model Qwen's "
                "max_window_layers split (set it false, as the published configs do)"
            )
        return 0
    if family in ("mistral", "mixtral", "phi3") and config.get("sliding_window") is not None:
        return layers  # one window for every layer
    return 0


def _moe_dense_layers(config: Mapping[str, Any], family: str, layers: int, origin: str) -> int:
    """Layers of an MoE model that keep a dense MLP."""
    if family in ("deepseek_v2", "deepseek_v3"):
        if _count(config, "moe_layer_freq", origin, 1) != 1:
            raise ModelInputError(f"{origin}: key 'moe_layer_freq' other than 1 is not modelled")
        return min(_count(config, "first_k_dense_replace", origin), layers)
    if family in ("qwen2_moe", "qwen3_moe"):
        step = _count(config, "decoder_sparse_step", origin, 1) or 1
        only = config.get("mlp_only_layers") or []
        if not isinstance(only, list) or not all(isinstance(i, int) for i in only):
            raise ModelInputError(f"{origin}: key 'mlp_only_layers' must be a list of layer indices")
        return sum(1 for i in range(layers) if i in only or (i + 1) % step)
    return 0


def spec_from_config(
    config: Mapping[str, Any], origin: str, *, model_id: str, name: str, source: str
) -> ModelSpec:
    """A ModelSpec from a Hugging Face config.json's keys. Every key that changes the shape is read or
    refused by name: an unknown model_type or an unmodelled option is an error, never a dense guess."""
    if "hidden_size" not in config and isinstance(config.get("text_config"), Mapping):
        config = config["text_config"]  # multimodal wrappers (Gemma-3) keep the LM shape here
    family = config.get("model_type")
    if family not in FAMILIES:
        raise ModelInputError(
            f"{origin}: key 'model_type' is {family!r}; the planner knows {', '.join(FAMILIES)}"
        )
    config = {**FAMILIES[family], **{k: v for k, v in config.items() if v is not None}}
    hidden = _positive_int(config, "hidden_size", origin)
    layers = _positive_int(config, "num_hidden_layers", origin)
    heads = _positive_int(config, "num_attention_heads", origin)
    kv_heads = (
        _positive_int(config, "num_key_value_heads", origin) if "num_key_value_heads" in config else heads
    )
    if "head_dim" in config:
        head_dim = _positive_int(config, "head_dim", origin)
    elif hidden % heads:
        raise ModelInputError(
            f"{origin}: hidden_size {hidden} is not divisible by num_attention_heads {heads}; "
            "give head_dim explicitly"
        )
    else:
        head_dim = hidden // heads
    if heads % kv_heads:
        raise ModelInputError(
            f"{origin}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
        )
    vocab = _positive_int(config, "vocab_size", origin)
    extra: dict[str, Any] = {"family": family}

    experts_key = next((k for k in _EXPERT_KEYS if _count(config, k, origin) > 1), None)
    experts = _positive_int(config, experts_key, origin) if experts_key else 1
    if family in _MOE_FAMILIES and experts_key is None:
        wanted = {"mixtral": "num_local_experts", "gpt_oss": "num_local_experts"}.get(family, "")
        wanted = wanted or ("n_routed_experts" if family.startswith("deepseek") else "num_experts")
        raise ModelInputError(
            f"{origin}: missing key {wanted!r} (model_type {family} is a mixture of experts)"
        )
    if experts > 1 and family not in _MOE_FAMILIES:
        raise ModelInputError(
            f"{origin}: key {experts_key!r} in a model_type ({family}) the planner treats as dense"
        )
    top_k = 1
    if experts > 1:
        top_k = _positive_int(
            config, "num_experts_per_tok" if "num_experts_per_tok" in config else "experts_per_token", origin
        )
        if top_k > experts:
            raise ModelInputError(f"{origin}: num_experts_per_tok {top_k} exceeds the {experts} experts")
        if family in ("qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3"):
            intermediate = _positive_int(config, "moe_intermediate_size", origin)
        else:
            intermediate = _positive_int(config, "intermediate_size", origin)
        dense_layers = _moe_dense_layers(config, family, layers, origin)
        extra["num_dense_layers"] = dense_layers
        if dense_layers:
            extra["dense_intermediate_size"] = _positive_int(config, "intermediate_size", origin)
        if family.startswith("deepseek"):
            extra["num_shared_experts"] = _count(config, "n_shared_experts", origin)
            extra["shared_expert_intermediate_size"] = intermediate
        elif family == "qwen2_moe" and _count(config, "shared_expert_intermediate_size", origin):
            extra["num_shared_experts"] = 1
            extra["shared_expert_intermediate_size"] = _count(
                config, "shared_expert_intermediate_size", origin
            )
            extra["shared_expert_gate"] = True
    else:
        intermediate = _positive_int(config, "intermediate_size", origin)

    max_context = _positive_int(config, "max_position_embeddings", origin)
    tie = _flag(config, "tie_word_embeddings", origin, False)
    if family.startswith("deepseek") or "kv_lora_rank" in config:
        extra["kv_lora_rank"] = _positive_int(config, "kv_lora_rank", origin)
        extra["q_lora_rank"] = _count(config, "q_lora_rank", origin)
        extra["qk_rope_head_dim"] = _positive_int(config, "qk_rope_head_dim", origin)
        extra["qk_nope_head_dim"] = _positive_int(config, "qk_nope_head_dim", origin)
        extra["v_head_dim"] = _positive_int(config, "v_head_dim", origin)
        head_dim = extra["qk_nope_head_dim"] + extra["qk_rope_head_dim"]
        kv_heads = heads  # MLA expands the latent to every head; the cache does not scale with heads

    sliding = _sliding_layers(config, family, layers, origin)
    if sliding:
        extra["sliding_window"] = _positive_int(config, "sliding_window", origin)
        extra["num_sliding_layers"] = sliding
    bias = _flag(config, "attention_bias", origin, False)
    if family == "gpt_oss":
        extra.update(attention_out_bias=bias, mlp_bias=True, attention_sinks=True)
    elif family in ("llama", "mistral"):
        extra["attention_out_bias"] = bias  # Llama's attention_bias covers q, k, v and o
        extra["mlp_bias"] = _flag(config, "mlp_bias", origin, False)
    extra["qk_norm"] = family in ("qwen3", "qwen3_moe", "gemma3_text")
    extra["norms_per_layer"] = 4 if family in ("gemma2", "gemma3_text") else 2
    return _spec(
        model_id,
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
        attention_bias=bias and family in ("qwen2", "qwen2_moe", "gpt_oss", "llama", "mistral"),
        source=source,
        **extra,
    )


def load_hf_config(path: str | Path, *, model_id: str | None = None) -> ModelSpec:
    """Build a ModelSpec from a LOCAL Hugging Face config.json (a file, or a directory containing one).

    Understands the model_types in :data:`FAMILIES`; ``num_key_value_heads`` defaults to the attention
    heads (no GQA) and ``head_dim`` to hidden/heads, as in transformers. Never touches the network.
    """
    file = Path(path)
    if file.is_dir():
        file = file / "config.json"
    origin = str(file)
    try:
        with file.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ModelInputError(
                f"{origin}: larger than {MAX_CONFIG_BYTES // 1024} KiB; not a model config.json"
            )
        config = json.loads(raw.decode("utf-8"))
    except OSError as exc:
        raise ModelInputError(f"{origin}: cannot read config.json ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise ModelInputError(f"{origin}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise ModelInputError(f"{origin}: not a UTF-8 text file") from None
    except RecursionError:
        raise ModelInputError(f"{origin}: JSON nested too deeply to be a model config") from None
    if not isinstance(config, dict):
        raise ModelInputError(f"{origin}: expected a JSON object at the top level")
    fallback = file.stem if file.stem != "config" else file.parent.name  # "qwen3-8b.json" or "qwen3-8b/"
    name = model_id or str(config.get("_name_or_path") or fallback or "local-model")
    return spec_from_config(
        config,
        origin,
        model_id=model_id or name.lower().replace("/", "-").replace(" ", "-"),
        name=name,
        source=f"local config.json {origin}",
    )
