"""How old a GPU's reading may be and still count as current, and what a stale one looks like.

Why here: the in-process poller (one hung card) and the child supervisor (a wedged child) both decide
staleness, and the faces only read ``GpuSample.stale``: one bound, one shape. A stale sample keeps its
identity, ``read_timestamp_s`` (when it last succeeded) and Xid counts (delivered by the event thread,
still true), and drops every reading to ``Unavailable.STALE``: an old value is never passed off as
current.
"""

from __future__ import annotations

from dataclasses import MISSING, fields, replace
from typing import Any

from gpuwatch.telemetry.sample import READING_NAMES, GpuSample, Unavailable

#: a reading older than this many poll intervals is stale ...
STALE_AFTER_INTERVALS = 3
#: ... and never sooner than this (a 0.1 s poll must not flap on one slow NVML call)
STALE_AFTER_MIN_S = 5.0

#: readings a stale sample keeps: the Xid counts come from the event thread, not from the hung read
_KEPT = frozenset({"xid_errors_total", "last_xid", "xid_errors_by_code"})


def stale_after_s(interval_s: float) -> float:
    """The freshness bound for a poll interval: 3 intervals, at least 5 s."""
    return max(STALE_AFTER_INTERVALS * interval_s, STALE_AFTER_MIN_S)


def _defaults() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(GpuSample):
        if f.name in READING_NAMES and f.name not in _KEPT:
            factory: Any = f.default_factory
            out[f.name] = factory() if f.default is MISSING else f.default
    return out


_READING_DEFAULTS = _defaults()


def stale_sample(sample: GpuSample) -> GpuSample:
    """``sample`` with its readings dropped and ``stale`` set (idempotent)."""
    if sample.stale and all(r is Unavailable.STALE for r in sample.unavailable.values()):
        return sample
    unavailable = dict.fromkeys(READING_NAMES, Unavailable.STALE)
    if sample.lost:
        unavailable = dict.fromkeys(READING_NAMES, Unavailable.GPU_LOST)
    return replace(sample, stale=True, unavailable=unavailable, **_READING_DEFAULTS)


def is_stale(sample: GpuSample, now_s: float, bound_s: float) -> bool:
    """Never read, or last read more than ``bound_s`` before ``now_s`` (same clock)."""
    return sample.read_timestamp_s <= 0 or now_s - sample.read_timestamp_s > bound_s
