"""The NVML child process: polls NVML in-process and sends every snapshot up a socket to its parent.

Started by :mod:`~gpuwatch.telemetry.nvml_supervisor` as ``python -S -c`` running :func:`main` on the
parent's import path (not ``multiprocessing`` spawn, which re-imports the parent's ``__main__`` and so
the whole application; not ``site``, whose .pth files import modules NVML does not need): it imports
only what reading NVML needs, which keeps its memory small.

It dies with its parent: ``PR_SET_PDEATHSIG`` (Linux) kills it when the parent goes, and a thread
blocked on the socket ends it at EOF; nothing here polls, so an orphan never spins. Ctrl-C and a
service manager's SIGTERM reach the whole process group: the child ignores both and leaves the
decision to the parent, or it would read to the parent as a crash while the parent shuts down.

Protocol (pickled tuples, framed by :mod:`~gpuwatch.telemetry.child_wire`): parent -> child
``("config", ChildConfig)`` then ``("stop", None)``;
child -> parent ``("starting", pid)``, then ``("snapshot", Snapshot)`` per poll, or ``("error", line)``
when NVML cannot start; ``("log", (level, logger name, message))`` for every log record, so the
parent's logging decides where it goes (a TUI must not get a child's line drawn over its screen).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from gpuwatch.telemetry.child_wire import Channel
from gpuwatch.telemetry.heap import release_freed_heap, share_one_malloc_arena
from gpuwatch.telemetry.simspec import SimSpec

if TYPE_CHECKING:
    from gpuwatch.model.catalog import CatalogState

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ChildConfig:
    interval_s: float
    sim: SimSpec | None
    description: str
    xid_events: bool
    stale_after: float | None = None
    #: the parent's catalog (its user GPU files included), adopted before anything reads the catalog
    catalog: CatalogState | None = None


def _die_with_parent(parent_pid: int) -> None:
    """Ask the kernel for SIGKILL when the parent dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the socket watch below still ends the child
    if os.getppid() != parent_pid:
        os._exit(0)


def main(fd: int, parent_pid: int) -> None:
    """Run the child until the parent says stop or goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    share_one_malloc_arena()  # before the parent watch and the poller's threads start
    conn = Channel.from_fd(fd)
    send_lock = threading.Lock()

    def send(message: tuple[str, Any]) -> None:
        try:
            with send_lock:
                conn.send(message)
        except OSError:  # the parent is gone: nothing to report to
            os._exit(0)

    try:
        kind, config = conn.recv()
    except (EOFError, OSError):
        os._exit(0)
    assert kind == "config" and isinstance(config, ChildConfig)
    if config.catalog is not None:  # before the reader and the simulator look a card up
        from gpuwatch.model.catalog import adopt_catalog_state

        adopt_catalog_state(config.catalog)
        config = replace(config, catalog=None)  # its plain copy is garbage now

    class ForwardLogs(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            send(("log", (record.levelno, record.name, record.getMessage())))

    root = logging.getLogger()
    root.handlers[:] = [ForwardLogs()]
    root.setLevel(logging.INFO)
    send(("starting", os.getpid()))
    stop = threading.Event()
    polling = threading.Event()

    def watch_parent() -> None:
        try:
            while conn.recv()[0] != "stop":
                pass
        except (EOFError, OSError):
            os._exit(0)  # parent gone (EOF): exit at once, blocked reads included
        if not polling.is_set():
            os._exit(0)  # still inside NVML's start-up (a slow driver): nothing to shut down cleanly
        stop.set()

    threading.Thread(target=watch_parent, name="gpuwatch-parent-watch", daemon=True).start()

    from gpuwatch.errors import UserError
    from gpuwatch.telemetry.poller import NvmlPoller

    clock = None
    on_stop = None
    try:
        if config.sim is not None:
            from gpuwatch.telemetry.simulated import uninstall

            clock = config.sim.install().now_s
            on_stop = uninstall
        poller = NvmlPoller(
            interval_s=config.interval_s,
            clock=clock,
            sim=config.sim,
            description=config.description,
            xid_events=config.xid_events,
            on_stop=on_stop,
            history_capacity=0,  # the parent keeps the history; the child only forwards
            stale_after=config.stale_after,
        )
        first = [True]

        def forward(snap: Any) -> None:
            send(("snapshot", snap))
            if first[0]:  # start-up's garbage is freed by now: ~2 MiB of heap back to the kernel
                first[0] = False
                release_freed_heap()

        poller.add_listener(forward)
        poller.start()
        polling.set()
    except UserError as exc:  # NvmlUnavailable included: one line for the parent to show
        send(("error", str(exc)))
        conn.close()
        return
    stop.wait()
    poller.stop()
    conn.close()


if __name__ == "__main__":  # pragma: no cover - started by the supervisor
    main(int(sys.argv[1]), int(sys.argv[2]))
