"""`gpuwatch plan`: what-if answers from the model — memory, speed, cost, GPUs, parallelism, training.

Every number comes from :mod:`gpuwatch.model.whatif`, the composition the TUI's planning panes use, so a
what-if copied out of the TUI prints the same figures here. ``--json`` prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from rich.console import Console
from rich.table import Table

from gpuwatch.errors import UserError
from gpuwatch.model import whatif
from gpuwatch.model.catalog import GpuSpec
from gpuwatch.model.engine_profiles import ENGINE_NAMES
from gpuwatch.model.llm import ModelSpec, model_ids
from gpuwatch.model.memory import OPTIMIZERS
from gpuwatch.model.quant import QuantFormat, quant_ids
from gpuwatch.model.whatif import PlanInputs

SUBCOMMANDS = ("memory", "throughput", "cost", "gpus", "parallel", "train")
TRAINING_MODES = ("train", "lora", "qlora")
#: argparse dest -> PlanInputs field, for options whose names differ from the field
_FIELDS = {
    "context": "context_tokens",
    "engine_profile": "engine",
    "checkpointing": "activation_checkpointing",
    "zero": "zero_stage",
    "life_years": "service_life_years",
    "utilisation": "utilisation_ratio",
    "server_overhead": "server_overhead_ratio",
    "tokens": "train_tokens",
    "mfu": "mfu_ratio",
}


class _OneLineParser(argparse.ArgumentParser):
    """Usage mistakes as one line, like every other gpuwatch error."""

    def error(self, message: str) -> NoReturn:
        print(f"gpuwatch: error: {self.prog}: {message}", file=sys.stderr)
        raise SystemExit(2)


# ------------------------------------------------------------------------------------------------- options
def _workload(p: argparse.ArgumentParser, *, gpu: bool = True, quant: bool = True) -> None:
    d = PlanInputs()
    g = p.add_argument_group("workload")
    g.add_argument(
        "--model",
        help=f"catalog id ({', '.join(model_ids())}) or a local config.json "
        + (f"(default {d.model})" if gpu else "(gives the workload to compare GPUs on)"),
    )
    if quant:
        g.add_argument("--quant", help=f"weight format: {', '.join(quant_ids())} (default {d.quant})")
    if gpu:
        g.add_argument("--gpu", help=f"catalog id or NVML name, see `gpuwatch plan gpus` (default {d.gpu})")
    g.add_argument("--count", type=int, help=f"number of GPUs (default {d.count})")
    g.add_argument("--batch", type=int, help=f"concurrent sequences (default {d.batch})")
    g.add_argument("--context", type=int, help=f"tokens per sequence (default {d.context_tokens})")


def _serving(p: argparse.ArgumentParser, *, link: bool = True) -> None:
    d = PlanInputs()
    g = p.add_argument_group("serving")
    g.add_argument("--engine-profile", help=f"{', '.join(ENGINE_NAMES)} (default {d.engine})")
    g.add_argument("--parallel", choices=whatif.PARALLELISM, help=f"multi-GPU split (default {d.parallel})")
    if link:
        g.add_argument(
            "--link",
            help="GPU link: pcie, pcie4, pcie5x8, nvlink, ethernet, ethernet:25 (Gbit/s); "
            "default NVLink where the GPU has it, else its PCIe",
        )


def _training(p: argparse.ArgumentParser, *, modes: Sequence[str]) -> None:
    d = PlanInputs()
    g = p.add_argument_group("memory mode")
    g.add_argument("--mode", choices=modes, help=f"default {modes[0]}")
    g.add_argument("--lora-rank", type=int, help=f"lora/qlora adapter rank (default {d.lora_rank})")
    g.add_argument(
        "--zero",
        type=int,
        choices=whatif.ZERO_STAGES,
        help="train: ZeRO stage; > 0 makes --count GPUs data-parallel ranks (default 0: they split "
        "one replica)",
    )
    g.add_argument("--optimizer", choices=OPTIMIZERS, help="default adamw (qlora: paged_adamw)")
    g.add_argument(
        "--checkpointing",
        action=argparse.BooleanOptionalAction,
        help="activation checkpointing when training (default on)",
    )


def _prices(p: argparse.ArgumentParser, *, own: bool = True, gpu_price: bool = True) -> None:
    d = PlanInputs()
    g = p.add_argument_group("prices")
    if own and gpu_price:
        g.add_argument(
            "--gpu-price-usd",
            type=float,
            help="price paid per GPU (default: catalog list price; datacenter GPUs have none)",
        )
    if own:
        g.add_argument(
            "--server-overhead",
            type=float,
            help="server, network, integration as a fraction of the GPUs' price "
            f"(default {d.server_overhead_ratio:g})",
        )
        g.add_argument(
            "--life-years",
            "--service-life",
            type=float,
            help=f"service life (default {d.service_life_years:g})",
        )
        g.add_argument(
            "--electricity-usd-per-kwh",
            "--electricity-price",
            type=float,
            help=f"default {d.electricity_usd_per_kwh:g}",
        )
        g.add_argument("--pue", type=float, help=f"facility power usage effectiveness (default {d.pue:g})")
        g.add_argument(
            "--hosting-usd-per-h", "--hosting-price", type=float, help=f"default {d.hosting_usd_per_h:g}"
        )
        g.add_argument("--utilisation", type=float, help=f"busy share 0..1 (default {d.utilisation_ratio:g})")
    g.add_argument(
        "--cloud-usd-per-gpu-h",
        "--cloud-price",
        type=float,
        help=f"rented GPU-hour (default {d.cloud_usd_per_gpu_h:g})",
    )


def register(sub: Any) -> None:
    p = sub.add_parser(
        "plan",
        help="what-if planning: memory, throughput, cost, GPUs, parallelism, training",
        description="Answers from the planning model; every sub-command prints a table, or one JSON object "
        "with --json.",
    )
    p.set_defaults(run=run)
    what = p.add_subparsers(dest="plan_command", metavar="WHAT", required=True, parser_class=_OneLineParser)

    def add(name: str, text: str) -> argparse.ArgumentParser:
        q: argparse.ArgumentParser = what.add_parser(name, help=text, description=text)
        q.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
        return q

    _workload(m := add("memory", "GPU memory of inference or training, and whether it fits"))
    _training(m, modes=whatif.MODES)
    _workload(t := add("throughput", "decode and prefill speed of a serving workload"))
    _serving(t)
    _workload(c := add("cost", "$ per 1M tokens owned vs rented, and when owning pays off"))
    _serving(c)
    _prices(c)
    g = add("gpus", "the GPU catalog; with --model, this workload on every GPU")
    _workload(g, gpu=False)
    _serving(g, link=False)
    _prices(g, gpu_price=False)  # the comparison prices each GPU at its own list price
    _workload(pa := add("parallel", "tensor-parallel limit, GPUs to hold the model, pipeline bubble"))
    _serving(pa)
    pa.add_argument("--microbatches", type=int, help="pipeline micro-batches (default: the batch)")
    _workload(
        tr := add("train", "GPU-hours, wall-clock and $ of a training run from 6·N·D, and its memory"),
        quant=False,
    )
    _training(tr, modes=TRAINING_MODES)
    tr.add_argument("--tokens", type=float, help=f"training tokens (default {PlanInputs().train_tokens:g})")
    tr.add_argument(
        "--mfu", type=float, help=f"model FLOPs utilisation 0..1 (default {PlanInputs().mfu_ratio:g})"
    )
    _prices(tr, own=False)


def _inputs(args: argparse.Namespace, **fixed: Any) -> PlanInputs:
    """PlanInputs from the options given; anything not given keeps the shared default."""
    changes: dict[str, Any] = {}
    fields = set(PlanInputs.__dataclass_fields__)
    for dest, value in vars(args).items():
        name = _FIELDS.get(dest, dest)
        if value is not None and name in fields:
            changes[name] = value
    changes.update(fixed)
    inputs = PlanInputs().with_(**changes)
    _check_meaningful(args, inputs)
    return inputs


def _check_meaningful(args: argparse.Namespace, inputs: PlanInputs) -> None:
    """Refuse options the chosen mode would silently ignore."""
    given = {k for k, v in vars(args).items() if v is not None}
    if "lora_rank" in given and inputs.mode not in ("lora", "qlora"):
        raise UserError("--lora-rank applies to --mode lora or qlora")
    if "zero" in given and inputs.mode != "train":
        raise UserError("--zero applies to --mode train")
    for opt in ("optimizer", "checkpointing"):
        if opt in given and inputs.mode == "inference":
            raise UserError(f"--{opt} applies to --mode train, lora or qlora")


# ------------------------------------------------------------------------------------------------- output
def _emit(args: argparse.Namespace, payload: dict[str, Any], render: Callable[[Console], None]) -> int:
    if args.json:
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


def _title(inputs: PlanInputs, model: ModelSpec, quant: QuantFormat | None, gpu: GpuSpec | None) -> str:
    parts = [model.name] + ([quant.id] if quant else [])
    where = f" on {inputs.count}× {gpu.name}" if gpu else ""
    return f"{' '.join(parts)}, batch {inputs.batch} × {inputs.context_tokens:,} tokens{where}"


def _notes(console: Console, notes: Sequence[str]) -> None:
    for note in notes:
        console.print(f"[dim]note: {note}[/dim]")


# ------------------------------------------------------------------------------------------- sub-commands
def _memory_json(mem: whatif.MemoryAnswer) -> dict[str, Any]:
    return {
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


def _run_memory(args: argparse.Namespace) -> int:
    inputs = _inputs(args)
    model, quant, gpu = whatif.resolve(inputs)
    mem = whatif.memory_answer(inputs, model, quant, gpu)
    payload = {
        "command": "memory",
        "workload": _workload_json(inputs, model, quant, gpu),
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
        _notes(console, mem.notes)

    return _emit(args, payload, render)


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


def _run_throughput(args: argparse.Namespace) -> int:
    inputs = _inputs(args)
    model, quant, gpu = whatif.resolve(inputs)
    est = whatif.throughput_answer(inputs, model, quant, gpu)
    mem = whatif.memory_answer(inputs, model, quant, gpu)
    link = whatif.link_for(inputs, gpu)
    payload = {
        "command": "throughput",
        "workload": _workload_json(inputs, model, quant, gpu),
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

    return _emit(args, payload, render)


def _run_cost(args: argparse.Namespace) -> int:
    inputs = _inputs(args)
    model, quant, gpu = whatif.resolve(inputs)
    whatif.require_gpu_price(inputs, gpu)
    est = whatif.throughput_answer(inputs, model, quant, gpu)
    tokens_per_s = float(est.decode_tokens_per_s)
    cost = whatif.cost_answer(inputs, gpu, tokens_per_s)
    payload = {
        "command": "cost",
        "workload": _workload_json(inputs, model, quant, gpu),
        "decode_tokens_per_s": tokens_per_s,
        "gpu_price_usd": whatif.gpu_price(inputs, gpu),
        "gpu_capex_usd": cost.gpu_capex_usd,
        "server_overhead_ratio": inputs.server_overhead_ratio,
        "service_life_years": inputs.service_life_years,
        "utilisation_ratio": inputs.utilisation_ratio,
        "power_w": gpu.tdp_w * inputs.count,
        "pue": inputs.pue,
        "electricity_usd_per_kwh": inputs.electricity_usd_per_kwh,
        "cloud_usd_per_gpu_h": inputs.cloud_usd_per_gpu_h,
        "usd_per_mtok": cost.usd_per_mtok,
        "cloud_usd_per_mtok": cost.cloud_usd_per_mtok,
        "own_usd_per_h": cost.own_usd_per_h,
        "capex_usd_per_h": cost.capex_usd_per_h,
        "power_usd_per_h": cost.power_usd_per_h,
        "hosting_usd_per_h": cost.hosting_usd_per_h,
        "rent_usd_per_h": cost.rent_usd_per_h,
        "breakeven_utilisation_ratio": cost.breakeven_utilisation_ratio,
        "breakeven_months": cost.breakeven_months,
        "owning_wins": cost.owning_wins,
    }

    def render(console: Console) -> None:
        be_u = cost.breakeven_utilisation_ratio
        server = f" + {inputs.server_overhead_ratio:.0%} server" if inputs.server_overhead_ratio else ""
        rows = [
            ("decode throughput", f"{tokens_per_s:,.1f} tok/s at {inputs.utilisation_ratio:.0%} busy"),
            (
                "capex",
                f"${cost.gpu_capex_usd:,.0f} of GPUs{server} over {inputs.service_life_years:g} years "
                f"= ${cost.capex_usd_per_h:,.3f}/h",
            ),
            (
                "power",
                f"{gpu.tdp_w * inputs.count:,.0f} W × PUE {inputs.pue:g} at "
                f"${inputs.electricity_usd_per_kwh:g}/kWh = ${cost.power_usd_per_h:,.3f}/h",
            ),
            ("hosting", f"${cost.hosting_usd_per_h:,.3f}/h"),
            ("owned", f"${cost.own_usd_per_h:,.3f}/h → ${_num(cost.usd_per_mtok, ',.3f')} per 1M tokens"),
            (
                "rented",
                f"${inputs.cloud_usd_per_gpu_h:g}/GPU-h → "
                f"${_num(cost.cloud_usd_per_mtok, ',.3f')} per 1M tokens",
            ),
            (
                "owning pays off",
                "never at these prices"
                if be_u is None
                else f"above {be_u:.0%} utilisation; "
                f"after {_num(cost.breakeven_months)} months at {inputs.utilisation_ratio:.0%}",
            ),
        ]
        _kv_table(console, f"cost: {_title(inputs, model, quant, gpu)}", rows)

    return _emit(args, payload, render)


def _link_short(entry: dict[str, Any]) -> str:
    """Scale-up link in a table cell: NVLink GB/s (both directions) if fitted, else the PCIe generation."""
    pcie = f"PCIe {entry['pcie_gen']}"
    if entry["nvlink_bytes_s"]:
        name = entry["interconnect_name"].split(" (")[0] or "NVLink"  # "NVLink 4", "Infinity Fabric"
        return f"{name} {entry['nvlink_bytes_s'] / 1e9:.0f} GB/s"
    if entry["nvlink_bridge_bytes_s"]:
        return f"{pcie} + NVLink bridge"
    return pcie


def _run_gpus(args: argparse.Namespace) -> int:
    payload: dict[str, Any] = {"command": "gpus", "gpus": whatif.catalog_listing()}
    rows: list[whatif.ComparisonRow] = []
    inputs = None
    if args.model is not None:
        inputs = _inputs(args)
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
                _num(row.decode_tokens_per_s),
                _num(row.usd_per_mtok, ",.3f"),
                _num(row.tokens_per_s_per_kusd, ",.2f"),
            )
        console.print(table)
        console.print(
            "[dim]$/1M tokens only where the catalog has a list price (GeForce); "
            "`gpuwatch plan cost --gpu-price-usd` for the others[/dim]"
        )

    return _emit(args, payload, render)


def _run_parallel(args: argparse.Namespace) -> int:
    inputs = _inputs(args)
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

    return _emit(args, payload, render)


def _run_train(args: argparse.Namespace) -> int:
    inputs = _inputs(args, **({} if args.mode else {"mode": "train"}))
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
        "gpu_hours": train.gpu_hours,
        "wall_clock_h": train.wall_clock_h,
        "cloud_usd_per_gpu_h": inputs.cloud_usd_per_gpu_h,
        "usd": train.usd,
        "memory": _memory_json(mem),
    }

    def render(console: Console) -> None:
        rows = [
            (
                "compute (6·N·D)",
                f"6 × {model.active_params / 1e9:,.2f} B params × {inputs.train_tokens:,.3g} tokens "
                f"= {train.flops:.3g} FLOP",
            ),
            ("GPU-hours", f"{train.gpu_hours:,.0f} at {inputs.mfu_ratio:.0%} MFU of bf16 peak"),
            (
                "wall clock",
                f"{train.wall_clock_h:,.1f} h ({train.wall_clock_h / 24:,.1f} days) on {inputs.count} GPUs",
            ),
            ("rented", f"${_num(train.usd, ',.0f')} at ${inputs.cloud_usd_per_gpu_h:g}/GPU-h"),
            (
                f"{inputs.mode} memory per GPU",
                f"{mem.per_gpu_gib:,.1f} of {mem.usable_gib:,.1f} GiB usable: "
                + ("fits" if mem.fits else f"does not fit (needs {mem.gpus_needed or 'more'} GPUs)"),
            ),
        ]
        _kv_table(console, f"train {model.name} on {inputs.count}× {gpu.name}", rows)

    return _emit(args, payload, render)


_RUN = {
    "memory": _run_memory,
    "throughput": _run_throughput,
    "cost": _run_cost,
    "gpus": _run_gpus,
    "parallel": _run_parallel,
    "train": _run_train,
}


def run(args: argparse.Namespace) -> int:
    return _RUN[args.plan_command](args)
