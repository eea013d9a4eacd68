"""The roofline pane: the selected GPU's ceilings with the workload's live point and trail, and in words
what bounds it and how much headroom is left."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Static

from gpuwatch.live.assessment import BoundKind, GpuAssessment, RooflinePosition
from gpuwatch.model.catalog import GpuSpec
from gpuwatch.model.roofline import ceilings
from gpuwatch.telemetry.sample import GpuSample
from gpuwatch.tui.formatting import percent, si
from gpuwatch.tui.gpu_names import short_name
from gpuwatch.tui.roofline_plot import RooflinePicture, RooflinePlot, merge_roofs

_BOUND_STYLE = {
    BoundKind.MEMORY: "bold yellow",
    BoundKind.COMPUTE: "bold cyan",
    BoundKind.INTERCONNECT: "bold magenta",
    BoundKind.THROTTLED: "bold red",
    BoundKind.IDLE: "dim",
    BoundKind.UNKNOWN: "dim",
}


def picture_for(
    spec: GpuSpec, roof: RooflinePosition | None, trail: Sequence[tuple[float, float]]
) -> RooflinePicture:
    return RooflinePicture(
        bandwidth_bytes_s=spec.memory_bandwidth_bytes_s,
        roofs=merge_roofs([(c.dtype, c.peak_flops) for c in ceilings(spec)]),
        workload_dtype=roof.dtype if roof is not None else None,
        current_peak_flops=roof.current_peak_flops if roof is not None else None,
        trail=tuple(trail),
    )


def bound_in_words(assessment: GpuAssessment) -> Text:
    """The bound and the headroom as sentences: what limits the workload and what would speed it up."""
    bound = assessment.bound
    roof = assessment.roofline
    text = Text()
    # the headline is the bound the explanation below argues; a throttle that does not bound the work
    # (a hot card running a memory-bound decode) is a warning under it, not the headline
    if bound.kind == BoundKind.THROTTLED:
        headline = "THROTTLED: the lower clock bounds it"
    elif bound.kind in (BoundKind.IDLE, BoundKind.UNKNOWN):
        headline = bound.kind.value.upper()
    else:
        headline = f"{bound.kind.value.upper()}-BOUND"
    text.append(headline, style=_BOUND_STYLE[bound.kind])
    if bound.throttle_reasons:
        # separators end the text before them: some SVG renderers drop a run's leading spaces
        warning = "" if bound.kind == BoundKind.THROTTLED else "warning: throttled "
        text.append("\n")
        text.append(f"{warning}({', '.join(bound.throttle_reasons)})", style="red")
    if bound.clock_loss_ratio is not None:
        text.append(
            f"\nSM clock {percent(bound.clock_loss_ratio)} below the clock the workload runs at",
            style="red",
        )
    if bound.detail:
        text.append(f"\n{bound.detail}")
    if roof is None:
        text.append(
            "\n\nNo workload to place: declare one with --workload MODEL:QUANT or point --engine at "
            "a serving engine's /metrics.",
            style="dim",
        )
        return text
    ai = roof.arithmetic_intensity_flop_per_byte
    if ai is not None:
        where = "below" if ai < roof.ridge_flop_per_byte else "above"
        text.append(
            f"\n\nIntensity {ai:.3g} FLOP/byte is {where} the {roof.dtype} ridge point "
            f"({roof.ridge_flop_per_byte:.3g} FLOP/byte): "
        )
        text.append(
            "faster memory or a bigger batch helps, more FLOP/s does not."
            if where == "below"
            else "more FLOP/s helps, more bandwidth does not."
        )
    if roof.headroom_ratio is not None and roof.attainable_flops is not None:
        text.append(
            f"\n\nRunning at {percent(roof.headroom_ratio)} of the attainable "
            f"{si(roof.attainable_flops, 'FLOP/s')} at this intensity: "
            f"{percent(max(0.0, 1 - roof.headroom_ratio))} headroom."
        )
    text.append("\n")
    # figure and how it was obtained on one line, the ceiling under it: the side panel is ~36 cells wide
    text.append(f"\nbandwidth  {si(roof.attained_bandwidth_bytes_s, 'B/s')}  ")
    text.append(roof.bandwidth_provenance.value, style="italic")
    text.append(f"\n           of {si(roof.peak_bandwidth_bytes_s, 'B/s')}")
    text.append(f"\ncompute    {si(roof.attained_flops, 'FLOP/s')}  ")
    text.append(roof.flops_provenance.value, style="italic")
    text.append(f"\n           of {si(roof.current_peak_flops, 'FLOP/s')}")
    if roof.engine_vs_measured_flops_ratio is not None or roof.engine_vs_measured_bandwidth_ratio is not None:
        # GPM and the engine's counters both exist: show the estimate and how far it is from the measurement
        text.append("\nengine est. ", style="italic")
        text.append(f"{si(roof.engine_flops, 'FLOP/s')}  {si(roof.engine_bandwidth_bytes_s, 'B/s')}")
        ratios = [
            f"{name} x{r:.2f}"
            for name, r in (
                ("compute", roof.engine_vs_measured_flops_ratio),
                ("bandwidth", roof.engine_vs_measured_bandwidth_ratio),
            )
            if r is not None
        ]
        text.append(f"\n           vs measured: {', '.join(ratios)}", style="dim")
    if roof.current_peak_flops < roof.peak_flops * 0.98:
        text.append(
            f"\n(spec roof {si(roof.peak_flops, 'FLOP/s')}; dashed red line = today's clocks)", style="red"
        )
    return text


class RooflinePane(Horizontal):
    def compose(self) -> ComposeResult:
        yield RooflinePlot(id="roofline-plot")
        with VerticalScroll(id="roofline-side"):
            yield Static(id="roofline-title", classes="pane-title")
            yield Static(id="roofline-words")

    def show(
        self,
        sample: GpuSample | None,
        assessment: GpuAssessment | None,
        spec: GpuSpec | None,
        trail: Sequence[tuple[float, float]],
    ) -> None:
        plot = self.query_one(RooflinePlot)
        title = self.query_one("#roofline-title", Static)
        words = self.query_one("#roofline-words", Static)
        if sample is None:
            return
        # Static.content is what was last set: an equal update would only re-lay the screen
        name = f"GPU {sample.index} {short_name(sample.name)}"
        if title.content != name:
            title.update(name)
        if spec is None:
            plot.reason = (
                f"{sample.name} is not in the catalog: its ceilings are unknown (add it with a GPU TOML)"
            )
            plot.picture = None
            plot.refresh()
        else:
            plot.picture = picture_for(spec, assessment.roofline if assessment else None, trail)
        said = bound_in_words(assessment) if assessment is not None else Text("no assessment yet", "dim")
        if words.content != said:
            words.update(said)
