"""Human-readable figures for the TUI: SI units, gauges, and "n/a" for a reading the card did not give.

Every function takes ``None`` and returns a placeholder, because a missing reading must look missing,
never like zero.
"""

from __future__ import annotations

import math

from rich.text import Text

MISSING = "n/a"

_SI = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def si(value: float | None, unit: str, *, digits: int = 3) -> str:
    """``812e9, "B/s"`` -> ``"812 GB/s"``; three significant figures keep the columns narrow."""
    if value is None or not math.isfinite(value):
        return MISSING
    magnitude = abs(value)
    for scale, prefix in _SI:
        if magnitude >= scale:
            return f"{_sig(value / scale, digits)} {prefix}{unit}"
    return f"{_sig(value, digits)} {unit}"


def _sig(value: float, digits: int) -> str:
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def gib(value_bytes: float | None) -> str:
    if value_bytes is None:
        return MISSING
    return f"{value_bytes / 2**30:.1f}"


def percent(ratio: float | None) -> str:
    if ratio is None or not math.isfinite(ratio):
        return MISSING
    return f"{ratio * 100:.0f}%"


def mhz(value_hz: float | None) -> str:
    if value_hz is None:
        return MISSING
    return f"{value_hz / 1e6:.0f}"


def usd(value: float | None, *, digits: int = 2) -> str:
    """Dollars with enough decimals that a cheap figure ($0.004) is not shown as $0.00."""
    if value is None or not math.isfinite(value):
        return MISSING
    if value != 0 and abs(value) < 0.1:
        return f"${value:.{digits + 1}f}" if abs(value) >= 0.01 else f"${value:.2g}"
    if abs(value) >= 10_000:
        return f"${value:,.0f}"
    if abs(value) >= 10:  # "$17.00", not "$17.000": the third decimal only matters below $10
        digits = min(digits, 2)
    return f"${value:,.{digits}f}"


def rate(value: float | None, unit: str = "tok/s") -> str:
    if value is None or not math.isfinite(value):
        return MISSING
    if value >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:.1f} {unit}"


def duration(seconds: float | None) -> str:
    """Seconds to the unit a person reads fastest: ms for latency, days for training runs."""
    if seconds is None or not math.isfinite(seconds):
        return MISSING
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def gauge_fill(ratio: float | None, width: int) -> tuple[int, int | None]:
    """A ``width``-cell gauge's full cells and its partial cell's eighths (None without one): all its bar
    depends on, so that a line can tell whether its bar changed without drawing it."""
    width = max(1, width)
    filled = 0.0 if ratio is None or not math.isfinite(ratio) else max(0.0, min(1.0, ratio)) * width
    full = min(width, int(filled))
    return full, int((filled - full) * 8) if filled > full else None


def marker_cell(marker_ratio: float | None, width: int) -> int | None:
    """The cell of a gauge's ``┃`` marker, or None without one."""
    if marker_ratio is None or not math.isfinite(marker_ratio):
        return None
    width = max(1, width)
    return min(width - 1, max(0, round(marker_ratio * width)))


_PARTIALS = " ▏▎▍▌▋▊▉"


def gauge(
    ratio: float | None,
    width: int,
    *,
    style: str = "green",
    marker_ratio: float | None = None,
    marker_style: str = "bold red",
) -> Text:
    """A one-line bar ``████▌···`` of ``width`` cells; ``marker_ratio`` draws ``┃`` (the slowdown point)."""
    width = max(1, width)
    full, part = gauge_fill(ratio, width)
    cells: list[tuple[str, str]] = [("█", style)] * full
    if part is not None:
        cells.append((_PARTIALS[part], style))
    cells.extend([("·", "grey37")] * (width - len(cells)))
    at = marker_cell(marker_ratio, width)
    if at is not None:
        cells[at] = ("┃", marker_style)
    # one span per run of a style, not per cell: every span is styled again on every repaint
    text = Text()
    run_start = 0
    for i in range(1, width + 1):
        if i == width or cells[i][1] != cells[run_start][1]:
            text.append("".join(char for char, _ in cells[run_start:i]), style=cells[run_start][1])
            run_start = i
    return text


def load_style(ratio: float | None) -> str:
    """Colour for how close a reading is to its limit."""
    if ratio is None:
        return "grey50"
    if ratio >= 0.95:
        return "red"
    if ratio >= 0.8:
        return "yellow"
    return "green"
