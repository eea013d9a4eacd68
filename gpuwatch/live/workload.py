"""The declared workload looked up once, and the model run at a card's live clocks.

A throttled card is modelled slower: its ceilings are scaled by the live SM and memory clocks before the
model's own estimate runs on them (gpuwatch/live/attribution.py and gpuwatch/live/pricing.py use it).

The model code a workload needs (the model catalog, memory, serving) is imported by the methods that use
it: a session that declares no workload, which is most, never loads it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from gpuwatch.live.config import Workload
from gpuwatch.model.catalog import GpuSpec
from gpuwatch.model.engine_profiles import EngineProfile, get_engine_profile
from gpuwatch.telemetry.sample import GpuSample

if TYPE_CHECKING:
    from gpuwatch.model.llm import ModelSpec
    from gpuwatch.model.quant import QuantFormat
    from gpuwatch.model.throughput import ThroughputEstimate


@dataclass(frozen=True)
class ResolvedWorkload:
    """A declared workload looked up in the catalogs, once."""

    model: ModelSpec
    quant: QuantFormat
    batch: int
    context_tokens: int
    engine: EngineProfile
    kv_dtype: str = "fp16"

    @classmethod
    def of(cls, w: Workload) -> ResolvedWorkload:
        from gpuwatch.model.llm import resolve_model
        from gpuwatch.model.quant import get_quant

        engine = get_engine_profile(w.engine_profile) if w.engine_profile else get_engine_profile()
        model, quant = resolve_model(w.model_id), get_quant(w.quant_id)
        return cls(model, quant, w.batch, w.context_tokens, engine, w.kv_dtype)

    def dtype(self, gpu: GpuSpec) -> str:
        """The ceiling the engine's matmuls run against (the model's own choice, e.g. fp16acc on GeForce)."""
        return self.engine.matmul_dtype(self.quant.compute_dtype, gpu)

    def fits(self, gpu: GpuSpec) -> bool:
        """Whether one replica (weights + KV cache at batch x context) fits one card's usable memory."""
        from gpuwatch.model.memory import inference_memory

        return bool(
            inference_memory(
                self.model, self.quant, self.batch, self.context_tokens, kv_dtype=self.kv_dtype
            ).fits(gpu)
        )

    def modelled_power_w(self, gpu: GpuSpec) -> float:
        """Board power this workload draws on ``gpu`` at its default limit (gpuwatch/model/power.py), the
        figure `gpuwatch plan cost` prices with."""
        from gpuwatch.model.serving import powered_throughput

        run = powered_throughput(
            self.model,
            self.quant.id,
            gpu,
            self.batch,
            self.context_tokens,
            engine=self.engine.name,
            kv_dtype=self.kv_dtype,
        )
        return run.power.power_w

    def estimate(self, gpu: GpuSpec, batch: float | None = None) -> ThroughputEstimate:
        from gpuwatch.model.throughput import estimate_throughput

        return estimate_throughput(
            self.model,
            self.quant,
            gpu,
            self.batch if batch is None else batch,
            self.context_tokens,
            engine=self.engine,
            kv_dtype=self.kv_dtype,
        )


def clock_scales(sample: GpuSample, gpu: GpuSpec) -> tuple[float, float]:
    """(compute, memory) ceilings' share of spec at the live clocks, each at most 1.

    Compute scales with the SM clock over the SPEC boost clock the catalog peaks assume (NVML's max
    SM clock is higher: 3105 vs 2520 MHz on a 4090), capped at 1 so that a card boosting above spec
    is not credited with more than its datasheet; memory with the memory clock over its maximum.
    """
    compute = 1.0
    if sample.sm_clock_hz is not None and gpu.boost_clock_hz > 0:
        compute = min(1.0, sample.sm_clock_hz / gpu.boost_clock_hz)
    memory = 1.0
    if sample.memory_clock_hz is not None and sample.memory_clock_max_hz:
        memory = min(1.0, sample.memory_clock_hz / sample.memory_clock_max_hz)
    return compute, memory


def derated(gpu: GpuSpec, compute_scale: float, memory_scale: float) -> GpuSpec:
    """The same GPU with its ceilings at live clocks, so the model's own estimate runs on them."""
    if compute_scale == 1.0 and memory_scale == 1.0:
        return gpu
    return replace(
        gpu,
        peak_flops={k: v * compute_scale for k, v in gpu.peak_flops.items()},
        memory_bandwidth_bytes_s=gpu.memory_bandwidth_bytes_s * memory_scale,
    )
