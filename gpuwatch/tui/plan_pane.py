"""The planning pane: a form whose every change recomputes the answer at once (no submit button); the
model runs in a worker thread, the form stays responsive."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.validation import ValidationResult, Validator
from textual.widget import Widget
from textual.widgets import Input, Label, Select, Static, Switch
from textual.worker import get_current_worker

from gpuwatch.model.catalog import all_gpus
from gpuwatch.model.engine_profiles import ENGINE_NAMES
from gpuwatch.model.errors import ModelInputError, UnknownIdError
from gpuwatch.model.llm import all_models
from gpuwatch.model.plan_inputs import OPTIMIZERS
from gpuwatch.model.quant import all_quants
from gpuwatch.model.whatif import (
    DEFAULT_OPTIMIZER,
    MODES,
    PARALLELISM,
    ZERO_STAGES,
    PlanAnswer,
    PlanInputs,
    answer,
)
from gpuwatch.options import Invalid, Option, OptionError, get
from gpuwatch.options.plan_command import plan_value
from gpuwatch.options.settings import PLAN_FIELDS
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

#: form field id -> option key (gpuwatch/options/settings.py) for the number Inputs: the label, the range
#: and the check of each come from its declaration, the same the command line uses
_NUMBER_FIELDS: dict[str, str] = {
    "plan-batch": "batch",
    "plan-context": "context_tokens",
    "plan-count": "count",
    "plan-electricity": "electricity_usd_per_kwh",
    "plan-pue": "pue",
    "plan-gpu-price": "gpu_price_usd",
    "plan-life": "service_life_years",
    "plan-hosting": "hosting_usd_per_h",
    "plan-cloud": "cloud_usd_per_gpu_h",
    "plan-utilisation": "utilisation_ratio",
    "plan-train-tokens": "train_tokens",
    "plan-mfu": "mfu_ratio",
    "plan-lora-rank": "lora_rank",
}
#: what an empty optional field means
_PLACEHOLDERS = {"plan-gpu-price": "list price", "plan-cloud": "no cloud price"}
_SELECT_FIELDS = {
    "plan-model": "model",
    "plan-mode": "mode",
    "plan-quant": "quant",
    "plan-gpu": "gpu",
    "plan-parallel": "parallel",
    "plan-engine": "engine",
    "plan-zero": "zero_stage",
}
#: optional Selects: blank means the model's default (None in PlanInputs)
_OPTIONAL_SELECT_FIELDS = {"plan-optimizer": "optimizer", "plan-link": "link"}
#: links offered for multi-GPU inference (parallel.parse_link text); blank = the GPU's own
LINKS = ("pcie4", "pcie5", "nvlink", "ethernet:25")

_TRAINING = ("train", "lora", "qlora")
#: form row id -> when it means something; hidden otherwise, so the form asks only what the answer uses
_SHOWN_WHEN: dict[str, Callable[[PlanInputs], bool]] = {
    "row-quant": lambda i: i.mode == "inference",
    "row-parallel": lambda i: i.mode == "inference" and i.count > 1,
    "row-link": lambda i: i.mode == "inference" and i.count > 1,
    "row-engine": lambda i: i.mode == "inference",
    "row-lora-rank": lambda i: i.mode in ("lora", "qlora"),
    "row-zero": lambda i: i.mode == "train",
    "row-optimizer": lambda i: i.mode in _TRAINING,
    "row-checkpointing": lambda i: i.mode in _TRAINING,
    "row-electricity": lambda i: i.mode == "inference",
    "row-pue": lambda i: i.mode == "inference",
    "row-gpu-price": lambda i: i.mode == "inference",
    "row-life": lambda i: i.mode == "inference",
    "row-hosting": lambda i: i.mode == "inference",
    "row-utilisation": lambda i: i.mode == "inference",
    "section-training": lambda i: i.mode in _TRAINING,
    "row-train-tokens": lambda i: i.mode in _TRAINING,
    "row-mfu": lambda i: i.mode in _TRAINING,
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


def _heading(plan: PlanAnswer) -> str:
    inputs = plan.inputs
    count = f"{inputs.count}x " if inputs.count > 1 else ""
    if inputs.mode == "inference":
        return f"{plan.model.name} · {plan.quant.id} · inference on {count}{plan.gpu.name}"
    detail = {
        "train": f"full training, ZeRO-{inputs.zero_stage}" if inputs.zero_stage else "full training",
        "lora": f"LoRA rank {inputs.lora_rank}",
        "qlora": f"QLoRA rank {inputs.lora_rank} (4-bit base)",
    }[inputs.mode]
    optimizer = inputs.optimizer or DEFAULT_OPTIMIZER.get(inputs.mode, "adamw")
    return f"{plan.model.name} · {detail} · {optimizer} on {count}{plan.gpu.name}"


def plan_text(plan: PlanAnswer, width: int) -> Text:
    """The answer. Separating spaces end a piece rather than start the next, so that every renderer of the
    exported SVG (some drop a text run's leading spaces) keeps the words apart."""
    inputs = plan.inputs
    mem = plan.memory
    text = Text()
    text.append(_heading(plan) + "\n", style="bold")
    text.append("\nmemory per GPU  ")
    text.append(f"{mem.per_gpu_gib:.1f} GiB ", style="bold")
    text.append(f"of {mem.capacity_gib:.0f} GiB ({mem.usable_gib:.1f} usable)\n")
    if mem.fits:
        text.append("FITS", style="bold black on green")
    else:
        needed = f"needs {mem.gpus_needed} GPUs" if mem.gpus_needed else "does not fit on any count"
        text.append("DOES NOT FIT", style="bold white on red")
        text.append("  ")
        text.append(needed, style="red")
    text.append("\n")
    text.append_text(memory_bar(plan, max(10, width - 2)))
    text.append("\n")
    styles = iter(_FALLBACK_STYLES * 4)
    column = 0
    for name, value in mem.components_gib.items():  # a legend that breaks between items, never inside one
        style = _COMPONENT_STYLES.get(name) or next(styles)
        item = f"{name.replace('_', ' ')} {value:.2f} GiB  "
        if column and column + 2 + len(item.rstrip()) > width:
            text.append("\n")
            column = 0
        text.append("■ ", style=style)
        text.append(item)
        column += 2 + len(item)
    t = plan.throughput
    if inputs.mode == "inference" and not mem.fits:
        text.append("\n\nno tok/s and no $/1M tokens: the model cannot load on ", style="red")
        text.append(f"{inputs.count} x {plan.gpu.name}" if inputs.count > 1 else plan.gpu.name, style="red")
    if t is not None:
        over = f"{t.engine}, {t.parallel} over {t.count} GPUs" if t.count > 1 else t.engine
        text.append(f"\n\nthroughput ({over})\n", style="bold")
        text.append(f"  decode   {rate(float(t.decode_tokens_per_s))}  ")
        text.append(f"({rate(float(t.decode_tokens_per_s_per_stream))} per stream)\n")
        text.append(f"  prefill  {rate(float(t.prefill_tokens_per_s))}\n")
        text.append(f"  time per output token {duration(float(t.time_per_output_token_s))}   ")
        text.append(f"time to first token {duration(float(t.time_to_first_token_s))}\n  ")
        text.append(
            f"decode is {t.bound}-bound ", style="bold yellow" if t.bound == "memory" else "bold cyan"
        )
        text.append(f"(intensity {float(t.arithmetic_intensity_flop_per_byte):.3g} FLOP/byte)\n")
        text.append(f"  prefill is {t.prefill_bound}-bound")
    c = plan.cost
    p = inputs.prices
    if c is not None:
        text.append("\n\ncost\n", style="bold")
        text.append("  $/1M tokens  own ")
        text.append(f"{usd(c.usd_per_mtok, digits=3)} ", style="bold green")
        text.append(f"at {percent(p.utilisation_ratio)} utilisation\n")
        text.append("               cloud ")
        if p.cloud_usd_per_gpu_h is None:
            text.append("no cloud price entered", style="dim")
        else:
            text.append(f"{usd(c.cloud_usd_per_mtok, digits=3)} ", style="bold")
            text.append(f"at {usd(p.cloud_usd_per_gpu_h)}/GPU-h")
        if c.own_usd_per_h is None:
            text.append(
                f"\n  {plan.gpu.name} has no list price: enter a GPU price to cost owning it", style="dim"
            )
        else:
            price = inputs.gpu_price_usd if inputs.gpu_price_usd is not None else plan.gpu.list_price_usd
            source = "entered" if inputs.gpu_price_usd is not None else "list"
            parts = (
                f"capex {usd(c.capex_usd_per_h, digits=3)}",
                f"power {usd(c.power_usd_per_h, digits=3)}",
                f"hosting {usd(c.hosting_usd_per_h, digits=3)}",
            )
            text.append(f"\n  owning costs {usd(c.own_usd_per_h, digits=3)}/h = {' + '.join(parts)}")
            bought = (
                f"{usd(p.server_capex_usd, digits=0)} server"
                if p.server_capex_usd is not None
                else f"{inputs.count} x {usd(price, digits=0)} {source} price"
            )
            text.append(f"\n  ({bought} over {p.service_life_years:g} years; power at TDP x PUE {p.pue:g})")
            if p.cloud_usd_per_gpu_h is None:
                pass
            elif c.breakeven_utilisation_ratio is not None:
                text.append(
                    f"\n  buying beats renting above {percent(c.breakeven_utilisation_ratio)} utilisation"
                )
            else:
                text.append("\n  buying never beats renting at these prices")
            if c.breakeven_months is not None:
                text.append(f";\n  the purchase pays for itself in {c.breakeven_months:.1f} months")
    tr = plan.training
    if tr is not None:
        text.append("\n\ntraining (6·N·D)\n", style="bold")
        text.append(
            f"  6 × {plan.model.active_params / 1e9:.2f}B params × {inputs.train_tokens / 1e9:.3g}B tokens"
            f" = {si(tr.flops, 'FLOP')} at {percent(inputs.mfu_ratio)} MFU\n"
        )
        text.append(
            f"  {tr.gpu_hours:,.1f} GPU-hours = {duration(tr.wall_clock_h * 3600)} on {inputs.count} GPU(s)"
        )
        if tr.usd is not None:
            text.append(f"\n  {usd(tr.usd)} rented at {usd(p.cloud_usd_per_gpu_h)}/GPU-h", style="bold")
    return text


def _row(label: str, control: Widget, *extra: Widget, id: str | None = None) -> Horizontal:
    return Horizontal(Label(label, classes="form-label"), control, *extra, classes="form-row", id=id)


def _select(options: list[tuple[str, object]], value: object, widget_id: str, **kw: object) -> Select[object]:
    return Select(options, value=value, id=widget_id, compact=True, **kw)  # type: ignore[arg-type]


class _Declared(Validator):
    """The option's own check: a bad character or an out-of-range value marks the field invalid at once
    (instead of Input's type filter silently dropping the character: "2.5" into batch is not "25")."""

    def __init__(self, option: Option) -> None:
        super().__init__()
        self.option = option

    def validate(self, value: str) -> ValidationResult:
        try:
            self.option.convert(value)
        except Invalid as bad:
            return self.failure(bad.reason or f"expected {bad.allowed}")
        return self.success()


def _number_input(widget_id: str, value: float | int | None) -> Input:
    option = get(_NUMBER_FIELDS[widget_id])
    return Input(
        "" if value is None else option.text(value),
        placeholder=_PLACEHOLDERS.get(widget_id, ""),
        validators=[_Declared(option)],
        id=widget_id,
        compact=True,
    )


def _number_row(widget_id: str, inputs: PlanInputs, row_id: str | None = None) -> Horizontal:
    key = _NUMBER_FIELDS[widget_id]
    option = get(key)
    return _row(option.label or key, _number_input(widget_id, plan_value(inputs, key)), id=row_id)


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
        self._wanted: PlanInputs | None = None  # the form's latest readable inputs

    def compose(self) -> ComposeResult:
        i = self.inputs
        catalog_model = i.model if i.model in {m.id for m in all_models()} else None
        with VerticalScroll(id="plan-form"):
            yield _row(
                "model",
                _select(
                    [(m.name, m.id) for m in all_models()],
                    catalog_model or Select.NULL,
                    "plan-model",
                    allow_blank=True,
                    prompt="(config.json below)",
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
            yield _row("mode", _select([(m, m) for m in MODES], i.mode, "plan-mode", allow_blank=False))
            yield _row(
                "quant",
                _select([(q.id, q.id) for q in all_quants()], i.quant, "plan-quant", allow_blank=False),
                id="row-quant",
            )
            yield _number_row("plan-batch", i)
            yield _number_row("plan-context", i)
            yield _row(
                "GPU", _select([(g.name, g.id) for g in all_gpus()], i.gpu, "plan-gpu", allow_blank=False)
            )
            yield _number_row("plan-count", i)
            yield _row(
                "parallel",
                _select([(p, p) for p in PARALLELISM], i.parallel, "plan-parallel", allow_blank=False),
                id="row-parallel",
            )
            yield _row(
                "link",
                _select(
                    [(link, link) for link in LINKS],
                    i.link or Select.NULL,
                    "plan-link",
                    allow_blank=True,
                    prompt="the GPU's own",
                ),
                id="row-link",
            )
            yield _row(
                "engine",
                _select([(e, e) for e in ENGINE_NAMES], i.engine, "plan-engine", allow_blank=False),
                id="row-engine",
            )
            yield _number_row("plan-lora-rank", i, "row-lora-rank")
            yield _row(
                "ZeRO stage",
                _select(
                    [
                        ("0 (count splits a replica)", 0),
                        *((f"{z} (count = DP ranks)", z) for z in ZERO_STAGES[1:]),
                    ],
                    i.zero_stage,
                    "plan-zero",
                    allow_blank=False,
                ),
                id="row-zero",
            )
            yield _row(
                "optimizer",
                _select(
                    [(o, o) for o in OPTIMIZERS],
                    i.optimizer or Select.NULL,
                    "plan-optimizer",
                    allow_blank=True,
                    prompt=_optimizer_prompt(i.mode),
                ),
                id="row-optimizer",
            )
            yield _row(
                "act. ckpt",
                Switch(i.activation_checkpointing, id="plan-checkpointing"),
                Label("recompute activations: less memory", classes="switch-hint"),
                id="row-checkpointing",
            )
            yield Label("prices", classes="form-section")
            yield _number_row("plan-electricity", i, "row-electricity")
            yield _number_row("plan-pue", i, "row-pue")
            yield _number_row("plan-gpu-price", i, "row-gpu-price")
            yield _number_row("plan-life", i, "row-life")
            yield _number_row("plan-hosting", i, "row-hosting")
            yield _number_row("plan-cloud", i)
            yield _number_row("plan-utilisation", i, "row-utilisation")
            yield Label("training", classes="form-section", id="section-training")
            yield _number_row("plan-train-tokens", i, "row-train-tokens")
            yield _number_row("plan-mfu", i, "row-mfu")
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
        for widget_id, field_name in _OPTIONAL_SELECT_FIELDS.items():
            value = self.query_one(f"#{widget_id}", Select).value
            changes[field_name] = None if value is Select.NULL else value
        path = self.query_one("#plan-model-path", Input).value.strip()
        if path:
            changes["model"] = path
        elif "model" not in changes:
            raise ModelInputError("choose a model or enter the path of a local config.json")
        for widget_id, key in _NUMBER_FIELDS.items():
            option = get(key)
            raw = self.query_one(f"#{widget_id}", Input).value
            try:
                changes[PLAN_FIELDS.get(key, key)] = option.check(raw, name=option.label or key)
            except OptionError as exc:
                raise ModelInputError(str(exc)) from None
        changes["activation_checkpointing"] = self.query_one("#plan-checkpointing", Switch).value
        return self.inputs.with_(**changes)

    def _show_meaningful_rows(self) -> None:
        """Hide the fields the chosen mode (and GPU count) does not use; their values are kept."""
        mode = self.query_one("#plan-mode", Select).value
        try:
            count = get("count").convert(self.query_one("#plan-count", Input).value)
        except Invalid:
            count = self.inputs.count
        shown = self.inputs.with_(mode=mode if isinstance(mode, str) else self.inputs.mode, count=count)
        for row_id, meaningful in _SHOWN_WHEN.items():
            self.query_one(f"#{row_id}").display = meaningful(shown)
        optimizer = self.query_one("#plan-optimizer", Select)
        optimizer.prompt = _optimizer_prompt(shown.mode)

    def _recompute(self) -> None:
        """Read the form at once (a bad field is refused while typing); the model answers in a worker
        thread, so that a keystroke never waits on it; an answer to an older form is dropped."""
        self._show_meaningful_rows()
        try:
            inputs = self.read_form()
        except (ModelInputError, UnknownIdError) as exc:
            self._wanted = None
            self.error = str(exc)
            self._show()
            return
        self._wanted = inputs
        self._answer(inputs)

    @work(thread=True, exclusive=True, group="plan")
    def _answer(self, inputs: PlanInputs) -> None:
        plan, error = None, None
        try:
            plan = answer(inputs)
        except (ModelInputError, UnknownIdError) as exc:
            error = str(exc)
        except (KeyError, ValueError) as exc:  # e.g. a dtype this GPU has no peak for
            error = str(exc).strip("'\"")
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._answered, inputs, plan, error)

    def _answered(self, inputs: PlanInputs, plan: PlanAnswer | None, error: str | None) -> None:
        if inputs != self._wanted:  # the form moved on while this ran
            return
        self.error = error
        if plan is not None:
            self.plan, self.inputs = plan, inputs
        self._show()
        if error is None:
            self.post_message(self.InputsChanged(inputs))

    def _show(self) -> None:
        result = self.query_one("#plan-result", Static)
        if self.error is not None:
            result.update(Text(f"cannot answer: {self.error}", style="bold red"))
        elif self.plan is not None:
            result.update(plan_text(self.plan, max(20, self.query_one("#plan-answer").content_size.width)))


def _optimizer_prompt(mode: str) -> str:
    return f"default ({DEFAULT_OPTIMIZER.get(mode, 'adamw')})"
