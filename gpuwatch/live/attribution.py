"""Attribution: what each GPU attains, and where the figure came from, best source first.

  MEASURED  GPM (Hopper+): DRAM_BW_UTIL x the card's peak bandwidth; tensor-pipe utilisation x the
            compute ceiling at the live SM clock (busy time, so an upper bound on useful FLOP/s).
  ENGINE-ESTIMATED  the engine's own per-GPU FLOP and byte counters (vLLM/SGLang --enable-mfu-metrics),
            rated between scrapes; beside a GPM measurement they are kept, with their ratio to it.
  DERIVED   serving-engine tokens/s x the model's FLOPs per token and bytes per decode step at the
            declared context (KV-cache reads included).
  MODELLED  the declared workload's roofline projection at the card's live clocks.
Memory-controller busy % is a duty cycle, not a share of bandwidth: it is never used for bandwidth.

Attribution assumption: each engine's tokens/s are split evenly over its GPUs (the ``#gpus=`` list of
its URL, gpuwatch/telemetry/engine_state.py), else over the GPUs that are busy, and the
declared workload (batch, context) describes one replica per GPU. That is exact on a one-GPU box and
for data-parallel replicas; under tensor parallelism the per-GPU bytes are over-counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from gpuwatch.live.assessment import Provenance, RooflinePosition
from gpuwatch.live.workload import ResolvedWorkload
from gpuwatch.model.catalog import GpuSpec
from gpuwatch.model.roofline import attainable_flops, ridge_point_flop_per_byte
from gpuwatch.options.engine_gpus import engine_gpus
from gpuwatch.telemetry.engine_state import EngineWork
from gpuwatch.telemetry.engines import EngineReading
from gpuwatch.telemetry.history import History
from gpuwatch.telemetry.sample import ClockEventReason, GpuSample, Snapshot

if TYPE_CHECKING:
    from gpuwatch.model.throughput import ThroughputEstimate

#: below this SM busy share a card with no engine traffic counts as idle
IDLE_SM_BUSY_RATIO = 0.05


def live_power_w(sample: GpuSample, history: History, window_s: float) -> float | None:
    """Mean power over the window from the energy counter (an exact integral), else NVML's power."""
    rate = history.rate(sample.index, "energy_j", window_s)
    if rate is not None and rate >= 0:
        return rate
    return sample.power_w


def is_idle(sample: GpuSample, tokens_per_s: float | None) -> bool:
    if tokens_per_s is not None and tokens_per_s > 0:
        return False
    if (sample.clock_event_reasons or 0) & ClockEventReason.GPU_IDLE:
        return True
    return sample.sm_busy_ratio is not None and sample.sm_busy_ratio < IDLE_SM_BUSY_RATIO


@dataclass(frozen=True)
class EngineShare:
    """One GPU's share of the engines' traffic."""

    generation_tokens_per_s: float
    prompt_tokens_per_s: float
    batch: float  # concurrent sequences on this GPU
    #: finished requests per second on this GPU (the engines' request counters); None: not published
    requests_per_s: float | None = None


def _gpus_of(reading: EngineReading, snap: Snapshot, busy: Sequence[GpuSample]) -> list[int]:
    """The GPUs the engine runs on: its URL's ``#gpus=`` list (gpuwatch/telemetry/engine_state.py) where
    those are present, else the busy ones."""
    try:
        listed = engine_gpus(reading.url)
    except ValueError:  # the option check rejects these; a recording may still carry one
        listed = None
    if listed is not None:
        alive = [g.index for g in snap.gpus if not g.lost and g.index in listed]
        if alive:
            return alive
    return [g.index for g in busy]


def engine_shares(snap: Snapshot, engines: Sequence[EngineReading]) -> dict[int, EngineShare]:
    good = [e for e in engines if e.error is None and e.generation_tokens_per_s is not None]
    if not good:
        return {}
    alive = [g for g in snap.gpus if not g.lost]
    busy = [g for g in alive if g.sm_busy_ratio is None or g.sm_busy_ratio >= IDLE_SM_BUSY_RATIO] or alive
    if not busy:
        return {}
    gen: dict[int, float] = {}
    prompt: dict[int, float] = {}
    running: dict[int, float] = {}
    requests: dict[int, float] = {}
    for e in good:
        gpus = _gpus_of(e, snap, busy)
        n = len(gpus)
        finished = e.serving.requests_finished_per_s if e.serving is not None else None
        for i in gpus:
            gen[i] = gen.get(i, 0.0) + (e.generation_tokens_per_s or 0.0) / n
            prompt[i] = prompt.get(i, 0.0) + (e.prompt_tokens_per_s or 0.0) / n
            if e.requests_running is not None:
                running[i] = running.get(i, 0.0) + e.requests_running / n
            if finished is not None:
                requests[i] = requests.get(i, 0.0) + finished / n
    return {
        i: EngineShare(
            gen[i],
            prompt[i],
            max(1.0, running[i]) if i in running else 0.0,  # 0: unknown, use the declared batch
            requests.get(i),
        )
        for i in gen
    }


def engine_work_by_gpu(snap: Snapshot, engines: Sequence[EngineReading]) -> dict[int, EngineWork]:
    """Each GPU's engine-estimated work rates: the MFU counters are per GPU already, so every GPU the
    engine runs on gets its figures (summed where two engines share a GPU)."""
    alive = [g for g in snap.gpus if not g.lost]
    out: dict[int, EngineWork] = {}
    for e in engines:
        w = e.work
        if e.error is not None or w is None or w.flops_per_s is None or w.bytes_per_s is None:
            continue
        for i in _gpus_of(e, snap, alive):
            have = out.get(i)
            out[i] = (
                w
                if have is None
                else replace(
                    have,
                    flops_per_s=(have.flops_per_s or 0.0) + w.flops_per_s,
                    bytes_per_s=(have.bytes_per_s or 0.0) + w.bytes_per_s,
                )
            )
    return out


#: an engine estimate beyond this multiple of the card's ceiling is not used (a wrong GPU map, garbage)
MAX_ENGINE_ESTIMATE_RATIO = 1.5


def roofline_position(
    sample: GpuSample,
    gpu: GpuSpec,
    w: ResolvedWorkload | None,
    share: EngineShare | None,
    at_live: ThroughputEstimate | None,
    idle: bool,
    compute_scale: float,
    work: EngineWork | None = None,
) -> RooflinePosition:
    """Where the card sits: attained bandwidth and FLOP/s from the best source there is (module docstring)."""
    dtype = w.dtype(gpu) if w else "fp16"
    peak_bw = gpu.memory_bandwidth_bytes_s
    peak = gpu.peak(dtype)
    current_peak = peak * compute_scale

    bw: float | None = None
    bw_prov = Provenance.UNKNOWN
    flops: float | None = None
    flops_prov = Provenance.UNKNOWN
    gpm = sample.gpm
    if gpm is not None and gpm.dram_bandwidth_util_ratio is not None:
        # DRAM_BW_UTIL is "vs theoretical maximum": the card's own figure where NVML gives one
        bw = gpm.dram_bandwidth_util_ratio * (sample.peak_memory_bandwidth_bytes_s or peak_bw)
        bw_prov = Provenance.MEASURED
    if gpm is not None and gpm.tensor_util_ratio is not None:
        flops = gpm.tensor_util_ratio * current_peak
        flops_prov = Provenance.MEASURED
    engine_flops = engine_bw = flops_ratio = bw_ratio = None
    if (
        work is not None
        and work.flops_per_s is not None
        and work.bytes_per_s is not None
        and work.flops_per_s <= MAX_ENGINE_ESTIMATE_RATIO * peak
        and work.bytes_per_s <= MAX_ENGINE_ESTIMATE_RATIO * peak_bw
    ):
        engine_flops, engine_bw = work.flops_per_s, work.bytes_per_s
        if bw is None:
            bw, bw_prov = engine_bw, Provenance.ENGINE_ESTIMATED
        elif bw > 0:
            bw_ratio = engine_bw / bw
        if flops is None:
            flops, flops_prov = engine_flops, Provenance.ENGINE_ESTIMATED
        elif flops > 0:
            flops_ratio = engine_flops / flops
    if w is not None and share is not None:
        from gpuwatch.model.throughput import bytes_per_decode_step, flops_per_token  # a workload's model

        batch = share.batch or w.batch
        steps_s = share.generation_tokens_per_s / batch
        if bw is None:
            bw = steps_s * float(
                bytes_per_decode_step(w.model, w.quant, batch, w.context_tokens, kv_dtype=w.kv_dtype)
            )
            bw_prov = Provenance.DERIVED
        if flops is None:
            # a prompt token attends on average to half the prompt
            flops = share.generation_tokens_per_s * float(flops_per_token(w.model, w.context_tokens)) + (
                share.prompt_tokens_per_s * float(flops_per_token(w.model, w.context_tokens / 2))
            )
            flops_prov = Provenance.DERIVED
    if at_live is not None and not idle:
        steps_s = 1.0 / float(at_live.decode_step_s)
        if bw is None:
            bw, bw_prov = float(at_live.bytes_per_decode_step) * steps_s, Provenance.MODELLED
        if flops is None:
            flops, flops_prov = float(at_live.flops_per_decode_step) * steps_s, Provenance.MODELLED

    intensity: float | None = None
    if flops is not None and bw:
        intensity = flops / bw
    elif at_live is not None:
        intensity = float(at_live.arithmetic_intensity_flop_per_byte)
    attainable = None
    if intensity is not None:
        attainable = float(attainable_flops(gpu, dtype, intensity, peak_flops_override=current_peak))
    headroom = None
    if flops is not None and attainable:
        headroom = min(1.0, flops / attainable)
    return RooflinePosition(
        peak_bandwidth_bytes_s=peak_bw,
        peak_flops=peak,
        current_peak_flops=current_peak,
        ridge_flop_per_byte=ridge_point_flop_per_byte(gpu, dtype),
        attained_bandwidth_bytes_s=bw,
        attained_flops=flops,
        arithmetic_intensity_flop_per_byte=intensity,
        attainable_flops=attainable,
        headroom_ratio=headroom,
        bandwidth_provenance=bw_prov,
        flops_provenance=flops_prov,
        dtype=dtype,
        engine_flops=engine_flops,
        engine_bandwidth_bytes_s=engine_bw,
        engine_vs_measured_flops_ratio=flops_ratio,
        engine_vs_measured_bandwidth_ratio=bw_ratio,
    )
