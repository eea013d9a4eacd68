"""Every shared user-facing setting, declared once (see gpuwatch/options/__init__.py for how).

Defaults are read from the dataclass the value lands in, so each lives in one place: prices in
:class:`gpuwatch.model.cost.OwnershipCost`, the planner's inputs in
:class:`gpuwatch.model.plan_inputs.PlanInputs`
(whose batch and context the live workload shares). Settings with no such dataclass (the data source,
alert thresholds) have their default here, and the live dataclasses read it from here.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from gpuwatch.model.cost import OwnershipCost
from gpuwatch.model.engine_knobs import EngineKnobs
from gpuwatch.model.engine_profiles import ENGINE_NAMES
from gpuwatch.model.errors import ModelInputError, UnknownIdError
from gpuwatch.model.plan_inputs import FRAMEWORKS, MODES, OPTIMIZERS, PARALLELISM, ZERO_STAGES, PlanInputs
from gpuwatch.options.core import Invalid, Option, declare

_PRICES = OwnershipCost()
_PLAN = PlanInputs()
_KNOBS = EngineKnobs()


# --- parse functions: convert and check what the kind alone cannot -------------------------------------


def model_id(value: Any) -> str:
    """A catalog model id (canonical spelling) or the path of a local Hugging Face config.json."""
    from gpuwatch.model.llm import get_model

    if not isinstance(value, str) or not value.strip():
        raise Invalid("a catalog model id (see `gpuwatch plan --help`) or a config.json path")
    text = value.strip()
    if text.endswith(".json") or "/" in text:
        return text  # read (and checked) when used: gpuwatch.model.llm.resolve_model
    try:
        return get_model(text).id
    except UnknownIdError as exc:
        raise Invalid(reason=str(exc)) from None


def quant_id(value: Any) -> str:
    from gpuwatch.model.quant import get_quant

    if not isinstance(value, str):
        raise Invalid("a quantisation id, e.g. fp16, int4-awq, q4_K_M")
    try:
        return get_quant(value.strip()).id
    except UnknownIdError as exc:
        raise Invalid(reason=str(exc)) from None


def kv_dtype_id(value: Any) -> str:
    from gpuwatch.model.quant import get_kv_dtype, kv_dtype_ids

    if not isinstance(value, str):
        raise Invalid(f"a KV-cache dtype: {', '.join(kv_dtype_ids())}")
    try:
        return get_kv_dtype(value.strip()).id
    except UnknownIdError as exc:
        raise Invalid(reason=str(exc)) from None


def gpu_id(value: Any) -> str:
    """A catalog GPU id or NVML name, as the catalog's id."""
    from gpuwatch.model.catalog import get_gpu

    if not isinstance(value, str):
        raise Invalid("a catalog GPU id (see `gpuwatch plan gpus`)")
    try:
        return get_gpu(value.strip()).id
    except UnknownIdError as exc:
        raise Invalid(reason=str(exc)) from None


def gpu_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple):
        raise Invalid("a list of catalog GPU ids (see `gpuwatch plan gpus`)")
    return tuple(gpu_id(v) for v in value)


def engine_profile(value: Any) -> str:
    from gpuwatch.model.engine_profiles import get_engine_profile

    if not isinstance(value, str):
        raise Invalid(f"an engine profile: {', '.join(ENGINE_NAMES)}")
    try:
        get_engine_profile(value.strip())
    except (UnknownIdError, ModelInputError) as exc:
        raise Invalid(reason=str(exc)) from None
    return value.strip()


_URL_FORM = "an engine URL like http://127.0.0.1:8000/metrics or 127.0.0.1:8000"


def engine_url(value: Any) -> str:
    """What the engine watcher can scrape: host:port, or an http(s) URL (a bare host gets /metrics)."""
    if not isinstance(value, str) or not value.strip() or len(value) > 2048:
        raise Invalid(_URL_FORM)
    text = value.strip()
    try:
        parts = urllib.parse.urlsplit(text if "://" in text else f"http://{text}")
        parts.port  # noqa: B018 -- raises on a port that is not a number or out of range
    except ValueError:  # also "Invalid IPv6 URL" for an unclosed [
        raise Invalid(_URL_FORM) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(_URL_FORM)
    if "://" not in text and parts.port is None:  # "notaurl": a typo, not an engine on port 80
        raise Invalid(_URL_FORM)
    from gpuwatch.options.engine_gpus import engine_gpus  # the #gpus=0,1 syntax lives there

    try:
        engine_gpus(text)
    except ValueError as exc:
        raise Invalid(reason=str(exc)) from None
    return text


def path_text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or "\0" in value or len(value) > 4096:
        raise Invalid("a file path")
    return value


# --- the data source (TUI, exporter, record) ---------------------------------------------------------

SOURCE = (
    "sim",
    "scenario",
    "time_scale",
    "seed",
    "faults",
    "replay",
    "replay_speed",
    "engine",
    "workload",
    "config",
    "interval",
    "gpus_file",
)
declare(
    Option(
        "sim",
        ("--sim",),
        "text",
        "simulated NVML instead of the real driver, e.g. rtx4090, 8xrtx4090, h100-sxm,2xrtx4090",
        metavar="DEVICES",
    )
)
declare(
    Option(
        "scenario",
        ("--scenario",),
        "text",
        "simulated workload scenario (see `gpuwatch doctor --help`)",
        metavar="NAME",
    )
)
declare(
    Option(
        "time_scale",
        ("--time-scale",),
        "float",
        "simulated seconds per real second",
        default=1.0,
        above=0,
        maximum=1000,
        metavar="X",
    )
)
declare(
    Option(
        "seed",
        ("--seed",),
        "int",
        "seed of the simulation",
        default=0,
        minimum=0,
        maximum=2**32 - 1,
        metavar="N",
    )
)
declare(
    Option(
        "faults",
        ("--faults",),
        "text",
        "with --sim: inject faults, e.g. lost:1@30,xid:0:79@60",
        metavar="SCHEDULE",
    )
)
declare(
    Option(
        "replay",
        ("--replay",),
        "text",
        "replay a file written by `gpuwatch record`",
        metavar="FILE",
        parse=path_text,
    )
)
declare(
    Option(
        "replay_speed",
        ("--replay-speed",),
        "float",
        "replay X times faster",
        default=1.0,
        above=0,
        maximum=1000,
        metavar="X",
    )
)
declare(
    Option(
        "engine",
        ("--engine",),
        "list",
        "serving engine /metrics URL (vLLM, TGI, llama.cpp, SGLang); repeatable; end it with #gpus=0,1 "
        "to say which GPUs the engine runs on (default: all)",
        toml="engine_urls",
        parse=engine_url,
        repeatable=True,
        metavar="URL",
    )
)
declare(
    Option(
        "workload",
        ("--workload",),
        "text",
        "declared workload MODEL:QUANT[:batch=N][:context=N][:engine=PROFILE][:kv=DTYPE], "
        "e.g. llama-3-8b:fp16:batch=8:context=4096",
        metavar="SPEC",
    )
)
declare(
    Option(
        "config",
        ("--config",),
        "text",
        "config TOML (default: the user config path)",
        metavar="FILE",
        parse=path_text,
    )
)
declare(
    Option(
        "interval",
        ("--interval",),
        "float",
        "poll interval",
        unit="s",
        default=1.0,
        toml="interval_s",
        minimum=0.05,
        maximum=3600,
        metavar="S",
    )
)
declare(
    Option(
        "gpus_file",
        ("--gpus-file",),
        "text",
        "TOML of [gpu.<id>] tables adding cards to the catalog or correcting one figure of a known one "
        "(same schema as gpuwatch/model/data/gpus.toml)",
        toml="gpus_file",
        parse=path_text,
        metavar="FILE",
    )
)
declare(
    Option(
        "duration",
        ("--duration",),
        "float",
        "stop after S seconds (default: until Ctrl-C)",
        unit="s",
        above=0,
        maximum=10 * 365 * 86400,
        metavar="S",
    )
)

# --- the TUI only: where NVML runs (the exporter, `record` and `advise` always isolate it) --------------

declare(
    Option(
        "isolate_nvml",
        ("--isolate-nvml",),
        "bool",
        "TUI: run NVML in a supervised child process, so that a driver crash (segfault) is a status line "
        "instead of the end of the TUI; costs a second Python process (~20 MiB). Off by default, as "
        "nvitop does: in-process, a hung NVML call only marks that GPU stale (it keeps a read thread of "
        "its own) and the screen keeps running",
        default=False,
    )
)

# --- prices: OwnershipCost's fields, plus the GPU price --------------------------------------------

PRICES = (
    "electricity_usd_per_kwh",
    "pue",
    "server_capex_usd",
    "server_overhead_ratio",
    "service_life_years",
    "hosting_usd_per_h",
    "cloud_usd_per_gpu_h",
    "utilisation_ratio",
)


def _price(
    key: str, flags: tuple[str, ...], text: str, unit: str, label: str | None = None, **kw: Any
) -> None:
    declare(
        Option(
            key,
            flags,
            "float",
            text,
            default=getattr(_PRICES, key),
            unit=unit,
            toml=f"prices.{key}",
            metavar=kw.pop("metavar", "USD"),
            label=label,
            **kw,
        )
    )


_price(
    "electricity_usd_per_kwh",
    ("--electricity-price", "--electricity-usd-per-kwh"),
    "electricity price",
    "USD/kWh",
    "$/kWh",
    minimum=0,
    maximum=10,
)
_price(
    "pue",
    ("--pue",),
    "power usage effectiveness of the room (1.0 = no overhead)",
    "",
    "PUE",
    minimum=1,
    maximum=5,
    metavar="X",
)
_price(
    "server_capex_usd",
    ("--server-capex",),
    "purchase price of the whole server (unset: the GPUs' prices x (1 + --server-overhead))",
    "USD",
    minimum=0,
    maximum=1e9,
    optional=True,
)
_price(
    "server_overhead_ratio",
    ("--server-overhead",),
    "host, chassis, network share of the GPUs' price, when --server-capex is unset",
    "",
    minimum=0,
    maximum=10,
    metavar="RATIO",
)
_price(
    "service_life_years",
    ("--service-life", "--life-years"),
    "years over which the server is written off",
    "years",
    "life years",
    minimum=0.1,
    maximum=50,
    metavar="YEARS",
)
_price(
    "hosting_usd_per_h",
    ("--hosting-price", "--hosting-usd-per-h"),
    "hosting/colocation of the box",
    "USD/h",
    "hosting $/h",
    minimum=0,
    maximum=1e6,
)
_price(
    "cloud_usd_per_gpu_h",
    ("--cloud-price", "--cloud-usd-per-gpu-h"),
    "rented GPU-hour to compare against (none: no comparison)",
    "USD/GPU-h",
    "cloud $/GPU-h",
    minimum=0,
    maximum=1e4,
    optional=True,
)
_price(
    "utilisation_ratio",
    ("--utilisation",),
    "share of the service life the box does paid work, 0..1",
    "",
    "utilisation",
    minimum=0.01,
    maximum=1,
    metavar="RATIO",
)
declare(
    Option(
        "gpu_price_usd",
        ("--gpu-price", "--gpu-price-usd"),
        "float",
        "price paid per GPU (default: the catalog list price; datacenter GPUs have none)",
        unit="USD",
        above=0,
        maximum=1e7,
        optional=True,
        metavar="USD",
        label="GPU price $",
    )
)
declare(
    Option(
        "alternatives",
        ("--compare",),
        "list",
        "comma-separated catalog GPU ids to price the workload on, e.g. rtx4090,h100-sxm",
        toml="alternatives",
        parse=gpu_list,
        late=True,
        metavar="GPUS",
    )
)

# --- the workload and the planner: PlanInputs' fields ------------------------------------------------

declare(
    Option(
        "model",
        ("--model",),
        "text",
        "catalog model id or a local config.json",
        default=_PLAN.model,
        toml="workload.model",
        parse=model_id,
        metavar="MODEL",
    )
)
declare(
    Option(
        "quant",
        ("--quant",),
        "text",
        "weight format, e.g. fp16, int4-awq, q4_K_M",
        default=_PLAN.quant,
        toml="workload.quant",
        parse=quant_id,
        metavar="QUANT",
    )
)
declare(
    Option(
        "kv_dtype",
        ("--kv-dtype",),
        "text",
        "KV-cache dtype: fp16, bf16, fp8, int8, q8_0, q4_0 (memory, decode bytes and cost follow it)",
        default=_PLAN.kv_dtype,
        toml="workload.kv_dtype",
        parse=kv_dtype_id,
        metavar="DTYPE",
    )
)
declare(
    Option(
        "batch",
        ("--batch",),
        "int",
        "concurrent sequences",
        default=_PLAN.batch,
        toml="workload.batch",
        minimum=1,
        maximum=65536,
        metavar="N",
        label="batch",
    )
)
declare(
    Option(
        "context_tokens",
        ("--context",),
        "int",
        "tokens per sequence",
        default=_PLAN.context_tokens,
        toml="workload.context_tokens",
        minimum=1,
        maximum=10_000_000,
        metavar="TOKENS",
        label="context",
    )
)
declare(
    Option(
        "engine_profile",
        ("--engine-profile",),
        "text",
        f"serving engine the model assumes: {', '.join(ENGINE_NAMES)}",
        default=_PLAN.engine,
        toml="workload.engine_profile",
        parse=engine_profile,
        metavar="PROFILE",
    )
)
declare(
    Option(
        "gpu",
        ("--gpu",),
        "text",
        "catalog id or NVML name, see `gpuwatch plan gpus`",
        default=_PLAN.gpu,
        parse=gpu_id,
        late=True,
        metavar="GPU",
    )
)
declare(
    Option(
        "count",
        ("--count",),
        "int",
        "number of GPUs",
        default=_PLAN.count,
        minimum=1,
        maximum=100_000,
        metavar="N",
        label="count",
    )
)
declare(
    Option(
        "parallel",
        ("--parallel",),
        "text",
        "multi-GPU split",
        default=_PLAN.parallel,
        choices=PARALLELISM,
        metavar="SPLIT",
    )
)
declare(
    Option(
        "link",
        ("--link",),
        "text",
        "GPU link: pcie, pcie4, pcie5x8, nvlink, ethernet, ethernet:25 "
        "(Gbit/s); default NVLink where the GPU has it, else its PCIe",
        metavar="LINK",
    )
)
declare(
    Option(
        "mode",
        ("--mode",),
        "text",
        "what the memory is for",
        default=_PLAN.mode,
        choices=MODES,
        metavar="MODE",
    )
)
declare(
    Option(
        "lora_rank",
        ("--lora-rank",),
        "int",
        "lora/qlora adapter rank",
        default=_PLAN.lora_rank,
        minimum=1,
        maximum=65536,
        metavar="R",
        label="LoRA rank",
    )
)
declare(
    Option(
        "zero_stage",
        ("--zero",),
        "int",
        "train: ZeRO stage; > 0 makes --count GPUs data-parallel ranks (0: they split one replica)",
        default=_PLAN.zero_stage,
        choices=ZERO_STAGES,
        metavar="STAGE",
    )
)
declare(
    Option(
        "optimizer",
        ("--optimizer",),
        "text",
        "optimizer (default adamw; qlora: paged_adamw)",
        choices=OPTIMIZERS,
        metavar="OPTIMIZER",
    )
)
declare(
    Option(
        "activation_checkpointing",
        ("--checkpointing",),
        "bool",
        "activation checkpointing when training",
        default=_PLAN.activation_checkpointing,
    )
)
declare(
    Option(
        "microbatches",
        ("--microbatches",),
        "int",
        "pipeline micro-batches (default: the batch)",
        minimum=1,
        maximum=65536,
        metavar="N",
    )
)
declare(
    Option(
        "train_tokens",
        ("--tokens",),
        "float",
        "training tokens",
        default=_PLAN.train_tokens,
        above=0,
        maximum=1e16,
        metavar="TOKENS",
        label="tokens",
    )
)
declare(
    Option(
        "mfu_ratio",
        ("--mfu",),
        "float",
        "model FLOPs utilisation 0..1",
        default=_PLAN.mfu_ratio,
        minimum=0.01,
        maximum=1,
        metavar="RATIO",
        label="MFU",
    )
)

# --- power, engine memory budgets, serving requests, fine-tuning framework (gpuwatch plan) -------------


def request_rate(value: Any) -> float:
    """Requests per second: 16.7, 16.7/s, 1000/min or 60000/h."""
    import math

    text = str(value).strip().lower().replace(" ", "")
    scale = {"/s": 1.0, "/min": 60.0, "/h": 3600.0}
    divisor = 1.0
    for suffix, seconds in scale.items():
        if text.endswith(suffix):
            text, divisor = text.removesuffix(suffix), seconds
            break
    try:
        rate = float(text) / divisor
    except (ValueError, OverflowError):
        raise Invalid("a request rate like 16.7, 16.7/s or 1000/min") from None
    if not (math.isfinite(rate) and 0 < rate <= 1e7):
        raise Invalid("a request rate above 0 and at most 10000000/s")
    return rate


def batch_list(value: Any) -> tuple[int, ...]:
    items = [v.strip() for v in str(value).split(",") if v.strip()]
    if not items or len(items) > 64 or not all(v.isdigit() and 1 <= int(v) <= 1_000_000 for v in items):
        raise Invalid("a comma-separated list of batch sizes from 1 to 1000000, e.g. 1,2,4,8")
    return tuple(int(v) for v in items)


declare(
    Option(
        "power_limit_w",
        ("--power-limit",),
        "float",
        "what if each GPU is capped at this board power (default: its TDP)",
        unit="W",
        above=0,
        maximum=5000,
        optional=True,
        metavar="W",
    )
)
declare(
    Option(
        "gpu_memory_utilization",
        ("--gpu-memory-utilization",),
        "float",
        "vLLM: share of the card it may use",
        default=_KNOBS.gpu_memory_utilization,
        above=0,
        maximum=1,
        metavar="RATIO",
    )
)
declare(
    Option(
        "max_num_batched_tokens",
        ("--max-num-batched-tokens",),
        "int",
        "vLLM: tokens of its profile run / TensorRT-LLM max_num_tokens (default 8192)",
        minimum=1,
        maximum=10_000_000,
        optional=True,
        metavar="TOKENS",
    )
)
declare(
    Option(
        "max_num_seqs",
        ("--max-num-seqs",),
        "int",
        "vLLM max_num_seqs / SGLang max_running_requests",
        default=_KNOBS.max_num_seqs,
        minimum=1,
        maximum=1_000_000,
        metavar="N",
    )
)
declare(
    Option(
        "cuda_graphs",
        ("--cuda-graphs",),
        "bool",
        "vLLM: capture CUDA graphs (--no-cuda-graphs = --enforce-eager)",
        default=_KNOBS.cuda_graphs,
    )
)
declare(
    Option(
        "block_size",
        ("--block-size",),
        "int",
        "vLLM: tokens per KV block",
        default=_KNOBS.block_size,
        minimum=1,
        maximum=1024,
        metavar="TOKENS",
    )
)
declare(
    Option(
        "n_ctx",
        ("--n-ctx",),
        "int",
        "llama.cpp: context allocated for all slots (default: --context x --n-parallel)",
        minimum=1,
        maximum=10_000_000,
        optional=True,
        metavar="TOKENS",
    )
)
declare(
    Option(
        "n_parallel",
        ("--n-parallel",),
        "int",
        "llama.cpp server slots (-np)",
        default=_KNOBS.n_parallel,
        minimum=1,
        maximum=4096,
        metavar="N",
    )
)
declare(
    Option(
        "n_ubatch",
        ("--n-ubatch",),
        "int",
        "llama.cpp physical micro-batch (compute buffer)",
        default=_KNOBS.n_ubatch,
        minimum=1,
        maximum=65536,
        metavar="TOKENS",
    )
)
declare(
    Option(
        "n_gpu_layers",
        ("--n-gpu-layers",),
        "int",
        "llama.cpp -ngl: layers offloaded to the GPU (default: all)",
        minimum=0,
        maximum=100_000,
        optional=True,
        metavar="N",
    )
)
declare(
    Option(
        "flash_attention",
        ("--flash-attention",),
        "bool",
        "llama.cpp -fa: no KQ score buffer",
        default=_KNOBS.flash_attention,
    )
)
declare(
    Option(
        "mem_fraction_static",
        ("--mem-fraction-static",),
        "float",
        "SGLang: share of the card for weights + KV pool",
        default=_KNOBS.mem_fraction_static,
        above=0,
        maximum=1,
        metavar="RATIO",
    )
)
declare(
    Option(
        "free_gpu_memory_fraction",
        ("--free-gpu-memory-fraction",),
        "float",
        "TensorRT-LLM: share of the free memory for the KV cache",
        default=_KNOBS.free_gpu_memory_fraction,
        above=0,
        maximum=1,
        metavar="RATIO",
    )
)
declare(
    Option(
        "framework",
        ("--framework",),
        "text",
        "fine-tuning framework (hf: Transformers + FlashAttention-2; unsloth: offloaded checkpoints, "
        "cut cross-entropy)",
        default=_PLAN.framework,
        choices=FRAMEWORKS,
    )
)
declare(
    Option(
        "prompt_tokens",
        ("--prompt-tokens",),
        "int",
        "prompt tokens per request",
        default=512,
        minimum=1,
        maximum=10_000_000,
        metavar="TOKENS",
    )
)
declare(
    Option(
        "output_tokens",
        ("--output-tokens",),
        "int",
        "output tokens per request",
        default=200,
        minimum=1,
        maximum=10_000_000,
        metavar="TOKENS",
    )
)
declare(
    Option(
        "rate",
        ("--rate",),
        "text",
        "requests per second (16.7, 16.7/s or 1000/min)",
        default=1.0,
        parse=request_rate,
        metavar="R",
    )
)
declare(
    Option(
        "p95_latency_s",
        ("--p95-latency",),
        "float",
        "request latency target",
        unit="s",
        above=0,
        maximum=86400,
        optional=True,
        metavar="S",
    )
)
declare(
    Option(
        "sweep_batch",
        ("--sweep-batch",),
        "text",
        "concurrency levels to tabulate, e.g. 1,2,4,8 (default: powers of two up to the memory limit)",
        parse=batch_list,
        optional=True,
        metavar="B,B,…",
    )
)

# --- alert thresholds: config file only ------------------------------------------------------------

declare(
    Option(
        "temperature_margin_c",
        (),
        "float",
        "warn when the distance to the slowdown temperature is at most this",
        default=5.0,
        unit="°C",
        toml="alerts.temperature_margin_c",
        minimum=0,
        maximum=50,
    )
)
declare(
    Option(
        "temperature_hysteresis_c",
        (),
        "float",
        "the margin must recover by this much before the warning may fire again",
        default=2.0,
        unit="°C",
        toml="alerts.temperature_hysteresis_c",
        minimum=0,
        maximum=20,
    )
)
declare(
    Option(
        "throughput_shortfall_ratio",
        (),
        "float",
        "alert when live tokens/s < (1 - this) x the modelled ceiling",
        default=0.3,
        toml="alerts.throughput_shortfall_ratio",
        above=0,
        maximum=1,
    )
)
declare(
    Option(
        "throughput_hold_s",
        (),
        "float",
        "... continuously for this long",
        default=30.0,
        unit="s",
        toml="alerts.throughput_hold_s",
        minimum=0,
        maximum=86400,
    )
)

# --- which options each `gpuwatch plan` sub-command takes (argparse and the copied command follow this) --

_WORKLOAD = ("model", "quant", "gpu", "count", "batch", "context_tokens")
_SERVING = ("engine_profile", "parallel", "link")
_TRAINING = ("mode", "lora_rank", "zero_stage", "optimizer", "activation_checkpointing")
_ENGINE_MEMORY = (
    "gpu_memory_utilization", "max_num_batched_tokens", "max_num_seqs", "cuda_graphs", "block_size", "n_ctx",
    "n_parallel", "n_ubatch", "n_gpu_layers", "flash_attention", "mem_fraction_static",
    "free_gpu_memory_fraction",
)  # fmt: skip
_OWNING = (
    "gpu_price_usd",
    "server_capex_usd",
    "server_overhead_ratio",
    "service_life_years",
    "electricity_usd_per_kwh",
    "pue",
    "hosting_usd_per_h",
    "utilisation_ratio",
    "cloud_usd_per_gpu_h",
)
PLAN_OPTIONS: dict[str, tuple[str, ...]] = {
    "memory": (*_WORKLOAD, "kv_dtype", *_TRAINING, "engine_profile", "parallel", *_ENGINE_MEMORY),
    "throughput": (*_WORKLOAD, "kv_dtype", *_SERVING, "power_limit_w"),
    "cost": (*_WORKLOAD, "kv_dtype", *_SERVING, "power_limit_w", *_OWNING),
    # requests, not tokens: the workload's batch is what the plan chooses
    "serve": (
        *(k for k in _WORKLOAD if k not in ("batch", "context_tokens")),
        "kv_dtype",
        "engine_profile",
        "prompt_tokens",
        "output_tokens",
        "rate",
        "p95_latency_s",
        "sweep_batch",
        "power_limit_w",
        *_ENGINE_MEMORY,
        *_OWNING,
    ),
    # the comparison prices each GPU at its own list price
    "gpus": (
        *(k for k in _WORKLOAD if k != "gpu"),
        "kv_dtype",
        "engine_profile",
        "parallel",
        *(k for k in _OWNING if k not in ("gpu_price_usd", "server_capex_usd")),
    ),
    "parallel": (*_WORKLOAD, "kv_dtype", *_SERVING, "microbatches"),
    "train": (
        *(k for k in _WORKLOAD if k != "quant"),
        *_TRAINING,
        "framework",
        "train_tokens",
        "mfu_ratio",
        "cloud_usd_per_gpu_h",
    ),
}
#: option key -> PlanInputs field, where they differ (prices are PlanInputs.prices' fields)
PLAN_FIELDS = {"engine_profile": "engine"}
