"""The guided power-limit sweep on the simulated NVML: caps are set through NVML, and the original limit
comes back after the sweep, after SIGTERM, and (through the guardian) after gpuwatch is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="setting power limits needs root, as on a real box")


def start_sweep(state: Path, *extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "gpuwatch", "advise", "power-limit", "--sim", "rtx4090", "--scenario",
            "decode", "--sweep", "--yes", "--caps", "300", "--dwell", "60", "--interval", "0.5",
            "--samples", "2", "--json", *extra]  # fmt: skip
    env = {**os.environ, "GPUWATCH_SIM_STATE": str(state), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def limit_w(state: Path) -> float | None:
    try:
        value = json.loads(state.read_text())["power_limit_w"].get("0")
    except (OSError, ValueError, KeyError):
        return None
    return None if value is None else float(value)


def wait_for_limit(state: Path, watts: float, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while limit_w(state) != watts:
        assert time.monotonic() < deadline, f"the limit never became {watts} W (state: {limit_w(state)})"
        time.sleep(0.1)


def test_sweep_restores_the_limit_when_it_finishes(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    proc = start_sweep(state, "--dwell", "2")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    report = json.loads(out)
    (step,) = report["steps"]
    assert step["power_limit_w"] == 300 and step["power_w"] <= 300 + 1
    assert report["restored_power_limit_w"] == {"0": 450.0}
    assert limit_w(state) == 450.0


def test_sigterm_mid_sweep_restores_the_original_limit(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    proc = start_sweep(state)
    try:
        wait_for_limit(state, 300.0)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143
    assert "Traceback" not in err
    assert limit_w(state) == 450.0


def test_a_killed_gpuwatch_has_its_limit_restored_by_the_guardian(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    proc = start_sweep(state)
    try:
        wait_for_limit(state, 300.0)
        proc.send_signal(signal.SIGKILL)  # no handler runs: only the guardian can put it back
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    wait_for_limit(state, 450.0, timeout_s=30.0)


def test_without_yes_and_without_a_terminal_nothing_is_changed(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    argv = [sys.executable, "-m", "gpuwatch", "advise", "power-limit", "--sim", "rtx4090", "--sweep"]
    env = {**os.environ, "GPUWATCH_SIM_STATE": str(state), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "--yes" in done.stderr
    assert not state.exists()
