"""Every architecture family from its published config.json: parameter counts against the model cards,
KV cache bytes against hand calculations, and configs the planner cannot interpret refused by key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gpuwatch.model import memory, throughput
from gpuwatch.model.catalog import get_gpu
from gpuwatch.model.errors import ModelInputError
from gpuwatch.model.llm import all_models, get_model, load_hf_config, param_breakdown, resolve_model

CONFIGS = Path(__file__).parent / "data" / "configs"

#: (config file, published total, published active, whether the publisher counts the input embedding
#: table as active, where the figures come from)
PUBLISHED = [
    ("llama-3.1-8b", 8.03e9, None, True, "meta-llama/Llama-3.1-8B model card: 8B; safetensors 8.03B"),
    ("llama-3.2-1b", 1.24e9, None, True, "meta-llama/Llama-3.2-1B: 1.23B (card), 1.24B (safetensors)"),
    ("mistral-7b-v0.1", 7.24e9, None, True, "mistralai/Mistral-7B-v0.1: 7.24B (safetensors)"),
    ("mixtral-8x7b-v0.1", 46.7e9, 12.9e9, True, "mistral.ai 'Mixtral of experts': 46.7B total, 12.9B/token"),
    ("qwen2.5-7b", 7.61e9, None, True, "Qwen/Qwen2.5-7B model card: Number of Parameters 7.61B"),
    ("qwen3-8b", 8.2e9, None, True, "Qwen/Qwen3-8B model card: Number of Parameters 8.2B"),
    ("qwen3-30b-a3b", 30.5e9, 3.3e9, True, "Qwen/Qwen3-30B-A3B model card: 30.5B total, 3.3B activated"),
    ("qwen1.5-moe-a2.7b", 14.3e9, 2.7e9, True, "Qwen blog 'Qwen1.5-MoE': 14.3B total, 2.7B activated"),
    ("deepseek-v3", 671e9, 37e9, False, "DeepSeek-V3 Technical Report: 671B total, 37B activated per token"),
    (
        "deepseek-v2-lite",
        15.7e9,
        2.4e9,
        False,
        "DeepSeek-V2 paper, appendix B: V2-Lite 15.7B, 2.4B activated",
    ),
    ("gpt-oss-20b", 20.91e9, 3.61e9, False, "OpenAI gpt-oss model card, Table 1: 20.91B total, 3.61B active"),
    ("gemma-2-9b", 9.24e9, None, True, "Gemma 2 report, Table 2: 917.5M embedding + 8,324M non-embedding"),
    ("gemma-3-27b-it", 27.016e9, None, True, "Gemma 3 report, Table 1: 1,416M embedding + 25,600M (LM only)"),
    ("phi-4", 14.7e9, None, True, "microsoft/phi-4: 14.7B (safetensors), Phi-4 Technical Report: 14B"),
]


@pytest.mark.parametrize(("name", "total", "active", "with_embedding", "source"), PUBLISHED)
def test_total_and_active_params_match_the_model_card(
    name: str, total: float, active: float | None, with_embedding: bool, source: str
) -> None:
    model = load_hf_config(CONFIGS / f"{name}.json")
    counts = param_breakdown(model)
    assert model.total_params == pytest.approx(total, rel=0.02), source
    got = model.active_params if with_embedding else counts.active_excluding_embedding
    if active is None:  # dense: every parameter is active
        assert model.active_params == model.total_params
    elif name == "deepseek-v2-lite":
        # the one family member outside 2 %: 2.45B counted against a one-decimal "2.4B" (+2.1 %); the total
        # and the V3 active count (same code path) are within 2 %
        assert got == pytest.approx(active, rel=0.025), source
    else:
        assert got == pytest.approx(active, rel=0.02), source


def test_every_family_ships_a_config() -> None:
    families = {load_hf_config(f).family for f in CONFIGS.glob("*.json")}
    assert families == {
        "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "deepseek_v2",
        "deepseek_v3", "gpt_oss", "gemma2", "gemma3_text", "phi3",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("model_id", "total", "active", "with_embedding"),
    [
        ("llama-3.1-8b", 8.03e9, None, True),
        ("llama-3.1-70b", 70.6e9, None, True),
        ("llama-3.1-405b", 406e9, None, True),  # model card: 405B; safetensors 406B
        ("llama-3.2-1b", 1.24e9, None, True),
        ("llama-3.2-3b", 3.21e9, None, True),
        ("llama-3.3-70b", 70.6e9, None, True),
        ("mistral-small-24b", 23.6e9, None, True),  # safetensors 23.6B
        ("qwen2.5-7b", 7.61e9, None, True),  # Qwen2.5 model cards' "Number of Parameters"
        ("qwen2.5-14b", 14.7e9, None, True),
        ("qwen2.5-32b", 32.5e9, None, True),
        ("qwen2.5-72b", 72.7e9, None, True),
        ("qwen2.5-coder-7b", 7.61e9, None, True),
        ("qwen2.5-coder-14b", 14.7e9, None, True),
        ("qwen2.5-coder-32b", 32.5e9, None, True),
        ("qwen3-0.6b", 0.6e9, None, True),  # Qwen3 model cards' "Number of Parameters"
        ("qwen3-1.7b", 1.7e9, None, True),
        ("qwen3-4b", 4.0e9, None, True),
        ("qwen3-8b", 8.2e9, None, True),
        ("qwen3-14b", 14.8e9, None, True),
        ("qwen3-32b", 32.8e9, None, True),
        ("qwen3-30b-a3b", 30.5e9, 3.3e9, True),
        ("qwen3-235b-a22b", 235e9, 22e9, True),
        ("deepseek-v3", 671e9, 37e9, False),
        ("deepseek-r1", 671e9, 37e9, False),  # DeepSeek-R1 model card: 671B total, 37B activated
        ("deepseek-r1-distill-qwen-1.5b", 1.78e9, None, True),  # safetensors counts of the distills
        ("deepseek-r1-distill-qwen-7b", 7.62e9, None, True),
        ("deepseek-r1-distill-llama-8b", 8.03e9, None, True),
        ("deepseek-r1-distill-qwen-14b", 14.8e9, None, True),
        ("deepseek-r1-distill-qwen-32b", 32.8e9, None, True),
        ("deepseek-r1-distill-llama-70b", 70.6e9, None, True),
        ("gpt-oss-20b", 20.91e9, 3.61e9, False),  # gpt-oss model card, Table 1
        ("gpt-oss-120b", 116.83e9, 5.13e9, False),
        ("gemma-3-4b", 3.884e9, None, True),  # Gemma 3 report, Table 1: embedding + non-embedding
        ("gemma-3-12b", 11.771e9, None, True),
        ("gemma-3-27b", 27.016e9, None, True),
        ("phi-4", 14.7e9, None, True),
    ],
)
def test_catalog_models_match_their_published_counts(
    model_id: str, total: float, active: float | None, with_embedding: bool
) -> None:
    model = get_model(model_id)
    assert model.total_params == pytest.approx(total, rel=0.02)
    if active is not None:
        counts = param_breakdown(model)
        got = model.active_params if with_embedding else counts.active_excluding_embedding
        assert got == pytest.approx(active, rel=0.02)
    assert "config.json" in model.source


@pytest.mark.parametrize(
    ("config", "model_id"),
    [
        ("llama-3.1-8b", "llama-3.1-8b"),
        ("llama-3.2-1b", "llama-3.2-1b"),
        ("mistral-7b-v0.1", "mistral-7b"),
        ("mixtral-8x7b-v0.1", "mixtral-8x7b"),
        ("qwen3-8b", "qwen3-8b"),
        ("qwen3-30b-a3b", "qwen3-30b-a3b"),
        ("deepseek-v3", "deepseek-v3"),
        ("gpt-oss-20b", "gpt-oss-20b"),
        ("gemma-3-27b-it", "gemma-3-27b"),
        ("phi-4", "phi-4"),
    ],
)
def test_full_published_config_gives_the_catalog_shape(config: str, model_id: str) -> None:
    loaded, catalog = load_hf_config(CONFIGS / f"{config}.json"), get_model(model_id)
    for field in ("num_layers", "hidden_size", "num_kv_heads", "head_dim", "intermediate_size", "num_experts",
                  "experts_per_token", "kv_lora_rank", "num_sliding_layers", "sliding_window",
                  "tie_word_embeddings", "total_params", "active_params", "max_context_tokens"):  # fmt: skip
        assert getattr(loaded, field) == getattr(catalog, field), field


def test_every_model_in_the_issue_is_in_the_catalog() -> None:
    ids = {m.id for m in all_models()}
    wanted = {
        "llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "llama-3.2-1b", "llama-3.2-3b", "llama-3.3-70b",
        "qwen2.5-7b", "qwen2.5-14b", "qwen2.5-32b", "qwen2.5-72b", "qwen2.5-coder-7b", "qwen2.5-coder-32b",
        "qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "qwen3-14b", "qwen3-32b", "qwen3-30b-a3b",
        "qwen3-235b-a22b", "deepseek-v3", "deepseek-r1", "deepseek-r1-distill-qwen-1.5b",
        "deepseek-r1-distill-qwen-7b", "deepseek-r1-distill-llama-8b", "deepseek-r1-distill-qwen-14b",
        "deepseek-r1-distill-qwen-32b", "deepseek-r1-distill-llama-70b", "gpt-oss-20b", "gpt-oss-120b",
        "gemma-3-4b", "gemma-3-12b", "gemma-3-27b", "mistral-small-24b", "phi-4",
    }  # fmt: skip
    assert wanted <= ids


# ------------------------------------------------------------------------------------------------ KV cache
def test_mla_kv_bytes_per_token_by_hand() -> None:
    v3 = get_model("deepseek-v3")
    # 61 layers x (kv_lora_rank 512 + qk_rope_head_dim 64) x 2 bytes (bf16) = 70,272 bytes = 68.6 KiB,
    # where a dense reading of 128 heads x 128 x 2 (K and V) would be 61 x 2 x 128 x 192 x 2 = 6 MiB
    assert memory.kv_cache_bytes_per_token(v3, "bf16") == 61 * (512 + 64) * 2 == 70_272
    assert memory.kv_cache_bytes_per_token(v3, "fp8") == 61 * 576 * 1
    assert memory.kv_bytes_per_token_at(v3, 100_000) == 70_272  # no window: the same at any context
    lite = load_hf_config(CONFIGS / "deepseek-v2-lite.json")
    assert memory.kv_cache_bytes_per_token(lite) == 27 * 576 * 2


def test_sliding_window_kv_by_hand() -> None:
    mistral = get_model("mistral-7b")
    full_rate = 2 * 32 * 8 * 128 * 2  # K and V x layers x KV heads x head_dim x fp16 = 131,072 bytes
    assert memory.kv_cache_bytes_per_token(mistral) == full_rate
    assert memory.kv_bytes_per_token_at(mistral, 2048) == full_rate  # inside the 4096 window
    # at 32K every layer still holds only 4096 tokens: 4096/32768 of the full rate = 16,384 bytes
    assert memory.kv_bytes_per_token_at(mistral, 32768) == full_rate * 4096 / 32768 == 16_384
    assert memory.kv_cache_bytes(mistral, 2, 32768) == 2 * 4096 * full_rate

    oss = get_model("gpt-oss-20b")
    per_layer = 2 * 8 * 64 * 2  # 2,048 bytes per token per layer
    # 12 full layers hold all 131,072 tokens, 12 windowed layers 128 each
    seq = 12 * per_layer * 131072 + 12 * per_layer * 128
    assert memory.kv_cache_bytes(oss, 1, 131072) == seq
    assert memory.kv_bytes_per_token_at(oss, 131072) == pytest.approx(seq / 131072)  # 24,600 bytes

    gemma = get_model("gemma-3-27b")
    per_layer = 2 * 16 * 128 * 2  # 8,192 bytes
    # 62 layers, every 6th global: 10 full-context layers, 52 with a 1024-token window
    assert memory.kv_cache_bytes(gemma, 1, 32768) == 10 * per_layer * 32768 + 52 * per_layer * 1024
    g2 = load_hf_config(CONFIGS / "gemma-2-9b.json")
    assert (g2.num_sliding_layers, g2.sliding_window) == (21, 4096)  # alternate layers, window 4096


def test_kv_dtype_sets_the_cache_bytes() -> None:
    model = get_model("llama-3.1-8b")
    fp16 = memory.kv_cache_bytes_per_token(model, "fp16")
    assert memory.kv_cache_bytes_per_token(model, "bf16") == fp16
    assert memory.kv_cache_bytes_per_token(model, "fp8") == fp16 / 2
    assert memory.kv_cache_bytes_per_token(model, "int8") == fp16 / 2
    assert memory.kv_cache_bytes_per_token(model, "q8_0") == fp16 * 8.5 / 16  # 34 bytes per 32 values
    assert memory.kv_cache_bytes_per_token(model, "q4_0") == fp16 * 4.5 / 16  # 18 bytes per 32 values
    mem16 = memory.inference_memory(model, "fp16", 8, 32768, kv_dtype="fp16")
    mem8 = memory.inference_memory(model, "fp16", 8, 32768, kv_dtype="fp8")
    assert mem8.components["kv_cache"] == mem16.components["kv_cache"] / 2
    gpu = get_gpu("h100-sxm")
    slow = throughput.estimate_throughput(model, "fp16", gpu, 32, 32768, kv_dtype="fp16")
    fast = throughput.estimate_throughput(model, "fp16", gpu, 32, 32768, kv_dtype="fp8")
    assert fast.bytes_per_decode_step < slow.bytes_per_decode_step
    assert fast.decode_tokens_per_s > slow.decode_tokens_per_s
    with pytest.raises(ModelInputError, match="kv_dtype: unknown KV-cache dtype 'fp5'"):
        memory.kv_cache_bytes_per_token(model, "fp5")


# --------------------------------------------------------------------------------------- MoE reads, memory
def test_moe_memory_holds_every_expert_and_decode_reads_the_touched_ones() -> None:
    qwen = get_model("qwen3-30b-a3b")
    counts = param_breakdown(qwen)
    # memory: all 30.5B parameters at 2 bytes
    assert memory.weight_bytes(qwen, "bf16") == pytest.approx(counts.total * 2)
    # batch 1 decode reads the active path, not the 233B a dense reading of intermediate_size gave
    one = throughput.weight_bytes_read(qwen, "bf16", 1)
    assert one == pytest.approx((counts.active - counts.embedding) * 2)
    # batch B touches E(1 - (1 - k/E)^B) of 128 experts per MoE layer: 8 at B=1, 59.5 at B=16
    e, k = 128, 8
    for b in (1, 16, 256):
        touched = e * (1 - (1 - k / e) ** b)
        assert throughput.expected_experts_touched(qwen, b) == pytest.approx(touched)
        expected = (
            counts.total - counts.embedding - counts.routed_experts
        ) * 2 + counts.routed_experts * 2 * (touched / e)
        assert throughput.weight_bytes_read(qwen, "bf16", b) == pytest.approx(expected)
    dense = get_model("qwen3-32b")
    assert throughput.weight_bytes_read(dense, "bf16", 64) == throughput.weight_bytes_read(dense, "bf16", 1)


def test_deepseek_shared_experts_and_dense_layers() -> None:
    v3 = get_model("deepseek-v3")
    assert (v3.num_dense_layers, v3.num_shared_experts, v3.num_experts, v3.experts_per_token) == (
        3,
        1,
        256,
        8,
    )
    counts = param_breakdown(v3)
    expert = 3 * 7168 * 2048
    assert counts.routed_experts == 58 * 256 * expert
    # the active MLP path: 3 dense layers of width 18432, then 8 routed + 1 shared expert + router per layer
    active_mlp = 3 * 3 * 7168 * 18432 + 58 * (9 * expert + 256 * 7168)
    assert counts.active - counts.attention - counts.embedding - counts.lm_head - counts.norms == active_mlp


def test_mxfp4_quantises_only_the_experts_of_gpt_oss() -> None:
    # OpenAI gpt-oss model card, Table 1: checkpoint sizes 12.8 GiB (20b) and 60.8 GiB (120b) with the MoE
    # weights in MXFP4 and everything else in bf16
    for model_id, gib in (("gpt-oss-20b", 12.8), ("gpt-oss-120b", 60.8)):
        assert memory.weight_bytes(get_model(model_id), "mxfp4") / 2**30 == pytest.approx(gib, rel=0.02)


# ------------------------------------------------------------------------------------------ refused input
def _write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def _config(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CONFIGS / f"{name}.json").read_text())
    return loaded


@pytest.mark.parametrize(
    ("base", "change", "message"),
    [
        ("llama-3.1-8b", {"model_type": "mamba"}, "key 'model_type' is 'mamba'; the planner knows llama"),
        ("qwen3-30b-a3b", {"num_experts": None}, "missing key 'num_experts'"),
        ("qwen3-30b-a3b", {"moe_intermediate_size": None}, "missing key 'moe_intermediate_size'"),
        ("qwen3-30b-a3b", {"num_experts_per_tok": 300}, "num_experts_per_tok 300 exceeds the 128 experts"),
        ("qwen3-8b", {"use_sliding_window": True}, "key 'use_sliding_window' is true"),
        ("deepseek-v3", {"n_routed_experts": None}, "missing key 'n_routed_experts'"),
        ("deepseek-v3", {"kv_lora_rank": None}, "missing key 'kv_lora_rank'"),
        ("deepseek-v3", {"moe_layer_freq": 2}, "key 'moe_layer_freq'"),
        (
            "gpt-oss-20b",
            {"layer_types": ["chunked_attention"] * 24},
            "key 'layer_types' has 'chunked_attention'",
        ),
        (
            "gpt-oss-20b",
            {"layer_types": ["full_attention"]},
            "key 'layer_types' must list one entry per layer",
        ),
        ("llama-3.1-8b", {"num_local_experts": 8}, "key 'num_local_experts' in a model_type (llama)"),
        ("llama-3.1-8b", {"max_position_embeddings": None}, "missing key 'max_position_embeddings'"),
    ],
)
def test_configs_the_planner_cannot_interpret_name_the_key(
    tmp_path: Path, base: str, change: dict[str, Any], message: str
) -> None:
    config = _config(base)
    for key, value in change.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    with pytest.raises(ModelInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_hf_config(_write(tmp_path, config))


def test_a_model_path_that_does_not_exist_says_so(tmp_path: Path) -> None:
    with pytest.raises(ModelInputError, match="no such file or directory"):
        resolve_model(str(tmp_path / "nothere" / "config.json"))
    with pytest.raises(ModelInputError, match="no such file or directory"):
        resolve_model("./my-model.json")


def test_context_beyond_the_maximum_is_refused() -> None:
    llama3 = get_model("llama-3-8b")
    with pytest.raises(
        ModelInputError, match="context 200,000 tokens is beyond Llama-3-8B's maximum of 8,192"
    ):
        memory.inference_memory(llama3, "fp16", 1, 200_000)
    with pytest.raises(ModelInputError, match="beyond Llama-3-8B's maximum"):
        throughput.estimate_throughput(llama3, "fp16", get_gpu("rtx4090"), 1, 200_000)
    with pytest.raises(ModelInputError, match="seq_len 16,384 tokens is beyond"):
        memory.training_memory(llama3, 1, 16384)
    assert memory.inference_memory(llama3, "fp16", 1, 8192).total_bytes > 0  # the maximum itself is fine
    assert float(np.max(memory.kv_cached_tokens(get_model("qwen3-8b"), np.array([40960])))) == 40960


def test_hostile_configs_are_refused_cheaply(tmp_path: Path) -> None:
    config = _config("gemma-3-27b-it")
    config["text_config"]["num_hidden_layers"] = 10**12  # would loop over a trillion layers
    with pytest.raises(ModelInputError, match="'num_hidden_layers' = 1000000000000 is beyond"):
        load_hf_config(_write(tmp_path, config))
    big = tmp_path / "big.json"
    big.write_text('{"pad": "' + "x" * (2 << 20) + '"}')
    with pytest.raises(ModelInputError, match="larger than 1024 KiB"):
        load_hf_config(big)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelInputError, match=r"nested too deeply|not valid JSON"):
        load_hf_config(deep)
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ModelInputError, match="not a UTF-8 text file"):
        load_hf_config(binary)


def test_lora_adapters_on_moe_count_dense_layers_and_shared_experts() -> None:
    v3 = get_model("deepseek-v3")
    h = 7168
    # gate_proj adapters: 3 dense layers (width 18432) + 58 MoE layers x (256 routed + 1 shared) x width 2048
    expected = 3 * (h + 18432) + 58 * 257 * (h + 2048)
    assert memory.lora_trainable_params(v3, 1, ("gate_proj",)) == expected
    mixtral = get_model("mixtral-8x7b")
    assert memory.lora_trainable_params(mixtral, 1, ("down_proj",)) == 32 * 8 * (14336 + 4096)


def test_per_layer_options_the_configs_can_carry(tmp_path: Path) -> None:
    # Qwen2-MoE mlp_only_layers: those layers keep a dense MLP of intermediate_size
    config = _config("qwen1.5-moe-a2.7b")
    base = load_hf_config(CONFIGS / "qwen1.5-moe-a2.7b.json")
    config["mlp_only_layers"] = [0, 1]
    two_dense = load_hf_config(_write(tmp_path, config))
    assert (base.num_dense_layers, two_dense.num_dense_layers) == (0, 2)
    moe_layer = 60 * 3 * 2048 * 1408 + 3 * 2048 * 5632 + 2048 * 60 + 2048  # experts, shared, router, gate
    assert base.total_params - two_dense.total_params == 2 * (moe_layer - 3 * 2048 * 5632)
    # a Phi-3 sliding_window applies to every layer; explicit all-full layer_types mean no window
    phi = _config("phi-4")
    phi["sliding_window"] = 2047
    assert load_hf_config(_write(tmp_path, phi)).num_sliding_layers == 40
    qwen = _config("qwen3-8b")
    qwen["layer_types"] = ["full_attention"] * 36
    assert load_hf_config(_write(tmp_path, qwen)).num_sliding_layers == 0
