"""`gpuwatch plan`: what-if answers from the model — memory, speed, cost, GPUs, parallelism, training.

This module turns the options (declared in gpuwatch/options/settings.py, which also says which
sub-command takes which) into a :class:`~gpuwatch.model.whatif.PlanInputs`; gpuwatch/commands/plan_render.py
prints the answer. Every number comes from :mod:`gpuwatch.model.whatif`, the composition the TUI's
planning panes use, so a what-if copied out of the TUI prints the same figures here.
"""

from __future__ import annotations

import argparse
from typing import Any

from gpuwatch.commands import SUMMARIES, plan_render
from gpuwatch.errors import UserError
from gpuwatch.model.catalog import load_user_gpus
from gpuwatch.model.errors import ModelInputError
from gpuwatch.model.whatif import PlanInputs
from gpuwatch.options import OneLineParser, add_options, get, given
from gpuwatch.options.settings import PLAN_FIELDS, PLAN_OPTIONS

SUBCOMMANDS = tuple(PLAN_OPTIONS)
TRAINING_MODES = plan_render.TRAINING_MODES
_HELP = {
    "memory": "GPU memory of inference or training, and whether it fits",
    "throughput": "decode and prefill speed of a serving workload",
    "cost": "$ per 1M tokens owned vs rented, and when owning pays off",
    "gpus": "the GPU catalog; with --model, this workload on every GPU",
    "parallel": "tensor-parallel limit, GPUs to hold the model, pipeline bubble",
    "train": "GPU-hours, wall-clock and $ of a training run, its compute and its memory",
    "serve": "GPUs, replicas, latency and $ for a request rate (prompt/output tokens, p95 target)",
}
#: `plan serve`'s request options: what the plan answers for, not PlanInputs fields
SERVE_REQUEST = ("prompt_tokens", "output_tokens", "rate", "p95_latency_s", "sweep_batch")
_GROUPS = (
    ("workload", ("model", "quant", "gpu", "count", "batch", "context_tokens", "kv_dtype")),
    ("serving", ("engine_profile", "parallel", "link", "microbatches", "power_limit_w")),
    ("requests", SERVE_REQUEST),
    (
        "engine memory budget",
        (
            "gpu_memory_utilization",
            "max_num_batched_tokens",
            "max_num_seqs",
            "cuda_graphs",
            "block_size",
            "n_ctx",
            "n_parallel",
            "n_ubatch",
            "n_gpu_layers",
            "flash_attention",
            "mem_fraction_static",
            "free_gpu_memory_fraction",
        ),
    ),
    ("memory mode", ("mode", "lora_rank", "zero_stage", "optimizer", "activation_checkpointing")),
    ("training run", ("framework", "train_tokens", "mfu_ratio")),
)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "plan",
        help=SUMMARIES["plan"],
        description="Answers from the planning model; every sub-command prints a table, or one JSON object "
        "with --json.",
    )
    p.set_defaults(run=run)
    what = p.add_subparsers(dest="plan_command", metavar="WHAT", required=True, parser_class=OneLineParser)
    for name, keys in PLAN_OPTIONS.items():
        q: argparse.ArgumentParser = what.add_parser(name, help=_HELP[name], description=_HELP[name])
        q.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
        add_options(q, ["gpus_file"])
        grouped = [k for _, ks in _GROUPS for k in ks]
        for title, group in (*_GROUPS, ("prices", tuple(k for k in keys if k not in grouped))):
            chosen = [k for k in group if k in keys]
            if chosen:
                add_options(q, chosen, group=title)
        if name == "train":
            # `plan train` costs a training run: only the training modes
            for action in q._actions:
                if action.dest == "mode":
                    action.choices = TRAINING_MODES


def _inputs(args: argparse.Namespace, keys: tuple[str, ...], **fixed: Any) -> PlanInputs:
    """PlanInputs from the options given; anything not given keeps the shared default."""
    # an optional price given as "none" is None here: it clears the default (e.g. no cloud comparison)
    changes = {PLAN_FIELDS.get(k, k): v for k, v in given(args, keys).items()}
    changes.update(fixed)
    inputs = PlanInputs().with_(**changes)
    _check_meaningful(args, inputs)
    return inputs


def _check_meaningful(args: argparse.Namespace, inputs: PlanInputs) -> None:
    """Refuse options the chosen mode would silently ignore."""
    g = given(args)
    if "lora_rank" in g and inputs.mode not in ("lora", "qlora"):
        raise UserError("--lora-rank applies to --mode lora or qlora")
    if "zero_stage" in g and inputs.mode != "train":
        raise UserError("--zero applies to --mode train")
    for key, flag in (("optimizer", "--optimizer"), ("activation_checkpointing", "--checkpointing")):
        if key in g and inputs.mode == "inference":
            raise UserError(f"{flag} applies to --mode train, lora or qlora")
    if "kv_dtype" in g and inputs.mode != "inference":
        raise UserError("--kv-dtype applies to --mode inference (training keeps no KV cache)")


def run(args: argparse.Namespace) -> int:
    name: str = args.plan_command
    keys = PLAN_OPTIONS[name]
    if args.gpus_file is not None:  # before the ids are resolved: it may add the --gpu asked for
        try:
            load_user_gpus(args.gpus_file)
        except ModelInputError as exc:
            raise UserError(f"--gpus-file: {exc}") from None
    if name == "gpus":
        inputs = _inputs(args, keys) if args.model is not None else None
        return plan_render.gpus(inputs, args.json)
    if name == "serve":
        request = {
            k: getattr(args, k) if getattr(args, k) is not None else get(k).default for k in SERVE_REQUEST
        }
        plan_keys = tuple(k for k in keys if k not in SERVE_REQUEST)
        # without --count, every TP degree that divides the heads is tried and the fewest GPUs win
        return plan_render.serve(_inputs(args, plan_keys), request, args.json, best_tp=args.count is None)
    fixed = {"mode": "train"} if name == "train" and args.mode is None else {}
    render = getattr(plan_render, name)
    result: int = render(_inputs(args, keys, **fixed), args.json)
    return result
