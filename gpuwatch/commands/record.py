"""`gpuwatch record FILE`: write snapshots to a recording that `gpuwatch --replay FILE` plays back.

The file is verified before the first write: a damaged recording is refused (one line naming the
byte) rather than appended to, and ``--repair`` rewrites it with every intact record. The config
file, ``--engine`` and ``--workload`` are honoured: the engines' readings and the declared workload
are kept with each snapshot. Ctrl-C and SIGTERM end the recording between two writes, with exit
status 130 and 143; a full disk ends it with one line, and what was written before still replays.
"""

from __future__ import annotations

import argparse
import math
import queue
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

from gpuwatch.commands import SUMMARIES
from gpuwatch.commands.common import add_source_options, live_config, source_spec
from gpuwatch.errors import UserError
from gpuwatch.options import add_options
from gpuwatch.telemetry.recording import RecordWriter, ReplayStatus, repair_recording
from gpuwatch.telemetry.sample import Snapshot


def register(sub: Any) -> None:
    p = sub.add_parser(
        "record",
        help=SUMMARIES["record"],
        description="Record snapshots to FILE (appending if it is a recording already) until "
        "--duration has passed or Ctrl-C. Replay with `gpuwatch --replay FILE`.",
    )
    add_source_options(p, subcommand=True)
    p.add_argument("file", metavar="FILE", help="recording to write (continued if it exists)")
    add_options(p, ["duration"])
    p.add_argument(
        "--repair",
        action="store_true",
        help="rewrite a damaged FILE with every intact record (the original is kept as FILE.damaged), "
        "then exit",
    )
    p.set_defaults(run=run)


def _positive(value: float | None, option: str) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise UserError(f"{option} must be a positive number of seconds, got {value:g}")


class _Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _StopFlag:
    """Turns Ctrl-C / SIGTERM into a flag the loop checks, so no write is cut in half; before the
    loop (while the source starts) a signal interrupts at once instead."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.armed = False
        self._previous: dict[int, Any] = {}

    @property
    def raised(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        if not self.armed:
            raise _Interrupted(signum)

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _repair(path: str) -> int:
    result = repair_recording(path)
    if result.backup is None:
        print(f"{path}: no damage found; {result.kept} snapshots, nothing changed")
        return 0
    first = result.damages[0]
    print(
        f"{path}: repaired: kept {result.kept} intact snapshots, cut {len(result.damages)} damaged "
        f"stretch{'es' if len(result.damages) > 1 else ''} (first at byte {first.position}); "
        f"the original is kept as {result.backup}"
    )
    return 0


#: --duration counts from the first snapshot (NVML's child takes a moment to start), waiting at most
#: this long for it, so that a driver that never answers still ends the run near its duration
START_GRACE_S = 5.0


def _over(started: float, duration_s: float | None, first_at: float | None) -> bool:
    """Whether --duration has passed, counted from the first snapshot (or the grace's end)."""
    if duration_s is None:
        return False
    now = time.monotonic()
    waited = (first_at if first_at is not None else now) - started
    return now >= started + duration_s + min(START_GRACE_S, waited)


#: a source stuck in a slow driver call gets this long to stop before `record` leaves it behind
STOP_TIMEOUT_S = 1.5


def _stop_within(source: Any, engines: Any, timeout_s: float) -> None:
    """Stop the source and the engines, waiting at most ``timeout_s``: a driver taking seconds per
    call must not stretch ``--duration 20`` to minutes. Their threads are daemons: exit ends them."""
    stopper = threading.Thread(target=source.stop, name="gpuwatch-record-stop", daemon=True)
    stopper.start()
    if engines is not None:
        engines.stop()
    stopper.join(timeout_s)
    if stopper.is_alive():
        print(f"gpuwatch: the source did not stop within {timeout_s:g} s; leaving it", file=sys.stderr)


def _start_within(source: Any, stop: _StopFlag, deadline: float | None) -> None:
    """Start the source on a thread, so that a driver slow to initialise cannot hold the
    recording past its deadline or a Ctrl-C; the source's own error is raised here."""
    failure: list[BaseException] = []

    def start() -> None:
        try:
            source.start()
        except BaseException as exc:
            failure.append(exc)

    starter = threading.Thread(target=start, name="gpuwatch-record-start", daemon=True)
    starter.start()
    while starter.is_alive() and not stop.raised and (deadline is None or time.monotonic() < deadline):
        starter.join(0.1)
    if failure:
        raise failure[0]


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    if getattr(args, "repair", False):
        return _repair(args.file)
    with _StopFlag() as stop:
        try:
            return _record(args, started, stop)
        except _Interrupted as exc:
            print(f"gpuwatch: interrupted before recording to {args.file} started", file=sys.stderr)
            return 128 + exc.signum


def _record(args: argparse.Namespace, started: float, stop: _StopFlag) -> int:
    from gpuwatch.telemetry.engines import EngineWatcher

    duration_s: float | None = args.duration
    _positive(duration_s, "--duration")
    config = live_config(args)  # --config, --engine, --workload, --interval (one line when bad)
    workload = config.workload.spec if config.workload else None
    spec = source_spec(args)  # ranges were checked when the options were parsed
    # NVML in a child: a driver crash or hang costs a message, never the recording
    source = spec.open(config.interval_s, isolate=True)
    engines = EngineWatcher(config.engine_urls, interval_s=config.interval_s) if config.engine_urls else None
    replay_over = False

    def on_status(status: ReplayStatus) -> None:  # the replay thread: a line per damage, and the end
        nonlocal replay_over
        print(f"gpuwatch: {status.message}", file=sys.stderr, flush=True)
        replay_over = replay_over or status.kind in ("ended", "error")

    pending: queue.Queue[Snapshot] = queue.Queue()
    source.add_listener(pending.put)  # the poll thread only queues; this thread does the I/O
    try:
        writer = RecordWriter(args.file)  # verified before anything starts
    except BaseException:
        source.stop()
        raise
    with writer:
        if writer.dropped_tail_bytes:
            print(
                f"gpuwatch: dropped {writer.dropped_tail_bytes} bytes of a record cut off at the end "
                f"of {args.file} by an interrupted recording (nothing intact followed it)",
                file=sys.stderr,
            )
        add_status_listener = getattr(source, "add_status_listener", None)
        if add_status_listener is not None:
            add_status_listener(on_status)
        try:
            if engines is not None:
                engines.start()
            stop.armed = True
            _start_within(source, stop, None if duration_s is None else started + duration_s + START_GRACE_S)
            first_at: float | None = None
            until = "" if duration_s is None else f" for {duration_s:g} s"
            print(f"recording {source.description} to {args.file}{until}; Ctrl-C to stop", file=sys.stderr)
            while not stop.raised and not _over(started, duration_s, first_at):
                if replay_over and pending.empty():
                    break
                try:
                    snap = pending.get(timeout=0.1)
                except queue.Empty:
                    state = source.state()
                    if state.phase == "failed":  # NVML cannot start: one line, what is recorded stays
                        raise UserError(state.message or "NVML unavailable") from None
                    continue
                first_at = first_at or time.monotonic()
                writer.write(snap, engines.latest() if engines else (), workload)
        finally:
            stop.armed = True  # from here on a signal only asks to stop; the cleanup runs through
            _stop_within(source, engines, STOP_TIMEOUT_S)
        while not pending.empty():  # what the poller delivered before it stopped
            writer.write(pending.get_nowait(), engines.latest() if engines else (), workload)
        written = writer.written
    print(f"recorded {written} snapshot{'s' if written != 1 else ''} to {args.file}")
    return 128 + stop.signum if stop.signum is not None else 0
