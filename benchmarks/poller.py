"""Poller benchmark: the cost of reading every GPU once, gpuwatch's NvmlPoller against nvitop's snapshots.

Two settings of the simulated NVML: zero cost (so the figure is the tool's own Python overhead) and
every call slowed by the cost of a real NVML call. Each (tool, setting) runs in its own process
(benchmarks/poll_probe.py).
"""

from __future__ import annotations

import json
import statistics
import subprocess

from benchmarks.harness import Row, python

SECTION = "poller"
COUNTERPART = "nvitop 1.7.2 Device.as_snapshot()"
DEVICES = "8xrtx4090"
#: seconds per real NVML call: nvmlDeviceGetPowerUsage in a tight loop on a K40m ran ~2743 calls/s
#: (gpustat issue #76, https://github.com/wookayin/gpustat/issues/76), i.e. ~0.36 ms per call
NVML_CALL_S = 0.36e-3
#: probes per tool and setting in a full run, taken in turn (the row is their median)
ROUNDS = 5
NVML_CALL_SOURCE = "0.36 ms/call: nvmlDeviceGetPowerUsage tight loop on a K40m, ~2743 calls/s (gpustat#76)"


def probe(tool: str, latency_s: float, polls: int) -> dict[str, float]:
    done = subprocess.run(
        [
            python(),
            "-m",
            "benchmarks.poll_probe",
            "--tool",
            tool,
            "--devices",
            DEVICES,
            "--latency-s",
            str(latency_s),
            "--polls",
            str(polls),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"poll probe ({tool}, {latency_s} s/call) failed: {done.stderr[-800:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def run(tiny: bool, with_nvitop: bool) -> list[Row]:
    polls = 5 if tiny else 40
    # a probe's 40 polls of 8 free GPUs take ~0.3 s, and one such window per tool moved the free-NVML
    # ratio between 1.0x and 1.6x from run to run: the tools take turns, and each figure is a median
    rounds = 1 if tiny else ROUNDS
    rows: list[Row] = []
    for latency_s, label in ((0.0, "free NVML"), (NVML_CALL_S, "0.36 ms/call")):
        tools = ("gpuwatch", "nvitop") if with_nvitop else ("gpuwatch",)
        runs: dict[str, list[dict[str, float]]] = {tool: [] for tool in tools}
        for _ in range(rounds):
            for tool in tools:
                runs[tool].append(probe(tool, latency_s, polls))
        ours = _medians(runs["gpuwatch"])
        theirs = _medians(runs["nvitop"]) if with_nvitop else None

        def pick(key: str, theirs: dict[str, float] | None = theirs) -> float | None:
            return theirs[key] if theirs is not None else None

        wall_t, cpu_t = pick("wall_per_gpu_s"), pick("cpu_per_gpu_s")
        rows += [
            Row(
                SECTION,
                f"wall per poll per GPU, {label}",
                ours["wall_per_gpu_s"] * 1e3,
                None if wall_t is None else wall_t * 1e3,
                "ms",
                COUNTERPART,
            ),
            Row(
                SECTION,
                f"CPU per poll per GPU, {label}",
                ours["cpu_per_gpu_s"] * 1e3,
                None if cpu_t is None else cpu_t * 1e3,
                "ms",
                COUNTERPART,
            ),
        ]
        if latency_s == 0.0:
            rows.append(
                Row(
                    SECTION,
                    "NVML calls per poll per GPU",
                    ours["calls_per_gpu"],
                    pick("calls_per_gpu"),
                    "calls",
                    COUNTERPART,
                )
            )
    return rows
