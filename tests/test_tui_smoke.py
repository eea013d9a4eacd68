"""`gpuwatch --sim 2xrtx4090` in a real terminal (tmux): it starts, draws the cards, and quits on `q`."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _capture(session: str) -> str:
    return subprocess.run(
        ["tmux", "capture-pane", "-t", session, "-p"], capture_output=True, text=True, check=False
    ).stdout


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_gpuwatch_sim_draws_in_tmux_and_quits(tmp_path: Path) -> None:
    session = f"gpuwatch-smoke-{uuid.uuid4().hex[:8]}"
    exit_file = tmp_path / "exit"
    gpuwatch = Path(sys.executable).with_name("gpuwatch")
    # the short sleep lets tmux give the window its final size before the app measures the terminal
    command = f"sleep 1; {gpuwatch} --sim 2xrtx4090 --workload llama-3-8b:fp16:batch=8; echo $? > {exit_file}"
    # -f /dev/null: the user's tmux.conf must not change what the test sees
    subprocess.run(
        ["tmux", "-f", "/dev/null", "new-session", "-d", "-s", session, "-x", "120", "-y", "40", command],
        check=True,
    )
    try:
        screen = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            screen = _capture(session)
            # the cards are named in the first frame, before the first poll fills them and the footer
            # lists its keys
            if all(t in screen for t in ("1 RTX 4090", "°C", "SM busy", "simulated NVML", "q Quit")):
                break
            time.sleep(0.5)
        assert "0 RTX 4090" in screen and "1 RTX 4090" in screen, screen
        assert "simulated NVML: 2x rtx4090" in screen
        assert "SM busy" in screen and "MC busy" in screen
        assert "1 Live" in screen and "q Quit" in screen  # tabs and footer
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not exit_file.exists():
            time.sleep(0.2)
        assert exit_file.exists() and exit_file.read_text().strip() == "0"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, check=False)
