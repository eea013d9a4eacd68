"""The most generated tokens/s the cards in a snapshot could produce: engines claiming more are lying.

Each generated token costs at least 2 FLOPs per active parameter (one multiply-add per weight), so a
box cannot generate more than (sum of the cards' highest dense peak) / (2 x active params) tokens/s.
With no declared workload the smallest model worth serving (``MIN_ACTIVE_PARAMS``) stands in. The
margin keeps speculative decoding and catalog error from ever tripping it: only garbage does.
"""

from __future__ import annotations

from gpuwatch.model.catalog import get_gpu
from gpuwatch.model.errors import UnknownIdError
from gpuwatch.telemetry.sample import Snapshot

#: GPT-2 small has 124 M parameters; nothing served for money is much smaller
MIN_ACTIVE_PARAMS = 1e8
#: "by a wide margin": 4x the compute roof
MARGIN = 4.0


def _peak_flops(catalog_id: str) -> float | None:
    try:
        peaks = get_gpu(catalog_id).peak_flops
    except UnknownIdError:
        return None
    return max(peaks.values()) if peaks else None


def ceiling_tokens_per_s(snap: Snapshot, active_params: float | None) -> float | None:
    """The generation-rate ceiling for the box, or None when a card is not in the catalog (then the
    engine watcher's absolute bound stands)."""
    peak = 0.0
    for sample in snap.gpus:
        card = _peak_flops(sample.catalog_id) if sample.catalog_id else None
        if card is None or card <= 0:
            return None
        peak += card
    params = max(active_params or MIN_ACTIVE_PARAMS, 1.0)
    return MARGIN * peak / (2.0 * params)
