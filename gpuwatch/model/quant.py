"""Quantisation formats with their true bytes per parameter, scales and zero-points included.

CONTRACT: QuantFormat field names are fixed; add, do not rename.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QuantFormat:
    id: str  # "fp16", "int4-awq", "q4_K_M", ...
    bits_per_param: float  # effective, including scales/zero-points/super-block metadata
    compute_dtype: str  # catalog peak_flops key the matmuls run at ("fp16", "fp8", "int8", "fp32")
    source: str = ""

    @property
    def bytes_per_param(self) -> float:
        return self.bits_per_param / 8
