"""Engine profiles: the share of the datasheet a serving engine really reaches.

Real engines do not decode at spec bandwidth: the share differs between GDDR and HBM parts and
between engines, and each layer costs a fixed time per token (kernel launches, synchronisation).
Prefill reaches a fraction of the tensor peak of the accumulate mode the engine's GEMMs use; on
GeForce the fp16-accumulate ceiling is twice the fp32-accumulate one. Parameters and the published
measurements they were fitted on live in data/engine_profiles.toml, with their sources.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from gpuwatch.model.catalog import GpuSpec
from gpuwatch.model.errors import UnknownIdError

DEFAULT_ENGINE = "vllm"
ENGINE_NAMES = ("llama.cpp", "vllm", "tensorrt-llm")
_ALIASES = {
    "llamacpp": "llama.cpp",
    "llama-cpp": "llama.cpp",
    "trt-llm": "tensorrt-llm",
    "trtllm": "tensorrt-llm",
}


def is_hbm(memory_type: str) -> bool:
    return memory_type.upper().startswith("HBM")


@dataclass(frozen=True)
class EngineProfile:
    name: str
    status: str  # "fitted" | "assumed"
    hbm_bandwidth_ratio: float  # effective / spec DRAM bandwidth in decode, HBM parts
    gddr_bandwidth_ratio: float  # same, GDDR parts
    per_layer_overhead_s: float  # fixed cost per layer per decode step
    fp16_accumulate: bool  # fp16 GEMMs accumulate in fp16 (GeForce full-rate "fp16acc" ceiling)
    hbm_prefill_peak_ratio: float  # fraction of the tensor ceiling reached in prefill, HBM parts
    gddr_prefill_peak_ratio: float
    source: str

    def bandwidth_ratio(self, memory_type: str) -> float:
        return self.hbm_bandwidth_ratio if is_hbm(memory_type) else self.gddr_bandwidth_ratio

    def prefill_peak_ratio(self, memory_type: str) -> float:
        return self.hbm_prefill_peak_ratio if is_hbm(memory_type) else self.gddr_prefill_peak_ratio

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
    phase: str  # "decode" | "prefill"
    context_tokens: int
    tokens_per_s: float
    use: str  # "fit" | "holdout"
    source: str
    bandwidth_bytes_s: float | None = None
    memory_type: str | None = None
    batch: int = 1


@cache
def _data() -> dict[str, Any]:
    text = resources.files("gpuwatch.model").joinpath("data/engine_profiles.toml").read_text("utf-8")
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
        out.append(
            Measurement(
                engine=m["engine"],
                gpu=m["gpu"],
                model=m["model"],
                quant=m["quant"],
                phase=m["phase"],
                context_tokens=m["context_tokens"],
                tokens_per_s=m["tokens_per_s"],
                use=m["use"],
                source=m["source"],
                bandwidth_bytes_s=None if bw is None else bw * 1e9,
                memory_type=m.get("memory_type"),
                batch=m.get("batch", 1),
            )
        )
    return tuple(out)
