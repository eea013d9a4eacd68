"""python -m benchmarks [--tiny] [--only SECTION,...] [--json]: gpuwatch side by side with nvitop, one table.

Every row is measured in this run, gpuwatch and its counterpart on the same simulated cards under the
same load, so the ratio column survives a noisy machine; the absolute figures are for context.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.table import Table

from benchmarks import exporter, planner, poller, tui
from benchmarks.harness import Row, compile_gpuwatch, fmt, nvitop_installed, tmux_installed

#: every section, in the order the table shows them
SECTIONS = ("exporter", "slowloris", "tui", "poller", "planner")


def planner_rows(tiny: bool) -> list[Row]:
    """gpuwatch/model/sweep.py's vectorised sweep against the scalar loop it replaces, as one row."""
    with contextlib.redirect_stdout(io.StringIO()):  # the table replaces its own progress line
        rows = planner.run(2_000 if tiny else 100_000, loop_sample=200 if tiny else 2_000)
    by_name = {str(r["name"]).split(" (")[0]: r for r in rows}
    vec, loop = by_name["planner sweep"], by_name["planner loop"]
    return [
        Row(
            "planner",
            f"{int(vec['scenarios']):,} what-if scenarios",
            float(vec["seconds"]),
            float(loop["seconds"]),
            "s",
            "plain loop of estimate_throughput (sampled, extrapolated)",
        )
    ]


def render(rows: Sequence[Row], notes: Sequence[str], console: Console) -> None:
    table = Table(title="gpuwatch vs nvitop, same simulated cards, same run", title_justify="left")
    table.add_column("section")
    table.add_column("measure")
    table.add_column("gpuwatch", justify="right")
    table.add_column("counterpart", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("better", justify="center")
    table.add_column("target (issue)")
    for row in rows:
        ratio = row.ratio
        better = {True: "gpuwatch", False: "counterpart", None: ""}[row.better]
        if row.theirs is not None and row.ours == row.theirs:
            better = "tie"
        met = {True: "met", False: "MISSED", None: "n/a"}[row.met]
        table.add_row(
            row.section,
            row.measure,
            fmt(row.ours, row.unit),
            fmt(row.theirs, row.unit),
            "n/a" if ratio is None else f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x",
            better,
            f"{row.target}: {met}" if row.target else "",
        )
    console.print(table)
    counterparts = dict.fromkeys(
        f"{row.section}: {row.counterpart}" for row in rows if row.theirs is not None
    )
    if counterparts:
        notes = [f"counterparts - {'; '.join(counterparts)}.", *notes]
    for note in notes:
        console.print(f"- {note}", highlight=False, markup=False)


def as_json(rows: Sequence[Row], notes: Sequence[str] = ()) -> str:
    """The table as ``{"rows": [{section, measure, gpuwatch, counterpart, ratio, unit}, ...], "notes": […]}``;
    the notes are what the table's foot says (e.g. the TUI's framework floor measured in the run)."""
    return json.dumps(
        {
            "rows": [
                {
                    "section": r.section,
                    "measure": r.measure,
                    "gpuwatch": r.ours,
                    "counterpart": r.theirs,
                    "ratio": r.ratio,
                    "unit": r.unit,
                }
                for r in rows
            ],
            "notes": list(notes),
        },
        indent=2,
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="small sizes and short windows (CI smoke run)")
    ap.add_argument(
        "--only",
        metavar="SECTION[,SECTION...]",
        help=f"run only these sections ({', '.join(SECTIONS)})",
    )
    ap.add_argument("--json", action="store_true", help='print {"rows": [...]} instead of the table')
    args = ap.parse_args(argv)
    only = None
    if args.only is not None:
        only = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = [name for name in only if name not in SECTIONS]
        if unknown or not only:
            ap.error(f"--only {args.only!r}: unknown section(s) {unknown}; known: {', '.join(SECTIONS)}")
    console = Console(width=200) if not sys.stdout.isatty() else Console()
    with_nvitop = nvitop_installed()
    compile_gpuwatch()  # both tools start from bytecode, as installed copies do
    notes = [
        "ratio = gpuwatch / counterpart; 'better' names the side with the better figure for that measure.",
        f"poller latency: {poller.NVML_CALL_SOURCE}; injected with the simulated NVML's slow fault.",
        "poller: both read the GPUs one after another on one thread; gpuwatch shares them out over more "
        "threads only when a tick's reads take over a tenth of the interval (not at 0.36 ms/call on 8 GPUs); "
        f"each poller figure is the median of {poller.ROUNDS} probes per tool, the tools taking turns "
        "(one in --tiny).",
        "slowloris: one exporter at a time (8 simulated GPUs) under the same hostile sockets - slow-header "
        "ones trickling a header line every 5 s (1 s in --tiny) and silent ones, each reconnecting whenever "
        "dropped - while a client scrapes it once a second; a scrape that times out (10 s) counts as "
        "unanswered.",
        "both tools start from bytecode: gpuwatch's is compiled first, as pip compiles an installed "
        "package's (nvitop's came with it).",
        "CPU windows measure all processes at once; gpuwatch's exporter figures include its NVML child "
        "process, and gpuwatch's CPU figures include its Xid event wait on the simulated NVML (real NVML "
        "blocks in the kernel; nvitop registers no event set).",
    ]
    if not with_nvitop:
        notes.append(
            "nvitop / nvitop-exporter not installed: counterpart figures skipped "
            "(pip install -e '.[bench]' to measure them)."
        )
    sections: list[tuple[str, Callable[[], list[Row]]]] = [
        ("exporter", lambda: exporter.run(args.tiny, with_nvitop)),
        ("slowloris", lambda: exporter.slowloris_run(args.tiny, with_nvitop)),
        ("poller", lambda: poller.run(args.tiny, with_nvitop)),
        ("planner", lambda: planner_rows(args.tiny)),
    ]
    if tmux_installed():
        sections.insert(3, ("tui", lambda: tui.run(args.tiny, with_nvitop, notes)))
    elif only is None or "tui" in only:
        notes.append("tmux not installed: TUI rows skipped.")
    if only is not None:
        sections = [(name, fn) for name, fn in sections if name in only]
    rows: list[Row] = []
    t0 = time.perf_counter()
    for name, section in sections:
        print(f"benchmarks: {name} ...", file=sys.stderr, flush=True)
        rows += section()
    notes.append(f"total run time {time.perf_counter() - t0:.0f} s ({'--tiny' if args.tiny else 'full'}).")
    if args.json:
        print(as_json(rows, notes))
    else:
        render(rows, notes, console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
