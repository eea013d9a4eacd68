"""Record and replay: an append-only file of Snapshots, and a SnapshotSource that plays one back.

File format, version 1::

    header   8 bytes magic b"\\x89GPUWREC" + uint32 big-endian format version
    record*  uint32 big-endian payload length + uint32 big-endian CRC-32 of the payload + payload

The payload is zlib-compressed JSON of one Snapshot. Fields equal to their default (mostly ``None``)
are left out, and unknown keys are ignored on reading, so fields added to ``sample.py`` later do not
need a new format version: old files read with defaults for the new fields, new files read in an
old gpuwatch without them. Each record stands alone, so a torn or corrupt record costs only what
follows it; everything before it still replays. The magic's high first byte and CR/LF-free tail
catch files mangled by text-mode transfers, as in PNG.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import struct
import threading
import time
import types
import typing
import zlib
from collections.abc import Iterator, Mapping
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO

from gpuwatch.errors import UserError
from gpuwatch.telemetry.card_identity import upgrade_snapshot
from gpuwatch.telemetry.history import History
from gpuwatch.telemetry.sample import Snapshot, Unavailable
from gpuwatch.telemetry.source import SnapshotFeed

try:  # advisory lock against two recorders on one file; POSIX only
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

MAGIC = b"\x89GPUWREC"
FORMAT_VERSION = 1
_HEADER = struct.Struct(">8sI")
_FRAME = struct.Struct(">II")
HEADER_SIZE = _HEADER.size
#: a snapshot of 64 GPUs with processes compresses to well under this; a larger length is corruption
MAX_RECORD_BYTES = 16 * 1024 * 1024


class RecordingError(UserError):
    """A recording that cannot be read or appended to, with the file and byte position."""


# --- encoding -----------------------------------------------------------------------------------


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if f.default is not dataclasses.MISSING and _same(item, f.default):
                continue
            if f.default_factory is not dataclasses.MISSING and _same(item, f.default_factory()):
                continue
            out[f.name] = _encode(item)
        return out
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    return value


def _same(item: Any, default: Any) -> bool:
    # type check first: 0 == False == 0.0, and a 0.0 reading must not be dropped for a False default
    return type(item) is type(default) and item == default


def encode_snapshot(snap: Snapshot) -> bytes:
    """The record payload for one snapshot (compressed JSON)."""
    text = json.dumps(_encode(snap), separators=(",", ":"), allow_nan=True)
    return zlib.compress(text.encode(), 6)


class _DecodeError(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class _Hints:
    hints: dict[str, Any]
    field_names: frozenset[str]


_hint_cache: dict[type, _Hints] = {}


def _hints_for(cls: type) -> _Hints:
    cached = _hint_cache.get(cls)
    if cached is None:
        cached = _Hints(typing.get_type_hints(cls), frozenset(f.name for f in dataclasses.fields(cls)))
        _hint_cache[cls] = cached
    return cached


def _decode(tp: Any, value: Any, where: str) -> Any:
    """Rebuild a value of type ``tp`` from JSON, following sample.py's annotations."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _decode(inner[0], value, where)
        return value  # a plain union of primitives: JSON already holds the right value
    if origin is tuple:
        if not isinstance(value, list):
            raise _DecodeError(f"{where}: expected a list, got {type(value).__name__}")
        item_tp = typing.get_args(tp)[0]
        return tuple(_decode(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict) or tp in (Mapping, dict):
        if not isinstance(value, dict):
            raise _DecodeError(f"{where}: expected an object, got {type(value).__name__}")
        args = typing.get_args(tp)
        value_tp = args[1] if len(args) == 2 else Any
        return {k: _decode(value_tp, v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _DecodeError(f"{where}: expected an object, got {type(value).__name__}")
        h = _hints_for(tp)
        kwargs = {k: _decode(h.hints[k], v, f"{where}.{k}") for k, v in value.items() if k in h.field_names}
        try:
            return tp(**kwargs)
        except TypeError as exc:  # a required field missing
            raise _DecodeError(f"{where}: {exc}") from None
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(value)
        except ValueError:
            if tp is Unavailable:  # a reason added by a newer gpuwatch: still absent, for some reason
                return Unavailable.ERROR
            raise _DecodeError(f"{where}: unknown {tp.__name__} {value!r}") from None
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        raise _DecodeError(f"{where}: expected a number, got {value!r}")
    if tp in (int, str, bool) and type(value) is not tp:
        raise _DecodeError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def decode_snapshot(payload: bytes) -> Snapshot:
    """Inverse of :func:`encode_snapshot`; raises ValueError saying what is wrong."""
    try:
        obj = json.loads(zlib.decompress(payload))
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"undecodable payload ({exc})") from None
    try:
        snap = _decode(Snapshot, obj, "snapshot")
    except _DecodeError as exc:
        raise ValueError(str(exc)) from None
    assert isinstance(snap, Snapshot)
    return upgrade_snapshot(snap)  # older recordings: catalog identity and read times


# --- framing ------------------------------------------------------------------------------------


class _BadFrame(Exception):
    def __init__(self, position: int, what: str, *, torn_tail: bool = False) -> None:
        super().__init__(what)
        self.position = position
        self.what = what
        #: the file simply ends inside this record (an interrupted write), rather than holding garbage
        self.torn_tail = torn_tail


def _check_header(fh: BinaryIO, path: Path) -> None:
    head = fh.read(HEADER_SIZE)
    if len(head) < HEADER_SIZE or not head.startswith(MAGIC):
        raise RecordingError(f"{path}: not a gpuwatch recording (no '{MAGIC[1:].decode()}' header)")
    _, version = _HEADER.unpack(head)
    if version != FORMAT_VERSION:
        newer = "a newer" if version > FORMAT_VERSION else "an older"
        raise RecordingError(
            f"{path}: recording format version {version}, this gpuwatch reads version {FORMAT_VERSION} "
            f"(written by {newer} gpuwatch; use that version)"
        )


def _frames(fh: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(byte position, payload) per record after the header; raises _BadFrame at the first bad one."""
    position = fh.tell()
    while True:
        head = fh.read(_FRAME.size)
        if not head:
            return
        if len(head) < _FRAME.size:
            raise _BadFrame(
                position, f"file ends inside a record header ({len(head)} of 8 bytes)", torn_tail=True
            )
        length, crc = _FRAME.unpack(head)
        if length > MAX_RECORD_BYTES:
            raise _BadFrame(position, f"record length {length} bytes is implausible")
        payload = fh.read(length)
        if len(payload) < length:
            raise _BadFrame(
                position, f"file ends inside a record ({len(payload)} of {length} bytes)", torn_tail=True
            )
        if zlib.crc32(payload) != crc:
            raise _BadFrame(position, "checksum mismatch")
        yield position, payload
        position += _FRAME.size + length


def _corrupt(path: Path, position: int, what: str, good: int) -> RecordingError:
    before = f"the {good} snapshots before it replay" if good != 1 else "the snapshot before it replays"
    if good == 0:
        before = "no snapshot precedes it"
    return RecordingError(f"{path}: corrupt record at byte {position}: {what}; {before}")


def _open_for_reading(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except OSError as exc:
        raise RecordingError(f"{path}: cannot read recording: {exc.strerror or exc}") from None


def read_recording(path: str | Path) -> Iterator[Snapshot]:
    """Every snapshot in the file, in order.

    A bad record raises RecordingError naming its byte position only after every good snapshot
    before it has been yielded, so a consumer keeps what it already has.
    """
    path = Path(path)
    with _open_for_reading(path) as fh:
        _check_header(fh, path)
        good = 0
        try:
            for position, payload in _frames(fh):
                try:
                    snap = decode_snapshot(payload)
                except ValueError as exc:
                    raise _corrupt(path, position, str(exc), good) from None
                good += 1
                yield snap
        except _BadFrame as bad:
            raise _corrupt(path, bad.position, bad.what, good) from None


# --- writing ------------------------------------------------------------------------------------


class RecordWriter:
    """Appends snapshots to a recording, one flushed record each, so a killed recorder loses nothing
    already written.

    An existing file is continued after its header is checked. A record torn off by an interrupted
    recorder at the very end is cut away first (``dropped_tail_bytes`` says how much), because new
    records behind it would be unreachable; a corrupt record elsewhere refuses the append instead.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.dropped_tail_bytes = 0
        self.written = 0
        self._lock = threading.Lock()
        try:
            fh = self.path.open("r+b") if self.path.exists() else self.path.open("w+b")
        except OSError as exc:
            raise RecordingError(f"{self.path}: cannot open for recording: {exc.strerror or exc}") from None
        try:
            self._lock_file(fh)
            fh.seek(0, 2)
            if fh.tell() == 0:
                fh.write(_HEADER.pack(MAGIC, FORMAT_VERSION))
                fh.flush()
            else:
                self._seek_to_append(fh)
        except BaseException:
            fh.close()
            raise
        self._fh: BinaryIO | None = fh

    def _lock_file(self, fh: BinaryIO) -> None:
        if fcntl is None:  # pragma: no cover - Windows
            return
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RecordingError(f"{self.path}: another gpuwatch is recording to this file") from None

    def _seek_to_append(self, fh: BinaryIO) -> None:
        fh.seek(0)
        try:
            _check_header(fh, self.path)
        except RecordingError as exc:
            raise RecordingError(f"cannot append: {exc}; record to a new file") from None
        end = fh.tell()
        good = 0
        try:
            for position, payload in _frames(fh):
                end = position + _FRAME.size + len(payload)
                good += 1
        except _BadFrame as bad:
            if not bad.torn_tail:
                raise RecordingError(
                    f"cannot append: {_corrupt(self.path, bad.position, bad.what, good)}; "
                    "new snapshots behind it would not replay, so record to a new file"
                ) from None
            fh.seek(0, 2)
            self.dropped_tail_bytes = fh.tell() - end
            fh.truncate(end)
        fh.seek(end)

    def write(self, snap: Snapshot) -> None:
        payload = encode_snapshot(snap)
        record = _FRAME.pack(len(payload), zlib.crc32(payload)) + payload
        with self._lock:
            if self._fh is None:
                raise RecordingError(f"{self.path}: recording already closed")
            try:
                self._fh.write(record)
                self._fh.flush()
            except OSError as exc:
                raise RecordingError(f"{self.path}: cannot write: {exc.strerror or exc}") from None
            self.written += 1

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- replay -------------------------------------------------------------------------------------


class ReplaySource(SnapshotFeed):
    """A SnapshotSource that plays a recording back at its recorded pace × ``speed``.

    ``speed`` 0 or infinity plays as fast as possible. Pauses longer than ``max_gap_s`` of replay
    time (a recording continued hours later) are shortened to it. Snapshots come out with
    ``source="replay"`` and their recorded timestamps, shifted forward where the recording's time
    runs backwards (each loop pass; runs appended to one file), with a history gap at the seam.
    A bad record does not raise into the face: playback stops at the last good snapshot and
    ``error`` says what happened.
    """

    def __init__(
        self,
        path: str | Path,
        speed: float = 1.0,
        loop: bool = False,
        *,
        max_gap_s: float = 5.0,
        history: History | None = None,
    ) -> None:
        if math.isnan(speed) or speed < 0:
            raise RecordingError(
                f"replay speed must be a positive factor (0 = as fast as possible), got {speed}"
            )
        self.path = Path(path)
        self.speed = speed
        self.loop = loop
        self.max_gap_s = max_gap_s
        #: why playback stopped early, or None
        self.error: str | None = None
        #: True once the last snapshot has been played (never, when looping)
        self.finished = False
        self.played = 0
        super().__init__(history)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._offset_s = 0.0  # added to recorded timestamps so replayed time never runs backwards
        self._last_ts: float | None = None
        first = self._peek_first()  # a missing or foreign file fails here, as a one-line error
        self.simulated = first is not None and first.source == "sim"
        pace = "as fast as possible" if self._fast else f"{speed:g}x"
        self.description = f"replay of {self.path} ({pace}{', looping' if loop else ''})"

    @property
    def _fast(self) -> bool:
        return self.speed == 0 or math.isinf(self.speed)

    def _peek_first(self) -> Snapshot | None:
        with _open_for_reading(self.path) as fh:
            _check_header(fh, self.path)
        with contextlib.suppress(RecordingError):
            for snap in read_recording(self.path):
                return snap
        return None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="gpuwatch-replay", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def join(self, timeout: float | None = None) -> None:
        """Wait for playback to end (the file's end, an error, or stop())."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                played_before = self.played
                self._play_once()
                if not self.loop or self.played == played_before:
                    break
            self.finished = not self._stop.is_set() and self.error is None
        except RecordingError as exc:
            self.error = str(exc)
        except Exception as exc:  # never take the face down with the replay
            log.exception("replay of %s failed", self.path)
            self.error = f"{self.path}: replay failed: {exc}"
        if self.error is None and self.played == 0 and not self._stop.is_set():
            self.error = f"{self.path}: the recording holds no snapshots"

    def _play_once(self) -> None:
        """Play the file through once, paced against the wall clock from its first snapshot."""
        wall_start = time.monotonic()
        replay_clock_s = 0.0  # seconds into this pass, in replay time
        for recorded in read_recording(self.path):
            ts = recorded.timestamp_s + self._offset_s
            if self._last_ts is not None and ts <= self._last_ts:
                # time ran backwards: the next loop pass, or a simulated run appended to another
                # (the simulator's clock starts at a fixed epoch). Keep time moving forward and
                # break the history so no rate spans the seam.
                self._offset_s += self._last_ts + 1.0 - ts
                ts = self._last_ts + 1.0
                self._mark_gap(ts - 0.5)
            elif self._last_ts is not None and not self._fast and self.played:
                replay_clock_s += min((ts - self._last_ts) / self.speed, self.max_gap_s)
                delay = wall_start + replay_clock_s - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
            if self._stop.is_set():
                return
            self._last_ts = ts
            self._publish(dataclasses.replace(recorded, source="replay", timestamp_s=ts))

    def _publish(self, snap: Snapshot) -> None:
        self.played += 1
        super()._publish(snap)
