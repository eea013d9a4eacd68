"""Child process of the poller benchmark: one tool, one simulated box, timed polls, a JSON line out.

    python -m benchmarks.poll_probe --tool gpuwatch|nvitop --devices 8xrtx4090 --latency-s 0.00036 --polls 20

Each tool gets a fresh process so neither inherits the other's NVML session or caches. Both keep their
device handles open across polls, as their TUIs and exporters do; only the per-poll reading is timed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from gpuwatch.telemetry.simulated import SimulatedNvml, install


def _gpuwatch_poll(sim: SimulatedNvml) -> Callable[[], object]:
    from gpuwatch.telemetry.poller import NvmlPoller

    poller = NvmlPoller(interval_s=1.0, clock=sim.now_s, description="benchmark")
    poller.start(background=False)  # NVML opened, static data read; the caller drives poll_once
    return poller.poll_once


def _nvitop_poll(sim: SimulatedNvml) -> Callable[[], object]:
    del sim
    from nvitop import Device

    devices = Device.all()

    def poll() -> object:
        return [d.as_snapshot() for d in devices]

    return poll


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.poll_probe")
    ap.add_argument("--tool", choices=("gpuwatch", "nvitop"), required=True)
    ap.add_argument("--devices", required=True)
    ap.add_argument("--latency-s", type=float, default=0.0, help="added to every simulated NVML call")
    ap.add_argument("--polls", type=int, default=20)
    args = ap.parse_args()
    sim = install(args.devices, faults=f"slow:{args.latency_s}" if args.latency_s else None)
    poll = (_gpuwatch_poll if args.tool == "gpuwatch" else _nvitop_poll)(sim)
    poll()  # warm: first-call probing and caches are start-up cost, not per-poll cost
    calls_before = sum(sim.calls.values())
    walls = []
    cpu0 = time.process_time()
    for _ in range(args.polls):
        t0 = time.perf_counter()
        poll()
        walls.append(time.perf_counter() - t0)
    cpu_s = time.process_time() - cpu0
    n = len(sim.devices)
    print(
        json.dumps(
            {
                "wall_per_gpu_s": statistics.median(walls) / n,
                "cpu_per_gpu_s": cpu_s / args.polls / n,
                "calls_per_gpu": (sum(sim.calls.values()) - calls_before) / args.polls / n,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
