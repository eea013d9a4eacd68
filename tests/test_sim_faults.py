"""Injected faults, as a poller sees them through pynvml."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pynvml as N
import pytest

from gpuwatch.errors import UserError
from gpuwatch.telemetry.simulated import SimulatedNvml, install, uninstall
from gpuwatch.telemetry.simulated.faults import parse_faults


@pytest.fixture
def sim() -> Iterator[SimulatedNvml]:
    s = install("2xrtx4090", scenario="decode", manual_clock=True, faults="lost:1@30,notsup:0:fan")
    N.nvmlInit()
    yield s
    N.nvmlShutdown()
    uninstall()


def test_scheduled_gpu_lost_fails_only_that_device(sim: SimulatedNvml) -> None:
    h0, h1 = (N.nvmlDeviceGetHandleByIndex(i) for i in (0, 1))
    assert N.nvmlDeviceGetPowerUsage(h1) > 0  # fine before second 30
    es = N.nvmlEventSetCreate()
    N.nvmlDeviceRegisterEvents(h1, N.nvmlEventTypeXidCriticalError, es)
    sim.advance(31.0)
    with pytest.raises(N.NVMLError_GpuIsLost):
        N.nvmlDeviceGetPowerUsage(h1)
    with pytest.raises(N.NVMLError_GpuIsLost):
        N.nvmlDeviceGetHandleByIndex(1)
    with pytest.raises(N.NVMLError_GpuIsLost) as lost:
        N.nvmlDeviceGetName(h1)
    assert str(lost.value) == "GPU is lost"  # through pynvml's nvmlErrorString
    assert N.nvmlDeviceGetPowerUsage(h0) > 0
    assert N.nvmlDeviceGetCount() == 2
    assert N.nvmlEventSetWait(es, 100).eventData == 79  # falling off the bus is Xid 79
    N.nvmlEventSetFree(es)
    sim.inject("clear", 1)
    assert N.nvmlDeviceGetPowerUsage(N.nvmlDeviceGetHandleByIndex(1)) > 0


def test_not_supported_for_one_call_on_one_device(sim: SimulatedNvml) -> None:
    h0, h1 = (N.nvmlDeviceGetHandleByIndex(i) for i in (0, 1))
    with pytest.raises(N.NVMLError_NotSupported):
        N.nvmlDeviceGetFanSpeed(h0)
    with pytest.raises(N.NVMLError_NotSupported):
        N.nvmlDeviceGetFanSpeed_v2(h0, 0)
    assert N.nvmlDeviceGetFanSpeed(h1) >= 0
    sim.inject("not_supported", 1, call="nvmlDeviceGetPowerUsage")
    with pytest.raises(N.NVMLError_NotSupported):
        N.nvmlDeviceGetPowerUsage(h1)
    assert N.nvmlDeviceGetTemperatureV(h1, N.NVML_TEMPERATURE_GPU) > 0


def test_slow_calls_take_longer_on_that_device_only(sim: SimulatedNvml) -> None:
    h0, h1 = (N.nvmlDeviceGetHandleByIndex(i) for i in (0, 1))
    sim.inject("slow", 1, latency_s=0.05)
    t = time.perf_counter()
    N.nvmlDeviceGetPowerUsage(h1)
    assert time.perf_counter() - t >= 0.05
    t = time.perf_counter()
    N.nvmlDeviceGetPowerUsage(h0)
    assert time.perf_counter() - t < 0.05


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("driver_not_loaded", N.NVMLError_DriverNotLoaded),
        ("lib_rm_version_mismatch", N.NVMLError_LibRmVersionMismatch),
        ("no_permission", N.NVMLError_NoPermission),
    ],
)
def test_init_faults_raise_the_right_error(kind: str, error: type[Exception]) -> None:
    install("rtx4090", manual_clock=True, faults=f"init:{kind}")
    try:
        with pytest.raises(error):
            N.nvmlInit()
    finally:
        uninstall()


@pytest.mark.parametrize("spec", ["lost:x", "notsup:0:fanspeed", "slow:abc", "init:nope", "teleport:1"])
def test_bad_fault_schedule_is_a_one_line_user_error(spec: str) -> None:
    with pytest.raises(UserError) as e:
        parse_faults(spec)
    assert spec.split(":")[0] in str(e.value) and "\n" not in str(e.value)


def test_fault_schedule_parses_the_documented_example() -> None:
    lost, notsup, slow = parse_faults("lost:1@30,notsup:0:fan,slow:0.002")
    assert (lost.kind, lost.device, lost.at_s) == ("lost", 1, 30.0)
    assert "nvmlDeviceGetFanSpeed" in notsup.calls
    assert slow.latency_s == 0.002


def test_crash_kills_the_process_like_a_segfault() -> None:
    code = (
        "import pynvml as N\n"
        "from gpuwatch.telemetry.simulated import install\n"
        "install('rtx4090', manual_clock=True, faults='crash:0')\n"
        "N.nvmlInit(); print('init ok', flush=True)\n"
        "N.nvmlDeviceGetPowerUsage(N.nvmlDeviceGetHandleByIndex(0))\n"
        "print('survived')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "init ok" in proc.stdout and "survived" not in proc.stdout
    assert proc.returncode != 0


def test_a_scheduled_xid_wakes_a_waiter_already_blocked() -> None:
    # simulated second 2 at 20x is 0.1 s of real time; the wait would otherwise time out after 10 s
    install("rtx4090", time_scale=20.0, faults="xid:0:48@2")
    try:
        N.nvmlInit()
        es = N.nvmlEventSetCreate()
        N.nvmlDeviceRegisterEvents(N.nvmlDeviceGetHandleByIndex(0), N.nvmlEventTypeXidCriticalError, es)
        assert N.nvmlEventSetWait(es, 10_000).eventData == 48
        with pytest.raises(N.NVMLError_Timeout):
            N.nvmlEventSetWait(es, 10)  # delivered once
        N.nvmlEventSetFree(es)
    finally:
        N.nvmlShutdown()
        uninstall()


def test_advancing_a_manual_clock_wakes_a_waiter_for_a_scheduled_lost_gpu(sim: SimulatedNvml) -> None:
    es = N.nvmlEventSetCreate()
    N.nvmlDeviceRegisterEvents(N.nvmlDeviceGetHandleByIndex(1), N.nvmlEventTypeXidCriticalError, es)
    threading.Timer(0.05, sim.advance, args=(31.0,)).start()
    assert N.nvmlEventSetWait(es, 10_000).eventData == 79
    N.nvmlEventSetFree(es)
