"""LLM catalog shapes and parameter counts, local config.json loading, and quantisation formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuwatch.model.errors import ModelInputError, UnknownIdError
from gpuwatch.model.llm import all_models, get_model, load_hf_config, param_breakdown, resolve_model
from gpuwatch.model.quant import all_quants, get_quant

CONFIGS = Path(__file__).parent / "data" / "hf_configs"


@pytest.mark.parametrize(
    ("model_id", "published_total", "published_active"),
    [
        # Hugging Face model-card / paper counts
        ("llama-2-7b", 6.74e9, None),
        ("llama-2-13b", 13.02e9, None),
        ("llama-2-70b", 68.98e9, None),
        ("llama-3-8b", 8.03e9, None),
        ("llama-3-70b", 70.55e9, None),
        ("mistral-7b", 7.24e9, None),
        ("mixtral-8x7b", 46.7e9, 12.9e9),  # Mixtral paper: 47B total, 13B active
        ("qwen2.5-7b", 7.61e9, None),
    ],
)
def test_param_counts_from_shapes_match_published(
    model_id: str, published_total: float, published_active: float | None
) -> None:
    model = get_model(model_id)
    assert model.total_params == pytest.approx(published_total, rel=0.002)
    assert model.active_params == pytest.approx(published_active or published_total, rel=0.002)


def test_gqa_and_head_shapes() -> None:
    llama70 = get_model("llama-2-70b")
    assert (llama70.num_attention_heads, llama70.num_kv_heads, llama70.head_dim) == (64, 8, 128)
    assert get_model("llama-2-7b").num_kv_heads == 32  # no GQA below 70B in Llama-2
    assert get_model("qwen2.5-7b").attention_bias
    # Qwen2.5 model card: 6.53B non-embedding parameters (embedding and untied lm_head excluded)
    qwen = param_breakdown(get_model("qwen2.5-7b"))
    assert qwen.total - qwen.embedding - qwen.lm_head == pytest.approx(6.53e9, rel=0.002)


def test_lookup_is_case_insensitive_and_unknown_lists_matches() -> None:
    assert get_model("Llama-2-7B").id == "llama-2-7b"
    with pytest.raises(UnknownIdError, match=r"unknown model 'llama-2-8b'; did you mean .*llama-2-7b"):
        get_model("llama-2-8b")


@pytest.mark.parametrize("model_id", ["llama-2-7b", "mixtral-8x7b", "qwen2.5-7b"])
def test_local_config_json_gives_the_catalog_shape(model_id: str) -> None:
    loaded = load_hf_config(CONFIGS / f"{model_id}.json", model_id=model_id)
    catalog = get_model(model_id)
    for field in ("num_layers", "hidden_size", "num_attention_heads", "num_kv_heads", "head_dim",
                  "intermediate_size", "vocab_size", "num_experts", "experts_per_token", "attention_bias",
                  "total_params", "active_params", "max_context_tokens"):  # fmt: skip
        assert getattr(loaded, field) == getattr(catalog, field), field


def test_config_defaults_kv_heads_and_head_dim(tmp_path: Path) -> None:
    config = json.loads((CONFIGS / "llama-2-7b.json").read_text())
    del config["num_key_value_heads"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = load_hf_config(tmp_path)  # a directory holding config.json
    assert model.num_kv_heads == 32 and model.head_dim == 128
    assert resolve_model(str(tmp_path)).total_params == model.total_params
    config["head_dim"] = 256
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert load_hf_config(tmp_path / "config.json").head_dim == 256


def test_bad_config_json_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ModelInputError, match="missing key 'intermediate_size'"):
        load_hf_config(CONFIGS / "missing-intermediate.json")
    bad = tmp_path / "config.json"
    bad.write_text('{"model_type": "llama", "hidden_size": "big"}')
    with pytest.raises(ModelInputError, match="'hidden_size' must be a positive integer"):
        load_hf_config(bad)
    bad.write_text("{not json")
    with pytest.raises(ModelInputError, match="not valid JSON"):
        load_hf_config(bad)
    with pytest.raises(ModelInputError, match=r"cannot read config\.json"):
        load_hf_config(tmp_path / "absent.json")


@pytest.mark.parametrize(
    ("quant_id", "bits", "compute"),
    [
        ("fp32", 32.0, "fp32"),
        ("fp16", 16.0, "fp16"),
        ("bf16", 16.0, "bf16"),
        ("fp8", 8.0, "fp8"),
        ("int8", 8.0 + 16 / 4096, "int8"),
        ("int4-gptq", 4 + 16 / 128 + 4 / 128 + 32 / 4096, "fp16"),
        ("int4-awq", 4 + 16 / 128 + 4 / 128, "fp16"),
        ("nf4", 4.5, "fp16"),  # QLoRA: 4 + 32/64
        ("nf4-dq", 4.127, "fp16"),  # QLoRA: 4 + 8/64 + 32/(64*256)
        ("q4_0", 4.5, "fp16"),
        ("q4_K_M", 4.84, "fp16"),
        ("q5_K_M", 5.68, "fp16"),
        ("q8_0", 8.5, "fp16"),
    ],
)
def test_quant_bits_include_scales(quant_id: str, bits: float, compute: str) -> None:
    fmt = get_quant(quant_id)
    assert fmt.bits_per_param == pytest.approx(bits, abs=1e-3)
    assert fmt.compute_dtype == compute
    assert fmt.source


def test_quant_lookup_aliases_and_errors() -> None:
    assert get_quant("Q4_k_m").id == "q4_K_M"
    assert get_quant("gptq").id == "int4-gptq"
    assert len(all_quants()) == 20
    with pytest.raises(UnknownIdError, match=r"did you mean .*q4_0"):
        get_quant("q4_1")


def test_every_catalog_model_has_a_source() -> None:
    for model in all_models():
        assert "config.json" in model.source
