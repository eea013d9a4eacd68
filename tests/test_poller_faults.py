"""Faults through the simulated NVML: no driver, init failures, a slow GPU, a crashing NVML child."""

from __future__ import annotations

import threading
import time

import pytest

from gpuwatch.telemetry.sample import Snapshot
from gpuwatch.telemetry.sources import NvmlUnavailable, open_source

sim_mod = pytest.importorskip("gpuwatch.telemetry.simulated", reason="simulated NVML not available yet")
needs_sim = pytest.mark.skipif(
    not hasattr(sim_mod, "install"), reason="simulated NVML install() not available yet"
)

SOURCE_DEFAULTS = dict(scenario=None, time_scale=1.0, seed=0, replay=None, replay_speed=1.0)


def test_no_driver_is_one_clear_line() -> None:
    # this machine has no libnvidia-ml.so.1: pynvml raises NVMLError_LibraryNotFound naturally
    if hasattr(sim_mod, "uninstall"):
        sim_mod.uninstall()
    with pytest.raises(NvmlUnavailable) as info:
        open_source(sim=None, interval_s=1.0, **SOURCE_DEFAULTS)
    message = str(info.value)
    assert "\n" not in message
    assert "NVML Shared Library Not Found" in message and "--sim" in message


@needs_sim
def test_driver_not_loaded_at_init_names_the_fix() -> None:
    source = open_source(sim="rtx4090", interval_s=1.0, faults="init:driver_not_loaded", **SOURCE_DEFAULTS)
    try:
        with pytest.raises(NvmlUnavailable, match="modprobe nvidia"):
            source.start()
    finally:
        source.stop()


@needs_sim
def test_bad_sim_spec_is_a_user_error() -> None:
    from gpuwatch.errors import UserError

    with pytest.raises(UserError):
        open_source(sim="rtx9999", interval_s=1.0, **SOURCE_DEFAULTS)


@needs_sim
def test_slow_gpu_does_not_stall_the_others() -> None:
    source = open_source(sim="rtx4090,rtx4090", interval_s=0.1, **SOURCE_DEFAULTS)
    snaps: list[Snapshot] = []
    got = threading.Event()

    def on_snapshot(snap: Snapshot) -> None:
        snaps.append(snap)
        if len(snaps) >= 12:
            got.set()

    source.add_listener(on_snapshot)
    source.start()
    try:
        sim = sim_mod.installed()
        sim.inject("slow", 0, latency_s=0.5)  # one read of GPU 0 now takes seconds
        snaps.clear()
        assert got.wait(30.0), "poller stopped publishing while one GPU was slow"
    finally:
        source.stop()
    fast = {s.gpus[1].energy_j for s in snaps}
    slow = {s.gpus[0].energy_j for s in snaps}
    assert len(fast) >= 8  # GPU 1 kept being read every tick
    assert len(slow) <= 3  # GPU 0's stale sample was reused, not waited for
    assert sum(s.errors.get("stale", 0) for s in snaps) >= 8


@needs_sim
@pytest.mark.slow
def test_isolated_child_survives_a_crash_and_resumes() -> None:
    # the simulated library SIGSEGVs the child 2 simulated seconds after each start
    source = open_source(sim="rtx4090", interval_s=0.2, isolate=True, faults="crash@2", **SOURCE_DEFAULTS)
    snaps: list[Snapshot] = []
    source.add_listener(snaps.append)
    source.start()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if any(s.errors.get("nvml_child_restart") for s in snaps) and snaps[-1].errors == {}:
                break
            time.sleep(0.2)
    finally:
        source.stop()
    restarted = [i for i, s in enumerate(snaps) if s.errors.get("nvml_child_restart")]
    assert restarted, "no snapshot after the child was restarted"
    assert restarted[0] > 0 and snaps[restarted[0]].gpus[0].energy_j is not None
    ts = [s.timestamp_s for s in snaps]
    assert ts == sorted(ts) and len(set(ts)) == len(ts)  # parent timeline stays monotonic
    _, energy = source.history.series(0, "energy_j")
    assert any(e != e for e in energy)  # the gap is marked (NaN row)


@needs_sim
def test_the_nvml_child_leaves_ctrl_c_and_sigterm_to_its_parent() -> None:
    # Ctrl-C and a service manager's SIGTERM reach the whole process group; a child dying of them
    # while the parent shuts down used to read as a crash ("NVML child process died; restarting")
    import os
    import signal

    from gpuwatch.telemetry.nvml_supervisor import NvmlSupervisor

    source = open_source(sim="rtx4090", interval_s=0.2, isolate=True, **SOURCE_DEFAULTS)
    assert isinstance(source, NvmlSupervisor)
    source.start()
    try:
        assert source.wait_ready(60.0).phase == "running"
        pid = source.child_pid
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGINT)
        time.sleep(1.5)
        assert source.child_pid == pid and source.restarts == 0
    finally:
        source.stop()
    assert source.child_pid is None  # stop() still ends the child, through the pipe
