"""The simulated box: devices, clock, faults, event sets, and installing it beneath pynvml."""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import pynvml

from gpuwatch.errors import UserError
from gpuwatch.model.catalog import GpuSpec, get_gpu
from gpuwatch.telemetry.simulated.faults import ALL_DEVICES, Fault, FaultState, expand_call, parse_faults
from gpuwatch.telemetry.simulated.physics import (
    FAST_FORWARD_AFTER_S,
    STEP_S,
    Counters,
    SimDevice,
    step_for,
)
from gpuwatch.telemetry.simulated.profiles import (
    DEFAULT_DRIVER,
    DRIVER_PROFILES,
    DeviceProfile,
    DriverProfile,
    canonical_id,
    device_profile,
    simulatable_ids,
    split_device_spec,
)
from gpuwatch.telemetry.simulated.scenarios import ALL_SCENARIOS

#: ``--sim capture:FILE``: a device replayed from a `gpuwatch capture` file
CAPTURE_PREFIX = "capture:"
#: parse_devices' id for GPU i of a capture: ``capture#i:PATH`` (one entry per captured GPU)
_CAPTURED_DEVICE = "capture#"
#: Simulated time starts here (2026-01-01T00:00:00Z) so runs are reproducible.
EPOCH_S = 1_767_225_600.0
MAX_DEVICES = 256


def parse_devices(spec: str | Sequence[str]) -> list[str]:
    """``"h100-sxm,2xrtx4090"`` -> ``["h100-sxm", "rtx4090", "rtx4090"]``; UserError on a bad spec."""
    parts = [spec] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for part in parts:
        if part.strip().startswith(CAPTURE_PREFIX):  # a path may hold commas: the rest is one file
            from gpuwatch.telemetry.simulated.from_capture import capture_device_count

            path = part.strip().removeprefix(CAPTURE_PREFIX)
            out.extend(f"{_CAPTURED_DEVICE}{i}:{path}" for i in range(capture_device_count(path)))
            continue
        try:
            entries = split_device_spec(part)
        except ValueError as e:
            raise UserError(
                f"--sim {part!r}: {e}; use e.g. rtx4090, 8xrtx4090 or h100-sxm,2xrtx4090"
            ) from None
        for count, key in entries:
            cid = canonical_id(key)
            if cid is None:
                import difflib

                known = simulatable_ids()
                close = difflib.get_close_matches(key.lower(), known, n=4, cutoff=0.4)
                hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known)}"
                raise UserError(f"--sim: unknown GPU {key!r}; {hint}")
            if count < 1:
                raise UserError(f"--sim {part!r}: a count must be at least 1")
            out.extend([cid] * count)
    if not out:
        raise UserError("--sim: no devices given; use e.g. rtx4090 or 2xh100-sxm")
    if len(out) > MAX_DEVICES:
        raise UserError(f"--sim: {len(out)} devices is more than the {MAX_DEVICES} NVML can enumerate")
    return out


@dataclass
class EventSet:
    registrations: dict[int, int] = field(default_factory=dict)  # device index -> event type mask
    queue: deque[tuple[int, int, int]] = field(default_factory=deque)  # (device, event type, data)


@dataclass
class GpmSampleSlot:
    device: int | None = None
    elapsed_s: float = 0.0
    counters: Counters | None = None


#: the file through which the processes of one simulated box share the power limits NVML was given
STATE_ENV = "GPUWATCH_SIM_STATE"


class SimulatedNvml:
    """A box of simulated cards. Every public method is thread-safe (one re-entrant lock)."""

    def __init__(
        self,
        devices: str | Sequence[str],
        *,
        scenario: str | Sequence[str] = "decode",
        seed: int = 0,
        time_scale: float = 1.0,
        manual_clock: bool = False,
        driver: str | None = None,
        faults: str | None = None,
    ) -> None:
        ids = parse_devices(devices)
        # "a,b" from the command line is one scenario per device, like a sequence
        names = scenario.split(",") if isinstance(scenario, str) else list(scenario)
        if len(names) == 1:
            names *= len(ids)
        if len(names) != len(ids):
            raise UserError(
                f"--scenario: {len(names)} scenarios given for {len(ids)} devices; give one or one each"
            )
        for name in names:
            _check_scenario(name)
        if driver is not None and driver not in DRIVER_PROFILES:
            raise UserError(f"driver profile {driver!r} unknown; use one of {', '.join(DRIVER_PROFILES)}")
        if not (math.isfinite(time_scale) and time_scale > 0):
            raise UserError(f"--time-scale must be a finite number > 0, got {time_scale}")
        self.seed = seed
        self.time_scale = float(time_scale)
        self.manual_clock = manual_clock
        self.lock = threading.RLock()
        self.events_cv = threading.Condition(self.lock)
        step_s = STEP_S if manual_clock else step_for(self.time_scale)
        built = [_build_device(dev_id) for dev_id in ids]
        self.driver: DriverProfile = _pick_driver(driver, built)
        self.devices: list[SimDevice] = [
            SimDevice(
                i,
                chip,
                profile,
                ALL_SCENARIOS[names[i]],
                seed,
                step_s=step_s,
                fast_forward_after_s=None if manual_clock else FAST_FORWARD_AFTER_S,
            )
            for i, (chip, profile, _) in enumerate(built)
        ]
        self.faults = FaultState(parse_faults(faults))
        self.process_pid = os.getpid()
        self.init_refcount = 0
        self.event_sets: dict[int, EventSet] = {}
        self.gpm_samples: dict[int, GpmSampleSlot] = {}
        self._next_object = 0x6A000000
        self._elapsed_s = 0.0
        self._t0 = time.monotonic()
        self.calls: dict[str, int] = {}  # symbol -> call count (for tests and the overhead benchmark)
        #: power limits set through NVML persist here, shared by every process of this box (one driver)
        self.state_path: str | None = os.environ.get(STATE_ENV) or None
        self._state_mtime_ns = -1

    # --- clock --------------------------------------------------------------------------------------
    def elapsed_s(self) -> float:
        """Simulated seconds since the start."""
        if self.manual_clock:
            return self._elapsed_s
        return (time.monotonic() - self._t0) * self.time_scale

    def now_s(self) -> float:
        """Simulated wall-clock time (epoch seconds)."""
        return EPOCH_S + self.elapsed_s()

    def advance(self, seconds: float) -> None:
        """Manual clock: move simulated time forward and integrate the physics."""
        if not self.manual_clock:
            raise RuntimeError("advance() needs install(..., manual_clock=True)")
        if seconds < 0:
            raise ValueError("cannot advance by a negative time")
        with self.lock:
            self._elapsed_s += seconds
            self.sync()

    def sync(self, index: int | None = None) -> float:
        """Bring every device (or only device ``index``) up to the current simulated time; deliver due
        Xid events. Returns elapsed.

        A device call syncs only its own device: each device integrates on its own fixed grid with its
        own random stream, so advancing it late gives the same state as advancing it at every call,
        and a box of n cards costs O(n) steps per poll instead of O(n^2).
        """
        with self.lock:
            self._load_state()
            now = self.elapsed_s()
            for d in self.devices if index is None else (self.devices[index],):
                d.advance_to(now)
            for device, xid in self.faults.due_xids(now):
                self._deliver_xid(device, xid)
            return now

    def seconds_to_next_xid(self) -> float | None:
        """Real seconds until a scheduled Xid falls due (0 if overdue); None if none is pending or the
        clock is manual (then only advance() moves time, and it delivers what falls due)."""
        with self.lock:
            at_s = None if self.manual_clock else self.faults.next_xid_at_s()
            if at_s is None:
                return None
            return max(0.0, (at_s - self.elapsed_s()) / self.time_scale)

    # --- state shared between processes ---------------------------------------------------------------
    def _load_state(self) -> None:
        """Apply power limits another process of this box set (the file changed since the last look)."""
        if self.state_path is None:
            return
        try:
            mtime = os.stat(self.state_path).st_mtime_ns
        except OSError:
            return
        if mtime == self._state_mtime_ns:
            return
        self._state_mtime_ns = mtime
        import json  # only for a box shared through a state file: kept out of a plain box's NVML child

        try:
            with open(self.state_path, encoding="utf-8") as f:
                limits = json.load(f).get("power_limit_w", {})
        except (OSError, ValueError, AttributeError):
            return
        for key, watts in limits.items():
            if str(key).isdigit() and int(key) < len(self.devices) and isinstance(watts, int | float):
                self.devices[int(key)].set_power_limit(float(watts))

    def set_power_limit(self, index: int, watts: float) -> None:
        """As nvmlDeviceSetPowerManagementLimit: applied now and, with a state file, for every process."""
        with self.lock:
            self.devices[index].set_power_limit(watts)
            if self.state_path is None:
                return
            limits = {
                str(i): d.user_power_limit_w
                for i, d in enumerate(self.devices)
                if d.user_power_limit_w is not None
            }
            import json

            tmp = f"{self.state_path}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"power_limit_w": limits}, f)
            os.replace(tmp, self.state_path)
            self._state_mtime_ns = os.stat(self.state_path).st_mtime_ns

    # --- control ------------------------------------------------------------------------------------
    def set_scenario(self, index: int, name: str) -> None:
        _check_scenario(name)
        with self.lock:
            self.sync()
            self.devices[index].set_scenario(ALL_SCENARIOS[name])

    def inject(
        self, kind: str, index: int | None = None, call: str | None = None, latency_s: float = 0.0
    ) -> None:
        """Switch a fault on now: gpu_lost | not_supported (for ``call``) | slow | crash | clear."""
        with self.lock:
            at = self.sync()
            dev = ALL_DEVICES if index is None else index
            if kind == "gpu_lost":
                if index is None:
                    raise ValueError("gpu_lost needs a device index")
                self.faults.add(Fault("lost", index, at))
            elif kind == "not_supported":
                if call is None:
                    raise ValueError("not_supported needs call= (a pynvml C symbol name)")
                self.faults.add(Fault("notsup", dev, at, calls=expand_call(call)))
            elif kind == "slow":
                self.faults.add(Fault("slow", index, at, latency_s=latency_s))
            elif kind == "crash":
                self.faults.add(Fault("crash", index, at))
            elif kind == "clear":
                self.faults.clear(index)
            else:
                raise ValueError(
                    f"unknown fault kind {kind!r}; use gpu_lost, not_supported, slow, crash, clear"
                )
            self.sync()
            self.events_cv.notify_all()  # event-set waiters recompute when the next Xid falls due

    def emit_xid(self, index: int, xid: int) -> None:
        """Deliver an Xid (critical error) event for device ``index`` to every event set registered for it."""
        with self.lock:
            self._deliver_xid(index, xid)

    def _deliver_xid(self, index: int, xid: int) -> None:
        for es in self.event_sets.values():
            if es.registrations.get(index, 0) & pynvml.nvmlEventTypeXidCriticalError:
                es.queue.append((index, pynvml.nvmlEventTypeXidCriticalError, xid))
        self.events_cv.notify_all()

    def new_object_address(self) -> int:
        self._next_object += 0x40
        return self._next_object

    def describe(self) -> str:
        from collections import Counter

        counts = Counter(d.profile.id for d in self.devices)
        devs = ", ".join(f"{n}x {k}" if n > 1 else k for k, n in counts.items())
        scen = sorted({d.scenario.name for d in self.devices})
        return f"simulated NVML: {devs} (scenario {', '.join(scen)})"


def _build_device(dev_id: str) -> tuple[GpuSpec, DeviceProfile, DriverProfile | None]:
    """(chip, profile, the driver it was captured on) for a catalog id or ``capture:FILE``."""
    if dev_id.startswith(_CAPTURED_DEVICE):
        from gpuwatch.telemetry.simulated.from_capture import load_capture_device

        index, _, path = dev_id.removeprefix(_CAPTURED_DEVICE).partition(":")
        return load_capture_device(path, int(index))
    profile = device_profile(dev_id)
    return get_gpu(dev_id), profile, DRIVER_PROFILES[profile.driver] if profile.driver else None


def _pick_driver(
    driver: str | None, built: Sequence[tuple[GpuSpec, DeviceProfile, DriverProfile | None]]
) -> DriverProfile:
    """--driver if given; else the driver the first device was captured on; else DEFAULT_DRIVER.

    One box has one driver, so a mix of cards captured on different drivers takes the first one's.
    """
    if driver is not None:
        return DRIVER_PROFILES[driver]
    for _, _, captured in built:
        if captured is not None:
            return captured
    return DRIVER_PROFILES[DEFAULT_DRIVER]


def _check_scenario(name: str) -> None:
    if name not in ALL_SCENARIOS:
        raise UserError(f"--scenario {name!r} unknown; use one of {', '.join(ALL_SCENARIOS)}")


# --- installing beneath pynvml ---

_installed: SimulatedNvml | None = None


def install(
    devices: str | Sequence[str],
    *,
    scenario: str | Sequence[str] = "decode",
    seed: int = 0,
    time_scale: float = 1.0,
    manual_clock: bool = False,
    driver: str | None = None,
    faults: str | None = None,
) -> SimulatedNvml:
    """Put a simulated library beneath the real pynvml; call before ``pynvml.nvmlInit()``.

    pynvml keeps the loaded CDLL in its module global ``nvmlLib`` and caches each C function it looked
    up in ``_nvmlGetFunctionPointer_cache``; replacing the first and clearing the second means every
    pynvml wrapper (argument packing, struct versions, NVMLError mapping) still runs on top of ours.
    """
    from gpuwatch.telemetry.simulated.fakelib import FakeNvmlLib

    global _installed
    sim = SimulatedNvml(
        devices,
        scenario=scenario,
        seed=seed,
        time_scale=time_scale,
        manual_clock=manual_clock,
        driver=driver,
        faults=faults,
    )
    with pynvml.libLoadLock:
        pynvml.nvmlLib = FakeNvmlLib(sim)
        pynvml._nvmlGetFunctionPointer_cache.clear()
        pynvml._nvmlLib_refcount = 0
    _installed = sim
    return sim


def uninstall() -> None:
    """Restore pynvml's own loader: the next nvmlInit loads the real libnvidia-ml.so.1."""
    global _installed
    with pynvml.libLoadLock:
        pynvml.nvmlLib = None
        pynvml._nvmlGetFunctionPointer_cache.clear()
        pynvml._nvmlLib_refcount = 0
    _installed = None


def installed() -> SimulatedNvml | None:
    return _installed
