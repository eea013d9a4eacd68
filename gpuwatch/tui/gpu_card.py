"""One GPU's card in the live view: its readings against their limits, badges and sparklines.

The card is one line-API widget: it keeps its lines as rich ``Text`` and hands Textual a ``Strip`` per
line, and a new reading repaints only the lines whose text changed (a card body redrawn whole every
second was half of the TUI's CPU). Three layouts, chosen by the live view from the terminal's size:
``full`` (a bordered card with gauges and sparklines), ``two`` and ``one`` (one or two lines per GPU, as
nvitop does, so that eight GPUs fit 80x24).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive, var
from textual.strip import Strip
from textual.widget import Widget

from gpuwatch.live.assessment import GpuAssessment, Provenance
from gpuwatch.telemetry.sample import GpuSample
from gpuwatch.tui.formatting import MISSING, gauge, gib, load_style, mhz, percent, si
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
#: what a card named from the device list says until its first reading
WAITING = "waiting for the first poll…"

_BADGE_STYLE = {
    "critical": "bold white on red",
    "warning": "bold black on yellow",
    "info": "bold white on blue",
}


def short_name(name: str) -> str:
    """``NVIDIA GeForce RTX 4090`` -> ``RTX 4090``: the vendor prefix costs width a card does not have."""
    for prefix in ("NVIDIA GeForce ", "NVIDIA "):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


@dataclass(frozen=True)
class CardReading:
    """What one poll gives a card: compared whole, so an equal reading repaints nothing."""

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


def badges_of(sample: GpuSample) -> list[ThrottleBadge]:
    """Throttle badges, most severe first, then the last Xid (its code's meaning is in the help)."""
    badges = badges_for(sample.clock_event_reasons)
    if sample.last_xid is not None:
        badges.insert(0, xid_badge(sample.last_xid))
    return badges


def unusable_reason(sample: GpuSample) -> str | None:
    """Why a card shows no readings at all: lost, or its readings are too old to be current."""
    if sample.lost:
        xid = f" (Xid {sample.last_xid})" if sample.last_xid is not None else ""
        return f"GPU LOST{xid}: fell off the bus or the driver lost it; check dmesg"
    if sample.stale:
        return "STALE: no fresh reading from NVML; the last values are not shown as current"
    return None


def card_body(sample: GpuSample, assessment: GpuAssessment | None, width: int) -> list[Text]:
    """The full card's reading lines for an inner ``width``; a pure function so tests can read it."""
    reason = unusable_reason(sample)
    if reason is not None:
        return [Text(part, style="bold red") for part in textwrap.wrap(reason, max(10, width))]
    lines: list[Text] = []

    # temperature against the slowdown threshold
    temp = sample.temperature_c
    slowdown = _slowdown_c(sample)
    scale = sample.shutdown_temperature_c or (slowdown + 10 if slowdown else 100.0)
    temp_value = f"{temp:.0f}°C" if temp is not None else MISSING
    temp_value += f" slow {slowdown:.0f}" if slowdown is not None else ""
    temp_ratio = temp / scale if temp is not None else None
    near = slowdown is not None and temp is not None and slowdown - temp <= 5
    lines.append(
        _line(
            "temp",
            temp_value,
            width,
            gauge(
                temp_ratio,
                _bar_width(width, len(temp_value)),
                style="red" if near else load_style(temp_ratio),
                marker_ratio=slowdown / scale if slowdown is not None else None,
            ),
        )
    )

    power_ratio = (
        sample.power_w / sample.power_limit_w if sample.power_w is not None and sample.power_limit_w else None
    )
    power_value = f"{_num(sample.power_w)}/{_num(sample.power_limit_w)} W"
    lines.append(
        _line(
            "power",
            power_value,
            width,
            gauge(power_ratio, _bar_width(width, len(power_value)), style=load_style(power_ratio)),
        )
    )

    for label, now, top in (
        ("sm clk", sample.sm_clock_hz, sample.sm_clock_max_hz),
        ("mem clk", sample.memory_clock_hz, sample.memory_clock_max_hz),
    ):
        value = f"{mhz(now)}/{mhz(top)} MHz"
        ratio = now / top if now is not None and top else None
        lines.append(_line(label, value, width, gauge(ratio, _bar_width(width, len(value)), style="cyan")))

    used, total = sample.memory_used_bytes, sample.memory_total_bytes
    vram_value = f"{gib(used)}/{gib(total)} GiB"
    vram_ratio = used / total if used is not None and total else None
    lines.append(
        _line(
            "vram",
            vram_value,
            width,
            gauge(vram_ratio, _bar_width(width, len(vram_value)), style=load_style(vram_ratio)),
        )
    )

    # duty cycles: memory-controller busy is the share of time a read/write was in flight, NOT bandwidth
    # (separators end the piece before them: some SVG renderers drop a text run's leading spaces)
    lines.append(
        Text.assemble(
            ("SM busy ", "dim"),
            f"{percent(sample.sm_busy_ratio)}  ",
            ("MC busy ", "dim"),
            percent(sample.memory_controller_busy_ratio),
        )
    )
    lines.append(_bandwidth_line(assessment, width))
    lines.append(
        Text.assemble(
            ("pcie ", "dim"),
            ("tx ", "dim"),
            f"{si(sample.pcie_tx_bytes_s, 'B/s', digits=2)} ",
            ("rx ", "dim"),
            si(sample.pcie_rx_bytes_s, "B/s", digits=2),
        )
    )
    lines.append(_fan_line(sample))
    return [_fit(line, width) for line in lines]


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


def _badge_line(sample: GpuSample, width: int) -> Text:
    badges = badges_of(sample)
    if not badges:
        return Text("clocks not held back", style="grey50")
    text = Text()
    _append_badges(text, badges, width)
    return _fit(text, width)


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


def _spark_line(series: Mapping[str, Sequence[float]], names: tuple[str, str], width: int) -> Text:
    half = width // 2
    text = Text()
    for name in names:
        label = f"{SPARKLINES[name]:<5}"
        text.append(label, style="grey50")
        text.append(
            spark_cells(series.get(name, ()), max(0, half - len(label) - 1)), style=_SPARK_STYLE[name]
        )
        text.append(" ")
    return _fit(text, width)


def _fit(line: Text, width: int) -> Text:
    line.no_wrap = True
    line.truncate(width, overflow="ellipsis")
    return line


def _ratio(value: float | None, limit: float | None) -> float | None:
    return value / limit if value is not None and limit else None


def _fan_line(sample: GpuSample) -> Text:
    """Fan, performance state and memory (HBM/GDDR) temperature; a card with no fan of its own (SXM and
    passive PCIe parts, cooled by the chassis) says "passive" rather than a blank or a zero."""
    fan = "passive" if "fan_speed_ratio" in sample.unavailable else percent(sample.fan_speed_ratio)
    state = Text.assemble((f"{'fan':<{_LABEL_WIDTH}}", "dim"), f"{fan}  ", ("perf ", "dim"))
    state.append(f"P{sample.performance_state}" if sample.performance_state is not None else MISSING)
    if sample.memory_temperature_c is not None:
        state.append("  ")
        state.append("mem ", style="dim")
        state.append(f"{sample.memory_temperature_c:.0f}°C")
    return state


def _num(value: float | None) -> str:
    return MISSING if value is None else f"{value:.0f}"


def _bandwidth_line(assessment: GpuAssessment | None, width: int) -> Text:
    roof = assessment.roofline if assessment is not None else None
    if roof is None or roof.attained_bandwidth_bytes_s is None:
        return Text.assemble((f"{'bw':<{_LABEL_WIDTH}}", "dim"), ("unknown: no workload", "dim"))
    attained = roof.attained_bandwidth_bytes_s
    provenance = roof.bandwidth_provenance
    value = Text.assemble(
        f"{si(attained, 'B/s')} ", (_PROVENANCE_LABEL[provenance], _PROVENANCE_STYLE[provenance])
    )
    ratio = attained / roof.peak_bandwidth_bytes_s if roof.peak_bandwidth_bytes_s else None
    return _line("bw", value, width, gauge(ratio, _bar_width(width, len(value)), style="magenta"))


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


def card_lines(reading: CardReading, layout: Layout, width: int) -> list[Text]:
    """Every content line of a card in ``layout`` at inner ``width``."""
    sample = reading.sample
    if layout != "full":
        return compact_lines(sample, reading.assessment, width, 1 if layout == "one" else 2)
    body = card_body(sample, reading.assessment, width)
    if unusable_reason(sample) is not None:
        return body  # a lost or stale card shows only that: no badges, no old sparklines
    return [
        *body,
        _badge_line(sample, width),
        _spark_line(reading.series, ("temperature", "power"), width),
        _spark_line(reading.series, ("bandwidth", "clock"), width),
    ]


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


class GpuCard(Widget, can_focus=True):
    """A card; click or focus+enter selects the GPU for the process table, roofline and cost panes."""

    class Selected(Message):
        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index

    BINDINGS: ClassVar[list[BindingType]] = [("enter", "select_gpu", "Select GPU")]

    #: the latest poll's reading; its watcher repaints the lines that changed (always called: comparing two
    #: readings field by field cost more than the watcher, which compares the lines they draw)
    reading: var[CardReading | None] = var(None, always_update=True)
    #: chosen by the live view from the terminal size
    layout_mode: reactive[Layout] = reactive("full", layout=True)

    def __init__(self, index: int, name: str, layout: Layout = "full") -> None:
        # the layout the live view expects, set before mounting: a change after it restyles the card
        super().__init__(id=f"gpu-{index}", classes="gpu-card" if layout == "full" else "gpu-card -compact")
        self.set_reactive(GpuCard.layout_mode, layout)
        self.index = index
        self.gpu_name = name
        self.border_title = f"{index} {short_name(name)}"
        self._lines: list[Text] = []
        self._strips: list[Strip | None] = []
        #: the card's own style under every line; DOMNode.rich_style walks the ancestors on each call
        self._line_style: Style | None = None
        self._text_console = Console(width=1000, color_system="truecolor", markup=False, highlight=False)

    # --- what the tests and the app read ---------------------------------------------------------------

    @property
    def lines(self) -> list[str]:
        """The plain text of every line now shown."""
        if not self._lines:
            self._update_lines()  # a reading set before the first layout is drawn on first sight
        return [line.plain for line in self._lines]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def badge_labels(self) -> list[str]:
        return [b.label for b in badges_of(self.reading.sample)] if self.reading is not None else []

    # --- reactives ----------------------------------------------------------------------------------

    def watch_reading(self, reading: CardReading | None) -> None:
        if reading is None:
            return
        sample = reading.sample
        self.set_class(sample.lost or sample.stale, "-lost")
        badges = badges_of(sample)
        worst = badges[0].severity if badges and not sample.lost else None
        for severity in ("critical", "warning", "info"):
            self.set_class(worst == severity, f"-throttle-{severity}")
        self._update_lines()

    def watch_layout_mode(self, layout: Layout) -> None:
        self.set_class(layout != "full", "-compact")
        self._update_lines()

    def on_resize(self) -> None:
        self._update_lines()

    def _update_lines(self) -> None:
        """Recompute the lines and repaint only those that differ; a new layout only when the count moves."""
        width = self.content_size.width
        if width <= 0:
            return
        if self.reading is None:  # named from the device list, before its first poll
            # a compact card has no border to carry the name: the line does, as its readings' will
            head = "" if self.layout_mode == "full" else f"{self.index} {short_name(self.gpu_name):<10.10} "
            lines = [_fit(Text.assemble((head, "bold"), (WAITING, "dim")), width)]
        else:
            lines = card_lines(self.reading, self.layout_mode, width)
        if len(lines) != len(self._lines):
            self._lines, self._strips = lines, [None] * len(lines)
            self.refresh(layout=True)
            return
        changed: list[Region] = []
        for y, (old, new) in enumerate(zip(self._lines, lines, strict=True)):
            if old != new:
                self._lines[y] = new
                self._strips[y] = None
                changed.append(Region(0, y, width, 1))
        if changed:  # one refresh for them all: each call marks the widget dirty and wakes the screen
            self.refresh(*changed)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        if self.layout_mode != "full":
            return 1 if self.layout_mode == "one" else 2
        if self.reading is None:
            return FULL_LINES  # the size it will have: the first reading moves nothing
        if unusable_reason(self.reading.sample) is not None:
            return len(card_body(self.reading.sample, None, width))
        return FULL_LINES

    def notify_style_update(self) -> None:
        """A class or theme change (selection, throttling) restyles every line."""
        super().notify_style_update()
        self._line_style = None
        self._strips = [None] * len(self._lines)

    def render_line(self, y: int) -> Strip:
        width = self.content_size.width
        if not self._lines:
            self._update_lines()
        if self._line_style is None:
            self._line_style = self.rich_style
        style = self._line_style
        if y >= len(self._lines):
            return Strip.blank(width, style)
        strip = self._strips[y]
        if strip is None or strip.cell_length != width:
            line = self._lines[y]
            segments = line_segments(line, style, self._text_console)
            if segments is None:  # overlapping spans: rich's general renderer
                text = line.copy()
                text.stylize_before(style)
                segments = list(text.render(self._text_console))
            strip = Strip(segments).crop_extend(0, width, style)
            self._strips[y] = strip
        return strip

    # --- selection -------------------------------------------------------------------------------------

    def on_click(self) -> None:
        self.post_message(self.Selected(self.index))

    def action_select_gpu(self) -> None:
        self.post_message(self.Selected(self.index))
