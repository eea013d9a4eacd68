"""The ``gpuwatch plan …`` command that answers a what-if from a shell (what the TUI's ``y`` copies).

Written from the option declarations (gpuwatch/options/settings.py): the flags a sub-command takes are
the ones it parses, each value in the text that reads back as the same value, so the pasted command
prints the figures the Plan pane shows.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from gpuwatch.model.catalog import get_gpu
from gpuwatch.model.errors import UnknownIdError
from gpuwatch.model.plan_inputs import OWNERSHIP_FIELDS, PlanInputs
from gpuwatch.options.core import get
from gpuwatch.options.settings import PLAN_FIELDS, PLAN_OPTIONS

_TRAINING_MODES = ("train", "lora", "qlora")


def plan_value(inputs: PlanInputs, key: str) -> Any:
    """The value of option ``key`` in a what-if."""
    if key in OWNERSHIP_FIELDS:
        return getattr(inputs.prices, key)
    return getattr(inputs, PLAN_FIELDS.get(key, key))


def _meaningful(inputs: PlanInputs, key: str) -> bool:
    """Options that the sub-command would refuse for this mode are not written."""
    if key == "lora_rank":
        return inputs.mode in ("lora", "qlora")
    if key == "zero_stage":
        return inputs.mode == "train"
    if key in ("optimizer", "activation_checkpointing"):
        return inputs.mode in _TRAINING_MODES
    return True


def plan_command(inputs: PlanInputs, *, gpus_file: str | None = None) -> str:
    """``plan cost`` for an inference workload with a price (``plan throughput`` where nothing prices the
    GPU), ``plan train`` for the training modes; the workload always, other values where they differ
    from the defaults. ``gpus_file`` is the user catalog the session loaded: without it a pasted command
    would not know a card it adds, nor price one it corrects, as the pane did."""
    default = PlanInputs()
    training = inputs.mode in _TRAINING_MODES
    if training:
        sub = "train"
    else:
        priced = (
            inputs.gpu_price_usd is not None
            or inputs.prices.server_capex_usd is not None
            or _list_price(inputs.gpu) is not None
        )
        sub = "cost" if priced else "throughput"
    always = {"model", "quant", "gpu", "count", "batch", "context_tokens"}
    always |= {"mode", "train_tokens", "mfu_ratio"} if training else {"parallel", "engine_profile"}
    args = ["gpuwatch", "plan", sub]
    if gpus_file is not None:
        args += get("gpus_file").argv(str(Path(gpus_file).expanduser()))
    for key in PLAN_OPTIONS[sub]:
        value = plan_value(inputs, key)
        if not _meaningful(inputs, key) or (value is None and key not in OWNERSHIP_FIELDS):
            continue
        if key in always or value != plan_value(default, key):
            if key == "model" and (Path(value).suffix == ".json" or "/" in value):
                value = str(Path(value).expanduser())
            args += get(key).argv("none" if value is None else value)
    return shlex.join(args)


def _list_price(gpu_id: str) -> float | None:
    try:
        return get_gpu(gpu_id).list_price_usd
    except UnknownIdError:
        return None
