"""What one GPU's card shows: its readings against their limits, badges and sparklines, line by line.

Each line comes with a key (the strings and gauge cells it shows), so that a poll draws only the lines
whose key moved (drawing every line's rich ``Text`` each second was most of a poll's UI work);
``card_grid`` draws the cards. Three layouts, chosen by the live view from the terminal's size: ``full``
(a bordered card with gauges and sparklines), ``two`` and ``one`` (one or two lines per GPU, as nvitop
does, so that eight GPUs fit 80x24).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Literal

from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text

from gpuwatch.live.assessment import GpuAssessment, Provenance
from gpuwatch.telemetry.sample import GpuSample
from gpuwatch.tui.first_frame import WAITING
from gpuwatch.tui.formatting import MISSING, gauge, gauge_fill, gib, load_style, marker_cell, mhz, percent, si
from gpuwatch.tui.gpu_names import short_name
from gpuwatch.tui.throttle import ThrottleBadge, badges_for, xid_badge

#: sparkline name -> label; "bandwidth" comes from the assessments, the rest from History
SPARKLINES: dict[str, str] = {"temperature": "temp", "power": "pwr", "bandwidth": "bw", "clock": "clk"}
_SPARK_STYLE = {"temperature": "red", "power": "yellow", "bandwidth": "magenta", "clock": "cyan"}
_SPARK_CHARS = "▁▂▃▄▅▆▇█"

_LABEL_WIDTH = 8
_MAX_BAR = 30

Layout = Literal["full", "two", "one"]
#: lines of a full card's content (its border adds two)
FULL_LINES = 12
FULL_HEIGHT = FULL_LINES + 2

_BADGE_STYLE = {
    "critical": "bold white on red",
    "warning": "bold black on yellow",
    "info": "bold white on blue",
}


@dataclass(frozen=True)
class CardReading:
    """What one poll gives a card: its sample, its assessment and the series its sparklines draw."""

    sample: GpuSample
    assessment: GpuAssessment | None = None
    series: Mapping[str, tuple[float, ...]] = field(default_factory=dict)


def _line(label: str, value: str | Text, width: int, bar: Text | None = None) -> Text:
    text = Text(f"{label:<{_LABEL_WIDTH}}", style="dim")
    text.append(value if isinstance(value, Text) else Text(value))
    room = width - len(text) - 1
    if bar is not None and room >= 4:
        text.append(" ")
        text.append(bar[:room] if len(bar) > room else bar)
    return text


def _bar_width(width: int, value_width: int) -> int:
    return min(_MAX_BAR, max(0, width - _LABEL_WIDTH - value_width - 1))


def _slowdown_c(sample: GpuSample) -> float | None:
    """The slowdown threshold (on Ada+ NVML reports only the margin to it)."""
    slowdown = sample.slowdown_temperature_c
    if slowdown is None and sample.temperature_c is not None and sample.slowdown_margin_c is not None:
        slowdown = sample.temperature_c + sample.slowdown_margin_c
    return slowdown


def badges_of(sample: GpuSample) -> tuple[ThrottleBadge, ...]:
    """Throttle badges, most severe first, then the last Xid (its code's meaning is in the help)."""
    return _badges(sample.clock_event_reasons, sample.last_xid)


@lru_cache(maxsize=64)
def _badges(mask: int | None, last_xid: int | None) -> tuple[ThrottleBadge, ...]:
    """Cached: each card asks twice a poll (its lines and its border's class), and the masks a box
    shows are few."""
    xid = (xid_badge(last_xid),) if last_xid is not None else ()
    return (*xid, *badges_for(mask))


def unusable_reason(sample: GpuSample) -> str | None:
    """Why a card shows no readings at all: lost, or its readings are too old to be current."""
    if sample.lost:
        xid = f" (Xid {sample.last_xid})" if sample.last_xid is not None else ""
        return f"GPU LOST{xid}: fell off the bus or the driver lost it; check dmesg"
    if sample.stale:
        return "STALE: no fresh reading from NVML; the last values are not shown as current"
    return None


#: a line's key (everything it shows, compared to tell whether it changed) and how to draw it: a poll
#: draws only the lines whose key moved (drawing all of a card's lines was most of a poll's UI work)
LinePlan = tuple[Hashable, Callable[[], Text]]


def _gauge_line(
    label: str, value: str, width: int, ratio: float | None, style: str, marker_ratio: float | None = None
) -> LinePlan:
    bar_width = _bar_width(width, len(value))
    key = (label, value, width, gauge_fill(ratio, bar_width), style, marker_cell(marker_ratio, bar_width))

    def draw() -> Text:
        return _line(label, value, width, gauge(ratio, bar_width, style=style, marker_ratio=marker_ratio))

    return key, draw


def _text_line(*pieces: str | tuple[str, str]) -> LinePlan:
    """A line of plain and (text, style) pieces, keyed by them."""
    return pieces, lambda: Text.assemble(*pieces)


def body_plans(sample: GpuSample, assessment: GpuAssessment | None, width: int) -> list[LinePlan]:
    """The full card's reading lines for an inner ``width``, each with its key."""
    reason = unusable_reason(sample)
    if reason is not None:
        parts = textwrap.wrap(reason, max(10, width))
        return [(("unusable", part), partial(Text, part, style="bold red")) for part in parts]
    plans: list[LinePlan] = []

    # temperature against the slowdown threshold
    temp = sample.temperature_c
    slowdown = _slowdown_c(sample)
    scale = sample.shutdown_temperature_c or (slowdown + 10 if slowdown else 100.0)
    temp_value = f"{temp:.0f}°C" if temp is not None else MISSING
    temp_value += f" slow {slowdown:.0f}" if slowdown is not None else ""
    temp_ratio = temp / scale if temp is not None else None
    near = slowdown is not None and temp is not None and slowdown - temp <= 5
    plans.append(
        _gauge_line(
            "temp",
            temp_value,
            width,
            temp_ratio,
            "red" if near else load_style(temp_ratio),
            marker_ratio=slowdown / scale if slowdown is not None else None,
        )
    )

    power_ratio = _ratio(sample.power_w, sample.power_limit_w)
    power_value = f"{_num(sample.power_w)}/{_num(sample.power_limit_w)} W"
    plans.append(_gauge_line("power", power_value, width, power_ratio, load_style(power_ratio)))

    for label, now, top in (
        ("sm clk", sample.sm_clock_hz, sample.sm_clock_max_hz),
        ("mem clk", sample.memory_clock_hz, sample.memory_clock_max_hz),
    ):
        plans.append(_gauge_line(label, f"{mhz(now)}/{mhz(top)} MHz", width, _ratio(now, top), "cyan"))

    used, total = sample.memory_used_bytes, sample.memory_total_bytes
    vram_value, vram_ratio = f"{gib(used)}/{gib(total)} GiB", _ratio(used, total)
    plans.append(_gauge_line("vram", vram_value, width, vram_ratio, load_style(vram_ratio)))

    # duty cycles: memory-controller busy is the share of time a read/write was in flight, NOT bandwidth
    # (separators end the piece before them: some SVG renderers drop a text run's leading spaces)
    plans.append(
        _text_line(
            ("SM busy ", "dim"),
            f"{percent(sample.sm_busy_ratio)}  ",
            ("MC busy ", "dim"),
            percent(sample.memory_controller_busy_ratio),
        )
    )
    plans.append(_bandwidth_line(assessment, width))
    plans.append(
        _text_line(
            ("pcie ", "dim"),
            ("tx ", "dim"),
            f"{si(sample.pcie_tx_bytes_s, 'B/s', digits=2)} ",
            ("rx ", "dim"),
            si(sample.pcie_rx_bytes_s, "B/s", digits=2),
        )
    )
    plans.append(_fan_line(sample))
    return [((key, width), _fitted(draw, width)) for key, draw in plans]


def _fitted(draw: Callable[[], Text], width: int) -> Callable[[], Text]:
    return lambda: _fit(draw(), width)


def card_body(sample: GpuSample, assessment: GpuAssessment | None, width: int) -> list[Text]:
    """The full card's reading lines for an inner ``width``; a pure function so tests can read it."""
    return [draw() for _, draw in body_plans(sample, assessment, width)]


def compact_lines(sample: GpuSample, assessment: GpuAssessment | None, width: int, count: int) -> list[Text]:
    """One or two lines for a GPU, nvitop-style: the readings a glance needs, then the badges."""
    head = Text(f"{sample.index} {short_name(sample.name):<10.10} ", style="bold")
    reason = unusable_reason(sample)
    if reason is not None:
        head.append(reason, style="bold red")
        return [_fit(head, width)] + ([Text("")] if count == 2 else [])
    temp = f"{sample.temperature_c:.0f}°C" if sample.temperature_c is not None else MISSING
    used, total = sample.memory_used_bytes, sample.memory_total_bytes
    first = Text.assemble(
        head,
        (f"{temp:>5} ", load_style(_ratio(sample.temperature_c, _slowdown_c(sample)))),
        (
            f"{_num(sample.power_w)}/{_num(sample.power_limit_w)} W ",
            load_style(_ratio(sample.power_w, sample.power_limit_w)),
        ),
        ("SM ", "dim"),
        f"{percent(sample.sm_busy_ratio):>4} ",
        ("MC ", "dim"),
        f"{percent(sample.memory_controller_busy_ratio):>4} ",
        (f"{gib(used)}/{gib(total)} GiB ", load_style(_ratio(used, total))),
    )
    badges = badges_of(sample)
    if count == 1:
        first.append(f"{mhz(sample.sm_clock_hz)} MHz ")
        _append_badges(first, badges, width)
        return [_fit(first, width)]
    first.append(f"{mhz(sample.sm_clock_hz)}/{mhz(sample.sm_clock_max_hz)} MHz")
    second = Text("  ")
    roof = assessment.roofline if assessment is not None else None
    if roof is not None and roof.attained_bandwidth_bytes_s is not None:
        second.append("bw ", style="dim")
        second.append(f"{si(roof.attained_bandwidth_bytes_s, 'B/s')} ")
        provenance = roof.bandwidth_provenance
        second.append(f"{_PROVENANCE_LABEL[provenance]} ", style=_PROVENANCE_STYLE[provenance])
    second.append("pcie ", style="dim")
    second.append(
        f"{si(sample.pcie_tx_bytes_s, 'B/s', digits=2)}/{si(sample.pcie_rx_bytes_s, 'B/s', digits=2)} "
    )
    _append_badges(second, badges, width)
    return [_fit(first, width), _fit(second, width)]


def _append_badges(text: Text, badges: Sequence[ThrottleBadge], width: int) -> None:
    if not badges:
        return
    for badge in badges:
        if len(text) + len(badge.label) + 2 > width:
            text.append("+", style="bold")
            return
        text.append(f" {badge.label} ", style=_BADGE_STYLE[badge.severity])
        text.append(" ")


def _badge_line(badges: Sequence[ThrottleBadge], width: int) -> LinePlan:
    if not badges:
        return ("no badges",), lambda: Text("clocks not held back", style="grey50")
    key = ("badges", tuple((b.label, b.severity) for b in badges), width)

    def draw() -> Text:
        text = Text()
        _append_badges(text, badges, width)
        return _fit(text, width)

    return key, draw


def spark_cells(values: Sequence[float], width: int) -> str:
    """``width`` block characters of ``values``: each cell its bucket's maximum, scaled between the series'
    minimum and maximum (as Textual's Sparkline draws them)."""
    n = len(values)
    if n == 0 or width <= 0:
        return " " * max(0, width)
    low, high = min(values), max(values)
    span = high - low
    cells = []
    for k in range(min(width, n)):
        bucket = values[n * k // min(width, n) : n * (k + 1) // min(width, n)] or values[-1:]
        level = (max(bucket) - low) / span if span > 0 else 0.5
        cells.append(_SPARK_CHARS[min(len(_SPARK_CHARS) - 1, int(level * len(_SPARK_CHARS)))])
    return "".join(cells).ljust(width)


def _spark_line(series: Mapping[str, Sequence[float]], names: tuple[str, str], width: int) -> LinePlan:
    half = width // 2
    pieces = []
    for name in names:
        label = f"{SPARKLINES[name]:<5}"
        pieces.append((label, spark_cells(series.get(name, ()), max(0, half - len(label) - 1)), name))
    key = (tuple(pieces), width)

    def draw() -> Text:
        text = Text()
        for label, cells, name in pieces:
            text.append(label, style="grey50")
            text.append(cells, style=_SPARK_STYLE[name])
            text.append(" ")
        return _fit(text, width)

    return key, draw


def _fit(line: Text, width: int) -> Text:
    line.no_wrap = True
    line.truncate(width, overflow="ellipsis")
    return line


def _ratio(value: float | None, limit: float | None) -> float | None:
    return value / limit if value is not None and limit else None


def _fan_line(sample: GpuSample) -> LinePlan:
    """Fan, performance state and memory (HBM/GDDR) temperature; a card with no fan of its own (SXM and
    passive PCIe parts, cooled by the chassis) says "passive" rather than a blank or a zero."""
    fan = "passive" if "fan_speed_ratio" in sample.unavailable else percent(sample.fan_speed_ratio)
    state = f"P{sample.performance_state}" if sample.performance_state is not None else MISSING
    pieces: list[str | tuple[str, str]] = [(f"{'fan':<{_LABEL_WIDTH}}", "dim"), f"{fan}  "]
    pieces += [("perf ", "dim"), state]
    if sample.memory_temperature_c is not None:
        pieces += ["  ", ("mem ", "dim"), f"{sample.memory_temperature_c:.0f}°C"]
    return _text_line(*pieces)


def _num(value: float | None) -> str:
    return MISSING if value is None else f"{value:.0f}"


def _bandwidth_line(assessment: GpuAssessment | None, width: int) -> LinePlan:
    roof = assessment.roofline if assessment is not None else None
    if roof is None or roof.attained_bandwidth_bytes_s is None:
        return _text_line((f"{'bw':<{_LABEL_WIDTH}}", "dim"), ("unknown: no workload", "dim"))
    attained = f"{si(roof.attained_bandwidth_bytes_s, 'B/s')} "
    provenance = roof.bandwidth_provenance
    label = _PROVENANCE_LABEL[provenance]
    ratio = _ratio(roof.attained_bandwidth_bytes_s, roof.peak_bandwidth_bytes_s)
    bar_width = _bar_width(width, len(attained) + len(label))
    key = ("bw", attained, provenance, width, gauge_fill(ratio, bar_width))

    def draw() -> Text:
        value = Text.assemble(attained, (label, _PROVENANCE_STYLE[provenance]))
        return _line("bw", value, width, gauge(ratio, bar_width, style="magenta"))

    return key, draw


#: how an attained figure was obtained, in the words the card shows (never present an estimate as measured)
_PROVENANCE_LABEL = {
    Provenance.MEASURED: "measured",
    Provenance.ENGINE_ESTIMATED: "engine-est.",
    Provenance.DERIVED: "derived",
    Provenance.MODELLED: "modelled",
    Provenance.UNKNOWN: "unknown",
}
_PROVENANCE_STYLE = {
    Provenance.MEASURED: "bold green",
    Provenance.ENGINE_ESTIMATED: "green",
    Provenance.DERIVED: "yellow",
    Provenance.MODELLED: "italic yellow",
    Provenance.UNKNOWN: "dim",
}


def card_plans(reading: CardReading, layout: Layout, width: int) -> list[LinePlan]:
    """Every content line of a card in ``layout`` at inner ``width``, each with its key."""
    sample = reading.sample
    if layout != "full":
        # one or two lines: drawn each time, each keyed by itself
        lines = compact_lines(sample, reading.assessment, width, 1 if layout == "one" else 2)
        return [(line, partial(Text.copy, line)) for line in lines]
    body = body_plans(sample, reading.assessment, width)
    if unusable_reason(sample) is not None:
        return body  # a lost or stale card shows only that: no badges, no old sparklines
    return [
        *body,
        _badge_line(badges_of(sample), width),
        _spark_line(reading.series, ("temperature", "power"), width),
        _spark_line(reading.series, ("bandwidth", "clock"), width),
    ]


def waiting_plans(index: int, name: str, layout: Layout, width: int) -> list[LinePlan]:
    """A card named from the device list, before its first poll: a compact card has no border to carry
    the name, so its line does, as its readings' will."""
    head = "" if layout == "full" else f"{index} {short_name(name):<10.10} "
    waiting = partial(Text.assemble, (head, "bold"), (WAITING, "dim"))
    return [(("waiting", head, width), _fitted(waiting, width))]


def card_lines(reading: CardReading, layout: Layout, width: int) -> list[Text]:
    """Every content line of a card in ``layout`` at inner ``width``."""
    return [draw() for _, draw in card_plans(reading, layout, width)]


#: (line style, card style, span style) -> their combination, as rich's renderer would stack them
_COMBINED: dict[tuple[object, Style, object], Style] = {}


def line_segments(line: Text, base: Style, console: Console) -> list[Segment] | None:
    """``line`` over ``base`` as the segments ``Text.stylize_before(base)`` + ``Text.render`` give, for a
    line whose spans follow one another without overlapping (every line a card draws); ``None`` for any
    other, left to rich. Rich's general renderer re-sorts and re-combines every span's style on every
    call, and was most of a repainted line's cost; here a combination is looked up once per process."""
    plain = line.plain
    spans = line.spans
    end = 0
    for span in spans:
        if span.start < end or span.end < span.start:
            return None
        end = span.end
    own = line.style

    def styled(span_style: object) -> Style:
        key = (own, base, span_style)
        combined = _COMBINED.get(key)
        if combined is None:
            parts = [console.get_style(own, default=Style.null()), base]
            if span_style is not None:
                parts.append(console.get_style(span_style, default=Style.null()))  # type: ignore[arg-type]
            combined = _COMBINED[key] = Style.combine(parts)
        return combined

    segments: list[Segment] = []
    at = 0
    length = len(plain)
    for span in spans:
        start, stop = min(span.start, length), min(span.end, length)
        if start > at:
            segments.append(Segment(plain[at:start], styled(None)))
        if stop > start:
            segments.append(Segment(plain[start:stop], styled(span.style)))
        at = max(at, stop)
    if length > at:
        segments.append(Segment(plain[at:], styled(None)))
    return segments
