"""Engine profiles: the share of the datasheet a serving engine really reaches.

Real engines do not decode at spec bandwidth: the share differs between GDDR and HBM parts and
between engines, and each layer costs a fixed time per token (kernel launches, synchronisation).
Prefill reaches a fraction of the tensor peak of the accumulate mode the engine's GEMMs use; on
GeForce the fp16-accumulate ceiling is twice the fp32-accumulate one. Parameters and the published
measurements they were fitted on live in data/engine_profiles.toml, with their sources, split into a
fitting set and a held-out set (gpuwatch.model.calibration fits; the tests check the held-out set).

How much of each profile is calibrated (fit_params; the rest is assumed):
- llama.cpp: everything, on the llama-bench scoreboard (decode and prefill, GDDR and HBM).
- vllm: decode on HBM (bandwidth ratio and per-layer overhead). Prefill ratios and the GDDR
  bandwidth ratio are assumed: no usable published batch-1 figure was found for them.
- tensorrt-llm: prefill (HBM, GDDR, fp8) and the HBM bandwidth ratio from a single decode
  configuration, so its per-layer overhead and GDDR bandwidth ratio are assumed.
vLLM stays the default although only its decode is calibrated: it is the engine most self-hosted
boxes run, decode dominates a served token's time, and its decode holdouts (H100, H200, 8B and 70B,
batch 1-16) land within 13 %. The llama.cpp profile is the only fully fitted one; pass it explicitly
for GGUF boxes.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from typing import Any

from gpuwatch.model.catalog import GpuSpec
from gpuwatch.model.errors import UnknownIdError
from gpuwatch.model.package_data import read_package_text

DEFAULT_ENGINE = "vllm"
ENGINE_NAMES = ("llama.cpp", "vllm", "tensorrt-llm")
_ALIASES = {
    "llamacpp": "llama.cpp",
    "llama-cpp": "llama.cpp",
    "trt-llm": "tensorrt-llm",
    "trtllm": "tensorrt-llm",
}


#: The calibrated quantities of a profile (fit_params / assumed_params name a subset of these).
PARAM_NAMES = (
    "hbm_bandwidth_ratio",
    "gddr_bandwidth_ratio",
    "per_layer_overhead_s",
    "hbm_prefill_peak_ratio",
    "gddr_prefill_peak_ratio",
    "fp8_peak_scale_ratio",
)


def is_hbm(memory_type: str) -> bool:
    return memory_type.upper().startswith("HBM")


@dataclass(frozen=True)
class EngineProfile:
    """One engine's distance from the datasheet; assumed_params says which numbers are guesses."""

    name: str
    status: str  # "fitted" (every parameter that applies) | "partly fitted" | "assumed" (none)
    hbm_bandwidth_ratio: float  # effective / spec DRAM bandwidth in decode, HBM parts
    gddr_bandwidth_ratio: float  # same, GDDR parts
    per_layer_overhead_s: float  # fixed cost per layer per decode step
    fp16_accumulate: bool  # fp16 GEMMs accumulate in fp16 (GeForce full-rate "fp16acc" ceiling)
    hbm_prefill_peak_ratio: float  # fraction of the tensor ceiling reached in prefill, HBM parts
    gddr_prefill_peak_ratio: float
    source: str
    #: share of the fp8 ceiling reached, relative to the share of the 16-bit ceiling (1: the same).
    #: Published TensorRT-LLM fp8 prefills reach ~40-46 % of the fp8 peak where fp16 reaches ~69 % of
    #: its own: activations are quantised on the fly and attention stays in 16-bit.
    fp8_peak_scale_ratio: float = 1.0
    #: parameters solved from this engine's use = "fit" measurements (calibration.fit_profile);
    #: the others are engineering estimates the published data does not pin down
    fit_params: tuple[str, ...] = ()

    @property
    def assumed_params(self) -> tuple[str, ...]:
        return tuple(p for p in PARAM_NAMES if p not in self.fit_params)

    def bandwidth_ratio(self, memory_type: str) -> float:
        return self.hbm_bandwidth_ratio if is_hbm(memory_type) else self.gddr_bandwidth_ratio

    def prefill_peak_ratio(self, memory_type: str) -> float:
        return self.hbm_prefill_peak_ratio if is_hbm(memory_type) else self.gddr_prefill_peak_ratio

    def effective_peak_flops(self, gpu: GpuSpec, compute_dtype: str) -> float:
        """The tensor ceiling this engine reaches on ``gpu`` (prefill, and compute-bound decode)."""
        dtype = self.matmul_dtype(compute_dtype, gpu)
        scale = self.fp8_peak_scale_ratio if dtype == "fp8" else 1.0
        return self.prefill_peak_ratio(gpu.memory_type) * scale * gpu.peak(dtype)

    def matmul_dtype(self, compute_dtype: str, gpu: GpuSpec) -> str:
        """The catalog peak key the engine's GEMMs run at for a quant's compute dtype."""
        if compute_dtype == "fp16" and self.fp16_accumulate and "fp16acc" in gpu.peak_flops:
            return "fp16acc"
        if compute_dtype not in gpu.peak_flops:
            return "fp16"  # e.g. fp8 weights on a chip without fp8: engines upcast
        return compute_dtype


@dataclass(frozen=True)
class Measurement:
    engine: str
    gpu: str  # catalog id, or a display name with bandwidth/memory type inline
    model: str
    quant: str
    phase: str  # "decode" | "prefill" | "e2e" (a whole benchmark_latency run)
    context_tokens: int
    tokens_per_s: float
    use: str  # "fit" | "holdout"
    source: str
    bandwidth_bytes_s: float | None = None
    memory_type: str | None = None
    batch: int = 1
    count: int = 1  # GPUs, tensor parallel
    output_tokens: int = 0  # "e2e" only: tokens generated per stream
    latency_s: float | None = None  # "e2e" only: the published end-to-end latency
    setting: str = ""  # engine version, benchmark command, anything else the source states


@cache
def _data() -> dict[str, Any]:
    text = read_package_text("gpuwatch.model", "data/engine_profiles.toml")
    return tomllib.loads(text)


@cache
def _profiles() -> dict[str, EngineProfile]:
    return {
        name: EngineProfile(
            name=name,
            status=p["status"],
            hbm_bandwidth_ratio=p["hbm_bandwidth_ratio"],
            gddr_bandwidth_ratio=p["gddr_bandwidth_ratio"],
            per_layer_overhead_s=p["per_layer_overhead_s"],
            fp16_accumulate=p["fp16_accumulate"],
            hbm_prefill_peak_ratio=p["hbm_prefill_peak_ratio"],
            gddr_prefill_peak_ratio=p["gddr_prefill_peak_ratio"],
            source=p["source"],
            fp8_peak_scale_ratio=p.get("fp8_peak_scale_ratio", 1.0),
            fit_params=tuple(p.get("fit_params", ())),
        )
        for name, p in _data()["engine"].items()
    }


def get_engine_profile(name: str | EngineProfile = DEFAULT_ENGINE) -> EngineProfile:
    if isinstance(name, EngineProfile):
        return name
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    try:
        return _profiles()[key]
    except KeyError:
        raise UnknownIdError("engine profile", name, _profiles()) from None


def all_engine_profiles() -> tuple[EngineProfile, ...]:
    return tuple(_profiles().values())


def load_measurements() -> tuple[Measurement, ...]:
    out = []
    for m in _data()["measurement"]:
        bw = m.get("bandwidth_gb_s")
        batch = m.get("batch", 1)
        latency_s = m.get("latency_s")
        tokens_per_s = m.get("tokens_per_s")
        if tokens_per_s is None:  # "e2e": generated tokens over the whole run
            tokens_per_s = batch * m["output_tokens"] / latency_s
        out.append(
            Measurement(
                engine=m["engine"],
                gpu=m["gpu"],
                model=m["model"],
                quant=m["quant"],
                phase=m["phase"],
                context_tokens=m["context_tokens"],
                tokens_per_s=tokens_per_s,
                use=m["use"],
                source=m["source"],
                bandwidth_bytes_s=None if bw is None else bw * 1e9,
                memory_type=m.get("memory_type"),
                batch=batch,
                count=m.get("count", 1),
                output_tokens=m.get("output_tokens", 0),
                latency_s=latency_s,
                setting=m.get("setting", ""),
            )
        )
    return tuple(out)
