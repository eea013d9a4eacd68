"""`gpuwatch advise power-limit`: the power cap that minimises $ per 1M tokens (or maximises tokens/J) for
what each GPU is running now, with the tokens/s it is expected to cost and why.

It watches the cards for a few polls (``--samples``), averages their board power, and asks the power model
(gpuwatch/model/power.py) what lower limits would do to that workload, given its bound. Nothing is set:
the answer is advice, labelled modelled.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import sys
import tempfile
import time
from types import FrameType
from typing import Any

from rich.console import Console
from rich.table import Table

from gpuwatch.commands import SUMMARIES
from gpuwatch.commands.common import add_source_options
from gpuwatch.errors import UserError
from gpuwatch.options import Option, add_options, declare

ADVISE_OPTIONS = ("samples", "objective", "max_speed_loss_ratio", "sweep", "yes", "dwell_s", "caps")
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
declare(
    Option(
        "sweep",
        ("--sweep",),
        "bool",
        "root only: set several caps for --dwell each and measure (limits are restored afterwards, on "
        "Ctrl+C, SIGTERM, and by a guardian process if gpuwatch dies)",
        default=False,
    )
)
declare(Option("yes", ("--yes",), "bool", "do not ask before the sweep changes power limits", default=False))
declare(
    Option(
        "dwell_s",
        ("--dwell",),
        "float",
        "seconds at each cap during --sweep",
        unit="s",
        default=60.0,
        minimum=1,
        maximum=3600,
        metavar="S",
    )
)
declare(
    Option(
        "caps",
        ("--caps",),
        "text",
        "power limits to sweep, W, e.g. 450,400,350,300 (default: 100/85/70/55 % of the default limit)",
        parse=lambda v: _caps(v),
        optional=True,
        metavar="W,W,…",
    )
)


def _caps(value: Any) -> tuple[float, ...]:
    from gpuwatch.options import Invalid

    try:
        caps = tuple(float(v) for v in str(value).split(",") if v.strip())
    except ValueError:
        raise Invalid("comma-separated watts, e.g. 450,400,350") from None
    if not caps or len(caps) > 16 or not all(0 < c <= 5000 for c in caps):
        raise Invalid("1 to 16 comma-separated watts above 0 and at most 5000")
    return caps


#: a poll may take this long beyond the interval before the command gives up waiting
POLL_GRACE_S = 30.0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "advise",
        help=SUMMARIES["advise"],
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
    from gpuwatch.telemetry.simulated.simulator import STATE_ENV

    samples = args.samples or 5
    config = live_config(args)
    if args.sweep:
        _check_sweep_allowed(args)
        if args.sim and not os.environ.get(STATE_ENV):
            # the simulated box's processes (this one, the NVML child, the guardian) share one driver state
            os.environ[STATE_ENV] = os.path.join(tempfile.mkdtemp(prefix="gpuwatch-sim-"), "state.json")
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
        if args.sweep:
            return _sweep(args, session, arrived, seen[-1][0], config.interval_s)
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
    for col in ("GPU", "now", "default", "advised", "tokens/s", "power", "bound"):
        table.add_column(col, justify="left" if col in ("GPU", "bound") else "right")
    for sample, mean_w, live in rows:
        a = live.advice
        table.add_row(
            f"{sample.index} {sample.name}",
            "n/a" if mean_w is None else f"{mean_w:,.0f} W",
            f"{(sample.power_limit_default_w or 0):,.0f} W",
            "n/a" if a is None else f"{a.advised_limit_w:,.0f} W",
            "n/a" if a is None else f"-{a.expected_speed_loss_ratio:.1%}",
            "n/a" if a is None else f"-{a.power_saving_w:,.0f} W",
            "n/a" if a is None else a.bound,
        )
    console.print(table)
    for sample, _, live in rows:
        console.print(
            f"GPU {sample.index}: {live.reason}"
            + (f" (bound from {live.bound_basis})" if live.bound_basis else "")
        )
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


def _check_sweep_allowed(args: argparse.Namespace) -> None:
    if os.geteuid() != 0:
        raise UserError("--sweep sets power limits, which needs root: run it with sudo (or drop --sweep)")
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise UserError("--sweep changes power limits: confirm with --yes when there is no terminal to ask")
    answer = input(
        "The sweep sets GPU power limits for a while and restores them afterwards. Continue? [y/N] "
    )
    if answer.strip().lower() not in ("y", "yes"):
        raise UserError("sweep cancelled; no limit was changed")


def _sweep(
    args: argparse.Namespace, session: Any, arrived: queue.Queue[Any], first: Any, interval_s: float
) -> int:
    """Each cap for --dwell seconds: measured power, clock and (from an engine) tokens/s and tokens/J."""
    from gpuwatch.telemetry.power_limits import RestoredLimits
    from gpuwatch.telemetry.simspec import SimSpec

    indices = [g.index for g in first.gpus]
    default_w = {g.index: g.power_limit_default_w or g.power_limit_w or 0.0 for g in first.gpus}
    floor_w = {g.index: g.power_limit_min_w or 0.0 for g in first.gpus}
    sim = (
        SimSpec(args.sim, args.scenario, args.seed or 0, args.time_scale or 1.0, args.faults)
        if args.sim
        else None
    )

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through RestoredLimits.__exit__: limits restored first

    previous = signal.signal(signal.SIGTERM, terminate)
    steps: list[dict[str, Any]] = []
    try:
        with RestoredLimits(sim, indices) as limits:
            for fraction_or_w in args.caps or (1.0, 0.85, 0.70, 0.55):
                caps = {
                    i: max(floor_w[i], fraction_or_w if args.caps else fraction_or_w * default_w[i])
                    for i in indices
                }
                for i, watts in caps.items():
                    limits.set_limit_w(i, watts)
                while not arrived.empty():  # readings from before the change do not count
                    arrived.get_nowait()
                window: list[Any] = []
                end = time.monotonic() + (args.dwell_s or 60.0)
                while time.monotonic() < end:
                    try:
                        window.append(
                            arrived.get(timeout=max(0.05, min(interval_s * 2, end - time.monotonic())))
                        )
                    except queue.Empty:
                        continue
                steps.extend(_step(i, caps[i], window[1:] or window) for i in indices)
            restored = dict(limits.original_w)
    finally:
        signal.signal(signal.SIGTERM, previous)
    payload = {"command": "advise power-limit --sweep", "source": session.description, "steps": steps,
               "restored_power_limit_w": restored}  # fmt: skip
    if args.json:
        print(json.dumps(payload, indent=2, allow_nan=False))
        return 0
    table = Table(title=f"power-limit sweep ({session.description}; measured)", title_justify="left")
    for col in ("GPU", "cap", "power", "SM clock", "tokens/s", "tokens/J"):
        table.add_column(col, justify="right")
    for s in steps:
        table.add_row(
            str(s["index"]), f"{s['power_limit_w']:,.0f} W", _fmt(s["power_w"], "W"),
            _fmt(None if s["sm_clock_hz"] is None else s["sm_clock_hz"] / 1e6, "MHz"),
            _fmt(s["tokens_per_s"], "tok/s"), _fmt(s["tokens_per_j"], ""),
        )  # fmt: skip
    Console().print(table)
    Console().print("limits restored: " + ", ".join(f"GPU {i} {w:,.0f} W" for i, w in restored.items()))
    return 0


def _fmt(value: float | None, unit: str) -> str:
    return "unknown" if value is None else f"{value:,.1f} {unit}".strip()


def _step(index: int, cap_w: float, window: list[Any]) -> dict[str, Any]:
    def mean(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return sum(known) / len(known) if known else None

    power = mean([snap.gpus[index].power_w for snap, _ in window])
    clock = mean([snap.gpus[index].sm_clock_hz for snap, _ in window])
    # only an engine's own token counter is a measurement of what the cap costs
    measured = [
        box.gpus[index].tokens_per_s
        for _, box in window
        if box.gpus[index].tokens_per_s_provenance.value == "measured"
    ]
    tokens = mean(measured)
    return {
        "index": index,
        "power_limit_w": cap_w,
        "power_w": power,
        "sm_clock_hz": clock,
        "tokens_per_s": tokens,
        "tokens_per_j": None if tokens is None or not power else tokens / power,
        "tokens_per_s_provenance": "measured" if tokens is not None else "unknown: no engine (--engine URL)",
        "polls": len(window),
    }
