"""Bring a recorded snapshot up to today's sample contract: the card's catalog identity.

Why: recordings made before ``GpuSample.catalog_id`` existed read back with None; without this a
replayed card would be "not in the catalog". Identity comes from the same matcher live telemetry uses
(``model.catalog.identify_gpu``), so a replay and a live run agree on the card. (An older file's
``read_timestamp_s`` stays 0.0, "unknown"; its samples are not stale, so they count as read at poll time.)
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


def _upgraded(gpu: GpuSample) -> GpuSample:
    if gpu.catalog_id is not None:
        return gpu
    catalog_id = _catalog_id(gpu.pci_device_id, gpu.name)
    return gpu if catalog_id is None else replace(gpu, catalog_id=catalog_id)


def upgrade_snapshot(snap: Snapshot) -> Snapshot:
    """``snap`` with catalog ids filled in where an older recording lacks them."""
    gpus = tuple(_upgraded(g) for g in snap.gpus)
    if all(a is b for a, b in zip(gpus, snap.gpus, strict=True)):
        return snap
    return replace(snap, gpus=gpus)
