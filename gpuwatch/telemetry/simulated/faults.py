"""Fault injection: the schedule string and the live fault state the fake library consults.

Schedule grammar (comma-separated; ``@T`` = from simulated second T, default 0; ``@T-E`` = from T
until E, when the fault ends by itself (a hung call returns, a lost card answers again); ``I`` = device
index or ``*`` for every device)::

    lost:I[@T]             GPU_IS_LOST on every call for device I (others answer); Xid 79 is emitted
    notsup:I:CALL          NOT_SUPPORTED for one C symbol (or alias, see CALL_ALIASES) on device I
    noperm:I:CALL          NO_PERMISSION likewise
    slow:S  | slow:I:S     every call (or every call on device I) takes S more seconds (finite; a call
                           still waiting when the fault ends returns then)
    crash[:I][@T]          the process dies with SIGSEGV on the next call (after T, for device I)
    init:KIND              nvmlInit fails: driver_not_loaded | lib_rm_version_mismatch | no_permission |
                           library_not_found | unknown
    xid:I:CODE[@T]         deliver Xid CODE on device I to registered event sets

Example: ``"lost:1@30,notsup:0:fan,slow:0.002"``; a hang that ends: ``"slow:0:30000@20-80"``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pynvml

from gpuwatch.errors import UserError

#: Short names accepted for ``notsup``/``noperm``: each stands for every C symbol reading that quantity.
CALL_ALIASES: dict[str, tuple[str, ...]] = {
    "fan": (
        "nvmlDeviceGetFanSpeed",
        "nvmlDeviceGetFanSpeed_v2",
        "nvmlDeviceGetNumFans",
        "nvmlDeviceGetFanSpeedRPM",
        "nvmlDeviceGetTargetFanSpeed",
    ),
    "temperature": ("nvmlDeviceGetTemperature", "nvmlDeviceGetTemperatureV"),
    "power": ("nvmlDeviceGetPowerUsage",),
    "energy": ("nvmlDeviceGetTotalEnergyConsumption",),
    "clocks": ("nvmlDeviceGetClockInfo", "nvmlDeviceGetClock"),
    "memory": ("nvmlDeviceGetMemoryInfo", "nvmlDeviceGetMemoryInfo_v2"),
    "utilization": ("nvmlDeviceGetUtilizationRates",),
    "processes": (
        "nvmlDeviceGetComputeRunningProcesses",
        "nvmlDeviceGetComputeRunningProcesses_v2",
        "nvmlDeviceGetComputeRunningProcesses_v3",
        "nvmlDeviceGetGraphicsRunningProcesses",
        "nvmlDeviceGetGraphicsRunningProcesses_v2",
        "nvmlDeviceGetGraphicsRunningProcesses_v3",
    ),
    "fields": ("nvmlDeviceGetFieldValues",),
    "reasons": ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"),
    "pcie": ("nvmlDeviceGetPcieThroughput",),
    "gpm": ("nvmlGpmQueryDeviceSupport", "nvmlGpmSampleGet"),
}

INIT_ERRORS: dict[str, int] = {
    "driver_not_loaded": pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
    "lib_rm_version_mismatch": pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH,
    "no_permission": pynvml.NVML_ERROR_NO_PERMISSION,
    "library_not_found": pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
    "unknown": pynvml.NVML_ERROR_UNKNOWN,
}

ALL_DEVICES = -1
#: how often a held (slow) call checks whether its fault has ended, in wall seconds
_HOLD_CHECK_S = 0.02


@dataclass(frozen=True)
class Fault:
    kind: str  # lost | notsup | noperm | slow | crash | init | xid
    device: int | None = None  # None = not device-bound; ALL_DEVICES = every device
    at_s: float = 0.0
    calls: tuple[str, ...] = ()
    until_s: float = math.inf  # the fault ends at this simulated second
    latency_s: float = 0.0
    code: int = 0


@dataclass
class FaultState:
    """Active faults. Scheduled ones switch on when the simulated clock passes their time."""

    faults: list[Fault] = field(default_factory=list)
    fired_xids: set[int] = field(default_factory=set)  # id() of xid/lost faults already delivered

    def add(self, fault: Fault) -> None:
        self.faults.append(fault)

    def clear(self, device: int | None = None) -> None:
        if device is None:
            self.faults.clear()
        else:
            self.faults = [f for f in self.faults if f.device not in (device, ALL_DEVICES)]

    def _active(self, now_s: float) -> list[Fault]:
        return [f for f in self.faults if f.at_s <= now_s < f.until_s]

    def slow_until_s(self, device: int | None, now_s: float) -> float:
        """When the latest-ending active slow fault for this call ends (inf: never)."""
        return max(
            (
                f.until_s
                for f in self._active(now_s)
                if f.kind == "slow" and (f.device in (None, ALL_DEVICES) or f.device == device)
            ),
            default=now_s,
        )

    def init_error(self, now_s: float) -> int:
        for f in self._active(now_s):
            if f.kind == "init":
                return f.code
        return 0

    def device_error(self, device: int, symbol: str, now_s: float) -> int:
        """The NVML return code a fault forces on this call, or 0."""
        for f in self._active(now_s):
            if f.device not in (device, ALL_DEVICES):
                continue
            if f.kind == "lost":
                return pynvml.NVML_ERROR_GPU_IS_LOST
            if f.kind == "notsup" and symbol in f.calls:
                return pynvml.NVML_ERROR_NOT_SUPPORTED
            if f.kind == "noperm" and symbol in f.calls:
                return pynvml.NVML_ERROR_NO_PERMISSION
        return 0

    def is_lost(self, device: int, now_s: float) -> bool:
        return any(f.kind == "lost" and f.device in (device, ALL_DEVICES) for f in self._active(now_s))

    def latency_s(self, device: int | None, now_s: float) -> float:
        return sum(
            f.latency_s
            for f in self._active(now_s)
            if f.kind == "slow" and (f.device in (None, ALL_DEVICES) or f.device == device)
        )

    def hold(self, device: int | None, now_s: float, clock: Callable[[], float]) -> None:
        """Sleep the injected latency of this call; a fault that ends (``@T-E``) releases it at E."""
        delay_s = self.latency_s(device, now_s)
        if delay_s <= 0:
            return
        until_s = self.slow_until_s(device, now_s)
        deadline = time.monotonic() + delay_s
        while (left := deadline - time.monotonic()) > 0:
            if until_s != math.inf and clock() >= until_s:
                return
            time.sleep(min(left, _HOLD_CHECK_S) if until_s != math.inf else left)

    def should_crash(self, device: int | None, now_s: float) -> bool:
        return any(
            f.kind == "crash" and (f.device in (None, ALL_DEVICES) or f.device == device)
            for f in self._active(now_s)
        )

    def next_xid_at_s(self) -> float | None:
        """Simulated time the earliest undelivered Xid (or lost card's Xid 79) falls due; None if none."""
        pending = [
            f.at_s
            for f in self.faults
            if f.kind in ("xid", "lost") and f.device is not None and id(f) not in self.fired_xids
        ]
        return min(pending, default=None)

    def due_xids(self, now_s: float) -> list[tuple[int, int]]:
        """(device, xid) events whose time has come and that were not delivered yet."""
        out = []
        for f in self.faults:  # started, even if already ended: the Xid still happened
            if f.at_s > now_s:
                continue
            if f.kind in ("xid", "lost") and id(f) not in self.fired_xids and f.device is not None:
                self.fired_xids.add(id(f))
                out.append((f.device, f.code if f.kind == "xid" else 79))
        return out


def expand_call(call: str, entry: str | None = None) -> tuple[str, ...]:
    """An alias or one C symbol name -> the C symbols it stands for."""
    if call in CALL_ALIASES:
        return CALL_ALIASES[call]
    if not call.startswith("nvml"):
        raise UserError(
            f"fault {entry or call!r}: call {call!r} unknown; give a pynvml C symbol (nvmlDevice...) "
            f"or one of "
            f"{', '.join(sorted(CALL_ALIASES))}"
        )
    return (call,)


_NUMBER = r"\d+(?:\.\d*)?"
_AT_RE = re.compile(rf"^(.*?)(?:@({_NUMBER})(?:-({_NUMBER}))?)?$")


def _device(text: str, entry: str) -> int:
    if text == "*":
        return ALL_DEVICES
    if not text.isdigit():
        raise UserError(f"fault {entry!r}: device must be an index or '*', got {text!r}")
    return int(text)


def _seconds(text: str, entry: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"fault {entry!r}: {text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise UserError(
            f"fault {entry!r}: seconds must be a finite number >= 0, got {text!r} "
            "(for a hang that ends, give a long delay and an end time: slow:0:30000@20-80)"
        )
    return value


def parse_faults(spec: str | None) -> list[Fault]:
    """Parse a schedule string; UserError names the bad entry and the accepted forms."""
    if not spec:
        return []
    out: list[Fault] = []
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry:
            continue
        m = _AT_RE.match(entry)
        assert m is not None  # the pattern matches any string
        body, at_text, until_text = m.group(1), m.group(2), m.group(3)
        at_s = float(at_text) if at_text else 0.0
        until_s = float(until_text) if until_text else math.inf
        if until_s <= at_s:
            raise UserError(f"fault {entry!r}: the end time must come after the start time (@T-E with E > T)")
        if "@" in body:
            raise UserError(
                f"fault {entry!r}: the time must be @T or @T-E in simulated seconds, e.g. lost:1@30-90"
            )
        parts = body.split(":")
        kind = parts[0]
        args = parts[1:]
        if kind == "lost" and len(args) == 1:
            out.append(Fault("lost", _device(args[0], entry), at_s))
        elif kind in ("notsup", "noperm") and len(args) == 2:
            out.append(Fault(kind, _device(args[0], entry), at_s, calls=expand_call(args[1], entry)))
        elif kind == "slow" and len(args) == 1:
            out.append(Fault("slow", None, at_s, latency_s=_seconds(args[0], entry)))
        elif kind == "slow" and len(args) == 2:
            out.append(Fault("slow", _device(args[0], entry), at_s, latency_s=_seconds(args[1], entry)))
        elif kind == "crash" and len(args) <= 1:
            out.append(Fault("crash", _device(args[0], entry) if args else None, at_s))
        elif kind == "init" and len(args) == 1 and args[0] in INIT_ERRORS:
            out.append(Fault("init", None, at_s, code=INIT_ERRORS[args[0]]))
        elif kind == "xid" and len(args) == 2 and args[1].isdigit():
            out.append(Fault("xid", _device(args[0], entry), at_s, code=int(args[1])))
        else:
            raise UserError(
                f"bad fault {entry!r}; use lost:I[@T[-E]], notsup:I:CALL, noperm:I:CALL, slow:[I:]S[@T[-E]], "
                f"crash[:I][@T], "
                f"init:{'|'.join(INIT_ERRORS)}, xid:I:CODE[@T]"
            )
        if until_s != math.inf:
            out[-1] = replace(out[-1], until_s=until_s)
    return out
