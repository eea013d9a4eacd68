"""Run another pynvml tool on simulated cards, in this process.

    python -m gpuwatch.telemetry.simulated --devices 8xrtx4090 [--scenario decode] [--time-scale 1] \\
        -- nvitop --once
    python -m gpuwatch.telemetry.simulated --devices h100-sxm -- -m nvitop_exporter --bind-address 127.0.0.1

The target is a console script (looked up among installed entry points) or ``-m module``; it runs via
its entry point or ``runpy`` after the simulated library is installed beneath ``pynvml``, so the tool's
own pynvml calls hit the simulated cards.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from gpuwatch.errors import UserError
from gpuwatch.telemetry.simulated.profiles import DRIVER_PROFILES
from gpuwatch.telemetry.simulated.scenarios import SCENARIOS
from gpuwatch.telemetry.simulated.simulator import install


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gpuwatch.telemetry.simulated",
        description="Install the simulated NVML beneath pynvml, then run a tool in-process.",
        epilog="scenarios: " + "; ".join(f"{k}: {v}" for k, v in SCENARIOS.items()),
    )
    p.add_argument("--devices", required=True, help="e.g. rtx4090, 8xrtx4090, h100-sxm,2xrtx4090")
    p.add_argument("--scenario", default="decode", help="one name, or one per device separated by commas")
    p.add_argument("--time-scale", type=float, default=1.0, help="simulated seconds per real second")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--driver",
        choices=sorted(DRIVER_PROFILES),
        help="simulated driver generation; default: the one a calibrated card was captured on, else r580",
    )
    p.add_argument("--faults", help='fault schedule, e.g. "lost:1@30,notsup:0:fan,slow:0.002"')
    p.add_argument("target", nargs=argparse.REMAINDER, help="-- SCRIPT [ARGS] or -- -m MODULE [ARGS]")
    return p


def _run_target(target: list[str]) -> int:
    if target and target[0] == "--":
        target = target[1:]
    if not target:
        raise UserError("nothing to run: add `-- nvitop --once` or `-- -m module args`")
    if target[0] == "-m":
        if len(target) < 2:
            raise UserError("-m needs a module name")
        sys.argv = [target[1], *target[2:]]
        runpy.run_module(target[1], run_name="__main__", alter_sys=True)
        return 0
    name = target[0]
    matches = [ep for ep in entry_points(group="console_scripts") if ep.name == name]
    if not matches:
        raise UserError(f"no installed console script {name!r}; use `-m module` for a module")
    sys.argv = [name, *target[1:]]
    result = matches[0].load()()
    return result if isinstance(result, int) else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        scenarios = args.scenario.split(",")
        install(
            args.devices,
            scenario=scenarios[0] if len(scenarios) == 1 else scenarios,
            seed=args.seed,
            time_scale=args.time_scale,
            driver=args.driver,
            faults=args.faults,
        )
        return _run_target(list(args.target))
    except UserError as e:
        print(f"gpuwatch: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
