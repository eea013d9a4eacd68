"""The power-limit guardian: ``python -m gpuwatch.telemetry.power_guard``, started by
gpuwatch/telemetry/power_limits.py before a sweep changes any limit.

It reads the original limits (one JSON line), says "armed", then waits on its stdin. gpuwatch writes "done"
when it has restored them itself; if the pipe closes without it (gpuwatch was killed or crashed), the
guardian restores them through its own NVML handle. It ignores SIGINT and SIGTERM meant for gpuwatch.
"""

from __future__ import annotations

import json
import signal
import sys


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    armed = json.loads(sys.stdin.buffer.readline())
    sys.stdout.write("armed\n")
    sys.stdout.flush()
    rest = sys.stdin.buffer.read()  # until gpuwatch closes the pipe, or dies
    if b"done" in rest:
        return 0
    from gpuwatch.telemetry.power_limits import PowerLimitControl
    from gpuwatch.telemetry.simspec import SimSpec

    sim = SimSpec(**armed["sim"]) if armed["sim"] else None
    control = PowerLimitControl(sim)
    for index, watts in armed["limits"].items():
        control.set_limit_w(int(index), float(watts))
    control.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
