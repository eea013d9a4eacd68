"""TUI benchmark: `gpuwatch --sim 8xrtx4090` against nvitop's TUI, each in its own 120x40 tmux session.

Time to first frame is from starting the session to the first screen that shows a GPU name: the median
of several starts, each tool started alone and the tools taking turns, so that neither slows the other's
start-up and a moment of load on the machine does not decide the row. The CPU window then runs with
every session on screen (each tool on busy and on idle cards), all refreshing every second, measured at
once; resident memory (with child processes: gpuwatch's NVML child counts) is read at the end of that
window.

Issue 13's targets: CPU at or below nvitop's, first frame and resident memory within 1.5x of nvitop's.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from benchmarks.harness import (
    Row,
    Tmux,
    cpu_while_idle,
    on_sim,
    python,
    rss_bytes,
    short_gpu_name,
    sim_nvml_name,
)

SECTION = "tui"
COUNTERPART = "nvitop 1.7.2 TUI"
DEVICES = "8xrtx4090"
#: issue 13: first frame and resident memory within this factor of nvitop's; CPU at or below it
WITHIN_RATIO = 1.5
FIRST_FRAME_TIMEOUT_S = 60.0
#: on gpuwatch's screen only once Textual drew the live view (its key bar): the frame before it is the
#: CLI's, drawn while Textual loads (gpuwatch/tui/first_frame.py)
LIVE_VIEW_MARK = "q Quit"
#: simulated workload -> how the row names it
SCENARIOS = {"decode": "decoding", "idle": "idle"}


@dataclass(frozen=True)
class Sizes:
    settle_s: float  # after the first frame, before the CPU window (start-up work is not idling)
    window_s: float
    starts: int  # first-frame starts per tool (the row is their median)


FULL = Sizes(settle_s=5.0, window_s=30.0, starts=5)
TINY = Sizes(settle_s=1.0, window_s=3.0, starts=1)


def _commands(scenario: str) -> dict[str, list[str]]:
    return {
        "gpuwatch": [python(), "-m", "gpuwatch", "--sim", DEVICES, "--scenario", scenario, "--interval", "1"],
        # --monitor full: nvitop's compact mode (its choice at 40 rows) shows no GPU names
        "nvitop": on_sim(DEVICES, "nvitop", "--monitor", "full", "--interval", "1", scenario=scenario),
    }


def run(tiny: bool, with_nvitop: bool, notes: list[str] | None = None) -> list[Row]:
    """The TUI rows; ``notes`` gets the framework's floor (a minimal Textual app) measured in the run."""
    sizes = TINY if tiny else FULL
    name = short_gpu_name(sim_nvml_name(DEVICES))
    tools = ("gpuwatch", "nvitop") if with_nvitop else ("gpuwatch",)
    tmux = Tmux()
    pids: dict[tuple[str, str], int] = {}
    # the floor: how soon, and how small, any Textual app showing 8 names can be
    floor_cmd = [python(), "-m", "benchmarks.textual_floor", name, "8"]
    starting = {"floor": floor_cmd, **{tool: _commands("decode")[tool] for tool in tools}}
    waits: dict[str, list[float]] = {tool: [] for tool in starting}
    live_view_waits: list[float] = []  # gpuwatch's: from the start to Textual's first frame
    try:
        tmux.start("hold", ["sleep", "3600"])  # keeps the server up between the first-frame sessions
        for n in range(sizes.starts):
            for tool, cmd in starting.items():
                session = f"first-{tool}-{n}"
                tmux.start(session, cmd)
                waits[tool].append(tmux.wait_for(session, name, FIRST_FRAME_TIMEOUT_S))
                if tool == "gpuwatch":
                    more_s = tmux.wait_for(session, LIVE_VIEW_MARK, FIRST_FRAME_TIMEOUT_S)
                    live_view_waits.append(waits[tool][-1] + more_s)
                if tool != "floor" or n < sizes.starts - 1:
                    tmux.stop(session)  # each started alone: start-up is not shared
        floor_pid = tmux.pane_pid(f"first-floor-{sizes.starts - 1}")
        for scenario in SCENARIOS:
            commands = _commands(scenario)
            for tool in tools:
                session = f"{tool}-{scenario}"
                pids[tool, scenario] = tmux.start(session, commands[tool])
                tmux.wait_for(session, name, FIRST_FRAME_TIMEOUT_S)
        time.sleep(sizes.settle_s)
        keys = list(pids)
        cpu = dict(zip(keys, cpu_while_idle([pids[k] for k in keys], sizes.window_s), strict=True))
        rss_mib = {k: rss_bytes(pids[k]) / 2**20 for k in keys}
        floor_mib = rss_bytes(floor_pid) / 2**20
        for tool, scenario in keys:
            tmux.wait_for(f"{tool}-{scenario}", name, 1.0)  # still on screen: nothing crashed meanwhile
    finally:
        tmux.kill()
    pct = {k: v / 60.0 * 100.0 for k, v in cpu.items()}
    rows = [
        Row(
            SECTION,
            f"CPU, 1 s refresh, 8 GPUs {SCENARIOS[scenario]}",
            pct["gpuwatch", scenario],
            pct.get(("nvitop", scenario)),
            "% of a core",
            COUNTERPART,
            target="at or below nvitop",
            target_met=_within(pct["gpuwatch", scenario], pct.get(("nvitop", scenario)), 1.0),
        )
        for scenario in SCENARIOS
    ]
    first_frame_s = {tool: statistics.median(w) for tool, w in waits.items()}
    floor_s = first_frame_s.pop("floor")
    theirs_s = first_frame_s.get("nvitop")
    rows.append(
        Row(
            SECTION,
            "time to first frame with GPU names",
            first_frame_s["gpuwatch"],
            theirs_s,
            "s",
            COUNTERPART,
            target=f"within {WITHIN_RATIO:g}x nvitop",
            target_met=_within(first_frame_s["gpuwatch"], theirs_s, WITHIN_RATIO),
        )
    )
    rows.append(
        Row(
            SECTION,
            "time to the full live view (Textual's first frame)",
            statistics.median(live_view_waits),
            theirs_s,  # nvitop's first frame is its full view
            "s",
            COUNTERPART,
        )
    )
    theirs_mib = rss_mib.get(("nvitop", "decode"))
    if notes is not None:
        against = ""
        if theirs_s is not None and theirs_mib is not None:
            against = f" ({floor_s / theirs_s:.2f}x and {floor_mib / theirs_mib:.2f}x nvitop's)"
        notes.append(
            "tui floor: a minimal Textual app showing 8 static lines of GPU names "
            "(benchmarks/textual_floor.py), "
            f"same run: first frame {floor_s:.2f} s, resident memory {floor_mib:.1f} MiB{against}."
        )
    rows.append(
        Row(
            SECTION,
            "resident memory, 8 GPUs decoding",
            rss_mib["gpuwatch", "decode"],
            theirs_mib,
            "MiB",
            COUNTERPART,
            target=f"within {WITHIN_RATIO:g}x nvitop",
            target_met=_within(rss_mib["gpuwatch", "decode"], theirs_mib, WITHIN_RATIO),
        )
    )
    return rows


def _within(ours: float, theirs: float | None, factor: float) -> bool | None:
    return None if theirs is None else ours <= theirs * factor
