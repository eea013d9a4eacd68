"""The planning pane: a form whose every change recomputes the answer at once (no submit button)."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Input, Label, Select, Static, Switch

from gpuwatch.model.catalog import all_gpus
from gpuwatch.model.engine_profiles import ENGINE_NAMES
from gpuwatch.model.errors import ModelInputError, UnknownIdError
from gpuwatch.model.llm import all_models
from gpuwatch.model.quant import all_quants
from gpuwatch.model.whatif import MODES, PARALLELISM, PlanAnswer, PlanInputs, answer
from gpuwatch.tui.formatting import duration, percent, rate, si, usd

#: memory component -> bar colour (unknown components cycle through the rest)
_COMPONENT_STYLES = {
    "weights": "blue",
    "base_weights": "blue",
    "adapter_weights": "bright_blue",
    "kv_cache": "magenta",
    "gradients": "yellow",
    "master_weights": "bright_yellow",
    "optimizer_states": "red",
    "activations": "green",
    "logits": "bright_green",
    "cuda_context": "grey62",
}
_FALLBACK_STYLES = ("cyan", "bright_cyan", "bright_magenta", "bright_red")

#: form field id -> (PlanInputs field, converter) for the numeric Inputs
_NUMBER_FIELDS: dict[str, tuple[str, type]] = {
    "plan-batch": ("batch", int),
    "plan-context": ("context_tokens", int),
    "plan-count": ("count", int),
    "plan-electricity": ("electricity_usd_per_kwh", float),
    "plan-pue": ("pue", float),
    "plan-life": ("service_life_years", float),
    "plan-hosting": ("hosting_usd_per_h", float),
    "plan-cloud": ("cloud_usd_per_gpu_h", float),
    "plan-utilisation": ("utilisation_ratio", float),
    "plan-train-tokens": ("train_tokens", float),
    "plan-mfu": ("mfu_ratio", float),
}
_SELECT_FIELDS = {
    "plan-model": "model",
    "plan-mode": "mode",
    "plan-quant": "quant",
    "plan-gpu": "gpu",
    "plan-parallel": "parallel",
    "plan-engine": "engine",
}


def memory_bar(plan: PlanAnswer, width: int) -> Text:
    """Per-GPU memory as coloured segments against the card's capacity; ``┃`` marks the usable limit."""
    mem = plan.memory
    scale = max(mem.capacity_gib, mem.per_gpu_gib)
    cells: list[tuple[str, str]] = []
    styles = iter(_FALLBACK_STYLES * 4)
    for name, value in mem.components_gib.items():
        n = round(value / scale * width)
        style = _COMPONENT_STYLES.get(name) or next(styles)
        cells += [("█", style)] * n
    cells = cells[:width] + [("·", "grey37")] * max(0, width - len(cells))
    usable_at = min(width - 1, round(mem.usable_gib / scale * width))
    cells[usable_at] = ("┃", "bold white")
    if mem.per_gpu_gib > mem.capacity_gib:
        capacity_at = min(width - 1, round(mem.capacity_gib / scale * width))
        cells[capacity_at] = ("║", "bold red")
    bar = Text()
    for char, style in cells:
        bar.append(char, style=style)
    return bar


def plan_text(plan: PlanAnswer, width: int) -> Text:
    inputs = plan.inputs
    mem = plan.memory
    text = Text()
    count = f"{inputs.count}x " if inputs.count > 1 else ""
    text.append(
        f"{plan.model.name} · {plan.quant.id} · {inputs.mode} on {count}{plan.gpu.name}\n", style="bold"
    )
    text.append("\nmemory per GPU  ")
    text.append(f"{mem.per_gpu_gib:.1f} GiB", style="bold")
    text.append(f" of {mem.capacity_gib:.0f} GiB ({mem.usable_gib:.1f} usable)  ")
    if mem.fits:
        text.append(" FITS ", style="bold black on green")
    else:
        text.append(" DOES NOT FIT ", style="bold white on red")
        needed = f"needs {mem.gpus_needed} GPUs" if mem.gpus_needed else "does not fit on any count"
        text.append(f" {needed}", style="red")
    text.append("\n")
    text.append_text(memory_bar(plan, max(10, width - 2)))
    text.append("\n")
    styles = iter(_FALLBACK_STYLES * 4)
    for name, value in mem.components_gib.items():
        style = _COMPONENT_STYLES.get(name) or next(styles)
        text.append("■ ", style=style)
        text.append(f"{name.replace('_', ' ')} {value:.2f} GiB  ")
    t = plan.throughput
    if t is not None:
        text.append("\n\nthroughput (", style="bold")
        text.append(
            f"{t.engine}, {t.parallel} over {t.count})\n" if t.count > 1 else f"{t.engine})\n", style="bold"
        )
        text.append(f"  decode   {rate(float(t.decode_tokens_per_s))}")
        text.append(f"  ({rate(float(t.decode_tokens_per_s_per_stream))} per stream)\n")
        text.append(f"  prefill  {rate(float(t.prefill_tokens_per_s))}\n")
        text.append(f"  time per output token {duration(float(t.time_per_output_token_s))}")
        text.append(f"   time to first token {duration(float(t.time_to_first_token_s))}\n")
        text.append(
            f"  decode is {t.bound}-bound", style="bold yellow" if t.bound == "memory" else "bold cyan"
        )
        text.append(f" (intensity {float(t.arithmetic_intensity_flop_per_byte):.3g} FLOP/byte); ")
        text.append(f"prefill is {t.prefill_bound}-bound")
    c = plan.cost
    if c is not None:
        text.append("\n\ncost\n", style="bold")
        text.append("  $/1M tokens  own ")
        text.append(usd(c.usd_per_mtok, digits=3), style="bold green")
        text.append(f" at {percent(inputs.utilisation_ratio)} utilisation   cloud ")
        text.append(usd(c.cloud_usd_per_mtok, digits=3), style="bold")
        if c.own_usd_per_h is None:
            text.append("\n  no list price for this GPU: enter one to price owning it", style="dim")
        else:
            text.append(
                f"\n  owning costs {usd(c.own_usd_per_h, digits=3)}/h; renting {inputs.count} GPU(s) at "
                f"{usd(inputs.cloud_usd_per_gpu_h)}/GPU-h"
            )
            if c.breakeven_utilisation_ratio is not None:
                text.append(
                    f"\n  buying beats renting above {percent(c.breakeven_utilisation_ratio)} utilisation"
                )
            else:
                text.append("\n  buying never beats renting at these prices")
            if c.breakeven_months is not None:
                text.append(f"; the purchase pays for itself in {c.breakeven_months:.1f} months")
    tr = plan.training
    if tr is not None:
        text.append("\n\ntraining (6·N·D)\n", style="bold")
        text.append(
            f"  {si(inputs.train_tokens, 'tokens', digits=3)} × {si(plan.model.active_params, 'params')}"
            f" = {si(tr.flops, 'FLOP')} at {percent(inputs.mfu_ratio)} MFU\n"
        )
        text.append(
            f"  {tr.gpu_hours:,.1f} GPU-hours = {duration(tr.wall_clock_h * 3600)} on {inputs.count} GPU(s)"
        )
        if tr.usd is not None:
            text.append(f"\n  {usd(tr.usd)} at {usd(inputs.cloud_usd_per_gpu_h)}/GPU-h", style="bold")
    return text


def _row(label: str, control: Widget) -> Horizontal:
    return Horizontal(Label(label, classes="form-label"), control, classes="form-row")


class PlanPane(Horizontal):
    """Form on the left, answer on the right."""

    class InputsChanged(Message):
        def __init__(self, inputs: PlanInputs) -> None:
            super().__init__()
            self.inputs = inputs

    def __init__(self, inputs: PlanInputs, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.inputs = inputs
        self.error: str | None = None
        self.plan: PlanAnswer | None = None

    def compose(self) -> ComposeResult:
        i = self.inputs
        catalog_model = i.model if i.model in {m.id for m in all_models()} else None
        with VerticalScroll(id="plan-form"):
            yield _row(
                "model",
                Select(
                    [(m.name, m.id) for m in all_models()],
                    value=catalog_model or Select.NULL,
                    allow_blank=True,
                    prompt="(config.json below)",
                    id="plan-model",
                    compact=True,
                ),
            )
            yield _row(
                "config.json",
                Input(
                    value="" if catalog_model else i.model,
                    placeholder="or a local path",
                    id="plan-model-path",
                    compact=True,
                ),
            )
            yield _row(
                "mode",
                Select(
                    [(m, m) for m in MODES], value=i.mode, allow_blank=False, id="plan-mode", compact=True
                ),
            )
            yield _row(
                "quant",
                Select(
                    [(q.id, q.id) for q in all_quants()],
                    value=i.quant,
                    allow_blank=False,
                    id="plan-quant",
                    compact=True,
                ),
            )
            yield _row("batch", Input(str(i.batch), type="integer", id="plan-batch", compact=True))
            yield _row(
                "context", Input(str(i.context_tokens), type="integer", id="plan-context", compact=True)
            )
            yield _row(
                "GPU",
                Select(
                    [(g.name, g.id) for g in all_gpus()],
                    value=i.gpu,
                    allow_blank=False,
                    id="plan-gpu",
                    compact=True,
                ),
            )
            yield _row("count", Input(str(i.count), type="integer", id="plan-count", compact=True))
            yield _row(
                "parallel",
                Select(
                    [(p, p) for p in PARALLELISM],
                    value=i.parallel,
                    allow_blank=False,
                    id="plan-parallel",
                    compact=True,
                ),
            )
            yield _row(
                "engine",
                Select(
                    [(e, e) for e in ENGINE_NAMES],
                    value=i.engine,
                    allow_blank=False,
                    id="plan-engine",
                    compact=True,
                ),
            )
            yield _row("act. ckpt", Switch(i.activation_checkpointing, id="plan-checkpointing"))
            yield Label("prices", classes="form-section")
            yield _row(
                "$/kWh",
                Input(f"{i.electricity_usd_per_kwh:g}", type="number", id="plan-electricity", compact=True),
            )
            yield _row("PUE", Input(f"{i.pue:g}", type="number", id="plan-pue", compact=True))
            yield _row(
                "GPU price $",
                Input(
                    "" if i.gpu_price_usd is None else f"{i.gpu_price_usd:g}",
                    placeholder="list price",
                    type="number",
                    id="plan-gpu-price",
                    compact=True,
                ),
            )
            yield _row(
                "life years", Input(f"{i.service_life_years:g}", type="number", id="plan-life", compact=True)
            )
            yield _row(
                "hosting $/h",
                Input(f"{i.hosting_usd_per_h:g}", type="number", id="plan-hosting", compact=True),
            )
            yield _row(
                "cloud $/GPU-h",
                Input(f"{i.cloud_usd_per_gpu_h:g}", type="number", id="plan-cloud", compact=True),
            )
            yield _row(
                "utilisation",
                Input(f"{i.utilisation_ratio:g}", type="number", id="plan-utilisation", compact=True),
            )
            yield Label("training", classes="form-section")
            yield _row(
                "tokens", Input(f"{i.train_tokens:g}", type="number", id="plan-train-tokens", compact=True)
            )
            yield _row("MFU", Input(f"{i.mfu_ratio:g}", type="number", id="plan-mfu", compact=True))
        with VerticalScroll(id="plan-answer"):
            yield Static(id="plan-result")

    def on_mount(self) -> None:
        self._recompute()

    def on_resize(self) -> None:
        self._show()

    @on(Select.Changed)
    @on(Input.Changed)
    @on(Switch.Changed)
    def _changed(self) -> None:
        self._recompute()

    def read_form(self) -> PlanInputs:
        """The form's values; ModelInputError names the field that cannot be read."""
        changes: dict[str, object] = {}
        for widget_id, field_name in _SELECT_FIELDS.items():
            value = self.query_one(f"#{widget_id}", Select).value
            if value is not Select.NULL:
                changes[field_name] = value
        path = self.query_one("#plan-model-path", Input).value.strip()
        if path:
            changes["model"] = path
        elif "model" not in changes:
            raise ModelInputError("choose a model or enter the path of a local config.json")
        for widget_id, (field_name, kind) in _NUMBER_FIELDS.items():
            raw = self.query_one(f"#{widget_id}", Input).value.strip()
            try:
                changes[field_name] = kind(float(raw)) if kind is int and raw else kind(raw)
            except ValueError:
                label = widget_id.removeprefix("plan-").replace("-", " ")
                raise ModelInputError(f"{label}: {raw!r} is not a number") from None
        price = self.query_one("#plan-gpu-price", Input).value.strip()
        try:
            changes["gpu_price_usd"] = float(price) if price else None
        except ValueError:
            raise ModelInputError(f"GPU price: {price!r} is not a number") from None
        changes["activation_checkpointing"] = self.query_one("#plan-checkpointing", Switch).value
        return self.inputs.with_(**changes)

    def _recompute(self) -> None:
        try:
            inputs = self.read_form()
            self.plan = answer(inputs)
            self.inputs = inputs
            self.error = None
        except (ModelInputError, UnknownIdError) as exc:
            self.error = str(exc)
        except (KeyError, ValueError) as exc:  # e.g. a dtype this GPU has no peak for
            self.error = str(exc).strip("'\"")
        self._show()
        if self.error is None:
            self.post_message(self.InputsChanged(self.inputs))

    def _show(self) -> None:
        result = self.query_one("#plan-result", Static)
        if self.error is not None:
            result.update(Text(f"cannot answer: {self.error}", style="bold red"))
        elif self.plan is not None:
            result.update(plan_text(self.plan, max(20, self.query_one("#plan-answer").content_size.width)))
