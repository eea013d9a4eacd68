"""`gpuwatch advise power-limit`: the power cap that minimises $ per 1M tokens (or maximises tokens/J) for
what each GPU is running now, with the tokens/s it is expected to cost and why.

It watches the cards for a few polls (``--samples``), averages their board power, and asks the power model
(gpuwatch/model/power.py) what lower limits would do to that workload, given its bound. Nothing is set:
the answer is advice, labelled modelled.
"""

from __future__ import annotations

import argparse
import json
import queue
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from gpuwatch.commands.common import add_source_options
from gpuwatch.errors import UserError
from gpuwatch.options import Option, add_options, declare

ADVISE_OPTIONS = ("samples", "objective", "max_speed_loss_ratio")
declare(
    Option(
        "samples",
        ("--samples",),
        "int",
        "polls to average the board power over before advising",
        default=5,
        minimum=1,
        maximum=3600,
        metavar="N",
    )
)
declare(
    Option(
        "objective",
        ("--objective",),
        "text",
        "what the cap optimises",
        default="usd_per_mtok",
        choices=("usd_per_mtok", "tokens_per_j"),
    )
)
declare(
    Option(
        "max_speed_loss_ratio",
        ("--max-loss",),
        "float",
        "give up at most this share of tokens/s (e.g. 0.05)",
        minimum=0,
        maximum=1,
        optional=True,
        metavar="RATIO",
    )
)
#: a poll may take this long beyond the interval before the command gives up waiting
POLL_GRACE_S = 30.0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "advise",
        help="advice from the live cards: the power limit to set",
        description="Advice computed from the live readings and the planning model; nothing is changed.",
    )
    what = p.add_subparsers(dest="advise_command", metavar="WHAT", required=True)
    q = what.add_parser(
        "power-limit",
        help="the power cap that minimises $ per 1M tokens (or maximises tokens/J), per GPU",
        description=__doc__,
    )
    q.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    add_options(q, ADVISE_OPTIONS, group="advice")
    add_source_options(q, with_prices=True, subcommand=True)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from gpuwatch.commands.common import live_config, open_live_session
    from gpuwatch.live.config import gpu_price_usd
    from gpuwatch.live.power_advice import advise_gpu
    from gpuwatch.model.catalog import get_gpu

    samples = args.samples or 5
    config = live_config(args)
    session = open_live_session(args, config=config, isolate=True)
    arrived: queue.Queue[Any] = queue.Queue()
    session.add_listener(lambda snap, box: arrived.put((snap, box)))
    session.start()
    seen: list[Any] = []
    try:
        deadline = time.monotonic() + samples * config.interval_s + POLL_GRACE_S
        while len(seen) < samples:
            try:
                seen.append(arrived.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                raise UserError(
                    f"no reading from the GPUs within {POLL_GRACE_S:g} s; see `gpuwatch doctor`"
                ) from None
    finally:
        session.stop()
    snap, box = seen[-1]
    steady = seen[1:] if len(seen) > 1 else seen  # the first poll may catch the card ramping up
    rows = []
    for sample, g in zip(snap.gpus, box.gpus, strict=True):
        powers = [s.gpus[sample.index].power_w for s, _ in steady if s.gpus[sample.index].power_w is not None]
        mean_w = sum(powers) / len(powers) if powers else None
        spec = get_gpu(sample.catalog_id) if sample.catalog_id else None
        price = gpu_price_usd(config, spec) if spec is not None else None
        live = advise_gpu(
            sample, g, spec, config.prices, price, power_w=mean_w, objective=args.objective or "usd_per_mtok",
            max_speed_loss_ratio=args.max_speed_loss_ratio, n_gpus=len(snap.gpus),
        )  # fmt: skip
        rows.append((sample, mean_w, live))
    payload = {
        "command": "advise power-limit",
        "source": session.description,
        "samples": samples,
        "gpus": [_gpu_json(sample, mean_w, live) for sample, mean_w, live in rows],
    }
    if args.json:
        print(json.dumps(payload, indent=2, allow_nan=False))
        return 0
    console = Console()
    table = Table(title=f"power-limit advice ({session.description}; modelled)", title_justify="left")
    for col in ("GPU", "now", "default", "advised", "tokens/s", "power", "why"):
        table.add_column(col, justify="left" if col in ("GPU", "why") else "right")
    for sample, mean_w, live in rows:
        a = live.advice
        table.add_row(
            f"{sample.index} {sample.name}",
            "n/a" if mean_w is None else f"{mean_w:,.0f} W",
            f"{(sample.power_limit_default_w or 0):,.0f} W",
            "n/a" if a is None else f"{a.advised_limit_w:,.0f} W",
            "n/a" if a is None else f"-{a.expected_speed_loss_ratio:.1%}",
            "n/a" if a is None else f"-{a.power_saving_w:,.0f} W",
            live.reason + (f" [{live.bound_basis}]" if live.bound_basis else ""),
        )
    console.print(table)
    return 0


def _gpu_json(sample: Any, mean_w: float | None, live: Any) -> dict[str, Any]:
    a = live.advice
    out: dict[str, Any] = {
        "index": sample.index,
        "name": sample.name,
        "power_w": mean_w,
        "power_provenance": "measured" if mean_w is not None else "unknown",
        "power_limit_w": sample.power_limit_w,
        "default_power_limit_w": sample.power_limit_default_w,
        "advised_power_limit_w": None if a is None else a.advised_limit_w,
        "reason": live.reason,
        "bound_basis": live.bound_basis,
        "tokens_per_s_provenance": live.tokens_per_s_provenance.value,
        "provenance": "modelled",
    }
    if a is not None:
        out.update(
            bound=a.bound,
            objective=a.objective,
            expected_tokens_per_s_loss_ratio=a.expected_speed_loss_ratio,
            power_saving_w=a.power_saving_w,
            tokens_per_j_gain_ratio=a.tokens_per_j_gain_ratio,
            usd_per_mtok_default=a.usd_per_mtok_default,
            usd_per_mtok_advised=a.usd_per_mtok_advised,
            usd_per_mtok_change_ratio=a.usd_per_mtok_change_ratio,
        )
    return out
