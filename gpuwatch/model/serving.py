"""Serving as a running engine answers it: power under a limit, and requests rather than tokens.

``powered_throughput`` joins the roofline estimate (gpuwatch/model/throughput.py) with the power model
(gpuwatch/model/power.py): the workload's activity sets its power; a limit below that lowers the SM clock,
which stretches the compute part of each step (1/r) and, less, the memory-bound part
(power.MEMORY_CLOCK_EXPONENT); the engine's per-layer overhead (launch latency) is left as it is. One
fixed-point step: the activity is taken at the load clock.

``plan_serving`` answers "R requests/s of P prompt and G output tokens, p95 under S seconds": per replica
(``count`` GPUs in tensor parallel), at concurrency B (sequences in the engine's batch):

  TTFT(B)   = prefill of one P-token prompt
  TPOT(B)   = decode step at batch B and mean context P + G/2, stretched by the share f of time the
              engine spends prefilling newly arrived prompts (continuous batching time-shares them):
              f = lambda x P / prefill tokens/s, TPOT = step / (1 - f), lambda = B / latency
  latency   = TTFT + G x TPOT(B)                                 (a quadratic in the latency, solved)
  capacity  = B / latency requests/s                             (Little's law: B = lambda x latency)

B runs from 1 to the engine's maximum concurrent sequences at context P + G (engine_memory). The answer is
the largest B whose latency meets the target (latency and capacity both grow with B); replicas =
ceil(R / capacity). The latency is
the modelled one for requests of exactly P and G tokens, without queueing variance: the p95 target is met
by that latency, not by a distribution (said in the answer's notes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from gpuwatch.model.catalog import GpuSpec
from gpuwatch.model.engine_memory import EngineBudget, EngineKnobs, engine_budget
from gpuwatch.model.engine_profiles import DEFAULT_ENGINE, get_engine_profile
from gpuwatch.model.errors import ModelInputError
from gpuwatch.model.llm import ModelSpec, check_context
from gpuwatch.model.parallel import Link
from gpuwatch.model.power import (
    MEMORY_CLOCK_EXPONENT,
    CardPower,
    PowerEstimate,
    card_power,
    estimate_power,
    workload_activity,
)
from gpuwatch.model.quant import get_quant
from gpuwatch.model.roofline import peak_flops
from gpuwatch.model.throughput import ThroughputEstimate, estimate_throughput

#: engine-profile names -> engine_memory engine names
_MEMORY_ENGINE = {
    "vllm": "vllm",
    "llama.cpp": "llama.cpp",
    "tensorrt-llm": "tensorrt-llm",
    "sglang": "sglang",
}


@dataclass(frozen=True)
class PoweredThroughput:
    estimate: ThroughputEstimate  # at the clock the limit allows
    power: PowerEstimate  # per GPU
    tokens_per_j: float  # decode tokens per joule, all GPUs
    j_per_token: float
    card: CardPower


def _scalar(value: Any) -> float:
    return float(value)


def powered_throughput(
    model: ModelSpec,
    quant: str,
    gpu: GpuSpec,
    batch: int,
    context_tokens: int,
    *,
    engine: str = DEFAULT_ENGINE,
    count: int = 1,
    parallel: str = "tp",
    link: Link | None = None,
    kv_dtype: str = "fp16",
    power_limit_w: float | None = None,
    card: CardPower | None = None,
) -> PoweredThroughput:
    """Decode throughput, board power and tokens/J of a workload under a power limit (default: TDP)."""
    fmt = get_quant(quant)
    prof = get_engine_profile(engine)
    card = card or card_power(gpu.tdp_w, gpu.segment)
    split = dict(count=count, parallel=parallel, link=link, kv_dtype=kv_dtype)
    base = estimate_throughput(model, fmt, gpu, batch, context_tokens, engine=prof, **split)  # type: ignore[arg-type]
    step = _scalar(base.decode_step_s)
    bw = _scalar(base.bytes_per_decode_step) / count / step
    flops = _scalar(base.flops_per_decode_step) / count / step
    activity = workload_activity(
        bw / gpu.memory_bandwidth_bytes_s, flops / peak_flops(gpu, fmt.compute_dtype)
    )
    power = estimate_power(card, activity, power_limit_w)
    estimate = base
    if power.capped:
        r = power.clock_ratio
        slowed_gpu = replace(
            gpu,
            peak_flops={k: v * r for k, v in gpu.peak_flops.items()},
            memory_bandwidth_bytes_s=gpu.memory_bandwidth_bytes_s * r**MEMORY_CLOCK_EXPONENT,
        )
        estimate = estimate_throughput(
            model,
            fmt,
            slowed_gpu,
            batch,
            context_tokens,
            engine=prof,
            **split,  # type: ignore[arg-type]
        )
    tok_s = _scalar(estimate.decode_tokens_per_s)
    watts = power.power_w * count
    return PoweredThroughput(estimate, power, tok_s / watts, watts / tok_s, card)


@dataclass(frozen=True)
class ServingPoint:
    """One concurrency level of one replica."""

    concurrency: int
    ttft_s: float
    tpot_s: float
    latency_s: float
    requests_per_s: float  # capacity of one replica
    output_tokens_per_s: float  # one replica
    prefill_share: float
    power_w: float  # per GPU
    meets_latency: bool
    usd_per_mtok: float  # output tokens, owned
    usd_per_1k_requests: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ServingPlan:
    rate_requests_per_s: float
    prompt_tokens: int
    output_tokens: int
    p95_latency_s: float | None
    gpus_per_replica: int
    budget: EngineBudget
    best: ServingPoint | None  # None: no concurrency meets the target
    replicas: int | None
    sweep: tuple[ServingPoint, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def gpus(self) -> int | None:
        return None if self.replicas is None else self.replicas * self.gpus_per_replica

    def as_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "rate_requests_per_s": self.rate_requests_per_s,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "p95_latency_s": self.p95_latency_s,
            "gpus_per_replica": self.gpus_per_replica,
            "max_concurrent_sequences": self.budget.max_concurrent_sequences,
            "concurrency": None if best is None else best.concurrency,
            "ttft_s": None if best is None else best.ttft_s,
            "tpot_s": None if best is None else best.tpot_s,
            "latency_s": None if best is None else best.latency_s,
            "replica_requests_per_s": None if best is None else best.requests_per_s,
            "replicas": self.replicas,
            "gpus": self.gpus,
            "power_w": None if best is None else best.power_w,
            "usd_per_mtok": None if best is None else best.usd_per_mtok,
            "usd_per_1k_requests": None if best is None else best.usd_per_1k_requests,
            "sweep": [p.as_dict() for p in self.sweep],
            "notes": list(self.notes),
            "provenance": "modelled",
        }


def _point(
    model: ModelSpec,
    quant: str,
    gpu: GpuSpec,
    concurrency: int,
    prompt: int,
    output: int,
    *,
    prefill: ThroughputEstimate,
    engine: str,
    count: int,
    kv_dtype: str,
    target_s: float | None,
    gpu_usd_per_h: float,
    electricity_usd_per_kwh: float,
    pue: float,
    power_limit_w: float | None,
) -> ServingPoint:
    mean_context = prompt + output // 2
    run = powered_throughput(
        model, quant, gpu, concurrency, mean_context, engine=engine, count=count, kv_dtype=kv_dtype,
        power_limit_w=power_limit_w,
    )  # fmt: skip
    ttft = _scalar(prefill.time_to_first_token_s)
    prefill_tok_s = _scalar(prefill.prefill_tokens_per_s)
    step = _scalar(run.estimate.decode_step_s)
    # latency L solves (L - TTFT)(1 - a/L) = G x step with a = B x P / prefill tokens/s (the share of time
    # spent prefilling is a/L); the larger root is the one with a share below 1
    a = concurrency * prompt / prefill_tok_s
    s_sum = ttft + a + output * step
    latency = (s_sum + math.sqrt(max(0.0, s_sum * s_sum - 4.0 * ttft * a))) / 2.0
    share = a / latency
    tpot = step / (1.0 - share)
    req_s = concurrency / latency
    tok_s = req_s * output
    hourly = count * (gpu_usd_per_h + run.power.power_w / 1000.0 * pue * electricity_usd_per_kwh)
    usd_mtok = hourly / (tok_s * 3600.0) * 1e6
    return ServingPoint(
        concurrency, ttft, tpot, latency, req_s, tok_s, share, run.power.power_w,
        target_s is None or latency <= target_s, usd_mtok, hourly / (req_s * 3600.0) * 1000.0,
    )  # fmt: skip


def _levels(limit: int) -> list[int]:
    levels, b = [], 1
    while b < limit:
        levels.append(b)
        b *= 2
    levels.append(limit)
    return levels


def plan_serving(
    model: ModelSpec,
    quant: str,
    gpu: GpuSpec,
    *,
    rate_requests_per_s: float,
    prompt_tokens: int,
    output_tokens: int,
    p95_latency_s: float | None = None,
    count: int = 1,
    engine: str = DEFAULT_ENGINE,
    kv_dtype: str = "fp16",
    knobs: EngineKnobs | None = None,
    sweep_batches: Sequence[int] | None = None,
    gpu_usd_per_h: float = 0.0,
    electricity_usd_per_kwh: float = 0.0,
    pue: float = 1.0,
    power_limit_w: float | None = None,
) -> ServingPlan:
    """Replicas and GPUs for a request rate under a latency target (see the module docstring)."""
    if not (math.isfinite(rate_requests_per_s) and rate_requests_per_s > 0):
        raise ModelInputError(f"rate must be a positive number of requests/s, got {rate_requests_per_s}")
    if prompt_tokens < 1 or output_tokens < 1:
        raise ModelInputError("prompt and output tokens must each be >= 1")
    if p95_latency_s is not None and not (math.isfinite(p95_latency_s) and p95_latency_s > 0):
        raise ModelInputError(f"p95 latency must be a positive number of seconds, got {p95_latency_s}")
    context = prompt_tokens + output_tokens
    check_context(model, context, "prompt + output")
    mem_engine = _MEMORY_ENGINE.get(get_engine_profile(engine).name, "vllm")
    budget = engine_budget(
        mem_engine, model, quant, gpu, context, count=count, kv_dtype=kv_dtype, knobs=knobs
    )
    notes = list(budget.notes)
    notes.append(
        "latency is modelled for requests of exactly these lengths, without queueing variance; the p95 "
        "target is held against it"
    )
    limit = budget.max_concurrent_sequences
    if limit < 1:
        return ServingPlan(
            rate_requests_per_s, prompt_tokens, output_tokens, p95_latency_s, count, budget, None, None, (),
            (*notes, "no sequence of this length fits the engine's KV pool"),
        )  # fmt: skip
    wanted = sorted({b for b in (sweep_batches or _levels(limit)) if b >= 1})
    over = [b for b in wanted if b > limit]
    if over:
        notes.append(f"batches {', '.join(map(str, over))} exceed the {limit} sequences the KV pool holds")
    levels = [b for b in wanted if b <= limit]
    # one prompt's prefill is the same at every concurrency: computed once, not per point
    prefill = estimate_throughput(
        model, get_quant(quant), gpu, 1, prompt_tokens, engine=engine, count=count, kv_dtype=kv_dtype
    )
    kwargs = dict(
        prefill=prefill,
        engine=engine, count=count, kv_dtype=kv_dtype, target_s=p95_latency_s, gpu_usd_per_h=gpu_usd_per_h,
        electricity_usd_per_kwh=electricity_usd_per_kwh, pue=pue, power_limit_w=power_limit_w,
    )  # fmt: skip
    sweep = tuple(
        _point(model, quant, gpu, b, prompt_tokens, output_tokens, **kwargs)  # type: ignore[arg-type]
        for b in levels
    )

    # latency grows with concurrency and so does a replica's capacity: the best is the largest concurrency
    # up to the memory limit that still meets the target (bisection over every integer, not the sweep's)
    def at(b: int) -> ServingPoint:
        return _point(model, quant, gpu, b, prompt_tokens, output_tokens, **kwargs)  # type: ignore[arg-type]

    best: ServingPoint | None = at(limit)
    if best is not None and not best.meets_latency:
        lo, hi = 0, limit  # at(lo) meets (lo = 0: none known), at(hi) does not
        best = None
        while hi - lo > 1:
            mid = (lo + hi) // 2
            point = at(mid)
            if point.meets_latency:
                lo, best = mid, point
            else:
                hi = mid
    replicas = None if best is None else math.ceil(rate_requests_per_s / best.requests_per_s - 1e-9)
    if best is None:
        notes.append(f"even one sequence takes longer than {p95_latency_s:g} s on this replica")
    return ServingPlan(
        rate_requests_per_s, prompt_tokens, output_tokens, p95_latency_s, count, budget, best, replicas,
        sweep, tuple(notes),
    )  # fmt: skip


#: tensor-parallel degrees tried when none is given (one box of up to 8 GPUs)
TP_DEGREES = (1, 2, 4, 8)


def plan_serving_best_tp(model: ModelSpec, quant: str, gpu: GpuSpec, **kwargs: Any) -> ServingPlan:
    """``plan_serving`` over each TP degree that divides the heads; the one meeting the target with the
    fewest GPUs in all (then the lowest $/1M tokens). Its notes list what the other degrees gave."""
    plans = [
        plan_serving(model, quant, gpu, count=tp, **kwargs)
        for tp in TP_DEGREES
        if model.num_attention_heads % tp == 0
    ]
    ok = [p for p in plans if p.best is not None and p.gpus is not None]

    def cost(p: ServingPlan) -> tuple[int, float]:
        return (p.gpus or 0, p.best.usd_per_mtok if p.best else math.inf)

    chosen = min(ok, key=cost) if ok else plans[-1]
    others = [
        f"TP {p.gpus_per_replica}: "
        + (f"{p.replicas} replicas, {p.gpus} GPUs" if p.gpus else "does not meet the target")
        for p in plans
        if p is not chosen
    ]
    return replace(chosen, notes=(*chosen.notes, *others))
