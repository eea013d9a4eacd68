"""Measurement helpers shared by the benchmark sections: processes, scrapes, CPU and memory.

Every figure gpuwatch reports is measured side by side with its counterpart in the same run, so the
ratio survives a noisy machine; absolute numbers are printed for context only.
"""

from __future__ import annotations

import compileall
import contextlib
import http.client
import importlib.util
import math
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Child:
    """A child process whose stderr goes to a file (a pipe nobody reads would stall a chatty child)."""

    proc: subprocess.Popen[bytes]
    stderr_path: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_tail(self, chars: int = 800) -> str:
        with open(self.stderr_path, errors="replace") as f:
            return f.read()[-chars:].strip()


@contextlib.contextmanager
def running(cmd: Sequence[str], *, env: dict[str, str] | None = None) -> Iterator[Child]:
    """A child process that is always killed (with its children) when the block ends."""
    with tempfile.NamedTemporaryFile(prefix="gpuwatch-bench-", suffix=".stderr") as err:
        proc = subprocess.Popen(
            list(cmd), stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, **(env or {})}
        )
        try:
            yield Child(proc, err.name)
        finally:
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(proc.pid).children(recursive=True):
                    child.kill()
            proc.kill()
            proc.wait(timeout=10)


def wait_until(check: Callable[[], str | None], child: Child, timeout_s: float) -> None:
    """Poll ``check`` (None = ready, else what is still missing) until ready; raise with the child's stderr
    if it exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    missing: str | None = "no answer yet"
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise RuntimeError(
                f"{child.proc.args!r} exited with {child.proc.returncode}: {child.stderr_tail()}"
            )
        with contextlib.suppress(OSError, http.client.HTTPException):
            missing = check()
            if missing is None:
                return
        time.sleep(0.2)
    raise RuntimeError(f"not ready after {timeout_s:.0f} s ({missing}): {child.stderr_tail()}")


def scrape(port: int, path: str = "/metrics") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def interleaved_latencies(ports: Sequence[int], n: int) -> list[list[float]]:
    """Seconds per sequential scrape of each port, alternating between them so noise hits all alike."""
    out: list[list[float]] = [[] for _ in ports]
    for _ in range(n):
        for k, port in enumerate(ports):
            t0 = time.perf_counter()
            status, _ = scrape(port)
            out[k].append(time.perf_counter() - t0)
            if status != 200:
                raise RuntimeError(f"scrape of 127.0.0.1:{port} answered {status}")
    return out


def sustained_rate(port: int, window_s: float, threads: int = 4) -> tuple[int, float]:
    """(scrapes completed, seconds) with ``threads`` scrapers back to back for ``window_s``."""
    done = [0] * threads
    stop = time.perf_counter() + window_s

    def worker(k: int) -> None:
        while time.perf_counter() < stop:
            scrape(port)
            done[k] += 1

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    t0 = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(done), time.perf_counter() - t0


def _process_tree(pid: int) -> list[psutil.Process]:
    procs = [psutil.Process(pid)]
    with contextlib.suppress(psutil.Error):
        procs += procs[0].children(recursive=True)
    return procs


def cpu_seconds(pid: int) -> float:
    """User+system CPU of a process and all its descendants."""
    total = 0.0
    for p in _process_tree(pid):
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants (the exporter's NVML child counts)."""
    total = 0
    for p in _process_tree(pid):
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def cpu_while_idle(pids: Sequence[int], window_s: float) -> list[float]:
    """CPU seconds per minute of each process over the same window (measured concurrently)."""
    before = [cpu_seconds(p) for p in pids]
    time.sleep(window_s)
    after = [cpu_seconds(p) for p in pids]
    return [(a - b) * 60.0 / window_s for a, b in zip(after, before, strict=True)]


def python() -> str:
    return sys.executable


def compile_gpuwatch() -> None:
    """Write gpuwatch's bytecode beside its sources, as ``pip install`` does for a package it installs.

    nvitop's modules come with bytecode (pip compiled them into site-packages); an editable checkout
    has none until a run writes it, and never where PYTHONDONTWRITEBYTECODE is set (as on this project's
    machines). Without this, every gpuwatch start in the table would compile its sources again: ~0.2 s
    and ~1 MiB that a user's installed copy never pays, measured against a counterpart that does not.
    """
    spec = importlib.util.find_spec("gpuwatch")
    if spec is None or spec.origin is None:
        raise RuntimeError("gpuwatch is not importable: pip install -e '.[bench]'")
    compileall.compile_dir(os.path.dirname(spec.origin), quiet=1)


# -- rows of the one table --------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of the table: gpuwatch's figure, the counterpart's, and which direction is better.

    ``theirs`` is None where the counterpart was not measured (nvitop not installed); ``target`` is the
    target this row checks (from the issue that set it), if any ("faster", "less CPU", "< 2 % of a core").
    """

    section: str
    measure: str
    ours: float
    theirs: float | None
    unit: str
    counterpart: str
    lower_is_better: bool = True
    target: str = ""
    target_met: bool | None = None

    @property
    def ratio(self) -> float | None:
        if self.theirs is None or self.theirs == 0 or math.isnan(self.theirs) or math.isnan(self.ours):
            return None
        return self.ours / self.theirs

    @property
    def better(self) -> bool | None:
        """Whether gpuwatch's figure beats the counterpart's (None when there is no counterpart)."""
        if self.theirs is None or math.isnan(self.theirs) or math.isnan(self.ours):
            return None
        return self.ours < self.theirs if self.lower_is_better else self.ours > self.theirs

    @property
    def met(self) -> bool | None:
        """Whether the row's target holds: an absolute one as given, else "beats the counterpart"."""
        if not self.target:
            return None
        return self.target_met if self.target_met is not None else self.better


def fmt(value: float | None, unit: str) -> str:
    """Three significant figures, with the unit; "n/a" for a missing figure."""
    if value is None or math.isnan(value):
        return "n/a"
    if value == 0:
        text = "0"
    elif abs(value) >= 1000:
        text = f"{value:,.0f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".rstrip()


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a non-empty sample."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# -- the simulated devices, and tools run on them ----------------------------------------------------


def nvitop_installed() -> bool:
    """nvitop and nvitop-exporter are the `bench` extra; CI installs only `test`."""
    return all(importlib.util.find_spec(m) is not None for m in ("nvitop", "nvitop_exporter"))


def sim_nvml_name(devices: str) -> str:
    """The name nvmlDeviceGetName returns for the (single model of) simulated card in ``devices``."""
    from gpuwatch.model.catalog import get_gpu
    from gpuwatch.telemetry.simulated import parse_devices
    from gpuwatch.telemetry.simulated.profiles import nvml_name

    ids = set(parse_devices(devices))
    if len(ids) != 1:
        raise ValueError(f"benchmarks use one card model at a time, got {sorted(ids)}")
    return nvml_name(get_gpu(ids.pop()))


def short_gpu_name(nvml_name: str) -> str:
    """What both TUIs print for a card: "NVIDIA GeForce RTX 4090" -> "RTX 4090"."""
    for prefix in ("NVIDIA ", "GeForce "):
        nvml_name = nvml_name.removeprefix(prefix)
    return nvml_name


def on_sim(devices: str, *target: str, scenario: str = "decode") -> list[str]:
    """A command that runs another pynvml tool (console script, or ``-m module``) on simulated cards."""
    sim = [python(), "-m", "gpuwatch.telemetry.simulated", "--devices", devices, "--scenario", scenario]
    return [*sim, "--", *target]


# -- terminals -------------------------------------------------------------------------------------


class Tmux:
    """A private tmux server (its own socket) whose sessions are real terminals of a fixed size."""

    def __init__(self) -> None:
        self.socket = f"gpuwatch-bench-{os.getpid()}"

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True, timeout=10
        )
        return done.stdout

    def start(self, name: str, cmd: Sequence[str], width: int = 120, height: int = 40) -> int:
        """Start ``cmd`` detached; the pid returned is the program's own (``exec`` keeps it the pane's)."""
        line = "exec " + " ".join(shlex.quote(c) for c in cmd)
        self._tmux("new-session", "-d", "-s", name, "-x", str(width), "-y", str(height), line)
        self._tmux("set-option", "-t", name, "remain-on-exit", "on")
        return self.pane_pid(name)

    def pane_pid(self, name: str) -> int:
        return int(self._tmux("display-message", "-p", "-t", name, "#{pane_pid}").strip())

    def stop(self, name: str) -> None:
        """End one session (the server stays up while another session, or :meth:`kill`, remains)."""
        self._tmux("kill-session", "-t", name)

    def capture(self, name: str) -> str:
        return self._tmux("capture-pane", "-p", "-t", name)

    def wait_for(self, name: str, text: str, timeout_s: float) -> float:
        """Poll the screen until ``text`` appears; seconds waited. RuntimeError shows the screen if not."""
        t0 = time.perf_counter()
        screen = ""
        while time.perf_counter() - t0 < timeout_s:
            screen = self.capture(name)
            if text in screen:
                return time.perf_counter() - t0
            time.sleep(0.05)
        raise RuntimeError(f"{text!r} never appeared in tmux session {name!r}; screen:\n{screen}")

    def kill(self) -> None:
        """Stop the server and remove its socket file (tmux leaves it behind)."""
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            path = self._tmux("display-message", "-p", "#{socket_path}").strip()
            self._tmux("kill-server")
            if path:
                os.unlink(path)


def tmux_installed() -> bool:
    return shutil.which("tmux") is not None
