"""Bring a recorded snapshot up to today's sample contract: catalog identity and read times.

Why: recordings made before ``GpuSample.catalog_id`` / ``read_timestamp_s`` existed read back with
their defaults (None / 0.0); without this a replayed card would be "not in the catalog" and every
reading "never read". Identity comes from the same matcher live telemetry uses
(``model.catalog.identify_gpu``), so a replay and a live run agree on the card.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

from gpuwatch.model.catalog import identify_gpu
from gpuwatch.telemetry.sample import GpuSample, Snapshot


@lru_cache(maxsize=256)
def _catalog_id(pci_device_id: int | None, name: str) -> str | None:
    spec = identify_gpu(pci_device_id, name)  # an unknown name costs a close-match search: once
    return spec.id if spec is not None else None


def _upgraded(gpu: GpuSample, timestamp_s: float) -> GpuSample:
    changes: dict[str, object] = {}
    if gpu.catalog_id is None:
        catalog_id = _catalog_id(gpu.pci_device_id, gpu.name)
        if catalog_id is not None:
            changes["catalog_id"] = catalog_id
    if gpu.read_timestamp_s <= 0 and not gpu.stale and not gpu.lost:
        changes["read_timestamp_s"] = timestamp_s  # older files: read at poll time
    return replace(gpu, **changes) if changes else gpu  # type: ignore[arg-type]


def upgrade_snapshot(snap: Snapshot) -> Snapshot:
    """``snap`` with catalog ids and read times filled in where an older recording lacks them."""
    gpus = tuple(_upgraded(g, snap.timestamp_s) for g in snap.gpus)
    if all(a is b for a, b in zip(gpus, snap.gpus, strict=True)):
        return snap
    return replace(snap, gpus=gpus)
