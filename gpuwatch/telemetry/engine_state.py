"""What a serving engine says beyond tokens/s: the work it estimates it did per GPU (the MFU counters)
and its serving state (queue, KV cache, latency histograms, finished requests).

gpuwatch/telemetry/engines.py scrapes and rates tokens; it hands this module the scrape's values so
that one module has one job.

Engine work (``--enable-mfu-metrics`` on vLLM and on SGLang), checked against the sources:
- vLLM vllm/v1/metrics/perf.py ``PerfMetricsProm``: counters ``vllm:estimated_flops_per_gpu_total``,
  ``vllm:estimated_read_bytes_per_gpu_total``, ``vllm:estimated_write_bytes_per_gpu_total``, labels
  ``model_name`` and ``engine`` (one series per data-parallel engine). The values are per GPU already
  (the estimator divides by TP and PP); without the flag the series do not exist.
- SGLang's scheduler metrics collector (``SchedulerMetricsCollector``): the same names under
  ``sglang:``, labels ``model_name``, ``engine_type``, ``tp_rank``, ``pp_rank``, ``moe_ep_rank``
  (``dp_rank`` with data parallelism).
Several series (ranks) are per GPU each: their mean is the engine's per-GPU figure (a sum would count
a data-parallel engine's GPUs as one). Rates are between two scrapes, like the token rates.

Which GPUs an engine runs on: a URL fragment ``#gpus=0,1`` (never sent to the engine) lists the NVML
indices, e.g. ``--engine http://127.0.0.1:8000#gpus=0,1`` for a TP=2 vLLM; without it the engine is
taken to run on every GPU of the box (gpuwatch/options/engine_gpus.py parses it).

Serving state, per engine (absent where the engine does not publish it):
- vLLM: ``vllm:num_requests_waiting``; ``vllm:kv_cache_usage_perc`` (V1; V0 ``gpu_cache_usage_perc``),
  a 0..1 ratio despite the name; histograms ``vllm:time_to_first_token_seconds`` and
  ``vllm:time_per_output_token_seconds`` (newer ``vllm:request_time_per_output_token_seconds``,
  ``vllm:inter_token_latency_seconds``); finished requests ``vllm:request_success_total``.
- SGLang: ``sglang:num_queue_reqs``, ``sglang:token_usage``, ``sglang:time_to_first_token_seconds``,
  ``sglang:inter_token_latency_seconds`` (older ``sglang:time_per_output_token_seconds``), finished
  requests ``sglang:num_requests_total`` (else the e2e latency histogram's count).
- TGI: ``tgi_queue_size``, ``tgi_request_mean_time_per_token_duration``, ``tgi_request_success``.
- llama.cpp: ``llamacpp:requests_deferred``, ``llamacpp:kv_cache_usage_ratio``; no latency histograms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

#: a per-GPU work counter beyond this is garbage: at 1e16 FLOP/s (well above any card) it takes 3e6 years
MAX_WORK_TOTAL = 1e30


@dataclass(frozen=True)
class EngineWork:
    """The engine's own estimate of the work it did on each of its GPUs (MFU counters)."""

    flops_total: float
    read_bytes_total: float
    write_bytes_total: float
    #: rates since the previous scrape; None on the first one
    flops_per_s: float | None = None
    bytes_per_s: float | None = None  # read + write

    @property
    def intensity_flop_per_byte(self) -> float | None:
        if self.flops_per_s is None or not self.bytes_per_s:
            return None
        return self.flops_per_s / self.bytes_per_s


@dataclass(frozen=True)
class ServingState:
    """What the engine serves right now; each figure None where this engine does not publish it."""

    requests_waiting: float | None = None
    kv_cache_usage_ratio: float | None = None
    #: mean over the requests finished since the previous scrape (or since start on the first one)
    ttft_mean_s: float | None = None
    tpot_mean_s: float | None = None
    requests_finished_total: float | None = None
    requests_finished_per_s: float | None = None
    # histogram sums and counts: the base of the next scrape's windowed means
    ttft_sum_s: float | None = None
    ttft_count: float | None = None
    tpot_sum_s: float | None = None
    tpot_count: float | None = None


@dataclass(frozen=True)
class _Names:
    waiting: tuple[str, ...]
    kv_usage: tuple[str, ...]
    ttft: tuple[str, ...]  # histogram base names
    tpot: tuple[str, ...]
    finished: tuple[str, ...]  # counters (or histogram _count as a fallback)
    work_prefix: str | None = None


_NAMES: dict[str, _Names] = {
    "vllm": _Names(
        ("vllm:num_requests_waiting",),
        ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
        ("vllm:time_to_first_token_seconds",),
        (
            "vllm:time_per_output_token_seconds",
            "vllm:request_time_per_output_token_seconds",
            "vllm:inter_token_latency_seconds",
        ),
        ("vllm:request_success_total", "vllm:e2e_request_latency_seconds_count"),
        "vllm:",
    ),
    "sglang": _Names(
        ("sglang:num_queue_reqs",),
        ("sglang:token_usage",),
        ("sglang:time_to_first_token_seconds",),
        ("sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds"),
        ("sglang:num_requests_total", "sglang:e2e_request_latency_seconds_count"),
        "sglang:",
    ),
    "tgi": _Names(
        ("tgi_queue_size",),
        (),
        (),
        ("tgi_request_mean_time_per_token_duration",),
        ("tgi_request_success", "tgi_request_success_total"),
    ),
    "llama.cpp": _Names(("llamacpp:requests_deferred",), ("llamacpp:kv_cache_usage_ratio",), (), (), ()),
}


def _first(values: Mapping[str, float], names: tuple[str, ...]) -> float | None:
    for name in names:
        v = values.get(name)
        if v is not None and math.isfinite(v) and v >= 0:
            return v
    return None


def _rate(current: float | None, previous: float | None, dt_s: float | None) -> float | None:
    if current is None or previous is None or dt_s is None or dt_s <= 0:
        return None
    return (current - previous if current >= previous else current) / dt_s  # down: a restart


def _mean(
    names: tuple[str, ...], values: Mapping[str, float], prev_sum: float | None, prev_count: float | None
) -> tuple[float | None, float | None, float | None]:
    """(windowed mean, sum, count) of the first histogram of ``names`` the engine publishes."""
    for name in names:
        total, count = values.get(f"{name}_sum"), values.get(f"{name}_count")
        if total is None or count is None or not (math.isfinite(total) and math.isfinite(count)):
            continue
        if total < 0 or count < 0:
            return None, None, None
        if prev_sum is not None and prev_count is not None and count >= prev_count and total >= prev_sum:
            d_count = count - prev_count
            return ((total - prev_sum) / d_count if d_count > 0 else None), total, count
        return (total / count if count > 0 else None), total, count
    return None, None, None


def serving_state(
    engine: str, values: Mapping[str, float], previous: ServingState | None, dt_s: float | None
) -> ServingState | None:
    """The serving state in one scrape's values (summed over label sets), or None for an unknown engine."""
    names = _NAMES.get(engine)
    if names is None:
        return None
    prev = previous or ServingState()
    ttft, ttft_sum, ttft_count = _mean(names.ttft, values, prev.ttft_sum_s, prev.ttft_count)
    tpot, tpot_sum, tpot_count = _mean(names.tpot, values, prev.tpot_sum_s, prev.tpot_count)
    finished = _first(values, names.finished)
    kv = _first(values, names.kv_usage)
    return ServingState(
        requests_waiting=_first(values, names.waiting),
        kv_cache_usage_ratio=kv if kv is None or kv <= 1.0 else None,  # a ratio; above 1 is garbage
        ttft_mean_s=ttft,
        tpot_mean_s=tpot,
        requests_finished_total=finished,
        requests_finished_per_s=_rate(finished, prev.requests_finished_total, dt_s),
        ttft_sum_s=ttft_sum,
        ttft_count=ttft_count,
        tpot_sum_s=tpot_sum,
        tpot_count=tpot_count,
    )


def engine_work(
    engine: str,
    values: Mapping[str, float],
    series: Mapping[str, int],
    previous: EngineWork | None,
    dt_s: float | None,
) -> tuple[EngineWork | None, str | None]:
    """The MFU counters' per-GPU work and its rates, or (None, why) when they are absent or garbage.

    ``values`` are summed over label sets and ``series`` counts the label sets per name: their ratio
    is the mean per-GPU figure over the engine's ranks."""
    names = _NAMES.get(engine)
    if names is None or names.work_prefix is None:
        return None, None
    totals: list[float] = []
    for what in ("flops", "read_bytes", "write_bytes"):
        name = f"{names.work_prefix}estimated_{what}_per_gpu_total"
        if name not in values:
            return None, None  # the engine runs without --enable-mfu-metrics
        value = values[name]
        if math.isnan(value) or math.isinf(value) or value < 0 or value > MAX_WORK_TOTAL:
            return None, f"rejected: {name} is {value:g}"
        totals.append(value / max(1, series.get(name, 1)))
    flops, read, write = totals
    flops_s = bytes_s = None
    if previous is not None:
        flops_s = _rate(flops, previous.flops_total, dt_s)
        r = _rate(read, previous.read_bytes_total, dt_s)
        w = _rate(write, previous.write_bytes_total, dt_s)
        bytes_s = r + w if r is not None and w is not None else None
    return EngineWork(flops, read, write, flops_s, bytes_s), None
