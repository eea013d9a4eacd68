"""The NVML child supervisor, for real: child processes over the simulated NVML, crashes and all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from test_options import LAB_CARD

from gpuwatch.telemetry.nvml_supervisor import NvmlSupervisor
from gpuwatch.telemetry.sample import Snapshot
from gpuwatch.telemetry.simspec import SimSpec


def supervisor(faults: str | None = None, devices: str = "rtx4090") -> NvmlSupervisor:
    return NvmlSupervisor(interval_s=0.2, sim=SimSpec(devices, faults=faults), backoff_initial_s=0.5)


def wait_for(predicate, timeout_s: float = 60.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_start_returns_at_once_in_a_starting_state_then_runs() -> None:
    source = supervisor()
    started = time.monotonic()
    source.start()
    try:
        assert time.monotonic() - started < 1.0
        assert source.state().phase == "starting" and source.latest() is None
        assert source.wait_ready(60.0).phase == "running"
        assert source.latest() is not None
    finally:
        source.stop()
    assert source.child_pid is None


def test_a_driver_that_takes_2_s_per_call_neither_fails_start_up_nor_blocks_the_caller() -> None:
    source = supervisor(faults="slow:2")
    started = time.monotonic()
    source.start()
    try:
        assert time.monotonic() - started < 1.0
        time.sleep(4.0)
        state = source.state()
        assert state.phase == "starting", state  # still waiting for NVML: not "did not start"
    finally:
        stopping = time.monotonic()
        source.stop()
    assert time.monotonic() - stopping < 12.0


def test_nvml_init_failure_is_a_one_line_state_not_an_exception() -> None:
    source = supervisor(faults="init:driver_not_loaded")
    source.start()
    try:
        state = source.wait_ready(60.0)
        assert state.phase == "failed"
        assert state.message is not None and "\n" not in state.message and "modprobe nvidia" in state.message
        assert "Traceback" not in state.message
    finally:
        source.stop()


def test_a_child_killed_by_a_signal_is_reported_with_it_and_restarts_without_re_adding_probe_errors() -> None:
    source = supervisor()
    snaps: list[Snapshot] = []
    source.add_listener(snaps.append)
    source.start()
    try:
        assert source.wait_ready(60.0).phase == "running"
        assert wait_for(lambda: len(snaps) >= 3)
        probe_errors_first_child = sum(s.errors.get("not_supported", 0) for s in snaps)
        assert probe_errors_first_child > 0  # the 4090 has no memory temperature, no GPM: probed once
        pid = source.child_pid
        assert pid is not None
        os.kill(pid, signal.SIGSEGV)
        assert wait_for(lambda: source.restarts >= 1)
        assert "killed by SIGSEGV" in (source.state().message or "") or source.state().phase == "running"
        assert source.exits["killed by SIGSEGV"] == 1
        n = len(snaps)
        assert wait_for(lambda: len(snaps) >= n + 4 and source.child_pid not in (None, pid))
    finally:
        source.stop()
    restarted = [i for i, s in enumerate(snaps) if s.errors.get("nvml_child_restart")]
    assert restarted
    after = snaps[restarted[0] :]
    assert sum(s.errors.get("not_supported", 0) for s in after) == 0  # the new child's re-probe is not news
    assert after[0].gpus[0].temperature_c is not None


CHILD_OF_A_KILLED_PARENT = """
import sys, time
from gpuwatch.telemetry.nvml_supervisor import NvmlSupervisor
from gpuwatch.telemetry.simspec import SimSpec
s = NvmlSupervisor(interval_s=0.2, sim=SimSpec("rtx4090", faults=sys.argv[1] or None))
s.start()
deadline = time.monotonic() + 60
while s.child_pid is None and time.monotonic() < deadline:
    time.sleep(0.05)
print(s.child_pid, flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("faults", ["", "slow:2"], ids=["running", "during-a-slow-start-up"])
def test_the_child_dies_with_its_parent_and_never_spins(faults: str) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", CHILD_OF_A_KILLED_PARENT, faults],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        child = psutil.Process(child_pid)
        assert child.ppid() == parent.pid
        time.sleep(1.0)
        parent.kill()
        parent.wait()
        gone, _ = psutil.wait_procs([child], timeout=10.0)
        assert child in gone, "the NVML child outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()


def gpuwatch(*args: str, timeout_s: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpuwatch", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def test_record_survives_a_segfault_inside_nvml(tmp_path: object) -> None:
    from pathlib import Path

    from gpuwatch.telemetry.recording import read_recording

    path = Path(str(tmp_path)) / "crash.gwrec"
    # the simulated driver SIGSEGVs the NVML process 2 simulated seconds after each start
    done = gpuwatch(
        "record",
        str(path),
        "--sim",
        "rtx4090",
        "--faults",
        "crash@2",
        "--duration",
        "6",
        "--interval",
        "0.25",
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "killed by SIGSEGV" in done.stderr  # said once per crash, in one line
    snaps = list(read_recording(path))
    assert len(snaps) >= 4 and any(s.errors.get("nvml_child_restart") for s in snaps)


def test_record_with_an_nvml_that_cannot_start_is_one_line(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "none.gwrec"
    done = gpuwatch(
        "record", str(path), "--sim", "rtx4090", "--faults", "init:driver_not_loaded", "--duration", "30"
    )
    assert done.returncode != 0
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert any("modprobe nvidia" in ln for ln in lines) and "Traceback" not in done.stderr


def test_a_wedged_child_makes_every_gpu_stale_and_recovers_when_it_answers_again() -> None:
    # SIGSTOP freezes the whole NVML process (as a driver that holds every thread would): no snapshot
    # arrives, so after the freshness bound (5 s here) the parent itself publishes the GPUs as stale
    source = supervisor(devices="rtx4090,rtx4090")
    snaps: list[Snapshot] = []
    source.add_listener(snaps.append)
    source.start()
    try:
        assert source.wait_ready(60.0).phase == "running"
        pid = source.child_pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        frozen_at = len(snaps)
        try:
            assert wait_for(lambda: any(all(g.stale for g in s.gpus) for s in snaps[frozen_at:]), 15.0)
        finally:
            os.kill(pid, signal.SIGCONT)
        stale = next(s for s in snaps[frozen_at:] if all(g.stale for g in s.gpus))
        assert all(g.temperature_c is None and g.read_timestamp_s > 0 for g in stale.gpus)
        assert stale.last_read_timestamp_s is None  # nothing was read: the last good poll does not advance
        assert stale.poll_duration_s is not None and stale.poll_duration_s > 5.0  # uncapped
        n = len(snaps)
        assert wait_for(lambda: len(snaps) > n + 2 and not any(g.stale for g in snaps[-1].gpus), 15.0)
        assert source.restarts == 0  # frozen is not dead: no restart, it simply answers again
    finally:
        source.stop()
    stamps = [s.timestamp_s for s in snaps]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


def test_the_childs_log_lines_come_through_the_parents_logging(caplog: pytest.LogCaptureFixture) -> None:
    # a lost card is logged by the reader inside the child; the parent's handlers (here pytest's) get it
    import logging

    source = supervisor(faults="lost:0@1", devices="rtx4090")
    with caplog.at_level(logging.INFO):
        source.start()
        try:
            assert source.wait_ready(60.0).phase == "running"
            assert wait_for(lambda: any("lost" in r.getMessage() for r in caplog.records), 20.0)
        finally:
            source.stop()
    lost = next(r for r in caplog.records if "lost" in r.getMessage())
    assert lost.name.startswith("gpuwatch.telemetry") and lost.levelno == logging.WARNING


def test_record_with_a_driver_that_takes_2_s_per_call_ends_on_time(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "slow.gwrec"
    started = time.monotonic()
    done = gpuwatch("record", str(path), "--sim", "rtx4090", "--faults", "slow:2", "--duration", "3")
    took_s = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    # at most the first-snapshot wait (10 s) + the child's stop (5 s) + start-up, never minutes
    assert took_s < 30.0, took_s


def test_stopped_and_started_again_it_runs_and_idles_without_spinning() -> None:
    source = supervisor()
    source.start()
    assert source.wait_ready(60.0).phase == "running"
    source.stop()
    source.start()
    try:
        assert wait_for(lambda: source.child_pid is not None, 30.0)
        me = psutil.Process()
        me.cpu_percent(None)
        time.sleep(2.0)
        assert me.cpu_percent(None) < 50.0  # the supervisor waits on sockets; it does not poll them
    finally:
        source.stop()


#: what the NVML child must never load: the faces, the live model, numpy, and the stdlib pieces a
#: light reader does not need (multiprocessing.connection drags in hmac/hashlib, i.e. libcrypto; site's
#: .pth files, importlib.resources, the simulator's json and tomllib, the child having its parent's
#: catalog, each ~0.3-1 MiB resident)
HEAVY_IN_CHILD = (
    "site",
    "tomllib",
    "pickle",  # the wire uses the C pickler, _pickle
    "pathlib",
    "zipfile",
    "importlib.resources",
    "difflib",
    "json",
    "numpy",
    "textual",
    "rich",
    "prometheus_client",
    "h11",
    "asyncio",
    "ssl",
    "hashlib",
    "multiprocessing",
    "decimal",
    "gpuwatch.live",
    "gpuwatch.exporter",
    "gpuwatch.tui",
    "gpuwatch.commands",
    "gpuwatch.telemetry.history",
    "gpuwatch.telemetry.containers",
    "gpuwatch.telemetry.recording",
)


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_nvml_child_imports_only_what_reading_nvml_needs(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # the real supervised child reports every module it imports (PYTHONPROFILEIMPORTTIME, inherited)
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    source = supervisor(devices="2xrtx4090")
    source.start()
    try:
        assert source.wait_ready(60.0).phase == "running"
        assert wait_for(lambda: source.latest() is not None and len(source.latest().gpus) == 2)  # type: ignore[union-attr]
        time.sleep(1.0)  # a few polls: whatever a poll imports lazily is loaded by now
        pid = source.child_pid
        assert pid is not None
        child_kib = _rss_kib(pid)
        with open(f"/proc/{pid}/maps") as f:
            libraries = {line.split()[-1].rsplit("/", 1)[-1] for line in f if ".so" in line}
    finally:
        source.stop()
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in capfd.readouterr().err.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "gpuwatch.telemetry.nvml_child" in imported and "pynvml" in imported  # the report is real
    heavy = sorted(m for m in imported if any(m == h or m.startswith(h + ".") for h in HEAVY_IN_CHILD))
    assert heavy == []
    assert not [lib for lib in libraries if lib.startswith(("libcrypto", "libssl", "_multiarray"))], libraries
    # against a bare interpreter on this machine: the child's own imports and polls stay small
    bare = subprocess.run(
        [sys.executable, "-c", "import os; print(open(f'/proc/{os.getpid()}/status').read())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    bare_kib = next(int(line.split()[1]) for line in bare.splitlines() if line.startswith("VmRSS:"))
    assert child_kib - bare_kib < 12 * 1024, (child_kib, bare_kib)  # 9.0 MiB at 2 simulated GPUs here


_OPEN_SUPERVISED = """
import sys
from gpuwatch.errors import UserError
from gpuwatch.telemetry.sources import open_source
try:
    source = open_source(sim=sys.argv[1], scenario=None, time_scale=1.0, seed=0, replay=None,
                         replay_speed=1.0, interval_s=0.2, isolate=True, faults=sys.argv[2] or None)
except UserError as exc:
    print("error", exc)
else:
    print(source.description)
print(sorted(m for m in ("pynvml", "gpuwatch.telemetry.simulated") if m in sys.modules))
"""


@pytest.mark.parametrize(
    ("devices", "faults", "first_line"),
    [
        ("2xrtx4090,h100-sxm", "", "simulated NVML: 2x rtx4090, 1x h100-sxm (scenario decode)"),
        ("2xrtx409", "", "error --sim: unknown GPU 'rtx409'; did you mean rtx4090"),
        ("rtx4090", "bogus", "error bad fault 'bogus'; use lost:"),
    ],
)
def test_a_supervising_parent_checks_the_sim_options_without_loading_the_simulator(
    devices: str, faults: str, first_line: str
) -> None:
    # the exporter's parent keeps neither the simulator nor pynvml (its child has them), yet a bad
    # --sim or --faults is still the command's own one-line error, and the description is the same
    out = subprocess.run(
        [sys.executable, "-c", _OPEN_SUPERVISED, devices, faults],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    ).stdout.splitlines()
    assert out[0].startswith(first_line), out
    assert out[1] == "[]"


def test_a_supervising_parent_knows_the_sim_cards_a_user_file_added(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # `gpuwatch exporter --sim lab-card --gpus-file F`: the throwaway interpreter that checks --sim gets
    # the parent's catalog, as the NVML child does; it refused the card the file adds
    path = tmp_path / "gpus.toml"
    path.write_text(LAB_CARD)
    load = f"from gpuwatch.model.catalog import load_user_gpus; load_user_gpus({str(path)!r})\n"
    code = load + _OPEN_SUPERVISED
    out = subprocess.run(
        [sys.executable, "-c", code, "lab-card", ""],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    ).stdout.splitlines()
    assert out[0] == "simulated NVML: 1x lab-card (scenario decode)", out


#: a user file that adds a card (test_options' lab card) and changes a built-in one
_LAB_CARD = (
    LAB_CARD
    + """
[gpu.rtx4090]
tdp_w = 350                       # a power-limited card: the simulated default limit follows
"""
)


def test_the_nvml_child_knows_the_gpus_a_user_file_added_or_changed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # the child adopts the parent's catalog instead of reading gpus.toml itself, user files included
    from gpuwatch.model.catalog import load_user_gpus, reset_user_gpus

    path = tmp_path / "gpus.toml"
    path.write_text(_LAB_CARD)
    load_user_gpus(path)
    try:
        source = supervisor(devices="lab-card,rtx4090")
        source.start()
        try:
            assert source.wait_ready(60.0).phase == "running"
            assert wait_for(lambda: source.latest() is not None and len(source.latest().gpus) == 2)  # type: ignore[union-attr]
            lab, rtx = source.latest().gpus  # type: ignore[union-attr]
        finally:
            source.stop()
    finally:
        reset_user_gpus()
    assert (lab.name, lab.catalog_id) == ("NVIDIA Lab Card 9000", "lab-card")
    assert lab.power_limit_default_w == pytest.approx(300.0)
    assert rtx.catalog_id == "rtx4090" and rtx.power_limit_default_w == pytest.approx(350.0)
