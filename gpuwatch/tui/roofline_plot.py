"""The roofline as text: log-log axes, the bandwidth slope, one compute roof per dtype, the workload's trail.

A pure function of its inputs (so a test can read the picture) wrapped in a widget that redraws at
whatever size it is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from gpuwatch.tui.braille import BrailleCanvas
from gpuwatch.tui.formatting import si


@dataclass(frozen=True)
class Roof:
    """One compute ceiling; dtypes with the same peak share a roof and a label (``fp16/bf16``)."""

    label: str
    peak_flops: float


@dataclass(frozen=True)
class RooflinePicture:
    bandwidth_bytes_s: float
    roofs: tuple[Roof, ...]
    workload_dtype: str | None = None
    current_peak_flops: float | None = None  # the clock-scaled roof while throttled
    trail: tuple[tuple[float, float], ...] = ()  # (FLOP/byte, FLOP/s), oldest first; the last is "now"


def merge_roofs(peaks: Sequence[tuple[str, float]]) -> tuple[Roof, ...]:
    """Group dtypes by equal peak, highest roof first."""
    grouped: dict[float, list[str]] = {}
    for dtype, peak in peaks:
        grouped.setdefault(peak, []).append(dtype)
    return tuple(Roof("/".join(names), peak) for peak, names in sorted(grouped.items(), reverse=True))


_AXIS_WIDTH = 9  # "100 TF/s┤"

_ROOF_STYLES = ("bright_cyan", "cyan", "blue", "bright_blue", "magenta", "bright_magenta", "green")


def render_roofline(picture: RooflinePicture, width: int, height: int) -> Text:
    """The plot in ``width`` x ``height`` cells: a FLOP/s axis, the plot, a legend column naming each roof."""
    labels = [f" {roof.label} {si(roof.peak_flops, 'F', digits=3)}" for roof in picture.roofs]
    legend_w = min(max((len(label) for label in labels), default=0), max(0, width - _AXIS_WIDTH - 12))
    plot_w = max(8, width - _AXIS_WIDTH - legend_w)
    plot_h = max(4, height - 2)
    bw = picture.bandwidth_bytes_s
    top_peak = max((r.peak_flops for r in picture.roofs), default=bw)
    low_peak = min((r.peak_flops for r in picture.roofs), default=bw)
    points = [
        p for p in picture.trail if p[0] > 0 and p[1] > 0 and math.isfinite(p[0]) and math.isfinite(p[1])
    ]

    # x: from below the slowest point (decode sits near 1 FLOP/byte) to past the highest ridge
    x_lo = math.floor(math.log10(min([0.5, *[p[0] for p in points]])))
    x_hi = math.ceil(math.log10(max([top_peak / bw * 4, *[p[0] * 2 for p in points]])))
    y_hi = math.ceil(math.log10(top_peak * 1.2))
    y_lo = math.floor(math.log10(min([bw * 10**x_lo, low_peak / 10, *[p[1] for p in points]])))
    y_lo = max(y_lo, y_hi - max(2, plot_h // 3))  # at least 3 rows a decade so the roofs stay apart

    canvas = BrailleCanvas(plot_w, plot_h)

    def px(intensity: float) -> int:
        return round((math.log10(intensity) - x_lo) / (x_hi - x_lo) * (canvas.dot_width - 1))

    def py(flops: float) -> int:
        frac = (math.log10(max(flops, 1e-30)) - y_lo) / (y_hi - y_lo)
        return round((1 - frac) * (canvas.dot_height - 1))

    def intensity_at_dot(x: int) -> float:
        return 10 ** (x_lo + x / (canvas.dot_width - 1) * (x_hi - x_lo))

    # the bandwidth slope up to the highest ridge, then each roof from its ridge to the right edge
    slope_end = min(canvas.dot_width - 1, px(top_peak / bw))
    _curve(canvas, 0, slope_end, lambda x: py(bw * intensity_at_dot(x)), "yellow")
    legend: dict[int, tuple[str, str]] = {}
    for i, (roof, label) in enumerate(zip(picture.roofs, labels, strict=True)):
        is_workload = picture.workload_dtype is not None and picture.workload_dtype in roof.label.split("/")
        style = "bold bright_white" if is_workload else _ROOF_STYLES[i % len(_ROOF_STYLES)]
        y = py(roof.peak_flops)
        canvas.line(max(0, px(roof.peak_flops / bw)), y, canvas.dot_width - 1, y, style)
        row = y // 4
        for candidate in (row, row + 1, row - 1, row + 2, row - 2):  # nearest free legend row
            if 0 <= candidate < plot_h and candidate not in legend:
                legend[candidate] = (label[:legend_w], style)
                break

    if picture.current_peak_flops is not None and picture.current_peak_flops < top_peak * 0.98:
        y = py(picture.current_peak_flops)
        canvas.line(
            max(0, px(picture.current_peak_flops / bw)), y, canvas.dot_width - 1, y, "bold red", dash=2
        )

    for intensity, flops in points[:-1]:
        canvas.dot(px(intensity), py(flops), "yellow")
    if points:
        intensity, flops = points[-1]
        canvas.text(px(intensity) // 2, py(flops) // 4, "●", "bold bright_green")

    return _with_axes(canvas.render(), legend, legend_w, plot_w, plot_h, x_lo, x_hi, y_lo, y_hi)


def _curve(canvas: BrailleCanvas, x0: int, x1: int, y_of: Callable[[int], int], style: str) -> None:
    previous: tuple[int, int] | None = None
    for x in range(x0, x1 + 1):
        y = y_of(x)
        if previous is not None:
            canvas.line(previous[0], previous[1], x, y, style)
        previous = (x, y)


def _with_axes(
    plot: Text,
    legend: dict[int, tuple[str, str]],
    legend_w: int,
    plot_w: int,
    plot_h: int,
    x_lo: int,
    x_hi: int,
    y_lo: int,
    y_hi: int,
) -> Text:
    """Decade ticks on a left FLOP/s axis and a bottom FLOP/byte axis; the roof names on the right."""
    row_of_decade = {
        round((1 - (d - y_lo) / (y_hi - y_lo)) * (plot_h * 4 - 1)) // 4: d for d in range(y_lo, y_hi + 1)
    }
    out = Text()
    for row, line in enumerate(plot.split("\n")):
        decade = row_of_decade.get(row)
        if decade is not None:
            out.append(f"{si(10.0**decade, 'F/s', digits=1):>{_AXIS_WIDTH - 1}}┤", style="dim")
        else:
            out.append(" " * (_AXIS_WIDTH - 1) + "│", style="dim")
        out.append_text(line)
        label, style = legend.get(row, ("", ""))
        out.append(f"{label:<{legend_w}}", style=style)
        out.append("\n")
    axis = ["─"] * plot_w
    ticks = [" "] * plot_w
    for d in range(x_lo, x_hi + 1):
        col = round((d - x_lo) / (x_hi - x_lo) * (plot_w * 2 - 1)) // 2
        axis[col] = "┬"
        tick = f"{10.0**d:g}"
        start = max(0, min(plot_w - len(tick), col - len(tick) // 2))
        if all(c == " " for c in ticks[max(0, start - 1) : start + len(tick) + 1]):
            ticks[start : start + len(tick)] = list(tick)
    out.append(" " * (_AXIS_WIDTH - 1) + "└" + "".join(axis) + "\n", style="dim")
    out.append(f"{'FLOP/B':<{_AXIS_WIDTH}}" + "".join(ticks), style="dim")
    return out


class RooflinePlot(Widget):
    """Draws the current RooflinePicture at the widget's size; None shows a one-line reason instead."""

    picture: reactive[RooflinePicture | None] = reactive(None)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.reason = "waiting for the first poll"

    def render(self) -> Text:
        if self.picture is None:
            return Text(self.reason, style="dim italic")
        return render_roofline(self.picture, self.content_size.width, self.content_size.height)
