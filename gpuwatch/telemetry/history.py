"""Bounded per-GPU history of every numeric reading, for sparklines and counter rates.

Ring buffers of C doubles (``array('d')``, one slot-major block per GPU) so appending is one slice
copy with no allocation and no numpy (the exporter and the TUI run without it), and a 15-minute window
at 1 Hz costs ~900 x 60 floats per GPU. Absent readings are NaN; a gap (child restart, GPU lost) is a
NaN row, so rates never span it.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from array import array
from typing import TYPE_CHECKING

from gpuwatch.telemetry.sample import GpmSample, GpuSample, Snapshot

if TYPE_CHECKING:
    import numpy as np

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


_WIDTH = len(READINGS)
_NAN_ROW = array("d", [math.nan]) * _WIDTH


def _row_values(gpu: GpuSample) -> array[float]:
    out = array("d", _NAN_ROW)
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
    """``capacity`` slots of one timestamp and one row of READINGS each (slot-major)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.timestamps = array("d", [math.nan]) * capacity
        self.values = _NAN_ROW * capacity
        self.head = 0  # next slot to write
        self.count = 0
        self.appended = 0  # rows ever appended: a row's position p is its slot p % capacity
        #: reading row -> [positions scanned up to, latest run's first position, latest timestamp drop]
        self._runs: dict[int, list[int]] = {}

    def append(self, ts: float, row: array[float]) -> None:
        self.timestamps[self.head] = ts
        self.values[self.head * _WIDTH : (self.head + 1) * _WIDTH] = row
        self.head = (self.head + 1) % self.capacity
        self.count = min(self.count + 1, self.capacity)
        self.appended += 1

    def run(self, row: int) -> tuple[int, bool]:
        """Where the latest unbroken run of a reading starts (oldest-first index) and whether its
        timestamps never decrease. A break is a NaN/inf value (the run starts after it), a NaN/inf
        timestamp or a value below its predecessor (a counter reset: the run starts at it); the oldest
        point has no predecessor. Only the rows appended since the last call are scanned: a counter's
        rate every poll costs O(1), not O(capacity)."""
        isfinite = math.isfinite
        cap, ts, values = self.capacity, self.timestamps, self.values
        oldest = self.appended - self.count
        state = self._runs.setdefault(row, [oldest, oldest, oldest])
        for p in range(max(state[0], oldest), self.appended):
            slot = p % cap
            t, v = ts[slot], values[slot * _WIDTH + row]
            has_prev = p > oldest
            if has_prev:
                prev = (p - 1) % cap
                if not t >= ts[prev]:
                    state[2] = p
            if not isfinite(v) or not isfinite(t):
                state[1] = p + 1 if not isfinite(v) else p
            elif has_prev and v - values[prev * _WIDTH + row] < 0:
                state[1] = p
        state[0] = self.appended
        first = max(0, state[1] - oldest)
        return first, state[2] <= oldest + first

    def rate(self, row: int, window_s: float) -> float | None:
        """(newest - first value) / (newest - first time) over the latest run's points within
        ``window_s`` of the newest timestamp; read in place (no copy of the ring)."""
        first, ordered = self.run(row)
        n = self.count
        if n - first < 2:
            return None
        cap, ts, oldest = self.capacity, self.timestamps, self.appended - n
        threshold = ts[(oldest + n - 1) % cap] - window_s
        start: int | None
        end: int | None
        if ordered:  # the window is a suffix of the run: bisect for its first point
            lo, hi = first, n
            while lo < hi:
                mid = (lo + hi) // 2
                if ts[(oldest + mid) % cap] < threshold:
                    lo = mid + 1
                else:
                    hi = mid
            start, end = lo, n - 1
            if start >= n or not ts[(oldest + start) % cap] >= threshold:
                return None
        else:  # a clock that went back inside the run: every point is tested
            start = next((i for i in range(first, n) if ts[(oldest + i) % cap] >= threshold), None)
            end = next((i for i in range(n - 1, first - 1, -1) if ts[(oldest + i) % cap] >= threshold), None)
            if start is None or end is None:
                return None
        s0, s1 = (oldest + start) % cap, (oldest + end) % cap
        if start == end or not ts[s1] > ts[s0]:
            return None
        values = self.values
        return float((values[s1 * _WIDTH + row] - values[s0 * _WIDTH + row]) / (ts[s1] - ts[s0]))

    def recent(self, row: int, points: int) -> list[float]:
        """The finite values of a reading among the newest ``points`` rows, oldest first (read in place:
        O(points), not O(capacity))."""
        isfinite, cap, values = math.isfinite, self.capacity, self.values
        out = []
        for p in range(self.appended - min(max(points, 0), self.count), self.appended):
            v = values[(p % cap) * _WIDTH + row]
            if isfinite(v):
                out.append(v)
        return out

    def _chronological(self, slots: array[float]) -> list[float]:
        if self.count < self.capacity:  # not wrapped yet: slots 0 .. count-1
            return slots[: self.count].tolist()
        return slots[self.head :].tolist() + slots[: self.head].tolist()

    def series(self, row: int) -> tuple[list[float], list[float]]:
        return self._chronological(self.timestamps), self._chronological(self.values[row::_WIDTH])


def _row(reading: str) -> int:
    """The ring row of ``reading``; KeyError naming the known ones for a typo."""
    row = _ROW.get(reading)
    if row is None:
        raise KeyError(f"unknown reading {reading!r}; known: {', '.join(READINGS)}")
    return row


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
                ring.append(timestamp_s, _NAN_ROW)

    def gpu_indices(self) -> tuple[int, ...]:
        with self._lock:
            return tuple(sorted(self._rings))

    def points(self, gpu_index: int, reading: str) -> tuple[list[float], list[float]]:
        """(timestamps_s, values) oldest first, as plain lists (copies); NaN where the reading was absent."""
        row = _row(reading)
        with self._lock:
            ring = self._rings.get(gpu_index)
            if ring is None:
                return [], []
            return ring.series(row)

    def recent(self, gpu_index: int, reading: str, points: int) -> list[float]:
        """The known (finite) values among the last ``points`` entries, oldest first: a sparkline's
        points, or what a recent mean is taken over."""
        row = _row(reading)
        with self._lock:
            ring = self._rings.get(gpu_index)
            return [] if ring is None else ring.recent(row, points)

    def series(self, gpu_index: int, reading: str) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`points` as numpy arrays, for analysis callers (imports numpy; the faces use
        :meth:`points` and :meth:`recent`)."""
        import numpy as np

        ts, values = self.points(gpu_index, reading)
        return np.asarray(ts, dtype=float), np.asarray(values, dtype=float)

    def rate(self, gpu_index: int, reading: str, window_s: float) -> float | None:
        """d(counter)/dt over the last ``window_s`` (e.g. energy_j -> W), None without two points.

        Uses only the latest unbroken run (after the last NaN or counter reset), so a gap or a
        driver reload never yields a negative or spanning rate.
        """
        row = _row(reading)
        with self._lock:
            ring = self._rings.get(gpu_index)
            if ring is None:
                return None
            return ring.rate(row, window_s)
