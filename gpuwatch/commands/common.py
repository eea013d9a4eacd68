"""Options shared by the TUI, the exporter and `record`: where readings come from, workload, prices."""

from __future__ import annotations

import argparse


def add_source_options(
    parser: argparse.ArgumentParser, *, with_prices: bool = False, subcommand: bool = False
) -> None:
    """Add the shared options; ``subcommand=True`` lets them be given before or after the sub-command.

    A sub-parser's defaults overwrite what the top-level parser already stored (`gpuwatch --sim X
    record F` would lose --sim), so on a sub-parser these options get no default at all and the
    top-level parser's defaults stand. (set_defaults(x=SUPPRESS) cannot do this: argparse would
    store that marker string as the value.)
    """
    first_new = len(parser._actions)
    g = parser.add_argument_group("data source")
    g.add_argument(
        "--sim",
        metavar="DEVICES",
        help="simulated NVML instead of the real driver, e.g. rtx4090, 8xrtx4090, h100-sxm,2xrtx4090",
    )
    g.add_argument(
        "--scenario", metavar="NAME", help="simulated workload scenario (see `gpuwatch doctor --help`)"
    )
    g.add_argument(
        "--time-scale", type=float, default=1.0, metavar="X", help="simulated seconds per real second"
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the simulation")
    g.add_argument(
        "--faults",
        metavar="SCHEDULE",
        help="with --sim: inject faults, e.g. lost:1@30,xid:0:79@60",
    )
    g.add_argument("--replay", metavar="FILE", help="replay a file written by `gpuwatch record`")
    g.add_argument("--replay-speed", type=float, default=1.0, metavar="X", help="replay X times faster")
    g.add_argument(
        "--engine",
        metavar="URL",
        action="append",
        help="serving engine /metrics URL (vLLM, TGI, llama.cpp, SGLang)",
    )
    g.add_argument(
        "--workload", metavar="SPEC", help="declared workload, e.g. llama-3-8b:fp16:batch=8:context=4096"
    )
    g.add_argument("--config", metavar="FILE", help="config TOML (default: the user config path)")
    g.add_argument("--interval", type=float, metavar="S", help="poll interval in seconds (default 1)")
    if with_prices:
        from gpuwatch.live.config import add_price_options

        add_price_options(parser)
    if subcommand:
        for action in parser._actions[first_new:]:
            action.default = argparse.SUPPRESS
