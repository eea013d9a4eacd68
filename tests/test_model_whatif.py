"""The what-if composition shared by the TUI planning panes and `gpuwatch plan`."""

from __future__ import annotations

import json
import shlex

import pytest

from gpuwatch.cli import main
from gpuwatch.model import cost, memory, parallel
from gpuwatch.model.catalog import get_gpu, gpu_ids
from gpuwatch.model.cost import OwnershipCost
from gpuwatch.model.errors import ModelInputError, UnknownIdError
from gpuwatch.model.llm import get_model
from gpuwatch.model.throughput import estimate_throughput
from gpuwatch.model.whatif import (
    PlanInputs,
    answer,
    catalog_listing,
    compare,
    cost_answer,
    memory_answer,
    parallel_answer,
    require_gpu_price,
    resolve,
    throughput_answer,
)
from gpuwatch.options.plan_command import plan_command

GIB = 2**30


def test_memory_answer_splits_the_replica_over_count_gpus() -> None:
    inputs = PlanInputs(
        model="llama-3-70b", quant="int4-awq", gpu="rtx4090", count=2, batch=4, context_tokens=8192
    )
    mem = memory_answer(inputs, *resolve(inputs))
    ref = memory.inference_memory(get_model("llama-3-70b"), "int4-awq", 4, 8192)
    rtx4090 = get_gpu("rtx4090")
    assert mem.total_gib == pytest.approx(ref.total_gib)
    assert sum(mem.total_components_gib.values()) == pytest.approx(mem.total_gib)
    assert mem.per_gpu_gib == pytest.approx(ref.bytes_per_gpu(2) / GIB)
    assert mem.components_gib["weights"] == pytest.approx(ref.components["weights"] / 2 / GIB)
    assert mem.components_gib["cuda_context"] == pytest.approx(ref.components["cuda_context"] / GIB)
    assert mem.fits == ref.fits(rtx4090, 2)
    assert mem.gpus_needed == ref.gpus_needed(rtx4090)


def test_zero_makes_the_gpus_data_parallel_ranks() -> None:
    inputs = PlanInputs(
        model="llama-2-7b", mode="train", gpu="rtx4090", count=8, zero_stage=3, batch=1, context_tokens=2048
    )
    mem = memory_answer(inputs, *resolve(inputs))
    ref = memory.training_memory(
        get_model("llama-2-7b"), 1, 2048, zero_stage=3, dp_gpus=8, activation_checkpointing=True
    )
    assert mem.per_gpu_gib == pytest.approx(ref.bytes_per_gpu(1) / GIB)
    needed = mem.gpus_needed
    assert needed > 1
    usable = memory.MemoryBreakdown.usable_bytes(get_gpu("rtx4090"))
    at = {
        n: memory.training_memory(
            get_model("llama-2-7b"), 1, 2048, zero_stage=3, dp_gpus=n, activation_checkpointing=True
        ).bytes_per_gpu(1)
        for n in (needed - 1, needed)
    }
    assert at[needed] <= usable < at[needed - 1]


def test_lora_rank_and_optimizer_reach_the_memory_model() -> None:
    inputs = PlanInputs(model="llama-3-8b", mode="qlora", lora_rank=64, optimizer="adamw8bit")
    mem = memory_answer(inputs, *resolve(inputs))
    ref = memory.qlora_memory(get_model("llama-3-8b"), 1, 4096, rank=64, optimizer="adamw8bit")
    assert mem.mode == "qlora"
    assert mem.total_gib == pytest.approx(ref.total_gib)


def test_throughput_answer_uses_the_link_asked_for() -> None:
    base = PlanInputs(model="llama-3-70b", quant="int4-awq", gpu="rtx4090", count=2, batch=8)
    model, quant, gpu = resolve(base)
    over_pcie5 = throughput_answer(base.with_(link="pcie5"), model, quant, gpu)
    ref = estimate_throughput(model, quant, gpu, 8, 4096, count=2, link=parallel.pcie_link(5, 16))
    assert over_pcie5.decode_tokens_per_s == pytest.approx(ref.decode_tokens_per_s)
    default = throughput_answer(base, model, quant, gpu)  # the 4090's own PCIe 4.0
    assert over_pcie5.comm_s_per_decode_step < default.comm_s_per_decode_step


def test_nvlink_on_a_pcie_only_card_is_a_one_line_error() -> None:
    inputs = PlanInputs(gpu="rtx4090", count=2, link="nvlink")
    with pytest.raises(ModelInputError, match="rtx4090 has no NVLink"):
        throughput_answer(inputs, *resolve(inputs))


def test_cost_answer_splits_the_hour_and_matches_the_cost_model() -> None:
    prices = OwnershipCost(server_overhead_ratio=0.5, hosting_usd_per_h=0.1, pue=1.3)
    inputs = PlanInputs(gpu="rtx4090", count=2, prices=prices)
    c = cost_answer(inputs, get_gpu("rtx4090"), 500.0)
    assert c.gpu_capex_usd == 2 * 1599
    split = (c.capex_usd_per_h, c.power_usd_per_h, c.hosting_usd_per_h)
    assert None not in split and c.hosting_usd_per_h == pytest.approx(0.1)
    assert c.own_usd_per_h == pytest.approx(sum(h for h in split if h is not None))
    assert c.usd_per_mtok == pytest.approx(
        cost.usd_per_mtok(prices, tokens_per_s=500.0, gpu_capex_usd=3198, power_w=900)
    )


def test_datacenter_gpu_needs_a_price() -> None:
    inputs = PlanInputs(gpu="h100-sxm")
    with pytest.raises(ModelInputError, match=r"no price for NVIDIA H100 SXM5 80GB: .* --gpu-price "):
        require_gpu_price(inputs, get_gpu("h100-sxm"))
    assert require_gpu_price(inputs.with_(gpu_price_usd=25000.0), get_gpu("h100-sxm")) == 25000.0
    assert require_gpu_price(inputs, get_gpu("rtx4090")) == 1599
    assert cost_answer(inputs, get_gpu("h100-sxm"), 100.0).usd_per_mtok is None  # the TUI shows n/a


def test_parallel_answer_matches_the_parallel_model() -> None:
    inputs = PlanInputs(
        model="llama-3-70b", quant="int4-awq", gpu="rtx4090", count=4, batch=8, microbatches=16
    )
    model, quant, gpu = resolve(inputs)
    ans = parallel_answer(inputs, model, quant, gpu)
    link = parallel.default_link(gpu)
    assert ans.link == link
    assert ans.gpus_to_hold == parallel.gpus_to_hold(model, quant, gpu, batch=8, context_tokens=4096)
    assert ans.max_tp_degree_prefill == parallel.max_tensor_parallel_degree(
        gpu, link, hidden_size=8192, tokens=8 * 4096, dtype=ans.matmul_dtype
    )
    assert ans.max_tp_degree_decode <= ans.max_tp_degree_prefill
    assert ans.pipeline_bubble_ratio == pytest.approx(3 / 19)
    assert [row.count for row in ans.degrees] == [1, 2, 4, 8]
    two = next(row for row in ans.degrees if row.count == 2)
    ref = estimate_throughput(model, quant, gpu, 8, 4096, count=2, parallel="pp")
    assert two.pp_decode_tokens_per_s == pytest.approx(ref.decode_tokens_per_s)


def test_compare_covers_the_catalog_and_prices_only_list_priced_cards() -> None:
    rows = compare(PlanInputs(model="llama-3-8b", quant="fp16"))
    assert [r.gpu_id for r in rows] == list(gpu_ids())
    by_id = {r.gpu_id: r for r in rows}
    assert by_id["rtx4090"].usd_per_mtok is not None and by_id["h100-sxm"].usd_per_mtok is None
    assert by_id["l4"].fits and not by_id["l4"].gpus_needed > 1


def test_catalog_listing_carries_figures_and_sources() -> None:
    listing = catalog_listing()
    assert [g["id"] for g in listing] == list(gpu_ids())
    h100 = next(g for g in listing if g["id"] == "h100-sxm")
    spec = get_gpu("h100-sxm")
    assert h100["memory_bandwidth_bytes_s"] == spec.memory_bandwidth_bytes_s
    assert h100["peak_flops"]["fp8"] == spec.peak_flops["fp8"]
    assert h100["list_price_usd"] is None and "list_price_usd" in h100["sources"]
    json.dumps(listing, allow_nan=False)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("batch", 0, "batch must be at least 1"),
        ("count", -2, "GPU count must be at least 1"),
        ("zero_stage", 4, "ZeRO stage"),
        ("lora_rank", 0, "LoRA rank"),
        ("gpu_price_usd", -1.0, "GPU price"),
        ("mode", "finetune", "mode 'finetune'"),
        ("parallel", "dp", "parallelism 'dp'"),
    ],
)
def test_bad_inputs_name_what_was_wrong(field: str, value: object, message: str) -> None:
    with pytest.raises(ModelInputError, match=message):
        answer(PlanInputs().with_(**{field: value}))


def test_unknown_ids_list_close_matches() -> None:
    with pytest.raises(UnknownIdError, match="did you mean rtx4090"):
        answer(PlanInputs(gpu="rtx409"))


@pytest.mark.parametrize(
    ("inputs", "sub"),
    [
        (
            PlanInputs(
                model="mixtral-8x7b",
                quant="q4_K_M",
                gpu="rtx3090",
                count=2,
                batch=4,
                context_tokens=2048,
                parallel="pp",
                engine="llama.cpp",
                prices=OwnershipCost(
                    electricity_usd_per_kwh=0.32, utilisation_ratio=0.45, hosting_usd_per_h=0.05
                ),
            ),
            "cost",
        ),
        (PlanInputs(model="llama-3-70b", quant="fp8", gpu="h100-sxm", count=4, link="pcie5"), "throughput"),
        (
            PlanInputs(model="llama-3-70b", quant="fp8", gpu="h100-sxm", count=4, gpu_price_usd=27_500).with_(
                pue=1.3
            ),
            "cost",
        ),
        (
            PlanInputs(
                model="llama-2-7b",
                mode="train",
                count=8,
                zero_stage=2,
                activation_checkpointing=False,
                train_tokens=2.5e10,
                mfu_ratio=0.35,
            ).with_(cloud_usd_per_gpu_h=2.4),
            "train",
        ),
        (PlanInputs(model="qwen2.5-7b", mode="qlora", lora_rank=32, optimizer="paged_adamw8bit"), "train"),
    ],
)
def test_plan_command_reproduces_the_what_if(
    inputs: PlanInputs, sub: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command the TUI copies prints the same numbers as the panes: cost for a priced inference
    workload, throughput where the GPU has no price, train (hours, $ and memory) for the training modes."""
    argv = shlex.split(plan_command(inputs))
    assert argv[:3] == ["gpuwatch", "plan", sub]
    assert main([*argv[1:], "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = answer(inputs)
    if sub == "train":
        assert expected.training is not None
        assert out["memory"]["per_gpu_gib"] == pytest.approx(expected.memory.per_gpu_gib)
        assert out["gpu_hours"] == pytest.approx(expected.training.gpu_hours)
        assert out["usd"] == pytest.approx(expected.training.usd)
        return
    assert expected.throughput is not None
    assert out["decode_tokens_per_s"] == pytest.approx(float(expected.throughput.decode_tokens_per_s))
    if sub == "throughput":
        assert out["per_gpu_gib"] == pytest.approx(expected.memory.per_gpu_gib)
        return
    assert expected.cost is not None and expected.cost.usd_per_mtok is not None
    assert out["usd_per_mtok"] == pytest.approx(expected.cost.usd_per_mtok)
    assert out["cloud_usd_per_mtok"] == pytest.approx(expected.cost.cloud_usd_per_mtok)
    assert out["breakeven_months"] == pytest.approx(expected.cost.breakeven_months)


def test_plan_command_writes_only_the_prices_that_differ_from_the_defaults() -> None:
    assert "--electricity-price" not in plan_command(PlanInputs())
    command = plan_command(PlanInputs().with_(electricity_usd_per_kwh=0.3, utilisation_ratio=0.5))
    assert "--electricity-price 0.3 --utilisation 0.5" in command
    assert "--pue" not in command
    # no cloud comparison is written as such, and reads back as None
    assert "--cloud-price none" in plan_command(PlanInputs().with_(cloud_usd_per_gpu_h=None))
