"""python -m benchmarks.accuracy [--markdown]: the planner's error on published measurements, per group.

Decode, batched decode and prefill come from the engine-profile measurements
(gpuwatch/model/data/engine_profiles.toml); memory (engine KV budgets), the longest fine-tuning contexts
and power from gpuwatch/model/data/published_checks.toml. Only held-out points (no constant was set from
them) count towards the error columns; fit points are counted beside them. README's accuracy table is
this script's ``--markdown`` output.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence

from gpuwatch.model.calibration import relative_error
from gpuwatch.model.engine_profiles import load_measurements
from gpuwatch.model.published import published_checks

GROUPS = ("decode", "batched decode", "prefill", "memory", "fine-tune context", "power")


def _group(phase: str, batch: int) -> str:
    if phase == "prefill":
        return "prefill"
    return "decode" if batch == 1 else "batched decode"


def errors() -> dict[str, dict[str, list[float]]]:
    """group -> {"holdout": [errors], "fit": [errors]}; an error is predicted / measured - 1."""
    out: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"holdout": [], "fit": []})
    for m in load_measurements():
        out[_group(m.phase, m.batch)]["holdout" if m.use == "holdout" else "fit"].append(relative_error(m))
    for c in published_checks():
        out[c.group]["holdout" if c.use == "holdout" else "fit"].append(c.error_ratio)
    return out


def rows() -> list[tuple[str, int, int, str, str, str]]:
    table = []
    data = errors()
    for group in GROUPS:
        held, fit = data[group]["holdout"], data[group]["fit"]
        if held:
            worst = max(held, key=abs)
            cells = (
                f"{statistics.median(abs(e) for e in held):.0%}",
                f"{worst:+.0%}",
                f"{min(held):+.0%} … {max(held):+.0%}",
            )
        else:
            cells = ("n/a", "n/a", "n/a")
        table.append((group, len(held), len(fit), *cells))
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.accuracy", description=__doc__)
    parser.add_argument("--markdown", action="store_true", help="print README's table")
    args = parser.parse_args(argv)
    header = ("group", "held-out points", "fit points", "median abs error", "worst", "range")
    body = rows()
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for r in body:
            print("| " + " | ".join(str(c) for c in r) + " |")
    else:
        for r in (header, *body):
            print(f"{r[0]:<15} {r[1]!s:>15} {r[2]!s:>10} {r[3]!s:>17} {r[4]!s:>7} {r[5]!s:>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
