"""The cost pane: what a million tokens costs now and as modelled, tokens per joule, the hourly cost split,
and the same workload on alternative GPUs."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Label, Static

from gpuwatch.live.assessment import BoxAssessment, CostSplit, CostView, GpuAssessment
from gpuwatch.telemetry.sample import GpuSample
from gpuwatch.tui.formatting import MISSING, percent, rate, usd
from gpuwatch.tui.gpu_names import short_name


def split_bar(split: CostSplit, width: int) -> Text:
    """The hourly cost as one bar in three colours: capex, power, hosting."""
    total = split.total_usd_per_h
    text = Text()
    if total <= 0:
        return Text("·" * width, style="grey37")
    parts = (
        (split.capex_usd_per_h, "blue"),
        (split.power_usd_per_h, "yellow"),
        (split.hosting_usd_per_h, "magenta"),
    )
    used = 0
    for i, (value, style) in enumerate(parts):
        cells = width - used if i == len(parts) - 1 else round(value / total * width)
        text.append("█" * max(0, cells), style=style)
        used += max(0, cells)
    return text


def no_cost_reason(sample: GpuSample, gpu: GpuAssessment) -> str:
    """Why there is no cost figure, and what to do about it."""
    name = short_name(sample.name)
    if gpu.gpu_id is None:
        return (
            f"No cost: {name} is not in the catalog, so it has no price or model (add it with --gpus-file)."
        )
    return f"No price for {name}: give [gpu_prices] in the config or --gpu-price."


def cost_summary(sample: GpuSample, gpu: GpuAssessment, box: BoxAssessment, width: int) -> Text:
    cost: CostView | None = gpu.cost
    text = Text()
    text.append(f"GPU {sample.index} {short_name(sample.name)}\n", style="bold")
    text.append("tokens/s     ")
    # separators end the text before them: some SVG renderers drop a run's leading spaces
    text.append(f"{rate(gpu.tokens_per_s)}  ", style="bold")
    text.append(gpu.tokens_per_s_provenance.value, style="italic dim")
    if gpu.modelled_tokens_per_s is not None:
        text.append("   ")
        text.append(f"model ceiling {rate(gpu.modelled_tokens_per_s)}", style="dim")
    if gpu.workload_fits is False:
        text.append("\n")
        text.append("DOES NOT FIT", style="bold white on red")
        text.append(" the declared workload cannot load on this card: no modelled tok/s or $/1M", style="red")
    if cost is None:
        text.append("\n\n")
        text.append(no_cost_reason(sample, gpu), style="yellow")
        return text
    text.append("\n$/1M tokens  live ")
    text.append(f"{usd(cost.live_usd_per_mtok, digits=3)}   ", style="bold green")
    text.append("projected ")
    text.append(f"{usd(cost.projected_usd_per_mtok, digits=3)}   ", style="bold")
    if cost.cloud_usd_per_mtok is not None:
        text.append("cloud ")
        text.append(usd(cost.cloud_usd_per_mtok, digits=3), style="bold")
    if gpu.tokens_per_s is None and gpu.workload_fits is None:
        text.append("\n")
        text.append(
            "no tokens/s to price: declare --workload MODEL:QUANT or point --engine at an engine", style="dim"
        )
    text.append("\ntokens/J     ")
    text.append(
        f"{cost.tokens_per_joule:.2f}" if cost.tokens_per_joule is not None else MISSING, style="bold"
    )
    if cost.tokens_per_joule is not None:
        # tokens/J depends on the batch: a figure without its concurrency cannot be compared
        text.append("  ")
        text.append(
            f"at {cost.concurrency:.0f} concurrent requests"
            if cost.concurrency is not None
            else "concurrency unknown (no engine running gauge)",
            style="dim",
        )
    text.append_text(idle_burn_lines(cost))
    text.append_text(advice_line(gpu))
    split = cost.cost_per_hour
    text.append(f"\ncost/hour    {usd(split.total_usd_per_h, digits=3)} = ")
    text.append(f"capex {usd(split.capex_usd_per_h, digits=3)} ", style="blue")
    text.append("+ ")
    text.append(f"power {usd(split.power_usd_per_h, digits=3)} ", style="yellow")
    text.append("+ ")
    text.append(f"hosting {usd(split.hosting_usd_per_h, digits=3)}", style="magenta")
    text.append("\n             ")
    text.append_text(split_bar(split, max(10, min(60, width - 14))))
    if len(box.gpus) > 1:
        parts = [rate(box.tokens_per_s)]
        if box.usd_per_mtok is not None:
            parts.append(f"{usd(box.usd_per_mtok, digits=3)}/1M tokens")
        if box.tokens_per_joule is not None:
            parts.append(f"{box.tokens_per_joule:.2f} tokens/J")
        text.append(f"\n\nwhole box    {'   '.join(parts)}")
    return text


def idle_burn_lines(cost: CostView) -> Text:
    """Serving vs overall $/1M tokens, idle share and power, per-request energy and cost."""
    burn = cost.burn
    text = Text()
    if burn is None:
        text.append("\nidle burn    unknown: needs an engine's token counters (--engine URL)", style="dim")
        return text
    minutes = burn.window_s / 60
    text.append("\n$/1M tokens  serving ")
    text.append(f"{usd(burn.usd_per_mtok_serving, digits=3)}   ", style="bold green")
    text.append("overall ")
    text.append(f"{usd(burn.usd_per_mtok_overall, digits=3)}", style="bold yellow")
    text.append(f"   (last {minutes:.0f} min)", style="dim")
    text.append("\nidle         ")
    text.append(f"{percent(burn.idle_ratio)} of the time", style="bold")
    if burn.idle_power_w is not None:
        text.append(f" at {burn.idle_power_w:.0f} W")
    if burn.joules_per_request is not None or burn.usd_per_k_requests is not None:
        text.append("\nper request  ")
        text.append(
            f"{burn.joules_per_request:,.0f} J" if burn.joules_per_request is not None else MISSING,
            style="bold",
        )
        text.append(f"   {usd(burn.usd_per_k_requests, digits=3)} per 1000 requests")
    return text


def advice_line(gpu: GpuAssessment) -> Text:
    """The power cap advised from this poll (gpuwatch/live/power_advice.py), or why there is none."""
    text = Text("\npower cap    ")
    if gpu.advised_power_limit_w is None:
        text.append(f"no advice: {gpu.power_advice_reason or 'unknown'}", style="dim")
        return text
    text.append(f"advise {gpu.advised_power_limit_w:.0f} W ", style="bold")
    if gpu.advised_speed_loss_ratio is not None:
        text.append(f"(-{percent(gpu.advised_speed_loss_ratio)} tokens/s)  ")
    text.append("modelled", style="italic dim")  # the power model's, not a measured sweep
    return text


class CostPane(Vertical):
    def compose(self) -> ComposeResult:
        yield Static(id="cost-summary")
        yield Label("the same workload on other GPUs (modelled)", classes="pane-title")
        table: DataTable[str | Text] = DataTable(id="alternatives", cursor_type="row", zebra_stripes=True)
        table.add_column("GPU", key="gpu")
        table.add_column(Text("tok/s", justify="right"), key="tps")
        table.add_column(Text("$/1M tokens", justify="right"), key="usd")
        table.add_column("fits", key="fits")
        yield table

    def on_mount(self) -> None:
        self._rows: tuple[tuple[str | Text, ...], ...] | None = None

    def show(self, sample: GpuSample | None, gpu: GpuAssessment | None, box: BoxAssessment | None) -> None:
        if sample is None or gpu is None or box is None:
            return
        summary = self.query_one("#cost-summary", Static)
        text = cost_summary(sample, gpu, box, summary.content_size.width or 80)
        if summary.content != text:  # an equal update would only re-lay the screen
            summary.update(text)
        alternatives = gpu.cost.alternatives if gpu.cost is not None else ()
        rows = tuple(
            (
                a.gpu_name,
                Text(rate(a.tokens_per_s, "").strip() if a.fits else "—", justify="right"),
                Text(usd(a.usd_per_mtok, digits=3) if a.fits else "—", justify="right"),
                "yes" if a.fits else "does not fit",
            )
            for a in alternatives
        )
        if rows == self._rows:
            return
        self._rows = rows
        table = self.query_one("#alternatives", DataTable)
        table.clear()
        for row in rows:
            table.add_row(*row)
