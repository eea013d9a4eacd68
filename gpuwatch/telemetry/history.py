"""Bounded per-GPU history of every numeric reading, for sparklines and counter rates.

Numpy ring buffers (one 2-D block per GPU) so appending is O(readings) with no allocation, and a
15-minute window at 1 Hz costs ~900 x 60 floats per GPU. Absent readings are NaN; a gap (child
restart, GPU lost) is a NaN row, so rates never span it.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np

from gpuwatch.telemetry.sample import GpmSample, GpuSample, Snapshot

DEFAULT_CAPACITY = 900  # 15 min at 1 Hz

_NOT_SCALAR = {
    "index",
    "uuid",
    "name",
    "pci_bus_id",
    "pci_device_id",
    "catalog_id",
    "vbios_version",
    "compute_capability",
    "clock_event_seconds_total",
    "xid_errors_by_code",
    "processes",
    "gpm",
    "unavailable",
}
#: keys of GpuSample.clock_event_seconds_total, recorded as "clock_event_seconds_total.<key>"
VIOLATION_KEYS = ("sw_power_cap", "sync_boost", "sw_thermal", "hw_thermal", "hw_power_brake")

#: every reading History keeps: GpuSample scalars, "gpm.<field>", "clock_event_seconds_total.<key>"
READINGS: tuple[str, ...] = (
    *(f.name for f in dataclasses.fields(GpuSample) if f.name not in _NOT_SCALAR),
    "processes_count",
    *(f"gpm.{f.name}" for f in dataclasses.fields(GpmSample)),
    *(f"clock_event_seconds_total.{k}" for k in VIOLATION_KEYS),
)
_ROW = {name: i for i, name in enumerate(READINGS)}


def _row_values(gpu: GpuSample) -> np.ndarray:
    out = np.full(len(READINGS), np.nan)
    out[_ROW["lost"]] = 1.0 if gpu.lost else 0.0
    if gpu.lost:
        return out
    for name, i in _ROW.items():
        if "." in name or name in ("lost", "processes_count"):
            continue
        value = getattr(gpu, name)
        if value is not None:
            out[i] = float(value)
    if gpu.processes is not None:
        out[_ROW["processes_count"]] = len(gpu.processes)
    if gpu.gpm is not None:
        for f in dataclasses.fields(GpmSample):
            value = getattr(gpu.gpm, f.name)
            if value is not None:
                out[_ROW[f"gpm.{f.name}"]] = float(value)
    for key, seconds in gpu.clock_event_seconds_total.items():
        slot = _ROW.get(f"clock_event_seconds_total.{key}")
        if slot is not None:
            out[slot] = float(seconds)
    return out


class _Ring:
    def __init__(self, capacity: int) -> None:
        self.timestamps = np.full(capacity, np.nan)
        self.values = np.full((len(READINGS), capacity), np.nan)
        self.head = 0  # next slot to write
        self.count = 0

    def append(self, ts: float, row: np.ndarray) -> None:
        self.timestamps[self.head] = ts
        self.values[:, self.head] = row
        self.head = (self.head + 1) % self.timestamps.size
        self.count = min(self.count + 1, self.timestamps.size)

    def order(self) -> np.ndarray:
        cap = self.timestamps.size
        return (np.arange(self.head - self.count, self.head) % cap).astype(int)


class History:
    """Bounded ring buffers per (GPU index, reading name); thread-safe (one writer, many readers)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 2:
            raise ValueError(f"history capacity must be at least 2 points, got {capacity}")
        self.capacity = capacity
        self._rings: dict[int, _Ring] = {}
        self._lock = threading.Lock()

    def append(self, snapshot: Snapshot) -> None:
        with self._lock:
            for gpu in snapshot.gpus:
                ring = self._rings.get(gpu.index)
                if ring is None:
                    ring = self._rings[gpu.index] = _Ring(self.capacity)
                ring.append(snapshot.timestamp_s, _row_values(gpu))

    def mark_gap(self, timestamp_s: float) -> None:
        """A NaN row for every GPU: the data before and after are not one continuous run."""
        with self._lock:
            for ring in self._rings.values():
                ring.append(timestamp_s, np.full(len(READINGS), np.nan))

    def gpu_indices(self) -> tuple[int, ...]:
        with self._lock:
            return tuple(sorted(self._rings))

    def series(self, gpu_index: int, reading: str) -> tuple[np.ndarray, np.ndarray]:
        """(timestamps_s, values) oldest first, copies; NaN where the reading was absent."""
        row = _ROW.get(reading)
        if row is None:
            raise KeyError(f"unknown reading {reading!r}; known: {', '.join(READINGS)}")
        with self._lock:
            ring = self._rings.get(gpu_index)
            if ring is None:
                return np.empty(0), np.empty(0)
            idx = ring.order()
            return ring.timestamps[idx].copy(), ring.values[row, idx].copy()

    def rate(self, gpu_index: int, reading: str, window_s: float) -> float | None:
        """d(counter)/dt over the last ``window_s`` (e.g. energy_j -> W), None without two points.

        Uses only the latest unbroken run (after the last NaN or counter reset), so a gap or a
        driver reload never yields a negative or spanning rate.
        """
        ts, values = self.series(gpu_index, reading)
        if ts.size < 2:
            return None
        broken = ~np.isfinite(values) | ~np.isfinite(ts)
        broken[1:] |= np.diff(values) < 0
        starts = np.flatnonzero(broken)
        first = 0
        if starts.size:
            last = int(starts[-1])
            # a NaN row is outside the run; a counter reset (value dropped) starts the new run
            first = last + 1 if not np.isfinite(values[last]) else last
        ts, values = ts[first:], values[first:]
        if ts.size < 2:
            return None
        in_window = ts >= ts[-1] - window_s
        ts, values = ts[in_window], values[in_window]
        if ts.size < 2 or ts[-1] <= ts[0]:
            return None
        return float((values[-1] - values[0]) / (ts[-1] - ts[0]))
