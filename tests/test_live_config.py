"""The live config: TOML file + command-line overrides; a bad value is one line naming key, value, allowed."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from gpuwatch.commands.common import add_source_options
from gpuwatch.errors import UserError
from gpuwatch.live.config import (
    ConfigError,
    LiveConfig,
    Workload,
    load_config,
    parse_workload,
)
from gpuwatch.model.whatif import PlanInputs

EXAMPLE = Path(__file__).resolve().parents[1] / "gpuwatch" / "live" / "config_example.toml"


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return str(p)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_source_options(p, with_prices=True)
    return p


def test_the_shipped_example_loads_and_says_what_it_says() -> None:
    config = load_config(str(EXAMPLE))
    assert config.prices.electricity_usd_per_kwh == 0.30
    assert config.prices.pue == 1.0
    assert config.prices.server_capex_usd == 3200
    assert config.workload == Workload("llama-3-8b", "fp16", batch=8, context_tokens=4096)
    assert config.engine_urls == ("http://127.0.0.1:8000/metrics",)
    assert config.alternatives == ("rtx5090", "h100-sxm")
    assert config.gpu_prices == {"h100-sxm": 30000.0}
    assert config.alerts.temperature_margin_c == 5


def test_missing_default_file_gives_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gpuwatch.live.config.default_config_path", lambda: tmp_path / "absent.toml")
    assert load_config(None) == LiveConfig()


def test_an_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(str(tmp_path / "nope.toml"))


@pytest.mark.parametrize(
    ("text", "key", "value", "allowed"),
    [
        ("[prices]\npue = 0.8\n", "prices.pue", "0.8", "from 1 to 5"),
        ("[prices]\nutilisation_ratio = 1.5\n", "prices.utilisation_ratio", "1.5", "from 0.01 to 1"),
        (
            '[prices]\nelectricity_usd_per_kwh = "cheap"\n',
            "prices.electricity_usd_per_kwh",
            "'cheap'",
            "a number",
        ),
        ('[workload]\nmodel = "llama3-8b"\nquant = "fp16"\n', "workload.model", "'llama3-8b'", "llama-3-8b"),
        (
            '[workload]\nmodel = "llama-3-8b"\nquant = "fp16"\nbatch = 0\n',
            "workload.batch",
            "0",
            "from 1 to 65536",
        ),
        ("interval_s = 0\n", "interval_s", "0", "from 0.05 to 3600"),
        (
            'engine_urls = ["ftp://host/metrics"]\n',
            "engine_urls",
            "['ftp://host/metrics']",
            "http://127.0.0.1:8000",
        ),
        ('engine_urls = ["host:port"]\n', "engine_urls", "['host:port']", "http://127.0.0.1:8000"),
        # "h100" is a catalog alias of h100-sxm since issue 14 (one id scheme with --sim)
        ('alternatives = ["h100-sxm4"]\n', "alternatives", "['h100-sxm4']", "h100-sxm"),
        ("[alerts]\nthroughput_shortfall_ratio = 2\n", "alerts.throughput_shortfall_ratio", "2", "<= 1"),
    ],
)
def test_bad_values_name_key_value_and_what_is_allowed(
    tmp_path: Path, text: str, key: str, value: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message
    assert f"{key} = {value}" in message
    assert allowed in message
    assert isinstance(info.value, UserError)  # the CLI prints it as one line, exit 2


@pytest.mark.parametrize(
    ("text", "typo"),
    [
        ("[prices]\nelectricty_usd_per_kwh = 0.2\n", "prices.electricty_usd_per_kwh"),
        ("intervall_s = 2\n", "intervall_s"),
    ],
)
def test_unknown_keys_are_errors_listing_the_known_ones(tmp_path: Path, text: str, typo: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert f"unknown key {typo!r}" in str(info.value)
    assert "known keys:" in str(info.value)


def test_invalid_toml_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_config(write(tmp_path, "[prices\npue = 1\n"))
    assert "\n" not in str(info.value)


def test_command_line_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "interval_s = 5\n[prices]\npue = 1.5\nelectricity_usd_per_kwh = 0.4\n")
    args = parser().parse_args(
        [
            "--config",
            path,
            "--pue",
            "1.2",
            "--interval",
            "0.5",
            "--workload",
            "mistral-7b:q4_K_M:batch=4",
            "--engine",
            "http://a:1/metrics",
            "--engine",
            "b:2",
            "--compare",
            "rtx3090,rtx5090",
        ]
    )
    config = load_config(args.config, vars(args))
    assert config.prices.pue == 1.2
    assert config.prices.electricity_usd_per_kwh == 0.4  # not overridden: the file's value stays
    assert config.interval_s == 0.5
    # the context not given is the planner's default, as in the Plan pane
    assert config.workload == Workload(
        "mistral-7b", "q4_K_M", batch=4, context_tokens=PlanInputs().context_tokens
    )
    assert config.engine_urls == ("http://a:1/metrics", "b:2")
    assert config.alternatives == ("rtx3090", "rtx5090")


def test_a_bad_command_line_value_names_the_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gpuwatch.live.config.default_config_path", lambda: tmp_path / "absent.toml")
    with pytest.raises(
        ConfigError, match=r"^--utilisation = '0' is not allowed: expected a number from 0.01 to 1$"
    ):
        load_config(None, {"utilisation_ratio": "0"})


def test_workload_spec() -> None:
    assert parse_workload("llama-3-8b:fp16:batch=8:context=4096") == Workload("llama-3-8b", "fp16", 8, 4096)
    assert parse_workload("LLAMA-2-7B:awq:engine=llama.cpp") == Workload(
        "llama-2-7b", "int4-awq", 1, 4096, engine_profile="llama.cpp"
    )
    with pytest.raises(ConfigError, match="ambiguous quantisation format 'int4'; choose one of int4-awq"):
        parse_workload("llama-2-7b:int4")  # issue 14: a family id is not silently one of its members
    assert (
        parse_workload("llama-3-8b:fp16:batch=8:context=4096").spec == "llama-3-8b:fp16:batch=8:context=4096"
    )
    fp8 = parse_workload("llama-3-8b:fp16:batch=8:kv=FP8")  # vLLM --kv-cache-dtype fp8
    assert fp8 == Workload("llama-3-8b", "fp16", 8, 4096, kv_dtype="fp8")
    assert fp8.spec == "llama-3-8b:fp16:batch=8:context=4096:kv=fp8"
    assert parse_workload(fp8.spec) == fp8


def test_the_kv_cache_dtype_of_a_workload_in_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[workload]\nmodel = "llama-3-8b"\nquant = "fp16"\nkv_dtype = "q8_0"\n')
    assert load_config(str(path)).workload == Workload("llama-3-8b", "fp16", kv_dtype="q8_0")
    path.write_text('[workload]\nmodel = "llama-3-8b"\nquant = "fp16"\nkv_dtype = "fp7"\n')
    with pytest.raises(
        ConfigError, match=r"workload\.kv_dtype = 'fp7' is not allowed: unknown KV-cache dtype"
    ):
        load_config(str(path))


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("llama-3-8b", "expected MODEL:QUANT"),
        (
            "llama-3-8b:fp16:batch=x",
            "--workload batch = 'x' is not allowed: expected a whole number from 1 to 65536",
        ),
        ("llama-3-8b:fp16:beam=2", "unknown part 'beam=2'"),
        ("llama-3-8b:fp7", "--workload = 'fp7' is not allowed"),
        ("llama-3-8b:fp16:kv=fp7", "--workload kv = 'fp7' is not allowed: unknown KV-cache dtype 'fp7'"),
    ],
)
def test_bad_workload_spec(spec: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_workload(spec)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_an_unknown_catalog_id_reads_as_one_sentence() -> None:
    with pytest.raises(ConfigError) as info:
        parse_workload("nosuchmodel:fp16")
    # the catalog's own message, not "expected unknown model ..."
    assert str(info.value).startswith(
        "--workload = 'nosuchmodel' is not allowed: unknown model 'nosuchmodel'"
    )
    assert "expected unknown" not in str(info.value)


def test_an_unpriced_alternative_says_how_to_price_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'a100-80gb-sxm' has no list price .* \[gpu_prices\]"):
        load_config(write(tmp_path, 'alternatives = ["a100-80gb-sxm"]\n'))
    priced = load_config(
        write(tmp_path, 'alternatives = ["a100-80gb-sxm"]\n[gpu_prices]\na100-80gb-sxm = 15000\n')
    )
    assert priced.gpu_prices == {"a100-80gb-sxm": 15000.0}


def test_gpu_prices_and_alternatives_take_the_sim_ids(tmp_path: Path) -> None:
    """One id scheme (issue 14): what `--sim` accepts names the same card in [gpu_prices] and alternatives."""
    config = load_config(write(tmp_path, 'alternatives = ["h100", "4090"]\n[gpu_prices]\nh100 = 25000\n'))
    assert config.gpu_prices == {"h100-sxm": 25000.0}
    assert config.alternatives == ("h100-sxm", "rtx4090")
