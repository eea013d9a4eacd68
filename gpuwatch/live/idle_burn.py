"""Idle burn: over the recent window, how much of the time each GPU's engine produced no tokens, what the
card drew then and while serving, and the tokens and finished requests it produced.

A box that serves a fifth of the time still pays its capex, hosting and idle power the other four
fifths; $/1M tokens "while serving" hides that, "overall" does not (gpuwatch/live/pricing.py prices
both from this window). Serving vs idle is decided by the engines' generation counters, never guessed:
without an engine reading (no ``--engine``, or it is down) the interval is not counted, and with no
counted interval the figures are unknown.

Each poll closes the interval since the previous one and charges it to the state seen at its end (a
poll every ``interval_s``: the error is one interval at each change). An interval longer than
:data:`MAX_INTERVAL_S` (a paused replay, a suspended host) counts as that long.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

#: the recent window the idle share and the window means are taken over (simulated or replayed time
#: runs on the source's clock)
IDLE_WINDOW_S = 900.0
#: one poll interval is charged at most this long
MAX_INTERVAL_S = 60.0


@dataclass(frozen=True)
class BurnWindow:
    """One GPU over the recent window; each figure None where the window has nothing to say."""

    window_s: float  # the time actually counted (up to IDLE_WINDOW_S)
    idle_ratio: float | None  # share of the counted time with no tokens generated
    idle_power_w: float | None  # mean board power while idle
    serving_power_w: float | None  # mean board power while generating
    serving_tokens_per_s: float | None  # mean tokens/s while generating
    tokens_per_s: float | None  # mean over the whole counted time
    power_w: float | None  # mean over the whole counted time
    requests_per_s: float | None  # finished requests, mean over the counted time


@dataclass(frozen=True)
class _Interval:
    end_s: float
    dt_s: float
    serving: bool
    power_w: float | None
    tokens_per_s: float
    requests_per_s: float | None


class IdleTracker:
    """Feed it every poll of one source, in order; ``update`` returns the GPU's window so far."""

    def __init__(self, window_s: float = IDLE_WINDOW_S) -> None:
        self.window_s = window_s
        self._last_s: dict[int, float] = {}
        self._intervals: dict[int, deque[_Interval]] = {}

    def update(
        self,
        index: int,
        now_s: float,
        tokens_per_s: float | None,
        power_w: float | None,
        requests_per_s: float | None = None,
    ) -> BurnWindow | None:
        """``tokens_per_s``: the engines' generation rate on this GPU (None: no engine reading, so the
        interval is not counted); ``power_w`` the board power over it."""
        last = self._last_s.get(index)
        self._last_s[index] = now_s
        intervals = self._intervals.setdefault(index, deque())
        if last is not None and now_s > last and tokens_per_s is not None:
            dt = min(now_s - last, MAX_INTERVAL_S)
            intervals.append(_Interval(now_s, dt, tokens_per_s > 0, power_w, tokens_per_s, requests_per_s))
        elif last is not None and now_s < last:  # the source's clock went back (a new replay): start over
            intervals.clear()
        while intervals and intervals[0].end_s <= now_s - self.window_s:
            intervals.popleft()
        return summarise(intervals)


def _mean(pairs: list[tuple[float, float | None]]) -> float | None:
    known = [(dt, v) for dt, v in pairs if v is not None]
    total = sum(dt for dt, _ in known)
    return sum(dt * v for dt, v in known) / total if total > 0 else None


def summarise(intervals: deque[_Interval] | list[_Interval]) -> BurnWindow | None:
    total = sum(i.dt_s for i in intervals)
    if total <= 0:
        return None
    serving = [i for i in intervals if i.serving]
    idle = [i for i in intervals if not i.serving]
    serving_s = sum(i.dt_s for i in serving)
    tokens = sum(i.dt_s * i.tokens_per_s for i in intervals)
    with_requests = [i for i in intervals if i.requests_per_s is not None]
    return BurnWindow(
        window_s=total,
        idle_ratio=sum(i.dt_s for i in idle) / total,
        idle_power_w=_mean([(i.dt_s, i.power_w) for i in idle]),
        serving_power_w=_mean([(i.dt_s, i.power_w) for i in serving]),
        serving_tokens_per_s=tokens / serving_s if serving_s > 0 else None,
        tokens_per_s=tokens / total,
        power_w=_mean([(i.dt_s, i.power_w) for i in intervals]),
        requests_per_s=_mean([(i.dt_s, i.requests_per_s) for i in with_requests]),
    )
