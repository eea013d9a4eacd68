"""The serving engines' memory-budget settings (:class:`EngineKnobs`) and their defaults.

Apart from gpuwatch/model/engine_memory.py, which turns them into a budget, because the option registry
reads these defaults at every start and the budget arithmetic (with the model and quantisation catalogs
it needs) is only for a planner that asks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpuwatch.model.errors import ModelInputError

#: vLLM's default max_num_seqs and block size (EngineArgs)
VLLM_MAX_NUM_SEQS = 256
VLLM_BLOCK_SIZE = 16
LLAMACPP_N_UBATCH = 512
#: SGLang's default mem_fraction_static for a single large card (server_args picks 0.79-0.88 by GPU memory
#: and TP size; give yours)
SGLANG_MEM_FRACTION_STATIC = 0.88
#: TensorRT-LLM KvCacheConfig.free_gpu_memory_fraction default
TRTLLM_FREE_GPU_MEMORY_FRACTION = 0.9


@dataclass(frozen=True)
class EngineKnobs:
    """The engine settings that decide its memory budget. ``None`` takes the engine's default."""

    gpu_memory_utilization: float = 0.9  # vLLM
    max_num_batched_tokens: int | None = None  # vLLM (also TensorRT-LLM's max_num_tokens)
    max_num_seqs: int = VLLM_MAX_NUM_SEQS  # vLLM, SGLang max_running_requests
    cuda_graphs: bool = True  # vLLM: False = --enforce-eager
    block_size: int = VLLM_BLOCK_SIZE  # vLLM
    n_ctx: int | None = None  # llama.cpp: None = context_tokens x n_parallel
    n_parallel: int = 1  # llama.cpp server -np
    n_ubatch: int = LLAMACPP_N_UBATCH  # llama.cpp
    n_gpu_layers: int | None = None  # llama.cpp -ngl: None = all (model layers + output)
    flash_attention: bool = True  # llama.cpp -fa
    mem_fraction_static: float = SGLANG_MEM_FRACTION_STATIC  # SGLang
    free_gpu_memory_fraction: float = TRTLLM_FREE_GPU_MEMORY_FRACTION  # TensorRT-LLM

    def __post_init__(self) -> None:
        for name in ("gpu_memory_utilization", "mem_fraction_static", "free_gpu_memory_fraction"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 < value <= 1):
                raise ModelInputError(f"{name} must be in (0, 1], got {value}")
        for name in ("max_num_seqs", "block_size", "n_parallel", "n_ubatch"):
            if getattr(self, name) < 1:
                raise ModelInputError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_num_batched_tokens", "n_ctx"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ModelInputError(f"{name} must be >= 1, got {value}")
        if self.n_gpu_layers is not None and self.n_gpu_layers < 0:
            raise ModelInputError(f"n_gpu_layers must be >= 0, got {self.n_gpu_layers}")
