"""`gpuwatch --sim 2xrtx4090` in a real terminal (tmux): it starts, draws the cards, and quits on `q`;
an engine behind https is scraped over TLS."""

from __future__ import annotations

import shlex
import shutil
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from loopback_http import PROMETHEUS_TEXT, serving

DATA = Path(__file__).parent / "data"

pytestmark = pytest.mark.slow


def _capture(session: str) -> str:
    return subprocess.run(
        ["tmux", "capture-pane", "-t", session, "-p"], capture_output=True, text=True, check=False
    ).stdout


def _start(session: str, command: str) -> None:
    """``command`` in a new detached 120x40 tmux session (-f /dev/null: the user's tmux.conf must not
    change what the test sees)."""
    subprocess.run(
        ["tmux", "-f", "/dev/null", "new-session", "-d", "-s", session, "-x", "120", "-y", "40", command],
        check=True,
    )


def _screen_once(session: str, shows: Callable[[str], bool], timeout_s: float = 30.0) -> str:
    """The session's screen as soon as it ``shows`` what the test waits for (or as it is at the timeout)."""
    screen = ""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        screen = _capture(session)
        if shows(screen):
            break
        time.sleep(0.5)
    return screen


def _pane_flag(session: str, flag: str) -> str:
    done = subprocess.run(
        ["tmux", "display-message", "-p", "-t", session, f"#{{{flag}}}"], capture_output=True, text=True
    )
    return done.stdout.strip()


def _exit_status(exit_file: Path, timeout_s: float = 15.0) -> str | None:
    """What the session's command wrote to ``exit_file`` once it ended (None if it had not by then)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not exit_file.exists():
        time.sleep(0.2)
    return exit_file.read_text().strip() if exit_file.exists() else None


def _mapped_files(session: str) -> set[str]:
    """The files mapped into the program the session runs (the pane's shell runs it as a child)."""
    import psutil

    shell = psutil.Process(int(_pane_flag(session, "pane_pid")))
    return {m.path for p in (shell, *shell.children(recursive=True)) for m in p.memory_maps()}


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_gpuwatch_sim_draws_in_tmux_and_quits(tmp_path: Path) -> None:
    session = f"gpuwatch-smoke-{uuid.uuid4().hex[:8]}"
    exit_file = tmp_path / "exit"
    gpuwatch = Path(sys.executable).with_name("gpuwatch")
    # the short sleep lets tmux give the window its final size before the app measures the terminal
    command = f"sleep 1; {gpuwatch} --sim 2xrtx4090 --workload llama-3-8b:fp16:batch=8; echo $? > {exit_file}"
    _start(session, command)
    try:
        # the cards are named in the first frame, before the first poll fills them and the key bar lists
        # its keys
        wanted = ("1 RTX 4090", "°C", "SM busy", "simulated NVML", "q Quit")
        screen = _screen_once(session, lambda screen: all(t in screen for t in wanted))
        assert "0 RTX 4090" in screen and "1 RTX 4090" in screen, screen
        assert "simulated NVML: 2x rtx4090" in screen
        assert "SM busy" in screen and "MC busy" in screen
        assert "1 Live" in screen and "q Quit" in screen  # the pane row and the key bar
        # its session fetches no https URL: OpenSSL (~4 MiB resident) was never loaded into it
        assert not [lib for lib in _mapped_files(session) if "libssl" in lib or "libcrypto" in lib]
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        assert _exit_status(exit_file) == "0"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, check=False)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_an_engine_behind_https_is_scraped_over_tls(tmp_path: Path) -> None:
    """The TUI leaves TLS unloaded when every URL it fetches is http; an https engine must still be
    read, over TLS, verified against the CA the process trusts (here SSL_CERT_FILE's)."""
    from tls_pki import make_pki

    pki = make_pki(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    metrics = (DATA / "engines" / "vllm.txt").read_bytes()
    session = f"gpuwatch-tls-{uuid.uuid4().hex[:8]}"
    gpuwatch = Path(sys.executable).with_name("gpuwatch")
    with serving(lambda path: (200, PROMETHEUS_TEXT, metrics), tls=context) as base:
        url = f"{base}/metrics"
        command = (
            f"sleep 1; SSL_CERT_FILE={shlex.quote(str(pki.ca_cert))} {gpuwatch} --sim rtx4090 "
            f"--engine {url} --interval 0.5"
        )
        _start(session, command)
        try:
            screen = _screen_once(session, lambda screen: f"{url} up (vllm" in screen)
            assert f"tokens/s from {url} up (vllm" in screen, screen
            assert any("libssl" in lib for lib in _mapped_files(session))
        finally:
            subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, check=False)


def _held_textual(tmp_path: Path, action: str) -> str:
    """A PYTHONPATH whose sitecustomize runs ``action`` when ``textual.app`` is first imported: the
    moment between the CLI's first frame and Textual's, made as long (or as broken) as a test needs."""
    (tmp_path / "sitecustomize.py").write_text(
        "import sys, time\n"
        "class _Hold:\n"
        "    @staticmethod\n"
        "    def find_spec(name, path=None, target=None):\n"
        "        if name == 'textual.app':\n"
        f"            {action}\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Hold())\n"
    )
    return f"PYTHONPATH={shlex.quote(str(tmp_path))}"


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_the_gpus_are_named_before_textual_loads_and_the_terminal_is_given_back(tmp_path: Path) -> None:
    """The CLI draws the GPUs' names while Textual loads; the live view then replaces that frame, and
    quitting leaves the shell's screen as it was."""
    session = f"gpuwatch-first-{uuid.uuid4().hex[:8]}"
    exit_file = tmp_path / "exit"
    gpuwatch = Path(sys.executable).with_name("gpuwatch")
    hold = _held_textual(tmp_path, "time.sleep(3)")
    command = (
        f"sleep 1; echo BEFORE-GPUWATCH; {hold} {gpuwatch} --sim 2xrtx4090; echo $? > {exit_file}; "
        "echo AFTER-GPUWATCH; sleep 60"
    )
    _start(session, command)
    try:
        first = _screen_once(session, lambda screen: "1 RTX 4090" in screen)
        lines = first.splitlines()
        assert "gpuwatch — simulated NVML: 2x rtx4090" in lines[0], first
        assert lines[1].split() == ["0", "RTX", "4090", "waiting", "for", "the", "first", "poll…"], first
        assert lines[2].startswith(" 1 RTX 4090  waiting for the first poll…"), first
        assert lines[-1].strip() == "starting the live view…", first
        assert "BEFORE-GPUWATCH" not in first  # drawn on the alternate screen Textual then keeps
        assert _pane_flag(session, "alternate_on") == "1"
        live = _screen_once(session, lambda screen: "q Quit" in screen and "SM busy" in screen)
        assert "SM busy" in live and "1 Live" in live, live
        assert "starting the live view" not in live  # every cell of the first frame was drawn over
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        after = _screen_once(session, lambda screen: "AFTER-GPUWATCH" in screen, timeout_s=15)
        assert exit_file.read_text().strip() == "0"
        assert "BEFORE-GPUWATCH" in after and "RTX 4090" not in after, after
        assert _pane_flag(session, "alternate_on") == "0"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, check=False)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_a_start_that_fails_after_the_first_frame_gives_the_terminal_back(tmp_path: Path) -> None:
    """Textual failing to load after the GPUs were drawn: the error is on the shell's screen, with the
    cursor shown, not lost on an alternate screen that nothing leaves."""
    session = f"gpuwatch-fail-{uuid.uuid4().hex[:8]}"
    exit_file = tmp_path / "exit"
    gpuwatch = Path(sys.executable).with_name("gpuwatch")
    hold = _held_textual(tmp_path, "time.sleep(2); raise ImportError('textual.app held back by the test')")
    command = f"sleep 1; {hold} {gpuwatch} --sim 2xrtx4090; echo $? > {exit_file}; sleep 60"
    _start(session, command)
    try:
        first = _screen_once(session, lambda screen: "1 RTX 4090" in screen)
        assert "starting the live view…" in first, first
        status = _exit_status(exit_file)
        after = _capture(session)
        assert "ImportError: textual.app held back by the test" in after, after
        assert "RTX 4090" not in after and status is not None and status != "0"
        assert _pane_flag(session, "alternate_on") == "0"
        assert _pane_flag(session, "cursor_flag") == "1"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, check=False)
