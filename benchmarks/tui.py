"""TUI benchmark: `gpuwatch --sim 8xrtx4090` against nvitop's TUI, each in its own 120x40 tmux session.

Time to first frame is from starting the session to the first screen that shows a GPU name (each tool
started alone, so neither slows the other's start-up). The CPU window then runs with every session on
screen (each tool on busy and on idle cards), all refreshing every second, measured at once; resident
memory (with child processes: gpuwatch's NVML child counts) is read at the end of that window.

Issue 13's targets: CPU at or below nvitop's, first frame and resident memory within 1.5x of nvitop's.
"""

from __future__ import annotations

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
#: simulated workload -> how the row names it
SCENARIOS = {"decode": "decoding", "idle": "idle"}


@dataclass(frozen=True)
class Sizes:
    settle_s: float  # after the first frame, before the CPU window (start-up work is not idling)
    window_s: float


FULL = Sizes(settle_s=5.0, window_s=30.0)
TINY = Sizes(settle_s=1.0, window_s=3.0)


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
    first_frame_s: dict[str, float] = {}
    pids: dict[tuple[str, str], int] = {}
    try:
        # alone first, like each tool: how soon, and how small, any Textual app showing 8 names can be
        floor_pid = tmux.start("floor", [python(), "-m", "benchmarks.textual_floor", name, "8"])
        floor_s = tmux.wait_for("floor", name, FIRST_FRAME_TIMEOUT_S)
        for scenario in SCENARIOS:
            commands = _commands(scenario)
            for tool in tools:
                session = f"{tool}-{scenario}"
                pids[tool, scenario] = tmux.start(session, commands[tool])
                waited = tmux.wait_for(session, name, FIRST_FRAME_TIMEOUT_S)
                first_frame_s.setdefault(tool, waited)  # each started alone: start-up is not shared
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
