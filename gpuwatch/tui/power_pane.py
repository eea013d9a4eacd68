"""The power-cap advisor pane: per GPU, the cap the planner's power model advises from the live bound
and the measured board power (``gpuwatch.live.power_advice``, the same code as ``gpuwatch advise
power-limit``), with the expected tokens/s loss, the power saving, why, and what the bound rests on.

The advice is modelled, and says so. It is computed on a worker thread at most every
``ADVICE_INTERVAL_S`` seconds from the newest poll, so the pane never holds the UI thread, and it
shows which poll it came from.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from gpuwatch.live.assessment import BoxAssessment
from gpuwatch.live.config import LiveConfig, gpu_price_usd
from gpuwatch.live.power_advice import LiveAdvice, advise_gpu
from gpuwatch.model.catalog import GpuSpec
from gpuwatch.telemetry.sample import Snapshot
from gpuwatch.tui.gpu_names import short_name

#: seconds between two advice computations (the advice moves with minutes of load, not one poll)
ADVICE_INTERVAL_S = 3.0
#: polls the board power is averaged over (one poll catches a ramp; the command averages its samples)
POWER_MEAN_POLLS = 10


@dataclass(frozen=True)
class AdviceRow:
    index: int
    name: str
    power_w: float | None  # the board power the advice starts from (mean of the last polls)
    default_limit_w: float | None
    live: LiveAdvice


def advise_all(
    snapshot: Snapshot,
    box: BoxAssessment,
    config: LiveConfig,
    specs: Mapping[int, GpuSpec | None],
    mean_power_w: Mapping[int, float | None],
) -> list[AdviceRow]:
    """The advice for every GPU of one poll, as ``gpuwatch advise power-limit`` computes it."""
    by_index = {g.index: g for g in box.gpus}
    rows = []
    for sample in snapshot.gpus:
        g = by_index.get(sample.index)
        spec = specs.get(sample.index)
        if g is None:
            live = LiveAdvice(sample.index, None, "no assessment of this GPU yet")
        else:
            price = gpu_price_usd(config, spec) if spec is not None else None
            live = advise_gpu(
                sample, g, spec, config.prices, price,
                power_w=mean_power_w.get(sample.index), n_gpus=len(snapshot.gpus),
            )  # fmt: skip
        rows.append(
            AdviceRow(
                sample.index,
                sample.name,
                mean_power_w.get(sample.index),
                sample.power_limit_default_w,
                live,
            )
        )
    return rows


def _w(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} W"


def advice_text(rows: Sequence[AdviceRow], poll_timestamp_s: float) -> Text:
    when = time.strftime("%H:%M:%S", time.localtime(poll_timestamp_s))
    text = Text()
    text.append("power-cap advice", style="bold")
    text.append(" · modelled", style="italic")
    text.append(f" from the poll at {when} (every {ADVICE_INTERVAL_S:g} s)\n", style="dim")
    for row in rows:
        a = row.live.advice
        text.append(f"\nGPU {row.index} {short_name(row.name)}", style="bold")
        text.append(f"  now {_w(row.power_w)} (measured, mean)  default {_w(row.default_limit_w)}\n")
        if a is None:
            text.append("  no advice: ", style="yellow")
            text.append(f"{row.live.reason}\n")
            continue
        text.append("  advised ")
        text.append(f"{a.advised_limit_w:,.0f} W", style="bold green")
        text.append(f"  tokens/s -{a.expected_speed_loss_ratio:.1%}  power -{a.power_saving_w:,.0f} W")
        text.append(f"  tokens/J {a.tokens_per_j_gain_ratio:+.1%}  $/1M {a.usd_per_mtok_change_ratio:+.1%}\n")
        text.append(f"  why: {a.reason}\n")
        text.append(
            f"  bound {a.bound}: {row.live.bound_basis}; "
            f"tokens/s {row.live.tokens_per_s_provenance.value}; objective {a.objective}\n",
            style="dim",
        )
    return text


class PowerPane(VerticalScroll):
    def compose(self) -> ComposeResult:
        yield Static("power-cap advice: waiting for a poll", id="power-advice")

    def on_mount(self) -> None:
        self._asked_at: float | None = None
        self.rows: list[AdviceRow] = []

    def request(
        self,
        snapshot: Snapshot,
        box: BoxAssessment,
        config: LiveConfig,
        specs: Mapping[int, GpuSpec | None],
        mean_power_w: Mapping[int, float | None],
    ) -> None:
        """Start a computation unless one ran within ``ADVICE_INTERVAL_S`` (the pane shows the last)."""
        now = time.monotonic()
        if self._asked_at is not None and now - self._asked_at < ADVICE_INTERVAL_S:
            return
        self._asked_at = now
        self._compute(snapshot, box, config, dict(specs), dict(mean_power_w))

    @work(thread=True, exclusive=True, group="power-advice")
    def _compute(
        self,
        snapshot: Snapshot,
        box: BoxAssessment,
        config: LiveConfig,
        specs: dict[int, GpuSpec | None],
        mean_power_w: dict[int, float | None],
    ) -> None:
        rows = advise_all(snapshot, box, config, specs, mean_power_w)
        self.app.call_from_thread(self._show, rows, snapshot.timestamp_s)

    def _show(self, rows: list[AdviceRow], poll_timestamp_s: float) -> None:
        self.rows = rows
        if self.is_mounted:
            self.query_one("#power-advice", Static).update(advice_text(rows, poll_timestamp_s))

    @property
    def text(self) -> str:
        content = self.query_one("#power-advice", Static).content
        return content.plain if isinstance(content, Text) else str(content)
