"""The most generated tokens/s the cards in a snapshot could produce: engines claiming more are lying.

Each generated token costs at least 2 FLOPs per active parameter (one multiply-add per weight), so a
box cannot generate more than (sum of the cards' highest dense peak) / (2 x active params) tokens/s.
With no declared workload the smallest model worth serving (``MIN_ACTIVE_PARAMS``) stands in. The
margin keeps speculative decoding and catalog error from ever tripping it: only garbage does.
"""

from __future__ import annotations

from collections.abc import Callable

from gpuwatch.model.catalog import GpuSpec
from gpuwatch.telemetry.sample import Snapshot

#: GPT-2 small has 124 M parameters; nothing served for money is much smaller
MIN_ACTIVE_PARAMS = 1e8
#: "by a wide margin": 4x the compute roof
MARGIN = 4.0


def ceiling_tokens_per_s(
    snap: Snapshot, spec_of: Callable[..., GpuSpec | None], active_params: float | None
) -> float | None:
    """The generation-rate ceiling for the box, or None when a card is not in the catalog."""
    peak = 0.0
    for sample in snap.gpus:
        spec = spec_of(sample)
        if spec is None or not spec.peak_flops:
            return None
        peak += max(spec.peak_flops.values())
    if peak <= 0:
        return None
    params = max(active_params or MIN_ACTIVE_PARAMS, 1.0)
    return MARGIN * peak / (2.0 * params)
