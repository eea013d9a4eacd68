"""A what-if: the values a planner holds (form or command line), and every answer the model gives for them.

One composition shared by the TUI planning panes and ``gpuwatch plan``, so both faces print the same
numbers for the same inputs (gpuwatch/options/plan_command.py writes the shell command that reproduces
a what-if). Prices are one :class:`~gpuwatch.model.cost.OwnershipCost`, the same defaults the live view
uses. Pure numbers: stdlib + numpy (lazily) + ``gpuwatch.model.*`` only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gpuwatch.model import cost as cost_model
from gpuwatch.model import memory, parallel
from gpuwatch.model.catalog import GpuSpec, all_gpus, get_gpu
from gpuwatch.model.engine_memory import EngineBudget, engine_budget
from gpuwatch.model.engine_profiles import get_engine_profile
from gpuwatch.model.errors import ModelInputError, UnknownIdError
from gpuwatch.model.finetune import step_flops_per_token
from gpuwatch.model.llm import ModelSpec, check_context, resolve_model
from gpuwatch.model.plan_inputs import MODES, PARALLELISM, ZERO_STAGES, PlanInputs
from gpuwatch.model.quant import QuantFormat, get_quant
from gpuwatch.model.serving import PoweredThroughput, powered_throughput
from gpuwatch.model.throughput import ThroughputEstimate

#: optimizer each training mode uses unless told otherwise (QLoRA's paged AdamW is the QLoRA paper's setup)
DEFAULT_OPTIMIZER = {"train": "adamw", "lora": "adamw", "qlora": "paged_adamw"}
#: largest data-parallel group searched when asking how many GPUs a ZeRO-sharded run needs
MAX_DATA_PARALLEL_GPUS = 1024
#: GPU counts the parallel answer always tabulates (plus the asked count)
PARALLEL_DEGREES = (1, 2, 4, 8)


@dataclass(frozen=True)
class MemoryAnswer:
    components_gib: dict[str, float]  # per GPU
    per_gpu_gib: float
    capacity_gib: float
    usable_gib: float
    fits: bool
    gpus_needed: int  # 0: does not fit even on many
    # --- added ---
    total_gib: float = 0.0  # the whole replica (training: one data-parallel rank), before any split
    total_components_gib: dict[str, float] = field(default_factory=dict)  # summing to total_gib
    mode: str = "inference"
    notes: tuple[str, ...] = ()
    #: inference: the engine's own budget (its reserves, KV pool, concurrent sequences); None otherwise
    engine_budget: EngineBudget | None = None


@dataclass(frozen=True)
class CostAnswer:
    usd_per_mtok: float | None  # owned box; None without a GPU price
    cloud_usd_per_mtok: float | None
    own_usd_per_h: float | None
    breakeven_utilisation_ratio: float | None
    breakeven_months: float | None
    owning_wins: bool | None
    # --- added (None without a GPU price) ---
    gpu_capex_usd: float | None = None  # all ``count`` GPUs, before the server overhead
    capex_usd_per_h: float | None = None  # server capex amortised over the service life
    power_usd_per_h: float | None = None
    hosting_usd_per_h: float | None = None
    rent_usd_per_h: float | None = None  # cloud $/h for the busy hours, per wall-clock hour
    power_w: float | None = None  # all GPUs, modelled (gpuwatch/model/power.py), under power_limit_w
    power_provenance: str = "modelled"
    tokens_per_j: float | None = None


@dataclass(frozen=True)
class TrainingAnswer:
    flops: float
    gpu_hours: float
    wall_clock_h: float
    usd: float | None
    flops_per_token: float = 0.0  # per trained token, counting the checkpointing recompute
    #: what the FLOPs count: "6N", "8N (6N + 2N checkpoint recompute)", "4N (LoRA: no weight gradients)"...
    compute_basis: str = ""


@dataclass(frozen=True)
class PlanAnswer:
    inputs: PlanInputs
    model: ModelSpec
    quant: QuantFormat
    gpu: GpuSpec
    memory: MemoryAnswer
    throughput: ThroughputEstimate | None  # inference only, where it fits
    cost: CostAnswer | None  # inference only, where it fits
    training: TrainingAnswer | None  # train / lora / qlora
    notes: tuple[str, ...] = field(default_factory=tuple)


def gpu_price(inputs: PlanInputs, gpu: GpuSpec) -> float | None:
    return inputs.gpu_price_usd if inputs.gpu_price_usd is not None else gpu.list_price_usd


def require_gpu_price(inputs: PlanInputs, gpu: GpuSpec) -> float | None:
    """The price an owned-box cost needs; datacenter parts have no list price, so the user must give one
    (or the whole server's capex, which then is the price and the GPU's is not needed: None)."""
    price = gpu_price(inputs, gpu)
    if price is None and inputs.prices.server_capex_usd is None:
        raise ModelInputError(
            f"no price for {gpu.name}: it has no list price in the catalog (datacenter GPUs are sold "
            "through OEMs); pass --gpu-price with what you pay per GPU"
        )
    return price


def _optimizer(inputs: PlanInputs) -> str:
    return inputs.optimizer or DEFAULT_OPTIMIZER.get(inputs.mode, "adamw")


def _data_parallel(inputs: PlanInputs) -> bool:
    """Full training with ZeRO: the GPUs are data-parallel ranks (each breakdown is already one rank's).
    Otherwise ``count`` GPUs split one replica evenly (tensor/pipeline parallel)."""
    return inputs.mode == "train" and inputs.zero_stage > 0


def _memory(
    inputs: PlanInputs, model: ModelSpec, quant: QuantFormat, dp_gpus: Any = 1
) -> memory.MemoryBreakdown:
    if inputs.mode == "inference":
        return memory.inference_memory(
            model, quant, inputs.batch, inputs.context_tokens, kv_dtype=inputs.kv_dtype
        )
    if inputs.mode == "train":
        return memory.training_memory(
            model,
            inputs.batch,
            inputs.context_tokens,
            optimizer=_optimizer(inputs),
            zero_stage=inputs.zero_stage,
            dp_gpus=dp_gpus,
            activation_checkpointing=inputs.activation_checkpointing,
        )
    if inputs.mode in ("lora", "qlora"):
        adapter_memory = memory.lora_memory if inputs.mode == "lora" else memory.qlora_memory
        return adapter_memory(
            model,
            inputs.batch,
            inputs.context_tokens,
            rank=inputs.lora_rank,
            optimizer=_optimizer(inputs),
            activation_checkpointing=inputs.activation_checkpointing,
        )
    raise ModelInputError(f"mode {inputs.mode!r} is not one of {', '.join(MODES)}")


def _zero_gpus_needed(inputs: PlanInputs, model: ModelSpec, quant: QuantFormat, gpu: GpuSpec) -> int:
    """Fewest ZeRO data-parallel ranks whose per-rank share fits; 0 if none up to MAX_DATA_PARALLEL_GPUS.
    Every rank count is tried in one array pass (numpy, imported here: a plan, never the live path)."""
    import numpy as np

    counts = np.arange(1, MAX_DATA_PARALLEL_GPUS + 1)
    per_rank = np.asarray(_memory(inputs, model, quant, dp_gpus=counts).bytes_per_gpu(1))
    ok = np.broadcast_to(per_rank, counts.shape) <= memory.MemoryBreakdown.usable_bytes(gpu)
    return int(counts[np.argmax(ok)]) if ok.any() else 0


def memory_answer(inputs: PlanInputs, model: ModelSpec, quant: QuantFormat, gpu: GpuSpec) -> MemoryAnswer:
    data_parallel = _data_parallel(inputs)
    breakdown = _memory(inputs, model, quant, dp_gpus=inputs.count if data_parallel else 1)
    split = 1 if data_parallel else inputs.count
    components = {
        name: float(value) / (1 if name in breakdown.per_gpu else split) / 2**30
        for name, value in breakdown.components.items()
    }
    return MemoryAnswer(
        components_gib=components,
        per_gpu_gib=float(breakdown.bytes_per_gpu(split)) / 2**30,
        capacity_gib=gpu.memory_bytes / 2**30,
        usable_gib=memory.MemoryBreakdown.usable_bytes(gpu) / 2**30,
        fits=bool(breakdown.fits(gpu, split)),
        gpus_needed=(
            _zero_gpus_needed(inputs, model, quant, gpu) if data_parallel else int(breakdown.gpus_needed(gpu))
        ),
        total_gib=float(breakdown.total_gib),
        total_components_gib={name: float(value) / 2**30 for name, value in breakdown.components.items()},
        mode=breakdown.mode,
        notes=tuple(breakdown.notes),
        engine_budget=_engine_budget(inputs, model, quant, gpu) if inputs.mode == "inference" else None,
    )


def _engine_budget(
    inputs: PlanInputs, model: ModelSpec, quant: QuantFormat, gpu: GpuSpec
) -> EngineBudget | None:
    """How the engine profile's engine lays the card out for this workload (``count`` GPUs, tensor or
    pipeline parallel); None where the engine could not run it so (a TP degree that does not divide the
    heads: the parallel table still lists that count)."""
    try:
        return engine_budget(
            get_engine_profile(inputs.engine).name,
            model,
            quant,
            gpu,
            inputs.context_tokens,
            count=inputs.count,
            parallel=inputs.parallel,
            kv_dtype=inputs.kv_dtype,
            knobs=inputs.engine_knobs,
        )
    except ModelInputError:
        return None


def link_for(inputs: PlanInputs, gpu: GpuSpec) -> parallel.Link:
    """The GPU-to-GPU link asked for, else the GPU's own (NVLink where it has it, else its PCIe)."""
    return parallel.parse_link(inputs.link, gpu) if inputs.link else parallel.default_link(gpu)


def powered_answer(
    inputs: PlanInputs, model: ModelSpec, quant: QuantFormat, gpu: GpuSpec
) -> PoweredThroughput:
    """Decode speed and board power under ``power_limit_w`` (the card's default limit when None)."""
    return powered_throughput(
        model,
        quant.id,
        gpu,
        inputs.batch,
        inputs.context_tokens,
        engine=inputs.engine,
        count=inputs.count,
        parallel=inputs.parallel,
        link=link_for(inputs, gpu),
        kv_dtype=inputs.kv_dtype,
        power_limit_w=inputs.power_limit_w,
    )


def throughput_answer(
    inputs: PlanInputs, model: ModelSpec, quant: QuantFormat, gpu: GpuSpec
) -> ThroughputEstimate:
    """The roofline estimate at the clock ``power_limit_w`` allows (the default limit when None)."""
    return powered_answer(inputs, model, quant, gpu).estimate


def cost_answer(
    inputs: PlanInputs, gpu: GpuSpec, tokens_per_s: float, power_w: float | None = None
) -> CostAnswer:
    """Own vs rent for ``count`` GPUs drawing ``power_w`` (all GPUs; modelled from the workload by
    :func:`powered_answer`) while busy. Without it, the GPUs' TDP: the worst case, said so by
    ``power_provenance``."""
    prices = inputs.prices
    price = gpu_price(inputs, gpu)
    gpu_capex = None if price is None else price * inputs.count
    cloud_h = None if prices.cloud_usd_per_gpu_h is None else prices.cloud_usd_per_gpu_h * inputs.count
    cloud = (
        float(
            # rented on demand: only the busy hours are paid, as in buy_vs_rent and the live view
            cost_model.cloud_usd_per_mtok(tokens_per_s=tokens_per_s, cloud_usd_per_h=cloud_h)
        )
        if cloud_h and tokens_per_s > 0
        else None
    )
    provenance = "modelled" if power_w is not None else "configured (TDP)"
    if power_w is None:
        power_w = gpu.tdp_w * inputs.count
    tokens_per_j = tokens_per_s / power_w if tokens_per_s > 0 else None
    if prices.capex_usd(gpu_capex) is None:
        return CostAnswer(
            None, cloud, None, None, None, None, power_w=power_w, power_provenance=provenance,
            tokens_per_j=tokens_per_j,
        )  # fmt: skip
    usd_mtok = (
        float(
            cost_model.usd_per_mtok(
                prices, tokens_per_s=tokens_per_s, gpu_capex_usd=gpu_capex, power_w=power_w
            )
        )
        if tokens_per_s > 0
        else None
    )
    hourly = cost_model.cost_per_hour(prices, gpu_capex_usd=gpu_capex, power_w=power_w)
    rent = (
        cost_model.buy_vs_rent(prices, cloud_usd_per_h=cloud_h, gpu_capex_usd=gpu_capex, power_w=power_w)
        if cloud_h is not None
        else None
    )
    return CostAnswer(
        usd_per_mtok=usd_mtok,
        cloud_usd_per_mtok=cloud,
        own_usd_per_h=float(hourly.total_usd_per_h),
        breakeven_utilisation_ratio=_finite(float(rent.breakeven_utilisation_ratio)) if rent else None,
        breakeven_months=_finite(float(rent.breakeven_months)) if rent else None,
        owning_wins=bool(rent.owning_wins) if rent else None,
        gpu_capex_usd=gpu_capex,
        capex_usd_per_h=float(hourly.capex_usd_per_h),
        power_usd_per_h=float(hourly.power_usd_per_h),
        hosting_usd_per_h=float(hourly.hosting_usd_per_h),
        rent_usd_per_h=float(rent.rent_usd_per_h) if rent else None,
        power_w=power_w,
        power_provenance=provenance,
        tokens_per_j=tokens_per_j,
    )


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def training_answer(inputs: PlanInputs, model: ModelSpec, gpu: GpuSpec) -> TrainingAnswer:
    """Model FLOPs per token x tokens at an MFU of the bf16 peak: 6N for a full fine-tune, 4N for LoRA and
    QLoRA (the frozen base needs no weight gradients; gpuwatch/model/finetune.py). Activation checkpointing
    recomputes the forward (+2N): MFU counts model FLOPs only, so the recompute is inside the MFU's
    shortfall, and the answer says what it costs (the hardware runs MFU x hardware/model FLOPs)."""
    method = "full" if inputs.mode == "train" else inputs.mode
    model_flops = step_flops_per_token(model, method=method, checkpointing=False)
    hardware_flops = step_flops_per_token(model, method=method, checkpointing=inputs.activation_checkpointing)
    n = model.active_params
    basis = f"{model_flops / n:.0f}N" + ("" if method == "full" else " (LoRA: no weight gradients)")
    if hardware_flops > model_flops:
        basis += (
            f"; checkpointing recomputes the forward: {hardware_flops / n:.0f}N of hardware work, "
            f"{hardware_flops / model_flops - 1:.0%} more per step"
        )
    result = cost_model.training_cost(
        params=model_flops / 6.0,  # training_cost counts 6 x params x tokens
        tokens=inputs.train_tokens,
        gpu=gpu,
        mfu_ratio=inputs.mfu_ratio,
        count=inputs.count,
        usd_per_gpu_h=inputs.prices.cloud_usd_per_gpu_h or None,
    )
    return TrainingAnswer(
        flops=float(result.flops),
        gpu_hours=float(result.gpu_hours),
        wall_clock_h=float(result.wall_clock_h),
        usd=float(result.usd) if result.usd is not None else None,
        flops_per_token=model_flops,
        compute_basis=basis,
    )


def _check(inputs: PlanInputs) -> None:
    """One-line errors for values no model function would catch, or would name by its own parameter."""
    for name, value in (
        ("batch", inputs.batch),
        ("context", inputs.context_tokens),
        ("GPU count", inputs.count),
    ):
        if value < 1:
            raise ModelInputError(f"{name} must be at least 1, got {value}")
    if inputs.mode not in MODES:
        raise ModelInputError(f"mode {inputs.mode!r} is not one of {', '.join(MODES)}")
    if inputs.parallel not in PARALLELISM:
        raise ModelInputError(f"parallelism {inputs.parallel!r} is not one of {', '.join(PARALLELISM)}")
    if inputs.zero_stage not in ZERO_STAGES:
        raise ModelInputError(f"ZeRO stage must be 0, 1, 2 or 3, got {inputs.zero_stage}")
    if inputs.lora_rank < 1:
        raise ModelInputError(f"LoRA rank must be at least 1, got {inputs.lora_rank}")
    if inputs.microbatches is not None and inputs.microbatches < 1:
        raise ModelInputError(f"micro-batches must be at least 1, got {inputs.microbatches}")
    if inputs.gpu_price_usd is not None and not inputs.gpu_price_usd > 0:
        raise ModelInputError(f"GPU price must be > 0 USD, got {inputs.gpu_price_usd}")
    if not inputs.train_tokens > 0:
        raise ModelInputError(f"training tokens must be > 0, got {inputs.train_tokens:g}")


def resolve(inputs: PlanInputs) -> tuple[ModelSpec, QuantFormat, GpuSpec]:
    """The model (catalog id or local config.json), quantisation and GPU; one-line errors otherwise."""
    _check(inputs)
    model = resolve_model(inputs.model)
    check_context(model, inputs.context_tokens)
    return model, get_quant(inputs.quant), get_gpu(inputs.gpu)


def answer(inputs: PlanInputs) -> PlanAnswer:
    """Every figure the plan panes show. Raises ModelInputError / UnknownIdError on unusable input."""
    model, quant, gpu = resolve(inputs)
    mem = memory_answer(inputs, model, quant, gpu)
    throughput = None
    cost = None
    training = None
    if inputs.mode != "inference":
        training = training_answer(inputs, model, gpu)
    elif mem.fits:  # a model that cannot load has no speed and no $/token
        powered = powered_answer(inputs, model, quant, gpu)
        throughput = powered.estimate
        cost = cost_answer(
            inputs, gpu, float(throughput.decode_tokens_per_s), powered.power.power_w * inputs.count
        )
    return PlanAnswer(inputs, model, quant, gpu, mem, throughput, cost, training)


@dataclass(frozen=True)
class ComparisonRow:
    gpu_id: str
    gpu_name: str
    fits: bool
    gpus_needed: int
    decode_tokens_per_s: float | None
    usd_per_mtok: float | None  # owned, at price_usd; None where nothing prices the GPU
    tokens_per_s_per_kusd: float | None  # per $1k of GPU purchase price
    # --- added ---
    price_usd: float | None = None  # one GPU's purchase price used above
    price_source: str | None = None  # "entered" (the form's GPU), "config" ([gpu_prices]) or "list"
    cloud_usd_per_mtok: float | None = None  # every GPU rented at the inputs' cloud $/GPU-h


def compare(inputs: PlanInputs, gpu_prices: Mapping[str, float] | None = None) -> list[ComparisonRow]:
    """This workload (inference) on every catalog GPU at the form's count; bad rows say n/a, not crash.

    Each GPU is priced at, first, ``inputs.gpu_price_usd`` if it is ``inputs.gpu`` (what the user typed for
    the card they are looking at), then ``gpu_prices`` (a live config's [gpu_prices]), then the catalog
    list price; datacenter parts have no list price, so without the first two their owned $/1M is None.
    """
    model, quant, chosen = resolve(inputs)
    prices = dict(gpu_prices or {})
    rows = []
    for gpu in all_gpus():
        try:
            mem = memory_answer(inputs.with_(mode="inference"), model, quant, gpu)
            powered = powered_answer(inputs, model, quant, gpu)
            tps = float(powered.estimate.decode_tokens_per_s)
        except (ModelInputError, UnknownIdError, KeyError):
            continue  # e.g. a compute dtype this GPU lacks, or --link nvlink on a PCIe-only card
        price, source = _comparison_price(inputs, chosen, gpu, prices)
        if not mem.fits:  # a model that cannot load has no speed and no price per token
            rows.append(
                ComparisonRow(gpu.id, gpu.name, False, mem.gpus_needed, None, None, None, price, source)
            )
            continue
        # a configured server capex is the user's box, not what a box of other cards would cost
        priced = cost_answer(
            inputs.with_(gpu_price_usd=price, server_capex_usd=None),
            gpu,
            tps,
            powered.power.power_w * inputs.count,
        )
        rows.append(
            ComparisonRow(
                gpu_id=gpu.id,
                gpu_name=gpu.name,
                fits=mem.fits,
                gpus_needed=mem.gpus_needed,
                decode_tokens_per_s=tps,
                usd_per_mtok=priced.usd_per_mtok,
                tokens_per_s_per_kusd=tps / (price * inputs.count / 1000) if price else None,
                price_usd=price,
                price_source=source,
                cloud_usd_per_mtok=priced.cloud_usd_per_mtok,
            )
        )
    return rows


def _comparison_price(
    inputs: PlanInputs, chosen: GpuSpec, gpu: GpuSpec, prices: Mapping[str, float]
) -> tuple[float | None, str | None]:
    if gpu.id == chosen.id and inputs.gpu_price_usd is not None:
        return inputs.gpu_price_usd, "entered"
    if gpu.id in prices:
        return prices[gpu.id], "config"
    if gpu.list_price_usd is not None:
        return gpu.list_price_usd, "list"
    return None, None


# ------------------------------------------------------------------------------------------------ parallel
@dataclass(frozen=True)
class DegreeRow:
    """The workload on ``count`` GPUs over the chosen link, split tensor- or pipeline-parallel."""

    count: int
    fits: bool
    tp_decode_tokens_per_s: float
    pp_decode_tokens_per_s: float
    tp_comm_s_per_decode_step: float


@dataclass(frozen=True)
class ParallelAnswer:
    link: parallel.Link
    matmul_dtype: str  # the peak the engine's GEMMs run at, which the tensor-parallel limit compares with
    max_tp_degree_decode: int  # tokens per step = batch
    max_tp_degree_prefill: int  # tokens per step = batch x context
    gpus_to_hold: int  # weights + KV cache; 0: no count of this GPU holds it
    pipeline_stages: int  # = count
    microbatches: int
    pipeline_bubble_ratio: float
    degrees: tuple[DegreeRow, ...]


def parallel_answer(inputs: PlanInputs, model: ModelSpec, quant: QuantFormat, gpu: GpuSpec) -> ParallelAnswer:
    """How far this inference workload splits over the link: the tensor-parallel limit where all-reduce time
    overtakes matmul time, the GPUs needed to hold it, the pipeline bubble at ``count`` stages, and the
    decode rate at a few GPU counts under both splits."""
    link = link_for(inputs, gpu)
    dtype = get_engine_profile(inputs.engine).matmul_dtype(quant.compute_dtype, gpu)

    def max_tp(tokens: int) -> int:
        return int(
            parallel.max_tensor_parallel_degree(
                gpu, link, hidden_size=model.hidden_size, tokens=tokens, dtype=dtype
            )
        )

    microbatches = inputs.microbatches or inputs.batch
    degrees = []
    for n in sorted({*PARALLEL_DEGREES, inputs.count}):
        tp = throughput_answer(inputs.with_(count=n, parallel="tp"), model, quant, gpu)
        pp = throughput_answer(inputs.with_(count=n, parallel="pp"), model, quant, gpu)
        degrees.append(
            DegreeRow(
                count=n,
                fits=memory_answer(inputs.with_(mode="inference", count=n), model, quant, gpu).fits,
                tp_decode_tokens_per_s=float(tp.decode_tokens_per_s),
                pp_decode_tokens_per_s=float(pp.decode_tokens_per_s),
                tp_comm_s_per_decode_step=float(tp.comm_s_per_decode_step),
            )
        )
    return ParallelAnswer(
        link=link,
        matmul_dtype=dtype,
        max_tp_degree_decode=max_tp(inputs.batch),
        max_tp_degree_prefill=max_tp(inputs.batch * inputs.context_tokens),
        gpus_to_hold=int(
            parallel.gpus_to_hold(
                model,
                quant,
                gpu,
                batch=inputs.batch,
                context_tokens=inputs.context_tokens,
                kv_dtype=inputs.kv_dtype,
            )
        ),
        pipeline_stages=inputs.count,
        microbatches=microbatches,
        pipeline_bubble_ratio=float(parallel.pipeline_bubble_ratio(inputs.count, microbatches)),
        degrees=tuple(degrees),
    )


# ------------------------------------------------------------------------------------------------- catalog
def catalog_entry(gpu: GpuSpec) -> dict[str, Any]:
    """One GPU as JSON-ready SI figures with their citations (what ``gpuwatch plan gpus --json`` lists)."""
    return {
        "id": gpu.id,
        "name": gpu.name,
        "vendor": gpu.vendor,
        "architecture": gpu.architecture,
        "segment": gpu.segment,
        "memory_bytes": gpu.memory_bytes,
        "memory_gib": gpu.memory_gib,
        "memory_type": gpu.memory_type,
        "memory_bandwidth_bytes_s": gpu.memory_bandwidth_bytes_s,
        "peak_flops": dict(gpu.peak_flops),
        "tdp_w": gpu.tdp_w,
        "boost_clock_hz": gpu.boost_clock_hz,
        "pcie_gen": gpu.pcie_gen,
        "pcie_lanes": gpu.pcie_lanes,
        "nvlink_bytes_s": gpu.nvlink_bytes_s,
        "nvlink_bridge_bytes_s": gpu.nvlink_bridge_bytes_s,
        "interconnect_name": gpu.interconnect_name,
        "list_price_usd": gpu.list_price_usd,
        "nvml_names": list(gpu.nvml_names),
        "aliases": list(gpu.aliases),
        "planning_only": gpu.planning_only,
        "sources": dict(gpu.sources),
    }


def catalog_listing() -> list[dict[str, Any]]:
    return [catalog_entry(gpu) for gpu in all_gpus()]
