"""`gpuwatch record FILE`: write snapshots to a recording that `gpuwatch --replay FILE` plays back."""

from __future__ import annotations

import argparse
import math
import queue
import signal
import sys
import time
from types import FrameType
from typing import Any

from gpuwatch.commands.common import add_source_options, source_spec
from gpuwatch.errors import UserError
from gpuwatch.options import add_options
from gpuwatch.telemetry.recording import RecordWriter
from gpuwatch.telemetry.sample import Snapshot


def register(sub: Any) -> None:
    p = sub.add_parser(
        "record",
        help="record GPU snapshots to a file for --replay",
        description="Record snapshots to FILE (appending if it is a recording already) until "
        "--duration has passed or Ctrl-C. Replay with `gpuwatch --replay FILE`.",
    )
    add_source_options(p, subcommand=True)
    p.add_argument("file", metavar="FILE", help="recording to write (continued if it exists)")
    add_options(p, ["duration"])
    p.set_defaults(run=run)


def _positive(value: float | None, option: str) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise UserError(f"{option} must be a positive number of seconds, got {value:g}")


class _StopFlag:
    """Turns Ctrl-C / SIGTERM into a flag the loop checks, so no write is cut in half."""

    def __init__(self) -> None:
        self.raised = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.raised = True

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def run(args: argparse.Namespace) -> int:
    from gpuwatch.telemetry.sources import open_source  # the poller stack loads only when used

    duration_s: float | None = args.duration
    interval_s: float | None = getattr(args, "interval", None)
    _positive(duration_s, "--duration")
    _positive(interval_s, "--interval")
    spec = source_spec(args)  # ranges were checked when the options were parsed
    source = open_source(
        sim=spec.sim,
        scenario=spec.scenario,
        time_scale=spec.time_scale,
        seed=spec.seed,
        replay=spec.replay,
        replay_speed=spec.replay_speed,
        interval_s=interval_s or 1.0,
        faults=spec.faults,
        isolate=True,  # NVML in a child: a driver crash or hang costs a message, never the recording
    )
    pending: queue.Queue[Snapshot] = queue.Queue()
    source.add_listener(pending.put)  # the poll thread only queues; this thread does the I/O
    source.start()
    stopped = False
    try:
        with RecordWriter(args.file) as writer, _StopFlag() as stop:
            if writer.dropped_tail_bytes:
                print(
                    f"gpuwatch: dropped {writer.dropped_tail_bytes} bytes of a record cut off at the end "
                    f"of {args.file} by an interrupted recording",
                    file=sys.stderr,
                )
            until = "" if duration_s is None else f" for {duration_s:g} s"
            print(f"recording {source.description} to {args.file}{until}; Ctrl-C to stop", file=sys.stderr)
            deadline = None if duration_s is None else time.monotonic() + duration_s
            while not stop.raised and (deadline is None or time.monotonic() < deadline):
                try:
                    writer.write(pending.get(timeout=0.1))
                except queue.Empty:
                    state = source.state()
                    if state.phase == "failed":  # NVML cannot start: one line, what is recorded stays
                        raise UserError(state.message or "NVML unavailable") from None
                    continue
            source.stop()
            stopped = True
            while not pending.empty():  # what the poller delivered before it stopped
                writer.write(pending.get_nowait())
            written = writer.written
    finally:
        if not stopped:
            source.stop()
    print(f"recorded {written} snapshot{'s' if written != 1 else ''} to {args.file}")
    return 0
