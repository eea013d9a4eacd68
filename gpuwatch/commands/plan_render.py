"""`gpuwatch plan`'s output: each sub-command's answer as a table, or one JSON object with ``--json``.

The numbers are :mod:`gpuwatch.model.whatif`'s; this module only lays them out (gpuwatch/commands/plan.py
turns the options into a :class:`~gpuwatch.model.whatif.PlanInputs`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from gpuwatch.model import cost as cost_model
from gpuwatch.model import finetune, serving, whatif
from gpuwatch.model import memory as memory_model
from gpuwatch.model.catalog import GpuSpec
from gpuwatch.model.llm import ModelSpec, param_breakdown
from gpuwatch.model.quant import QuantFormat
from gpuwatch.model.whatif import PlanInputs

TRAINING_MODES = ("train", "lora", "qlora")


def _emit(as_json: bool, payload: dict[str, Any], render: Callable[[Console], None]) -> int:
    if as_json:
        print(json.dumps(payload, indent=2, allow_nan=False))
    else:
        render(Console(highlight=False))
    return 0


def _num(value: float | None, fmt: str = ",.1f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{fmt}}{unit}"


def _heading(console: Console, title: str) -> None:
    """A title above a table, on its own line (a table's own title wraps to the table's width)."""
    console.print(f"[bold]{title}[/bold]")


def _kv_table(console: Console, title: str, rows: Sequence[tuple[str, str]]) -> None:
    _heading(console, title)
    table = Table(show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


def _workload_json(
    inputs: PlanInputs, model: ModelSpec, quant: QuantFormat | None, gpu: GpuSpec | None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": model.id,
        "batch": inputs.batch,
        "context_tokens": inputs.context_tokens,
        "count": inputs.count,
    }
    if quant is not None:
        out["quant"] = quant.id
    if gpu is not None:
        out["gpu"] = gpu.id
    return out


def _model_json(inputs: PlanInputs, model: ModelSpec) -> dict[str, Any]:
    """The model's own figures: parameter counts from its shape and the KV cache at the chosen dtype
    (per token of context at the chosen context: sliding windows make it fall with the context)."""
    counts = param_breakdown(model)
    return {
        "params_total": counts.total,
        "params_active": counts.active,
        "params_active_excl_embedding": counts.active_excluding_embedding,
        "kv_dtype": inputs.kv_dtype,
        "kv_bytes_per_token": float(
            memory_model.kv_bytes_per_token_at(model, inputs.context_tokens, inputs.kv_dtype)
        ),
        "kv_bytes_per_token_full_attention": memory_model.kv_cache_bytes_per_token(model, inputs.kv_dtype),
        "max_context_tokens": model.max_context_tokens,
    }


def _model_line(inputs: PlanInputs, model: ModelSpec) -> str:
    facts = _model_json(inputs, model)
    active = " (dense: all active)"
    if model.is_moe:
        active = f", {facts['params_active'] / 1e9:,.2f} B active per token"
    return (
        f"{facts['params_total'] / 1e9:,.2f} B parameters{active}; KV cache "
        f"{facts['kv_bytes_per_token'] / 2**10:,.1f} KiB per token ({inputs.kv_dtype}); "
        f"context up to {model.max_context_tokens:,}"
    )


def _title(inputs: PlanInputs, model: ModelSpec, quant: QuantFormat | None, gpu: GpuSpec | None) -> str:
    parts = [model.name] + ([quant.id] if quant else [])
    where = f" on {inputs.count}× {gpu.name}" if gpu else ""
    return f"{' '.join(parts)}, batch {inputs.batch} × {inputs.context_tokens:,} tokens{where}"


def _notes(console: Console, notes: Sequence[str]) -> None:
    for note in notes:
        console.print(f"[dim]note: {note}[/dim]")


# ------------------------------------------------------------------------------------------- sub-commands
def _memory_json(mem: whatif.MemoryAnswer) -> dict[str, Any]:
    budget = mem.engine_budget
    engine = {} if budget is None else {
        # the engine's own layout (vLLM, llama.cpp, TensorRT-LLM): what is left for the KV cache, per GPU,
        # and how many sequences of this context run at once
        "kv_pool_bytes": budget.as_dict()["kv_pool_bytes"],
        "max_concurrent_sequences": budget.max_concurrent_sequences,
        "engine_budget": budget.as_dict(),
    }  # fmt: skip
    return {
        **engine,
        "mode": mem.mode,
        "total_gib": mem.total_gib,
        "breakdown": {f"{name}_gib": gib for name, gib in mem.total_components_gib.items()},
        "per_gpu_gib": mem.per_gpu_gib,
        "per_gpu_breakdown": {f"{name}_gib": gib for name, gib in mem.components_gib.items()},
        "capacity_gib": mem.capacity_gib,
        "usable_gib": mem.usable_gib,
        "fits": mem.fits,
        "gpus_needed": mem.gpus_needed,
        "notes": list(mem.notes),
    }


def memory(inputs: PlanInputs, as_json: bool) -> int:
    model, quant, gpu = whatif.resolve(inputs)
    mem = whatif.memory_answer(inputs, model, quant, gpu)
    payload = {
        "command": "memory",
        "workload": _workload_json(inputs, model, quant, gpu),
        **_model_json(inputs, model),
        **_memory_json(mem),
    }
    if inputs.mode in TRAINING_MODES:
        payload["workload"]["mode"] = inputs.mode
        del payload["workload"]["quant"]  # training modes use their own dtypes (see notes)

    def render(console: Console) -> None:
        heading = _title(inputs, model, quant if inputs.mode == "inference" else None, gpu)
        _heading(console, f"{inputs.mode} memory: {heading}")
        table = Table()
        table.add_column("component")
        table.add_column("total", justify="right")
        table.add_column("per GPU", justify="right")
        for name, gib in mem.total_components_gib.items():
            table.add_row(name, f"{gib:,.2f} GiB", f"{mem.components_gib[name]:,.2f} GiB")
        table.add_section()
        table.add_row("total", f"{mem.total_gib:,.2f} GiB", f"{mem.per_gpu_gib:,.2f} GiB", style="bold")
        console.print(table)
        verdict = "[green]fits[/green]" if mem.fits else "[red]does not fit[/red]"
        needed = f"{mem.gpus_needed}" if mem.gpus_needed else "none (the per-GPU part alone is too big)"
        console.print(
            f"{verdict}: {mem.per_gpu_gib:,.2f} of {mem.usable_gib:,.2f} GiB usable per GPU "
            f"({mem.capacity_gib:g} GiB less the allocator reserve); GPUs needed: {needed}"
        )
        console.print(_model_line(inputs, model))
        _notes(console, mem.notes)
        if mem.engine_budget is not None:
            _engine_budget(console, mem.engine_budget)

    return _emit(as_json, payload, render)


def _engine_budget(console: Console, b: Any) -> None:
    """The engine's own layout of one GPU (modelled from its documented allocation rule)."""
    gib = 2**30
    rows = [
        ("CUDA-visible memory", f"{b.visible_bytes / gib:,.2f} GiB"),
        ("engine budget", f"{b.budget_bytes / gib:,.2f} GiB"),
        ("weights", f"{b.weights_bytes / gib:,.2f} GiB"),
        ("activations / compute buffer", f"{b.activation_bytes / gib:,.2f} GiB"),
        ("CUDA context, cuBLAS, NCCL", f"{b.non_torch_bytes / gib:,.2f} GiB"),
        ("CUDA graphs (outside the budget)", f"{b.cuda_graph_bytes / gib:,.2f} GiB"),
        ("KV cache pool", f"{max(0.0, b.kv_pool_bytes) / gib:,.2f} GiB = {b.kv_pool_tokens:,} tokens"),
        (f"sequences of {b.context_tokens:,} tokens at once", f"{b.max_concurrent_sequences:,}"),
    ]
    _kv_table(console, f"as {b.engine} lays out each GPU (modelled)", rows)
    _notes(console, b.notes)


def _throughput_json(est: Any) -> dict[str, Any]:
    return {
        "decode_tokens_per_s": float(est.decode_tokens_per_s),
        "decode_tokens_per_s_per_stream": float(est.decode_tokens_per_s_per_stream),
        "prefill_tokens_per_s": float(est.prefill_tokens_per_s),
        "time_per_output_token_ms": float(est.time_per_output_token_s) * 1e3,
        "time_to_first_token_ms": float(est.time_to_first_token_s) * 1e3,
        "bound": str(est.bound),
        "prefill_bound": str(est.prefill_bound),
        "arithmetic_intensity_flop_per_byte": float(est.arithmetic_intensity_flop_per_byte),
        "flops_per_decode_step": float(est.flops_per_decode_step),
        "bytes_per_decode_step": float(est.bytes_per_decode_step),
        "comm_ms_per_decode_step": float(est.comm_s_per_decode_step) * 1e3,
        "effective_bandwidth_bytes_s": float(est.effective_bandwidth_bytes_s),
        "effective_peak_flops": float(est.effective_peak_flops),
        "engine": est.engine,
        "parallel": est.parallel,
    }


def throughput(inputs: PlanInputs, as_json: bool) -> int:
    model, quant, gpu = whatif.resolve(inputs)
    est = whatif.throughput_answer(inputs, model, quant, gpu)
    mem = whatif.memory_answer(inputs, model, quant, gpu)
    link = whatif.link_for(inputs, gpu)
    payload = {
        "command": "throughput",
        "workload": _workload_json(inputs, model, quant, gpu),
        **_model_json(inputs, model),
        **_throughput_json(est),
        "link": link.description,
        "fits": mem.fits,
        "per_gpu_gib": mem.per_gpu_gib,
    }

    def render(console: Console) -> None:
        rows = [
            ("decode, all streams", f"{float(est.decode_tokens_per_s):,.1f} tok/s"),
            ("decode, per stream", f"{float(est.decode_tokens_per_s_per_stream):,.1f} tok/s"),
            ("time per output token", f"{float(est.time_per_output_token_s) * 1e3:,.2f} ms"),
            ("decode bound", str(est.bound)),
            ("prefill", f"{float(est.prefill_tokens_per_s):,.0f} tok/s ({est.prefill_bound}-bound)"),
            ("time to first token", f"{float(est.time_to_first_token_s) * 1e3:,.1f} ms"),
            ("arithmetic intensity", f"{float(est.arithmetic_intensity_flop_per_byte):,.1f} FLOP/byte"),
            ("effective bandwidth", f"{float(est.effective_bandwidth_bytes_s) / 1e9:,.0f} GB/s per GPU"),
        ]
        if inputs.count > 1:
            rows.append(
                (
                    f"{est.parallel} communication",
                    f"{float(est.comm_s_per_decode_step) * 1e3:,.3f} ms/step over {link.description}",
                )
            )
        _kv_table(console, f"{_title(inputs, model, quant, gpu)} ({est.engine} profile)", rows)
        if not mem.fits:
            console.print(
                f"[red]does not fit[/red]: {mem.per_gpu_gib:,.1f} GiB per GPU of "
                f"{mem.usable_gib:,.1f} usable (see `gpuwatch plan memory`)"
            )

    return _emit(as_json, payload, render)


def cost(inputs: PlanInputs, as_json: bool) -> int:
    model, quant, gpu = whatif.resolve(inputs)
    whatif.require_gpu_price(inputs, gpu)
    mem = whatif.memory_answer(inputs, model, quant, gpu)
    powered = whatif.powered_answer(inputs, model, quant, gpu)
    est = powered.estimate
    power_w = powered.power.power_w * inputs.count
    # a model that cannot load has no speed and no price per token; owning the box still costs its hours
    tokens_per_s = float(est.decode_tokens_per_s) if mem.fits else 0.0
    cost = whatif.cost_answer(inputs, gpu, tokens_per_s, power_w)
    p = inputs.prices
    payload = {
        "command": "cost",
        "workload": _workload_json(inputs, model, quant, gpu),
        "fits": mem.fits,
        "decode_tokens_per_s": tokens_per_s if mem.fits else None,
        "gpu_price_usd": whatif.gpu_price(inputs, gpu),
        "gpu_capex_usd": cost.gpu_capex_usd,
        "server_capex_usd": p.server_capex_usd,
        "server_overhead_ratio": p.server_overhead_ratio,
        "service_life_years": p.service_life_years,
        "utilisation_ratio": p.utilisation_ratio,
        "power_w": cost.power_w,
        "power_provenance": cost.power_provenance,
        "power_limit_w": powered.power.limit_w,
        "clock_ratio": powered.power.clock_ratio,
        "power_capped": powered.power.capped,
        "tdp_w": gpu.tdp_w * inputs.count,
        "tokens_per_j": cost.tokens_per_j,
        "j_per_token": None if not cost.tokens_per_j else 1.0 / cost.tokens_per_j,
        "pue": p.pue,
        "electricity_usd_per_kwh": p.electricity_usd_per_kwh,
        "hosting_usd_per_h": cost.hosting_usd_per_h,
        "cloud_usd_per_gpu_h": p.cloud_usd_per_gpu_h,
        "usd_per_mtok": cost.usd_per_mtok,
        "cloud_usd_per_mtok": cost.cloud_usd_per_mtok,
        "own_usd_per_h": cost.own_usd_per_h,
        "capex_usd_per_h": cost.capex_usd_per_h,
        "power_usd_per_h": cost.power_usd_per_h,
        "rent_usd_per_h": cost.rent_usd_per_h,
        "breakeven_utilisation_ratio": cost.breakeven_utilisation_ratio,
        "breakeven_months": cost.breakeven_months,
        "owning_wins": cost.owning_wins,
    }

    def render(console: Console) -> None:
        be_u = cost.breakeven_utilisation_ratio
        if p.server_capex_usd is not None:
            capex = f"${p.server_capex_usd:,.0f} server"
        else:
            server = f" + {p.server_overhead_ratio:.0%} server" if p.server_overhead_ratio else ""
            capex = f"${cost.gpu_capex_usd or 0:,.0f} of GPUs{server}"
        rented = (
            "no cloud price given (--cloud-price)"
            if p.cloud_usd_per_gpu_h is None
            else f"${p.cloud_usd_per_gpu_h:g}/GPU-h → ${_num(cost.cloud_usd_per_mtok, ',.3f')} per 1M tokens"
        )
        if p.cloud_usd_per_gpu_h is None:
            pays_off = "no cloud price to compare with"
        elif be_u is None:
            pays_off = "never at these prices"
        else:
            pays_off = (
                f"above {be_u:.0%} utilisation; "
                f"after {_num(cost.breakeven_months)} months at {p.utilisation_ratio:.0%}"
            )
        throughput = (
            f"{tokens_per_s:,.1f} tok/s at {p.utilisation_ratio:.0%} busy"
            if mem.fits
            else f"does not fit: {mem.per_gpu_gib:,.1f} GiB per GPU of {mem.usable_gib:,.1f} usable "
            "(see `gpuwatch plan memory`): no tok/s, no $/1M tokens"
        )
        rows = [
            ("decode throughput", throughput),
            (
                "capex",
                f"{capex} over {p.service_life_years:g} years = ${_num(cost.capex_usd_per_h, ',.3f')}/h",
            ),
            (
                "power (modelled)",
                f"{power_w:,.0f} W × PUE {p.pue:g} at "
                f"${p.electricity_usd_per_kwh:g}/kWh = ${_num(cost.power_usd_per_h, ',.3f')}/h",
            ),
            (
                "energy",
                f"{_num(cost.tokens_per_j, ',.2f')} tokens/J"
                + (
                    f"; capped at {powered.power.limit_w:,.0f} W: clock {powered.power.clock_ratio:.0%}"
                    if powered.power.capped
                    else f"; under the {powered.power.limit_w:,.0f} W limit (TDP {gpu.tdp_w:,.0f} W)"
                ),
            ),
            ("hosting", f"${_num(cost.hosting_usd_per_h, ',.3f')}/h"),
            (
                "owned",
                f"${_num(cost.own_usd_per_h, ',.3f')}/h → ${_num(cost.usd_per_mtok, ',.3f')} per 1M tokens",
            ),
            ("rented", rented),
            ("owning pays off", pays_off),
        ]
        _kv_table(console, f"cost: {_title(inputs, model, quant, gpu)}", rows)

    return _emit(as_json, payload, render)


def _link_short(entry: dict[str, Any]) -> str:
    """Scale-up link in a table cell: NVLink GB/s (both directions) if fitted, else the PCIe generation."""
    pcie = f"PCIe {entry['pcie_gen']}"
    if entry["nvlink_bytes_s"]:
        name = entry["interconnect_name"].split(" (")[0] or "NVLink"  # "NVLink 4", "Infinity Fabric"
        return f"{name} {entry['nvlink_bytes_s'] / 1e9:.0f} GB/s"
    if entry["nvlink_bridge_bytes_s"]:
        return f"{pcie} + NVLink bridge"
    return pcie


def gpus(inputs: PlanInputs | None, as_json: bool) -> int:
    """The catalog; with a workload (``inputs``), that workload on every GPU."""
    payload: dict[str, Any] = {"command": "gpus", "gpus": whatif.catalog_listing()}
    rows: list[whatif.ComparisonRow] = []
    if inputs is not None:
        model, quant, _ = whatif.resolve(inputs)
        rows = whatif.compare(inputs)
        payload["comparison"] = {
            "workload": _workload_json(inputs, model, quant, None),
            "rows": [row.__dict__ for row in rows],
        }

    def render(console: Console) -> None:
        if inputs is None:
            _heading(
                console, "GPU catalog: dense peaks; figures with their sources in `gpuwatch plan gpus --json`"
            )
            table = Table()
            for col in ("id", "GiB", "GB/s", "fp16 TFLOPS", "fp8", "TDP W", "link", "price"):
                table.add_column(col, justify="left" if col in ("id", "link") else "right")
            for g in whatif.catalog_listing():
                fp8 = g["peak_flops"].get("fp8")
                table.add_row(
                    g["id"],
                    f"{g['memory_gib']:g}",
                    f"{g['memory_bandwidth_bytes_s'] / 1e9:,.0f}",
                    f"{g['peak_flops']['fp16'] / 1e12:,.0f}",
                    _num(fp8 and fp8 / 1e12, ",.0f"),
                    f"{g['tdp_w']:g}",
                    _link_short(g),
                    "n/a" if g["list_price_usd"] is None else f"${g['list_price_usd']:,.0f}",
                )
            console.print(table)
            return
        _heading(console, f"{_title(inputs, model, quant, None)} on each GPU")
        table = Table()
        for col in ("gpu", "fits", "GPUs needed", "decode tok/s", "$/1M tok", "tok/s per $1k"):
            table.add_column(col, justify="left" if col == "gpu" else "right")
        for row in rows:
            table.add_row(
                row.gpu_id,
                "yes" if row.fits else "no",
                str(row.gpus_needed or "—"),
                _num(row.decode_tokens_per_s) if row.fits else "—",
                _num(row.usd_per_mtok, ",.3f") if row.fits else "—",
                _num(row.tokens_per_s_per_kusd, ",.2f") if row.fits else "—",
            )
        console.print(table)
        if any(not row.fits for row in rows):
            console.print("[dim]—: does not fit, so no tok/s and no $/1M tokens[/dim]")
        console.print(
            "[dim]$/1M tokens only where the catalog has a list price (GeForce); "
            "`gpuwatch plan cost --gpu-price` for the others[/dim]"
        )

    return _emit(as_json, payload, render)


def parallel(inputs: PlanInputs, as_json: bool) -> int:
    model, quant, gpu = whatif.resolve(inputs)
    ans = whatif.parallel_answer(inputs, model, quant, gpu)
    payload = {
        "command": "parallel",
        "workload": _workload_json(inputs, model, quant, gpu),
        "link": ans.link.description,
        "link_bandwidth_bytes_s": ans.link.bandwidth_bytes_s,
        "link_latency_s": ans.link.latency_s,
        "matmul_dtype": ans.matmul_dtype,
        "max_tp_degree_decode": ans.max_tp_degree_decode,
        "max_tp_degree_prefill": ans.max_tp_degree_prefill,
        "gpus_to_hold": ans.gpus_to_hold,
        "pipeline_stages": ans.pipeline_stages,
        "microbatches": ans.microbatches,
        "pipeline_bubble_ratio": ans.pipeline_bubble_ratio,
        "degrees": [row.__dict__ for row in ans.degrees],
    }

    def render(console: Console) -> None:
        rows = [
            ("link", ans.link.description),
            ("GPUs to hold weights + KV", str(ans.gpus_to_hold) if ans.gpus_to_hold else "none"),
            (
                "largest TP degree, decode",
                f"{ans.max_tp_degree_decode} (all-reduce ≤ {ans.matmul_dtype} matmul; ignores memory time)",
            ),
            ("largest TP degree, prefill", str(ans.max_tp_degree_prefill)),
            (
                f"pipeline bubble, {ans.pipeline_stages} stages",
                f"{ans.pipeline_bubble_ratio:.0%} idle with {ans.microbatches} micro-batches",
            ),
        ]
        _kv_table(console, f"parallel: {_title(inputs, model, quant, gpu)}", rows)
        _heading(console, "decode over that link")
        table = Table()
        for col in ("GPUs", "fits", "TP tok/s", "PP tok/s", "TP comm ms/step"):
            table.add_column(col, justify="right")
        for row in ans.degrees:
            table.add_row(
                str(row.count),
                "yes" if row.fits else "no",
                f"{row.tp_decode_tokens_per_s:,.1f}",
                f"{row.pp_decode_tokens_per_s:,.1f}",
                f"{row.tp_comm_s_per_decode_step * 1e3:,.3f}",
            )
        console.print(table)

    return _emit(as_json, payload, render)


def train(inputs: PlanInputs, as_json: bool) -> int:
    model, quant, gpu = whatif.resolve(inputs)
    train = whatif.training_answer(inputs, model, gpu)
    mem = whatif.memory_answer(inputs, model, quant, gpu)
    payload = {
        "command": "train",
        "workload": {**_workload_json(inputs, model, None, gpu), "mode": inputs.mode},
        "params": model.active_params,
        "tokens": inputs.train_tokens,
        "mfu_ratio": inputs.mfu_ratio,
        "flops": train.flops,
        "flops_per_token": train.flops_per_token,
        "compute_basis": train.compute_basis,
        "gpu_hours": train.gpu_hours,
        "wall_clock_h": train.wall_clock_h,
        "cloud_usd_per_gpu_h": inputs.prices.cloud_usd_per_gpu_h,
        "usd": train.usd,
        "memory": _memory_json(mem),
    }
    contexts: dict[str, int] = {}
    if inputs.mode in ("lora", "qlora"):
        # the framework decides the longest sequence this card trains (batch 1), several-fold apart
        for framework in finetune.FRAMEWORKS:
            limit = finetune.longest_context(
                model, gpu.memory_bytes, method=inputs.mode, framework=framework, rank=inputs.lora_rank
            )
            contexts[framework] = limit.max_context_tokens
        payload["framework"] = inputs.framework
        payload["longest_context_tokens"] = contexts[inputs.framework]
        payload["longest_context_tokens_by_framework"] = contexts

    def render(console: Console) -> None:
        rows = [
            (
                "compute",
                f"{train.flops_per_token / model.active_params:.0f} × {model.active_params / 1e9:,.2f} B "
                f"params × {inputs.train_tokens:,.3g} tokens = {train.flops:.3g} FLOP",
            ),
            ("counted as", train.compute_basis),
            ("GPU-hours", f"{train.gpu_hours:,.0f} at {inputs.mfu_ratio:.0%} MFU of bf16 peak"),
            (
                "wall clock",
                f"{train.wall_clock_h:,.1f} h ({train.wall_clock_h / 24:,.1f} days) on {inputs.count} GPUs",
            ),
            (
                "rented",
                "no cloud price given (--cloud-price)"
                if inputs.prices.cloud_usd_per_gpu_h is None
                else f"${_num(train.usd, ',.0f')} at ${inputs.prices.cloud_usd_per_gpu_h:g}/GPU-h",
            ),
            (
                f"{inputs.mode} memory per GPU",
                f"{mem.per_gpu_gib:,.1f} of {mem.usable_gib:,.1f} GiB usable: "
                + ("fits" if mem.fits else f"does not fit (needs {mem.gpus_needed or 'more'} GPUs)"),
            ),
        ]
        if contexts:
            others = ", ".join(f"{k} {v:,}" for k, v in contexts.items() if k != inputs.framework)
            rows.append(
                (
                    "longest context (batch 1)",
                    f"{contexts[inputs.framework]:,} tokens with {inputs.framework} ({others})",
                )
            )
        _kv_table(console, f"train {model.name} on {inputs.count}× {gpu.name}", rows)

    return _emit(as_json, payload, render)


def serve(inputs: PlanInputs, request: dict[str, Any], as_json: bool, *, best_tp: bool) -> int:
    """`plan serve`: the fleet for a request rate, per replica of ``count`` GPUs (or the best TP degree)."""
    model, quant, gpu = whatif.resolve(inputs)
    price = whatif.gpu_price(inputs, gpu)
    p = inputs.prices
    per_gpu_usd_h = None
    if p.capex_usd(price) is not None:
        hourly = cost_model.cost_per_hour(p.share(1), gpu_capex_usd=price, power_w=0.0)
        per_gpu_usd_h = float(hourly.capex_usd_per_h) + float(hourly.hosting_usd_per_h)
    kwargs: dict[str, Any] = dict(
        rate_requests_per_s=request["rate"],
        prompt_tokens=request["prompt_tokens"],
        output_tokens=request["output_tokens"],
        p95_latency_s=request["p95_latency_s"],
        engine=inputs.engine,
        kv_dtype=inputs.kv_dtype,
        knobs=inputs.engine_knobs,
        sweep_batches=request["sweep_batch"],
        gpu_usd_per_h=per_gpu_usd_h or 0.0,
        electricity_usd_per_kwh=p.electricity_usd_per_kwh,
        pue=p.pue,
        power_limit_w=inputs.power_limit_w,
    )
    if best_tp:
        plan = serving.plan_serving_best_tp(model, quant.id, gpu, **kwargs)
    else:
        plan = serving.plan_serving(model, quant.id, gpu, count=inputs.count, **kwargs)
    body = plan.as_dict()
    priced = per_gpu_usd_h is not None
    if not priced:  # without a GPU price only the power is priced: say so rather than print $0
        for row in body["sweep"]:
            row["usd_per_mtok"] = row["usd_per_1k_requests"] = None
        body["usd_per_mtok"] = body["usd_per_1k_requests"] = None
    best = plan.best
    fleet_usd_h = None
    if best is not None and plan.gpus is not None and priced:
        fleet_usd_h = plan.gpus * (
            (per_gpu_usd_h or 0.0) + best.power_w / 1000.0 * p.pue * p.electricity_usd_per_kwh
        )
        tokens_h = request["rate"] * request["output_tokens"] * 3600.0
        body["fleet_usd_per_h"] = fleet_usd_h
        body["fleet_usd_per_mtok"] = fleet_usd_h / tokens_h * 1e6
        body["fleet_usd_per_1k_requests"] = fleet_usd_h / (request["rate"] * 3600.0) * 1000.0
    payload = {"command": "serve", "workload": _workload_json(inputs, model, quant, gpu), **body}
    if not priced:
        payload["notes"].append(
            f"no price for {gpu.name}: give --gpu-price (or [gpu_prices] in the config) for $ figures"
        )

    def render(console: Console) -> None:
        title = (
            f"serve {model.name} {quant.id} on {gpu.name}: {request['rate']:,.3g} requests/s of "
            f"{request['prompt_tokens']:,} + {request['output_tokens']:,} tokens"
        )
        if best is None:
            rows = [("answer", "[red]no concurrency meets the target on this replica[/red]")]
        else:
            rows = [
                ("replica", f"{plan.gpus_per_replica} GPU(s), {inputs.engine}, tensor parallel"),
                (
                    "concurrency",
                    f"{best.concurrency} sequences (engine holds {plan.budget.max_concurrent_sequences})",
                ),
                ("time to first token", f"{best.ttft_s * 1e3:,.0f} ms"),
                (
                    "time per output token",
                    f"{best.tpot_s * 1e3:,.1f} ms (prefill share {best.prefill_share:.0%})",
                ),
                ("request latency", f"{best.latency_s:,.2f} s"),
                ("replica capacity", f"{best.requests_per_s:,.2f} requests/s (Little's law: B / latency)"),
                ("replicas", f"{plan.replicas} → {plan.gpus} GPUs"),
                ("power (modelled)", f"{best.power_w:,.0f} W per GPU"),
            ]
            if fleet_usd_h is not None:
                fleet = (
                    f"${fleet_usd_h:,.2f}/h → ${body['fleet_usd_per_mtok']:,.3f} per 1M output tokens, "
                    f"${body['fleet_usd_per_1k_requests']:,.3f} per 1000 requests"
                )
                rows.append(("fleet cost", fleet))
        _kv_table(console, title, rows)
        table = Table(title="as concurrency grows (one replica at capacity)", title_justify="left")
        for col in ("batch", "latency s", "TPOT ms", "tok/s", "req/s", "$/1M tok", "meets"):
            table.add_column(col, justify="right")
        for r in plan.sweep:
            table.add_row(
                str(r.concurrency),
                f"{r.latency_s:,.2f}",
                f"{r.tpot_s * 1e3:,.1f}",
                f"{r.output_tokens_per_s:,.0f}",
                f"{r.requests_per_s:,.2f}",
                _num(r.usd_per_mtok if priced else None, ",.3f"),
                "yes" if r.meets_latency else "no",
            )
        console.print(table)
        _notes(console, payload["notes"])

    return _emit(as_json, payload, render)
