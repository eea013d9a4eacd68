"""`python -m gpuwatch.telemetry.simulated ... -- TARGET` runs another pynvml tool on simulated cards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    return subprocess.run(
        [sys.executable, "-m", "gpuwatch.telemetry.simulated", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )


def test_module_target_reads_the_simulated_cards(tmp_path: Path) -> None:
    (tmp_path / "probe_tool.py").write_text(
        "import sys, pynvml as N\n"
        "N.nvmlInit()\n"
        "handles = [N.nvmlDeviceGetHandleByIndex(i) for i in range(N.nvmlDeviceGetCount())]\n"
        "names = [N.nvmlDeviceGetName(h) for h in handles]\n"
        "print(sys.argv[1:], '|'.join(names))\n"
    )
    proc = _run(
        ["--devices", "h100-sxm,2xrtx4090", "--scenario", "idle", "--", "-m", "probe_tool", "x"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "['x'] NVIDIA H100 80GB HBM3|NVIDIA GeForce RTX 4090|NVIDIA GeForce RTX 4090" in proc.stdout


def test_bad_device_spec_is_one_line_exit_2(tmp_path: Path) -> None:
    proc = _run(["--devices", "rtx9999", "--", "-m", "json.tool"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("gpuwatch: error: --sim: unknown GPU 'rtx9999'")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_nvitop_renders_the_simulated_cards(tmp_path: Path) -> None:
    pytest.importorskip("nvitop")
    proc = _run(
        ["--devices", "rtx4090,h100-sxm", "--scenario", "training", "--", "nvitop", "--once"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "GeForce RTX 4090" in proc.stdout and "H100 80GB HBM3" in proc.stdout
    assert "590.48.01" in proc.stdout  # the driver the H100 profile was captured on
