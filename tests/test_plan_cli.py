"""`gpuwatch plan`: every sub-command, every catalog GPU and model, tables and JSON, and its errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gpuwatch.cli import main
from gpuwatch.model import cost, memory, parallel
from gpuwatch.model.catalog import get_gpu, gpu_ids
from gpuwatch.model.llm import get_model, load_hf_config, model_ids
from gpuwatch.model.quant import get_quant
from gpuwatch.model.serving import powered_throughput
from gpuwatch.model.throughput import estimate_throughput
from gpuwatch.model.whatif import PlanInputs

HF_CONFIGS = Path(__file__).parent / "data" / "hf_configs"
#: a price for every card, so that `cost` runs for datacenter parts too
PRICE = ["--gpu-price-usd", "20000"]


def plan_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(["plan", *argv, "--json"]) == 0
    out = capsys.readouterr().out
    result: dict[str, Any] = json.loads(out)  # exactly one JSON object on stdout
    return result


def plan_table(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["plan", *argv]) == 0
    return capsys.readouterr().out


def plan_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Runs a failing command; returns its single stderr line."""
    try:
        code = main(["plan", *argv])
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("gpuwatch: error: ")
    return lines[0]


# --------------------------------------------------------------------------- every GPU, every sub-command
def check_all(capsys: pytest.CaptureFixture[str], model_id: str, gpu_id: str, quant_id: str) -> None:
    """All six sub-commands for one model on one GPU: the table renders, the JSON is the model's answer."""
    model, quant, gpu = get_model(model_id), get_quant(quant_id), get_gpu(gpu_id)
    w = ["--model", model_id, "--gpu", gpu_id, "--quant", quant_id, "--batch", "2", "--context", "1024"]

    mem = plan_json(capsys, "memory", *w)
    ref = memory.inference_memory(model, quant, 2, 1024)
    assert mem["total_gib"] == pytest.approx(ref.total_gib)
    assert mem["breakdown"]["weights_gib"] == pytest.approx(ref.components["weights"] / 2**30)
    assert mem["fits"] is ref.fits(gpu) and mem["gpus_needed"] == ref.gpus_needed(gpu)
    assert "weights" in plan_table(capsys, "memory", *w)

    tp = plan_json(capsys, "throughput", *w)
    est = estimate_throughput(model, quant, gpu, 2, 1024)
    assert tp["decode_tokens_per_s"] == pytest.approx(est.decode_tokens_per_s)
    assert tp["prefill_tokens_per_s"] == pytest.approx(est.prefill_tokens_per_s)
    assert tp["time_per_output_token_ms"] == pytest.approx(est.time_per_output_token_s * 1e3)
    assert tp["bound"] == est.bound
    assert f"{est.decode_tokens_per_s:,.1f} tok/s" in plan_table(capsys, "throughput", *w)

    c = plan_json(capsys, "cost", *w, *PRICE)
    d = PlanInputs()
    assert c["fits"] is ref.fits(gpu)
    if not ref.fits(gpu):  # a model that cannot load has no speed and no price per token
        assert (
            c["decode_tokens_per_s"] is None and c["usd_per_mtok"] is None and c["cloud_usd_per_mtok"] is None
        )
        assert "does not fit" in plan_table(capsys, "cost", *w, *PRICE)
    else:
        # the power is the workload's, modelled (gpuwatch/model/power.py), never above the card's limit
        drawn = powered_throughput(model, quant_id, gpu, 2, 1024).power.power_w
        assert c["power_provenance"] == "modelled" and c["power_w"] == pytest.approx(drawn)
        assert drawn <= gpu.tdp_w + 1e-6
        assert c["usd_per_mtok"] == pytest.approx(
            cost.usd_per_mtok(
                d.prices, tokens_per_s=est.decode_tokens_per_s, gpu_capex_usd=20000, power_w=drawn
            )
        )
    assert "per 1M tokens" in plan_table(capsys, "cost", *w, *PRICE)

    pa = plan_json(capsys, "parallel", *w, "--count", "2")
    assert pa["gpus_to_hold"] == parallel.gpus_to_hold(model, quant, gpu, batch=2, context_tokens=1024)
    assert pa["pipeline_bubble_ratio"] == pytest.approx(parallel.pipeline_bubble_ratio(2, 2))
    assert "GPUs to hold" in plan_table(capsys, "parallel", *w, "--count", "2")

    tw = ["--model", model_id, "--gpu", gpu_id, "--tokens", "1e9"]
    tr = plan_json(capsys, "train", *tw)
    ref_train = cost.training_cost(
        params=model.active_params,
        tokens=1e9,
        gpu=gpu,
        mfu_ratio=d.mfu_ratio,
        usd_per_gpu_h=d.prices.cloud_usd_per_gpu_h,
    )
    assert tr["gpu_hours"] == pytest.approx(ref_train.gpu_hours)
    assert tr["usd"] == pytest.approx(ref_train.usd)
    assert "GPU-hours" in plan_table(capsys, "train", *tw)

    g = plan_json(capsys, "gpus", "--model", model_id, "--quant", quant_id)
    assert gpu_id in {row["gpu_id"] for row in g["comparison"]["rows"]}


@pytest.mark.parametrize("gpu_id", gpu_ids())
def test_every_subcommand_on_every_gpu(gpu_id: str, capsys: pytest.CaptureFixture[str]) -> None:
    check_all(capsys, "llama-3-8b", gpu_id, "fp8" if "fp8" in get_gpu(gpu_id).peak_flops else "int8")


@pytest.mark.parametrize("model_id", model_ids())
def test_every_subcommand_for_every_model(model_id: str, capsys: pytest.CaptureFixture[str]) -> None:
    check_all(capsys, model_id, "h100-sxm", "int4-awq")


def test_throughput_json_carries_the_required_keys(capsys: pytest.CaptureFixture[str]) -> None:
    out = plan_json(
        capsys, "throughput", "--model", "llama-2-7b", "--quant", "q4_0", "--gpu", "rtx4090", "--batch", "1"
    )
    assert out["bound"] == "memory"  # batch-1 decode streams the weights
    assert out["decode_tokens_per_s"] > 0 and out["prefill_tokens_per_s"] > out["decode_tokens_per_s"]
    assert out["time_per_output_token_ms"] == pytest.approx(1e3 / out["decode_tokens_per_s"])


def test_memory_of_70b_int4_on_two_4090s(capsys: pytest.CaptureFixture[str]) -> None:
    w = ["--model", "llama-3-70b", "--quant", "int4-awq", "--gpu", "rtx4090"]
    one = plan_json(capsys, "memory", *w)
    two = plan_json(capsys, "memory", *w, "--count", "2")
    assert not one["fits"] and two["fits"] and one["gpus_needed"] == 2
    assert sum(two["breakdown"].values()) == pytest.approx(two["total_gib"])
    assert two["per_gpu_breakdown"]["weights_gib"] == pytest.approx(two["breakdown"]["weights_gib"] / 2)


@pytest.mark.parametrize("mode", ["train", "lora", "qlora"])
def test_memory_training_modes(mode: str, capsys: pytest.CaptureFixture[str]) -> None:
    model = get_model("llama-2-7b")
    extra = ["--zero", "1"] if mode == "train" else ["--lora-rank", "8"]
    out = plan_json(
        capsys,
        "memory",
        "--model",
        "llama-2-7b",
        "--mode",
        mode,
        "--count",
        "4",
        "--batch",
        "2",
        "--context",
        "2048",
        "--no-checkpointing",
        *extra,
    )
    if mode == "train":
        ref = memory.training_memory(model, 2, 2048, zero_stage=1, dp_gpus=4)
    else:
        fn = memory.lora_memory if mode == "lora" else memory.qlora_memory
        ref = fn(model, 2, 2048, rank=8, activation_checkpointing=False)
    assert out["mode"] == mode
    assert out["total_gib"] == pytest.approx(ref.total_gib)
    assert "optimizer_states_gib" in out["breakdown"]


def test_model_from_a_local_config_json(capsys: pytest.CaptureFixture[str]) -> None:
    path = HF_CONFIGS / "qwen2.5-7b.json"
    out = plan_json(capsys, "memory", "--model", str(path), "--quant", "bf16")
    ref = memory.inference_memory(load_hf_config(path), "bf16", 1, 4096)
    assert out["total_gib"] == pytest.approx(ref.total_gib)


def test_engine_profile_and_link_change_the_answer(capsys: pytest.CaptureFixture[str]) -> None:
    w = ["--model", "llama-3-70b", "--quant", "int4-awq", "--gpu", "rtx4090", "--count", "2", "--batch", "8"]
    cpp = plan_json(capsys, "throughput", *w, "--engine-profile", "llama.cpp", "--parallel", "pp")
    assert cpp["engine"] == "llama.cpp" and cpp["parallel"] == "pp"
    ref = estimate_throughput(
        get_model("llama-3-70b"),
        get_quant("int4-awq"),
        get_gpu("rtx4090"),
        8,
        4096,
        engine="llama.cpp",
        count=2,
        parallel="pp",
    )
    assert cpp["decode_tokens_per_s"] == pytest.approx(ref.decode_tokens_per_s)
    slow = plan_json(capsys, "throughput", *w, "--link", "ethernet:10")
    fast = plan_json(capsys, "throughput", *w, "--link", "pcie5")
    assert slow["comm_ms_per_decode_step"] > fast["comm_ms_per_decode_step"]
    assert "Ethernet 10 Gbit/s" in slow["link"]


def test_gpus_lists_the_catalog(capsys: pytest.CaptureFixture[str]) -> None:
    out = plan_json(capsys, "gpus")
    assert [g["id"] for g in out["gpus"]] == list(gpu_ids())
    for entry in out["gpus"]:
        spec = get_gpu(entry["id"])
        assert entry["name"] == spec.name
        assert entry["memory_gib"] == spec.memory_gib
        assert entry["memory_bandwidth_bytes_s"] == spec.memory_bandwidth_bytes_s
        assert entry["peak_flops"]["fp16"] == spec.peak_flops["fp16"]
        assert entry["tdp_w"] == spec.tdp_w and entry["list_price_usd"] == spec.list_price_usd
        assert entry["sources"]
    table = plan_table(capsys, "gpus")
    assert "mi300x" in table and "$1,599" in table


def test_cost_of_a_datacenter_gpu_needs_a_price(capsys: pytest.CaptureFixture[str]) -> None:
    line = plan_error(capsys, "cost", "--gpu", "h100-sxm")
    assert "no price for NVIDIA H100 SXM5 80GB" in line and "--gpu-price " in line
    out = plan_json(capsys, "cost", "--gpu", "h100-sxm", "--gpu-price-usd", "30000")
    assert out["gpu_capex_usd"] == 30000 and out["usd_per_mtok"] > 0


def test_owning_a_4090_beats_renting_at_70_percent(capsys: pytest.CaptureFixture[str]) -> None:
    out = plan_json(capsys, "cost", "--gpu", "rtx4090", "--batch", "8", "--cloud-usd-per-gpu-h", "0.7")
    assert out["owning_wins"] and out["usd_per_mtok"] < out["cloud_usd_per_mtok"]
    assert 0 < out["breakeven_utilisation_ratio"] < 0.7


@pytest.mark.parametrize(
    ("kind", "argv", "expected"),
    [
        ("gpu", ["throughput", "--gpu", "rtx409"], "unknown gpu 'rtx409'; did you mean rtx4090"),
        (
            "model",
            ["memory", "--model", "llama-3-7b"],
            "unknown model 'llama-3-7b'; did you mean llama-3-70b",
        ),
        ("quant", ["memory", "--quant", "q4_kz"], "unknown quant"),
        ("engine", ["throughput", "--engine-profile", "vlm"], "did you mean vllm"),
    ],
)
def test_unknown_ids_list_close_matches(
    kind: str, argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert expected.lower() in plan_error(capsys, *argv).lower()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["throughput", "--batch", "-1"],
            "--batch = '-1' is not allowed: expected a whole number from 1 to 65536",
        ),
        (["memory", "--context", "0"], "--context = '0' is not allowed: expected a whole number from 1 to"),
        (["memory", "--count", "0"], "--count = '0' is not allowed: expected a whole number from 1 to"),
        (["throughput", "--batch", "many"], "--batch = 'many' is not allowed: expected a whole number"),
        (["throughput", "--batch", "2.5"], "--batch = '2.5' is not allowed: expected a whole number"),
        (
            ["cost", "--utilisation", "1.5"],
            "--utilisation = '1.5' is not allowed: expected a number from 0.01 to 1",
        ),
        (["cost", "--pue", "0.8"], "--pue = '0.8' is not allowed: expected a number from 1 to 5"),
        (["cost", "--gpu-price-usd", "-5"], "'-5' is not allowed: expected a number > 0"),
        (["train", "--mfu", "0"], "--mfu = '0' is not allowed"),
        (["train", "--tokens", "-1"], "--tokens = '-1' is not allowed"),
        (
            ["memory", "--mode", "pretrain"],
            "--mode = 'pretrain' is not allowed: expected one of inference, train",
        ),
        (["train", "--mode", "inference"], "invalid choice: 'inference'"),
        # issue 12: numbers no float holds, NaN, inf and absurd prices are refused where declared
        (["memory", "--batch", "9" * 400], "--batch = '" + "9" * 38),
        (["cost", "--electricity-price", "1e400"], "--electricity-price"),
        (["cost", "--electricity-price", "nan"], "'nan' is not allowed"),
        (["cost", "--hosting-price", "inf"], "'inf' is not allowed"),
        (["cost", "--gpu-price", "1e300"], "'1e300' is not allowed"),
        (["memory", "--context", "1" + "0" * 30], "--context"),
        (["memory", "--zero", "2"], "--zero applies to --mode train"),
        (["memory", "--mode", "train", "--lora-rank", "8"], "--lora-rank applies to --mode lora or qlora"),
        (["throughput", "--link", "infiniband"], "unknown link 'infiniband'"),
        (["throughput", "--count", "2", "--link", "nvlink"], "rtx4090 has no NVLink"),
    ],
)
def test_bad_values_are_one_line_errors(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert expected in plan_error(capsys, *argv)


@pytest.mark.parametrize(
    "argv",
    [
        # the largest values each option allows: every figure printed is finite (or null: unknown); the
        # context at the longest model maximum in the catalog (a longer one is refused, issue 14)
        ["cost", "--gpu", "h100-sxm", "--gpu-price", "1e7", "--electricity-price", "10", "--hosting-price",
         "1e6", "--cloud-price", "1e4", "--pue", "5", "--server-overhead", "10", "--service-life", "50",
         "--count", "100000", "--batch", "65536", "--model", "deepseek-v3", "--context", "163840"],
        ["cost", "--utilisation", "0.01", "--service-life", "0.1", "--electricity-price", "0"],
        ["train", "--tokens", "1e16", "--mfu", "0.01", "--count", "100000", "--cloud-price", "1e4"],
        ["gpus", "--model", "llama-3.1-70b", "--batch", "65536", "--context", "131072", "--count", "100000"],
        ["parallel", "--model", "llama-3.1-405b", "--batch", "65536", "--context", "131072",
         "--count", "100000"],
    ],
)  # fmt: skip
def test_extreme_allowed_values_print_no_nan_or_inf(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    def numbers(value: Any) -> list[float]:
        if isinstance(value, dict):
            return [n for v in value.values() for n in numbers(v)]
        if isinstance(value, list):
            return [n for v in value for n in numbers(v)]
        return [value] if isinstance(value, float) else []

    out = plan_json(capsys, *argv)  # json.loads reads NaN and Infinity: look at every number
    assert all(math.isfinite(n) for n in numbers(out))


def test_console_script_prints_one_json_object() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpuwatch.cli",
            "plan",
            "throughput",
            "--model",
            "llama-2-7b",
            "--quant",
            "q4_0",
            "--gpu",
            "rtx4090",
            "--batch",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    for key in ("decode_tokens_per_s", "prefill_tokens_per_s", "time_per_output_token_ms", "bound"):
        assert key in out


def test_price_options_take_the_same_names_as_the_live_view(capsys: pytest.CaptureFixture[str]) -> None:
    """`--electricity-price` etc. mean the same in `gpuwatch plan` as in the TUI and the exporter."""
    long_names = ["--electricity-usd-per-kwh", "--cloud-usd-per-gpu-h", "--hosting-usd-per-h", "--life-years"]
    live_names = ["--electricity-price", "--cloud-price", "--hosting-price", "--service-life"]
    values = ["0.31", "1.1", "0.2", "4"]

    def argv(names: list[str]) -> list[str]:
        return [x for pair in zip(names, values, strict=True) for x in pair]

    long = plan_json(capsys, "cost", "--gpu", "rtx4090", *argv(long_names))
    short = plan_json(capsys, "cost", "--gpu", "rtx4090", *argv(live_names))
    assert long == short
    assert short["electricity_usd_per_kwh"] == 0.31 and short["service_life_years"] == 4


# --------------------------------------------------------------------------- issue 14: model facts, KV dtype
CONFIGS = Path(__file__).parent / "data" / "configs"


@pytest.mark.parametrize(
    ("config", "total", "active", "kv_bytes", "context"),
    [
        # Qwen3-30B-A3B card: 30.5B total, 3.3B activated; KV: 48 layers x 2 x 4 KV heads x 128 x 2 bytes
        ("qwen3-30b-a3b", 30.5e9, 3.3e9, 48 * 2 * 4 * 128 * 2, 4096),
        # DeepSeek-V3: 671B / 37B; MLA: 61 layers x (512 + 64) x 2 bytes
        ("deepseek-v3", 671e9, 37.55e9, 61 * 576 * 2, 4096),
        # Mistral-7B-v0.1 at 32K: every layer keeps only its 4096-token window
        ("mistral-7b-v0.1", 7.24e9, 7.24e9, 131072 * 4096 / 32768, 32768),
    ],
)
def test_memory_json_reports_params_and_kv_bytes_per_token(
    capsys: pytest.CaptureFixture[str],
    config: str,
    total: float,
    active: float,
    kv_bytes: float,
    context: int,
) -> None:
    out = plan_json(capsys, "memory", "--model", str(CONFIGS / f"{config}.json"), "--context", str(context))
    assert out["params_total"] == pytest.approx(total, rel=0.02)
    assert out["params_active"] == pytest.approx(active, rel=0.02)
    assert out["kv_bytes_per_token"] == pytest.approx(kv_bytes)
    assert out["kv_dtype"] == "fp16"
    assert out["workload"]["model"] == config  # named after the file, not its folder


def test_kv_dtype_moves_memory_decode_bytes_and_cost(capsys: pytest.CaptureFixture[str]) -> None:
    w = ["--model", "llama-3.1-8b", "--gpu", "h100", "--batch", "32", "--context", "32768"]
    m16, m8 = (plan_json(capsys, "memory", *w, "--kv-dtype", d) for d in ("fp16", "fp8"))
    assert m8["kv_bytes_per_token"] == m16["kv_bytes_per_token"] / 2 == 131072 / 2
    assert m8["breakdown"]["kv_cache_gib"] == pytest.approx(m16["breakdown"]["kv_cache_gib"] / 2)
    assert m16["workload"]["gpu"] == "h100-sxm"  # the --sim id works here too
    t16, t8 = (plan_json(capsys, "throughput", *w, "--kv-dtype", d) for d in ("fp16", "fp8"))
    assert t8["bytes_per_decode_step"] < t16["bytes_per_decode_step"]
    assert t8["decode_tokens_per_s"] > t16["decode_tokens_per_s"]
    # at batch 32 the fp16 KV cache (128 GiB) does not fit: no $/1M there; at batch 8 both fit
    assert plan_json(capsys, "cost", *w, *PRICE, "--kv-dtype", "fp16")["usd_per_mtok"] is None
    w8 = [*w[:4], "--batch", "8", *w[6:]]
    c16, c8 = (plan_json(capsys, "cost", *w8, *PRICE, "--kv-dtype", d) for d in ("fp16", "q4_0"))
    assert c8["usd_per_mtok"] < c16["usd_per_mtok"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["memory", "--model", "llama-3-8b", "--context", "200000"],
         "context 200,000 tokens is beyond Llama-3-8B's maximum of 8,192"),
        (["throughput", "--model", "qwen3-8b", "--context", "65536"], "beyond Qwen3-8B's maximum of 40,960"),
        (["gpus", "--model", "llama-2-7b", "--context", "8192"], "beyond Llama-2-7B's maximum of 4,096"),
        (["memory", "--model", "/nonexistent/config.json"],
         "/nonexistent/config.json: no such file or directory"),
        (["memory", "--quant", "int4"],
         "ambiguous quantisation format 'int4'; choose one of int4-awq, int4-gptq"),
        (["memory", "--kv-dtype", "fp5"], "unknown KV-cache dtype 'fp5'"),
        (["memory", "--mode", "train", "--kv-dtype", "fp8"], "--kv-dtype applies to --mode inference"),
    ],
)  # fmt: skip
def test_issue_14_refusals_are_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    assert expected in plan_error(capsys, *argv)


def test_new_formats_from_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--model", "gpt-oss-20b", "--gpu", "rtx5090", "--context", "8192"]
    mx = plan_json(capsys, "memory", *base, "--quant", "mxfp4")
    assert mx["breakdown"]["weights_gib"] == pytest.approx(
        12.8, rel=0.02
    )  # gpt-oss card: 12.8 GiB checkpoint
    exl2 = plan_json(capsys, "memory", "--model", "llama-3.1-8b", "--quant", "exl2-4.65")
    assert exl2["workload"]["quant"] == "exl2-4.65"
    gguf = plan_json(capsys, "memory", "--model", "llama-2-7b", "--quant", "Q3_K_M")
    # llama.cpp tools/quantize/README.md: Q3_K_M is 3.91 bits per weight for Llama-2-7B
    assert gguf["breakdown"]["weights_gib"] == pytest.approx(6.738e9 * 3.91 / 8 / 2**30, rel=0.001)
