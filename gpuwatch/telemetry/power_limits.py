"""Setting GPU power limits through NVML, and putting them back whatever happens.

A power-cap sweep leaves the cards at the limits it set if it stops half-way, and a card capped by
accident costs its owner tokens for as long as nobody notices. So the original limits are restored on a
normal exit, on Ctrl+C and SIGTERM (the caller's ``finally``), and after a crash of gpuwatch itself: a
guardian process (gpuwatch/telemetry/power_guard.py), started before the first limit is changed, holds the
originals and restores them when its pipe from gpuwatch closes without a "done".

Setting a limit needs root on a real box; the simulated NVML asks the same (and shares the limits it was
given between processes through ``GPUWATCH_SIM_STATE``, as one driver would).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from dataclasses import asdict
from types import TracebackType
from typing import Any

import pynvml as N

from gpuwatch.errors import UserError
from gpuwatch.telemetry.simspec import SimSpec

#: how long the guardian may take to confirm it is armed, and to finish after "done"
GUARD_TIMEOUT_S = 20.0


class PowerLimitControl:
    """NVML in this process, for reading and setting power limits (not for polling)."""

    def __init__(self, sim: SimSpec | None) -> None:
        if sim is not None:
            sim.install()
        try:
            N.nvmlInit()
        except N.NVMLError as exc:
            raise UserError(f"cannot set power limits: NVML did not start ({exc})") from None

    def limit_w(self, index: int) -> float:
        handle = N.nvmlDeviceGetHandleByIndex(index)
        return float(N.nvmlDeviceGetPowerManagementLimit(handle)) / 1000.0

    def set_limit_w(self, index: int, watts: float) -> None:
        handle = N.nvmlDeviceGetHandleByIndex(index)
        try:
            N.nvmlDeviceSetPowerManagementLimit(handle, round(watts * 1000))
        except N.NVMLError_NoPermission:
            raise UserError("setting a power limit needs root: run the sweep with sudo") from None
        except N.NVMLError as exc:
            raise UserError(f"GPU {index}: NVML refused a {watts:g} W limit ({exc})") from None

    def close(self) -> None:
        with contextlib.suppress(N.NVMLError):
            N.nvmlShutdown()


class RestoredLimits:
    """Context manager: remembers each GPU's power limit, restores them on exit (and, through the
    guardian, if this process dies first)."""

    def __init__(self, sim: SimSpec | None, indices: list[int]) -> None:
        self.sim = sim
        self.control = PowerLimitControl(sim)
        self.original_w = {i: self.control.limit_w(i) for i in indices}
        self._guard: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RestoredLimits:
        armed: dict[str, Any] = {"sim": asdict(self.sim) if self.sim else None, "limits": self.original_w}
        self._guard = subprocess.Popen(
            [sys.executable, "-m", "gpuwatch.telemetry.power_guard"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # Ctrl+C in the terminal must not reach it: it outlives us on purpose
        )
        assert self._guard.stdin is not None and self._guard.stdout is not None
        self._guard.stdin.write((json.dumps(armed) + "\n").encode())
        self._guard.stdin.flush()
        if self._guard.stdout.readline().strip() != b"armed":
            raise UserError("the power-limit guardian did not start; no limit was changed")
        return self

    def set_limit_w(self, index: int, watts: float) -> None:
        self.control.set_limit_w(index, watts)

    def restore(self) -> None:
        for index, watts in self.original_w.items():
            self.control.set_limit_w(index, watts)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.restore()
        finally:
            guard = self._guard
            if guard is not None and guard.stdin is not None:
                try:
                    guard.stdin.write(b"done\n")
                    guard.stdin.close()
                    guard.wait(GUARD_TIMEOUT_S)
                except (OSError, subprocess.TimeoutExpired):
                    pass  # it restores what we already restored: harmless
            self.control.close()
