"""Record and replay: an append-only file of Snapshots, and a SnapshotSource that plays one back.

File format, version 1::

    header   8 bytes magic b"\\x89GPUWREC" + uint32 big-endian format version
    record*  uint32 big-endian payload length + uint32 big-endian CRC-32 of the payload + payload

The payload is zlib-compressed JSON of one Snapshot. Fields equal to their default (mostly ``None``)
are left out, and unknown keys are ignored on reading, so fields added to ``sample.py`` later do not
need a new format version: old files read with defaults for the new fields, new files read in an
old gpuwatch without them. Each record stands alone, so damage costs only the damaged bytes: a
reader that is told to (:func:`read_recording` with ``on_damage``, the replay, ``--repair``) finds
the next intact record by its frame (a plausible length, a zlib header, a matching CRC) and carries
on. A record whose length field alone is damaged is recovered whole (its payload still matches its
CRC up to the next record). The magic's high first byte and CR/LF-free tail catch files mangled by
text-mode transfers, as in PNG.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import mmap
import os
import shutil
import struct
import threading
import time
import types
import typing
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO

from gpuwatch.errors import UserError
from gpuwatch.telemetry.card_identity import upgrade_snapshot
from gpuwatch.telemetry.engines import EngineReading, EngineState, EngineWatcher
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
#: ... and its JSON (~1 kB per GPU) inflates to far less than this
MAX_JSON_BYTES = 64 * 1024 * 1024


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


def encode_snapshot(
    snap: Snapshot, engines: Sequence[EngineReading] = (), workload: str | None = None
) -> bytes:
    """The record payload for one snapshot (compressed JSON), with the serving engines' readings and
    the declared workload at that poll under keys Snapshot lacks (so every reader ignores them but
    :func:`decode_record`)."""
    obj = _encode(snap)
    if engines:
        obj["engines"] = _encode(tuple(engines))
    if workload:
        obj["workload"] = workload
    text = json.dumps(obj, separators=(",", ":"), allow_nan=True)
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


@dataclasses.dataclass(frozen=True)
class Record:
    """One record: the snapshot, and what ``gpuwatch record`` kept beside it."""

    snapshot: Snapshot
    engines: tuple[EngineReading, ...] = ()
    workload: str | None = None


def decode_record(payload: bytes) -> Record:
    """Inverse of :func:`encode_snapshot`; raises ValueError saying what is wrong."""
    try:
        inflater = zlib.decompressobj()
        text = inflater.decompress(payload, MAX_JSON_BYTES)
        if inflater.unconsumed_tail:  # a zip bomb costs its maker, not us
            raise ValueError(f"payload inflates beyond {MAX_JSON_BYTES // 2**20} MiB")
        obj = json.loads(text)
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"undecodable payload ({_brief(exc)})") from None
    try:
        snap = _decode(Snapshot, obj, "snapshot")
        engines = _decode(tuple[EngineReading, ...], obj.get("engines", []), "engines")
    except (_DecodeError, RecursionError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(_brief(exc)) from None
    workload = obj.get("workload")
    assert isinstance(snap, Snapshot)
    # older recordings: catalog identity and read times
    return Record(upgrade_snapshot(snap), engines, workload if isinstance(workload, str) else None)


def _brief(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:119] + "…"


def decode_snapshot(payload: bytes) -> Snapshot:
    """The snapshot of one record payload; raises ValueError saying what is wrong."""
    return decode_record(payload).snapshot


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


@dataclasses.dataclass(frozen=True)
class Damage:
    """A damaged stretch of a recording: what a replay reports and ``--repair`` cuts out."""

    position: int  # byte offset where the damage starts
    resumes_at: int | None  # byte offset of the next intact record; None: nothing intact follows
    what: str
    #: the file ends inside this record and nothing intact follows: an interrupted write
    torn_tail: bool = False
    #: only the length field was damaged: the record itself was read back whole
    recovered: bool = False

    def describe(self, path: Path) -> str:
        where = f"{path}: damaged at byte {self.position}: {self.what}"
        if self.recovered:
            return f"{where} (the record itself was recovered)"
        if self.resumes_at is None:
            return f"{where}; nothing intact after it"
        return f"{where}; intact records resume at byte {self.resumes_at}"


def _zlib_header(b0: int, b1: int) -> bool:
    return b0 & 0x0F == 8 and b0 >> 4 <= 7 and ((b0 << 8) | b1) % 31 == 0


def _frame_at(buf: mmap.mmap | bytes, pos: int) -> int | None:
    """The payload length of an intact record starting at ``pos``, or None."""
    if pos + _FRAME.size + 2 > len(buf):
        return None
    length, crc = _FRAME.unpack_from(buf, pos)
    start = pos + _FRAME.size
    if length < 2 or length > MAX_RECORD_BYTES or start + length > len(buf):
        return None
    if not _zlib_header(buf[start], buf[start + 1]):
        return None
    return length if zlib.crc32(buf[start : start + length]) == crc else None


def _resync(buf: mmap.mmap | bytes, pos: int) -> int | None:
    """The first position at or after ``pos`` where an intact record starts."""
    while True:
        # every payload starts with a zlib header whose first byte is 0x?8: look only there
        hit = buf.find(b"\x78", pos + _FRAME.size)
        while hit != -1 and not _zlib_header(buf[hit], buf[hit + 1] if hit + 1 < len(buf) else 0):
            hit = buf.find(b"\x78", hit + 1)
        if hit == -1:
            return None
        candidate = hit - _FRAME.size
        if candidate >= pos and _frame_at(buf, candidate) is not None:
            return candidate
        pos = candidate + 1


def _walk(buf: mmap.mmap | bytes, start: int) -> Iterator[tuple[int, bytes] | Damage]:
    """Every intact record's (position, payload) after the header, and a Damage for each damaged
    stretch between them, in file order."""
    pos, size = start, len(buf)
    while pos < size:
        length = _frame_at(buf, pos)
        if length is not None:
            yield pos, bytes(buf[pos + _FRAME.size : pos + _FRAME.size + length])
            pos += _FRAME.size + length
            continue
        what, torn = _frame_problem(buf, pos)
        resumes = _resync(buf, pos + 1)
        end = size if resumes is None else resumes
        if pos + _FRAME.size <= end:  # maybe only the length field is wrong: try the real length
            payload = bytes(buf[pos + _FRAME.size : end])
            if len(payload) >= 2 and zlib.crc32(payload) == _FRAME.unpack_from(buf, pos)[1]:
                yield Damage(pos, resumes, f"{what}; the length field is damaged", recovered=True)
                yield pos, payload
                pos = end
                continue
        yield Damage(pos, resumes, what, torn_tail=torn and resumes is None)
        if resumes is None:
            return
        pos = resumes


def _frame_problem(buf: mmap.mmap | bytes, pos: int) -> tuple[str, bool]:
    """(what is wrong with the record at ``pos``, whether the file simply ends inside it)."""
    size = len(buf)
    if pos + _FRAME.size > size:
        return f"file ends inside a record header ({size - pos} of 8 bytes)", True
    length, _ = _FRAME.unpack_from(buf, pos)
    if length > MAX_RECORD_BYTES:
        return f"record length {length} bytes is implausible", False
    if pos + _FRAME.size + length > size:
        return f"file ends inside a record ({size - pos - _FRAME.size} of {length} bytes)", True
    return "checksum mismatch", False


@dataclasses.dataclass(frozen=True)
class Scan:
    """What a whole-file check found: the intact records and the damage between them."""

    records: tuple[tuple[int, int], ...]  # (position, payload length) of each intact record
    damages: tuple[Damage, ...]
    size: int

    @property
    def end_of_intact(self) -> int:
        """Where the last intact record ends (the header's end when there is none)."""
        if not self.records:
            return HEADER_SIZE
        pos, length = self.records[-1]
        return pos + _FRAME.size + length


def _mapped(fh: BinaryIO) -> mmap.mmap | bytes:
    fh.seek(0, 2)
    if fh.tell() == 0:
        return b""
    return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)


def scan_recording(path: str | Path) -> Scan:
    """Check a whole recording (header, every frame, every payload decodes); RecordingError only
    for a file that is not a recording at all."""
    path = Path(path)
    with _open_for_reading(path) as fh:
        _check_header(fh, path)
        return _scan(fh, path)


def _scan(fh: BinaryIO, path: Path) -> Scan:
    buf = _mapped(fh)
    records: list[tuple[int, int]] = []
    damages: list[Damage] = []
    try:
        for item in _walk(buf, HEADER_SIZE):
            if isinstance(item, Damage):
                damages.append(item)
                continue
            position, payload = item
            try:
                decode_snapshot(payload)
            except ValueError as exc:
                damages.append(Damage(position, position + _FRAME.size + len(payload), str(exc)))
                continue
            records.append((position, len(payload)))
        return Scan(tuple(records), tuple(damages), len(buf))
    finally:
        if isinstance(buf, mmap.mmap):
            buf.close()


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


def read_recording(path: str | Path, on_damage: Callable[[Damage], None] | None = None) -> Iterator[Snapshot]:
    """Every snapshot in the file, in order (see :func:`read_records`)."""
    for record in read_records(path, on_damage):
        yield record.snapshot


def read_records(path: str | Path, on_damage: Callable[[Damage], None] | None = None) -> Iterator[Record]:
    """Every record in the file, in order.

    Without ``on_damage``, a bad record raises RecordingError naming its byte position only after
    every good snapshot before it has been yielded, so a consumer keeps what it already has. With
    it, each damaged stretch is reported to ``on_damage`` and skipped, and every intact record
    after it is read too.
    """
    path = Path(path)
    if on_damage is not None:
        yield from _read_past_damage(path, on_damage)
        return
    with _open_for_reading(path) as fh:
        _check_header(fh, path)
        good = 0
        try:
            for position, payload in _frames(fh):
                try:
                    record = decode_record(payload)
                except ValueError as exc:
                    raise _corrupt(path, position, str(exc), good) from None
                good += 1
                yield record
        except _BadFrame as bad:
            raise _corrupt(path, bad.position, bad.what, good) from None


def _read_past_damage(path: Path, on_damage: Callable[[Damage], None]) -> Iterator[Record]:
    with _open_for_reading(path) as fh:
        _check_header(fh, path)
        buf = _mapped(fh)
        try:
            for item in _walk(buf, HEADER_SIZE):
                if isinstance(item, Damage):
                    on_damage(item)
                    continue
                position, payload = item
                try:
                    record = decode_record(payload)
                except ValueError as exc:
                    on_damage(Damage(position, position + _FRAME.size + len(payload), str(exc)))
                    continue
                yield record
        finally:
            if isinstance(buf, mmap.mmap):
                buf.close()


@dataclasses.dataclass(frozen=True)
class Repair:
    kept: int  # intact snapshots in the repaired file
    damages: tuple[Damage, ...]
    backup: Path | None  # where the damaged original was kept; None when nothing needed repair


def repair_recording(path: str | Path) -> Repair:
    """Rewrite a damaged recording with every intact record, keeping the original beside it as
    ``FILE.damaged`` (never overwritten: ``FILE.damaged.1``, ...). The new file is written next to
    the old one and renamed over it only once complete and synced, so a crash leaves one of the two."""
    path = Path(path)
    scan = scan_recording(path)
    if not scan.damages:
        return Repair(len(scan.records), (), None)
    backup = path.with_name(path.name + ".damaged")
    n = 0
    while backup.exists():
        n += 1
        backup = path.with_name(f"{path.name}.damaged.{n}")
    tmp = path.with_name(f".{path.name}.repair-{os.getpid()}")
    try:
        with _open_for_reading(path) as src, tmp.open("wb") as out:
            out.write(_HEADER.pack(MAGIC, FORMAT_VERSION))
            buf = _mapped(src)
            try:
                for position, length in scan.records:
                    payload = bytes(buf[position + _FRAME.size : position + _FRAME.size + length])
                    out.write(_FRAME.pack(length, zlib.crc32(payload)) + payload)
            finally:
                if isinstance(buf, mmap.mmap):
                    buf.close()
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(path, backup)  # the original stays reachable under its new name
        except OSError:  # a file system without hard links
            shutil.copyfile(path, backup)
        os.replace(tmp, path)
    except BaseException as exc:  # a full disk, or Ctrl-C: the original is untouched, the half copy goes
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise RecordingError(f"{path}: cannot repair: {exc.strerror or exc}") from None
        raise
    return Repair(len(scan.records), scan.damages, backup)


# --- writing ------------------------------------------------------------------------------------


class RecordWriter:
    """Appends snapshots to a recording, one flushed record each, so a killed recorder loses nothing
    already written.

    An existing file is verified whole before anything is written. A record torn off by an
    interrupted recorder at the very end, with nothing intact after it, is cut away first
    (``dropped_tail_bytes`` says how much), because new records behind it would be unreachable;
    damage anywhere else refuses the append, naming the byte and offering ``--repair``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.dropped_tail_bytes = 0
        self.written = 0
        self._lock = threading.Lock()
        try:
            # unbuffered: a failed write (full disk) leaves nothing in a buffer for close() to retry
            mode = "r+b" if self.path.exists() else "w+b"
            fh = typing.cast(BinaryIO, self.path.open(mode, buffering=0))
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
        scan = _scan(fh, self.path)
        harmful = [d for d in scan.damages if not d.torn_tail]
        if harmful:
            first = harmful[0]
            raise RecordingError(
                f"cannot append: {self.path}: corrupt record at byte {first.position}: {first.what} "
                f"({len(harmful)} damaged stretch{'es' if len(harmful) > 1 else ''}, "
                f"{len(scan.records)} intact records); `gpuwatch record --repair {self.path}` keeps every "
                "intact record, or record to a new file"
            )
        end = scan.end_of_intact
        if end < scan.size:
            self.dropped_tail_bytes = scan.size - end
            fh.truncate(end)
        fh.seek(end)

    def write(
        self, snap: Snapshot, engines: Sequence[EngineReading] = (), workload: str | None = None
    ) -> None:
        payload = encode_snapshot(snap, engines, workload)
        record = _FRAME.pack(len(payload), zlib.crc32(payload)) + payload
        with self._lock:
            if self._fh is None:
                raise RecordingError(f"{self.path}: recording already closed")
            fh = self._fh
            end = fh.tell()
            try:
                view = memoryview(record)
                while view:
                    view = view[fh.write(view) or 0 :]
            except OSError as exc:
                self._fh = None
                self._abandon(fh, end)
                raise RecordingError(
                    f"{self.path}: cannot write: {exc.strerror or exc}; the {self.written} snapshots "
                    "written before it replay"
                ) from None
            self.written += 1

    @staticmethod
    def _abandon(fh: BinaryIO, end: int) -> None:
        """After a failed write (full disk): cut the part record it left, so the file stays whole."""
        with contextlib.suppress(OSError, ValueError):
            os.ftruncate(fh.fileno(), end)
        with contextlib.suppress(OSError, ValueError):
            fh.close()

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                fh, self._fh = self._fh, None
                fh.close()  # unbuffered: nothing left to write

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- replay -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ReplayStatus:
    """Something a face should tell the user about a replay: ``kind`` is "damaged" (a damaged
    stretch, ``position`` its byte offset; playback carries on where intact records resume),
    "ended" (the file's end was played) or "error" (playback stopped: ``message`` says why)."""

    kind: str
    message: str
    position: int | None = None
    wall_time_s: float = dataclasses.field(default_factory=time.time)


class ReplaySource(SnapshotFeed):
    """A SnapshotSource that plays a recording back at its recorded pace × ``speed``.

    ``speed`` 0 or infinity plays as fast as possible. Pauses longer than ``max_gap_s`` of replay
    time (a recording continued hours later) are shortened to it. Snapshots come out with
    ``source="replay"`` and their recorded timestamps, shifted forward where the recording's time
    runs backwards (each loop pass; runs appended to one file), with a history gap at the seam.
    A bad record does not raise into the face: a damaged stretch is skipped and reported (playback
    resumes at the next intact record; where nothing intact follows, it stops at the last good
    snapshot and ``error`` says what happened). Damage, the end of the file and errors reach
    :meth:`add_status_listener`'s listeners (on the replay thread) and the log, and stay in
    ``statuses``.
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
        #: what happened so far, in order (damage, end, error); also sent to the status listeners
        self.statuses: list[ReplayStatus] = []
        self._status_listeners: list[Callable[[ReplayStatus], None]] = []
        self._reported: set[int] = set()  # damage positions already reported (once, not every loop)
        self._good_this_pass = 0
        #: the serving engines' readings and the workload `gpuwatch record` kept with the latest snapshot
        self.recorded_engines: tuple[EngineReading, ...] = ()
        self.recorded_workload: str | None = None
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

    def add_status_listener(self, fn: Callable[[ReplayStatus], None]) -> None:
        """Call ``fn`` with each ReplayStatus from now on (and with those already given)."""
        self._status_listeners.append(fn)
        for status in list(self.statuses):
            fn(status)

    def _status(self, kind: str, message: str, position: int | None = None) -> None:
        status = ReplayStatus(kind, message, position)
        self.statuses.append(status)
        log.warning("%s", message)  # the exporter's log: a replay that ended serves frozen figures
        for fn in list(self._status_listeners):
            try:
                fn(status)
            except Exception:
                log.exception("replay status listener %r failed", fn)

    def _damaged(self, damage: Damage) -> None:
        if damage.resumes_at is None:  # playback ends here: the same one line read_recording raises
            self.error = str(_corrupt(self.path, damage.position, damage.what, self._good_this_pass))
        if damage.position in self._reported:
            return
        self._reported.add(damage.position)
        message = self.error if damage.resumes_at is None and self.error else damage.describe(self.path)
        self._status("damaged", message, damage.position)

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
            self._status("error", self.error)
        except Exception as exc:  # never take the face down with the replay
            log.exception("replay of %s failed", self.path)
            self.error = f"{self.path}: replay failed: {exc}"
            self._status("error", self.error)
        if self.error is None and self.played == 0 and not self._stop.is_set():
            self.error = f"{self.path}: the recording holds no snapshots"
            self._status("error", self.error)
        elif self.finished:
            n = self.played
            self._status("ended", f"{self.path}: replay ended after {n} snapshot{'s' if n != 1 else ''}")

    def _play_once(self) -> None:
        """Play the file through once, paced against the wall clock from its first snapshot."""
        wall_start = time.monotonic()
        replay_clock_s = 0.0  # seconds into this pass, in replay time
        self._good_this_pass = 0
        for record in read_records(self.path, on_damage=self._damaged):
            recorded = record.snapshot
            self._good_this_pass += 1
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
            self.recorded_engines = record.engines
            self.recorded_workload = record.workload
            self._publish(dataclasses.replace(recorded, source="replay", timestamp_s=ts))

    def _publish(self, snap: Snapshot) -> None:
        self.played += 1
        super()._publish(snap)


class RecordedEngines(EngineWatcher):
    """The serving engines' readings a recording kept, as its replay reaches them: what a live
    session's EngineWatcher gives, so a replay of a recording made with ``--engine`` shows the
    measured tokens/s it recorded. Nothing is scraped; readings change only with the replay."""

    def __init__(self, replay: ReplaySource) -> None:
        super().__init__(())
        self._replay = replay

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def latest(self) -> tuple[EngineReading, ...]:
        return self._replay.recorded_engines

    def states(self) -> tuple[EngineState, ...]:
        return tuple(
            EngineState(
                url=r.url,
                up=r.error is None,
                engine=r.engine,
                last_success_s=r.timestamp_s if r.error is None else None,
                last_error=r.error,
                scrape_duration_s=None,
            )
            for r in self._replay.recorded_engines
        )
