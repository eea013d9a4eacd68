"""One GPU's card in the live view: its readings against their limits, throttle badges and sparklines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Label, Sparkline, Static

from gpuwatch.live.assessment import GpuAssessment, Provenance
from gpuwatch.telemetry.sample import GpuSample
from gpuwatch.tui.formatting import MISSING, gauge, gib, load_style, mhz, percent, si
from gpuwatch.tui.throttle import badges_for

#: sparkline name -> (label, History reading); "bandwidth" comes from the assessments, not History
SPARKLINES: dict[str, str] = {"temperature": "temp", "power": "pwr", "bandwidth": "bw", "clock": "clk"}

_LABEL_WIDTH = 8
_MAX_BAR = 30


def short_name(name: str) -> str:
    """``NVIDIA GeForce RTX 4090`` -> ``RTX 4090``: the vendor prefix costs width a card does not have."""
    for prefix in ("NVIDIA GeForce ", "NVIDIA "):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


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


def card_body(sample: GpuSample, assessment: GpuAssessment | None, width: int) -> Text:
    """The card's text lines for an inner ``width``; a pure function so tests can read it."""
    if sample.lost:
        return Text(
            "GPU LOST: fell off the bus or the driver lost it\n(check dmesg for an Xid)", style="bold red"
        )
    lines: list[Text] = []

    # temperature against the slowdown threshold (on Ada+ NVML reports only the margin to it)
    temp = sample.temperature_c
    slowdown = sample.slowdown_temperature_c
    if slowdown is None and temp is not None and sample.slowdown_margin_c is not None:
        slowdown = temp + sample.slowdown_margin_c
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

    # power against the enforced limit
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

    lines.append(_bandwidth_line(sample, assessment, width))

    lines.append(
        Text.assemble(
            (f"{'pcie':<{_LABEL_WIDTH}}", "dim"),
            ("tx ", "dim"),
            f"{si(sample.pcie_tx_bytes_s, 'B/s', digits=2)}  ",
            ("rx ", "dim"),
            si(sample.pcie_rx_bytes_s, "B/s", digits=2),
        )
    )

    lines.append(_fan_line(sample))

    for line in lines:
        line.no_wrap = True
        line.overflow = "ellipsis"
        line.truncate(width, overflow="ellipsis")
    return Text("\n").join(lines)


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


def _bandwidth_line(sample: GpuSample, assessment: GpuAssessment | None, width: int) -> Text:
    roof = assessment.roofline if assessment is not None else None
    if roof is None or roof.attained_bandwidth_bytes_s is None:
        return Text.assemble((f"{'bw':<{_LABEL_WIDTH}}", "dim"), ("unknown (no workload/engine)", "dim"))
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


def spark_buckets(values: Sequence[float], width: int) -> tuple[float, ...]:
    """What a ``width``-cell Sparkline draws of ``values`` (its summary is ``max``): the series' minimum and
    maximum, then each cell's bucket maximum, partitioned as ``textual.renderables.sparkline`` does."""
    n = len(values)
    if n < 2 or width <= 0:
        return tuple(values)
    cells = (values[n * k // width : n * (k + 1) // width] for k in range(width))
    return (min(values), max(values), *(max(cell) for cell in cells if len(cell)))


class GpuCard(Widget, can_focus=True):
    """A card; click or focus+enter selects the GPU for the process table, roofline and cost panes."""

    class Selected(Message):
        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index

    BINDINGS: ClassVar[list[BindingType]] = [("enter", "select_gpu", "Select GPU")]

    def __init__(self, index: int, name: str) -> None:
        super().__init__(id=f"gpu-{index}", classes="gpu-card")
        self.index = index
        self.border_title = f"{index} {short_name(name)}"
        self._sample: GpuSample | None = None
        self._assessment: GpuAssessment | None = None
        self._badge_key: tuple[str, ...] | None = None
        #: what the body and each sparkline last showed: an update that would draw the same is skipped
        #: (every refresh costs a repaint, and a layout one re-lays the whole screen)
        self._body_shown: tuple[int, Text] | None = None
        self._spark_shown: dict[str, tuple[int, tuple[float, ...]]] = {}

    def compose(self) -> ComposeResult:
        body = Static(id="body", classes="card-body")
        sparks = {name: Sparkline(id=f"spark-{name}", classes=f"spark spark-{name}") for name in SPARKLINES}
        for widget in (body, *sparks.values()):
            # they hold no links, and looking for them costs a pass over every repainted line
            widget.auto_links = False
        yield body
        yield Horizontal(id="badges", classes="badges")
        for row in (("temperature", "power"), ("bandwidth", "clock")):
            with Horizontal(classes="spark-row"):
                for name in row:
                    yield Label(SPARKLINES[name], classes="spark-label")
                    yield sparks[name]

    def show(
        self, sample: GpuSample, assessment: GpuAssessment | None, series: Mapping[str, Sequence[float]]
    ) -> None:
        """New readings; called on the UI thread for every poll."""
        self._sample, self._assessment = sample, assessment
        self._render_body()
        self._show_badges(sample)
        for name, values in series.items():
            self._show_series(name, values)
        self.set_class(sample.lost, "-lost")

    @property
    def throttle_labels(self) -> list[str]:
        """The badge labels now shown (tests and the notification read these)."""
        return list(self._badge_key or ())

    def on_resize(self) -> None:
        self._render_body()

    def _render_body(self) -> None:
        if self._sample is None:
            return
        width = max(10, self.content_size.width)
        body = card_body(self._sample, self._assessment, width)
        shown = self._body_shown
        if shown is not None and shown[0] == width and shown[1] == body:
            return
        # the body's height is its line count (lines are cut to the width): a new layout only when that moves
        same_height = (
            shown is not None and shown[0] == width and shown[1].plain.count("\n") == body.plain.count("\n")
        )
        self._body_shown = (width, body)
        self.query_one("#body", Static).update(body, layout=not same_height)

    def _show_series(self, name: str, values: Sequence[float]) -> None:
        """Hand a sparkline new data only when what it draws changes: it draws one bar per cell, the
        bucket's maximum scaled between the series' minimum and maximum."""
        spark = self.query_one(f"#spark-{name}", Sparkline)
        width = spark.size.width
        key = (width, spark_buckets(values, width))
        if self._spark_shown.get(name) == key:
            return
        self._spark_shown[name] = key
        spark.data = list(values)

    def _show_badges(self, sample: GpuSample) -> None:
        badges = badges_for(sample.clock_event_reasons)
        key = tuple(b.label for b in badges)
        if key == self._badge_key:
            return
        self._badge_key = key
        box = self.query_one("#badges", Horizontal)
        box.remove_children()
        if not badges:
            box.mount(Label("clocks not held back", classes="badge-none"))
        else:
            labels = [Label(b.label, classes=f"badge -{b.severity}") for b in badges]
            for label, badge in zip(labels, badges, strict=True):
                label.tooltip = badge.meaning
            box.mount_all(labels)
        worst = badges[0].severity if badges else None
        for severity in ("critical", "warning", "info"):
            self.set_class(worst == severity, f"-throttle-{severity}")

    def on_click(self) -> None:
        self.post_message(self.Selected(self.index))

    def action_select_gpu(self) -> None:
        self.post_message(self.Selected(self.index))
