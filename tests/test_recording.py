"""Record/replay: round-trip of every Snapshot field, damage tolerance, appending, ReplaySource."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import struct
import time
import typing
import zlib
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from gpuwatch.errors import UserError
from gpuwatch.telemetry import recording
from gpuwatch.telemetry.recording import (
    HEADER_SIZE,
    RecordingError,
    RecordWriter,
    ReplaySource,
    read_recording,
)
from gpuwatch.telemetry.sample import GpmSample, GpuSample, ProcessSample, Snapshot, Unavailable

_counter = itertools.count(1)


def _value_for(tp: Any, name: str) -> Any:
    """A non-default value of type ``tp``; distinct numbers so swapped fields would show."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, __import__("types").UnionType):
        return _value_for(next(a for a in typing.get_args(tp) if a is not type(None)), name)
    if origin is tuple:
        item = typing.get_args(tp)[0]
        return (_value_for(item, name), _value_for(item, name))
    if origin is not None and issubclass(origin, typing.Mapping):  # type: ignore[arg-type]
        _, value_tp = typing.get_args(tp)
        return {"power_w": _value_for(value_tp, name), "fan_speed_ratio": _value_for(value_tp, name)}
    if dataclasses.is_dataclass(tp):
        return full(tp)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return list(tp)[next(_counter) % len(tp)]
    if tp is bool:
        return True
    if tp is int:
        return next(_counter) * 7
    if tp is float:
        return next(_counter) * 1.25 + 0.1
    if tp is str:
        return f"{name}-{next(_counter)}"
    raise AssertionError(f"no test value for {name}: {tp}")


def full(cls: Any) -> Any:
    """An instance of a sample dataclass with EVERY field set away from its default."""
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: _value_for(hints[f.name], f.name) for f in dataclasses.fields(cls)})


def full_snapshot(timestamp_s: float = 1_700_000_000.0) -> Snapshot:
    snap = full(Snapshot)
    gpus = (full(GpuSample), dataclasses.replace(full(GpuSample), processes=(), gpm=None, lost=True))
    return dataclasses.replace(snap, timestamp_s=timestamp_s, gpus=gpus, source="sim")


def simple_snapshot(timestamp_s: float, power_w: float = 300.0) -> Snapshot:
    gpu = GpuSample(
        index=0,
        uuid="GPU-1",
        name="NVIDIA GeForce RTX 4090",
        pci_bus_id="00000000:01:00.0",
        power_w=power_w,
        energy_j=timestamp_s * 300.0,
        gpm=None,
        unavailable={"gpm": Unavailable.NOT_SUPPORTED},
        catalog_id="rtx4090",  # as live telemetry sets them: nothing for the reader to fill in
        read_timestamp_s=timestamp_s,
    )
    return Snapshot(timestamp_s=timestamp_s, source="nvml", gpus=(gpu,), driver_version="580.65.06")


def write(path: Path, snaps: list[Snapshot]) -> None:
    with RecordWriter(path) as writer:
        for s in snaps:
            writer.write(s)


def record_starts(path: Path) -> list[int]:
    """Byte position of every record (read straight from the framing)."""
    data = path.read_bytes()
    starts, pos = [], HEADER_SIZE
    while pos < len(data):
        starts.append(pos)
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        pos += 8 + length
    return starts


def collect(it: Iterator[Snapshot]) -> tuple[list[Snapshot], RecordingError | None]:
    got: list[Snapshot] = []
    try:
        for s in it:
            got.append(s)
    except RecordingError as exc:
        return got, exc
    return got, None


# --- the file -----------------------------------------------------------------------------------


def test_fixture_sets_every_field_so_new_fields_are_covered() -> None:
    snap = full_snapshot()
    for obj in (snap, snap.gpus[0], snap.gpus[0].gpm, snap.gpus[0].processes[0]):  # type: ignore[index]
        for f in dataclasses.fields(obj):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            assert getattr(obj, f.name) != default, f"{type(obj).__name__}.{f.name} left at default"


def test_every_field_round_trips_to_an_equal_snapshot(tmp_path: Path) -> None:
    snaps = [full_snapshot(1_700_000_000.0 + i) for i in range(3)]
    path = tmp_path / "run.gwrec"
    write(path, snaps)
    back = list(read_recording(path))
    assert back == snaps
    gpu = back[0].gpus[0]
    assert isinstance(gpu.gpm, GpmSample)
    assert all(isinstance(p, ProcessSample) for p in gpu.processes or ())
    assert all(isinstance(v, Unavailable) for v in gpu.unavailable.values())
    assert back[0].gpus[1].processes == ()  # "no processes" stays distinct from "unknown" (None)


def test_absent_readings_stay_absent_and_zero_stays_zero(tmp_path: Path) -> None:
    gpu = GpuSample(
        index=0,
        uuid="u",
        name="n",
        pci_bus_id="p",
        power_w=0.0,
        fan_speed_ratio=None,
        xid_errors_total=0,
        read_timestamp_s=1.0,
    )
    snap = Snapshot(timestamp_s=1.0, source="nvml", gpus=(gpu,))
    write(tmp_path / "z.gwrec", [snap])
    (back,) = read_recording(tmp_path / "z.gwrec")
    assert back.gpus[0].power_w == 0.0 and back.gpus[0].fan_speed_ratio is None
    assert back == snap


def test_a_record_from_a_newer_gpuwatch_still_replays(tmp_path: Path) -> None:
    """Fields get added to sample.py over time; format version 1 must survive that both ways."""
    snap = simple_snapshot(5.0)
    obj = json.loads(zlib.decompress(recording.encode_snapshot(snap)))
    obj["gpus"][0]["hbm_temperature_spread_c"] = 3.5  # a field this gpuwatch does not know
    obj["gpus"][0]["unavailable"]["power_w"] = "in_reset"  # a reason this gpuwatch does not know
    del obj["driver_version"]  # a field the writer did not have: read as its default
    payload = zlib.compress(json.dumps(obj).encode())
    path = tmp_path / "newer.gwrec"
    RecordWriter(path).close()
    with path.open("ab") as fh:
        fh.write(struct.pack(">II", len(payload), zlib.crc32(payload)) + payload)
    (back,) = read_recording(path)
    assert back.gpus[0].power_w == 300.0 and back.driver_version is None
    assert back.gpus[0].unavailable["power_w"] is Unavailable.ERROR


def test_records_are_compact(tmp_path: Path) -> None:
    path = tmp_path / "day.gwrec"
    write(path, [simple_snapshot(1_700_000_000.0 + i, 300 + i % 7) for i in range(100)])
    assert path.stat().st_size / 100 < 400  # bytes per one-GPU snapshot, a day at 1 Hz ≈ 35 MB max


def test_truncated_file_names_the_byte_and_replays_what_came_before(tmp_path: Path) -> None:
    snaps = [simple_snapshot(100.0 + i) for i in range(5)]
    path = tmp_path / "cut.gwrec"
    write(path, snaps)
    starts = record_starts(path)
    path.write_bytes(path.read_bytes()[: starts[3] + 11])  # cut inside the 4th record
    got, err = collect(read_recording(path))
    assert got == snaps[:3]
    assert err is not None and isinstance(err, UserError)
    message = str(err)
    assert "\n" not in message
    assert message.startswith(f"{path}: corrupt record at byte {starts[3]}: ")
    assert "the 3 snapshots before it replay" in message


def test_flipped_byte_is_caught_by_the_checksum(tmp_path: Path) -> None:
    snaps = [simple_snapshot(100.0 + i) for i in range(4)]
    path = tmp_path / "flip.gwrec"
    write(path, snaps)
    starts = record_starts(path)
    data = bytearray(path.read_bytes())
    data[starts[2] + 20] ^= 0x40
    path.write_bytes(bytes(data))
    got, err = collect(read_recording(path))
    assert got == snaps[:2]
    assert err is not None and f"corrupt record at byte {starts[2]}: checksum mismatch" in str(err)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "not a gpuwatch recording"),
        (b"timestamp,power_w\n1,300\n", "not a gpuwatch recording"),
        (recording.MAGIC + struct.pack(">I", 2), "format version 2, this gpuwatch reads version 1"),
    ],
)
def test_foreign_or_newer_files_are_refused_in_one_line(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "other.gwrec"
    path.write_bytes(content)
    with pytest.raises(RecordingError, match=expected):
        list(read_recording(path))
    with pytest.raises(RecordingError, match=expected):
        ReplaySource(path)
    if content:  # an empty file (touch, mktemp) is simply started as a new recording
        with pytest.raises(RecordingError, match=rf"cannot append: .*{expected}"):
            RecordWriter(path)


def test_missing_file_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="cannot read recording: No such file"):
        ReplaySource(tmp_path / "nope.gwrec")


def test_appending_continues_the_recording(tmp_path: Path) -> None:
    path = tmp_path / "long.gwrec"
    write(path, [simple_snapshot(1.0), simple_snapshot(2.0)])
    write(path, [simple_snapshot(3.0)])
    assert [s.timestamp_s for s in read_recording(path)] == [1.0, 2.0, 3.0]


def test_append_cuts_a_torn_last_record_so_new_ones_replay(tmp_path: Path) -> None:
    path = tmp_path / "killed.gwrec"
    write(path, [simple_snapshot(1.0), simple_snapshot(2.0)])
    whole = path.read_bytes()
    second = record_starts(path)[1]
    path.write_bytes(whole[:-5])  # the recorder died mid-write
    with RecordWriter(path) as writer:
        assert writer.dropped_tail_bytes == len(whole) - 5 - second
        writer.write(simple_snapshot(3.0))
    assert [s.timestamp_s for s in read_recording(path)] == [1.0, 3.0]


def test_append_refuses_a_file_corrupt_in_the_middle(tmp_path: Path) -> None:
    path = tmp_path / "bad.gwrec"
    write(path, [simple_snapshot(float(i)) for i in range(3)])
    data = bytearray(path.read_bytes())
    data[record_starts(path)[1] + 12] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(
        RecordingError, match=r"cannot append: .*corrupt record at byte .*record to a new file"
    ):
        RecordWriter(path)
    assert path.read_bytes() == bytes(data)  # left untouched


def test_two_recorders_cannot_share_a_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.gwrec"
    with RecordWriter(path), pytest.raises(RecordingError, match="another gpuwatch is recording"):
        RecordWriter(path)


def test_every_record_is_on_disk_as_soon_as_it_is_written(tmp_path: Path) -> None:
    path = tmp_path / "live.gwrec"
    writer = RecordWriter(path)
    try:
        writer.write(simple_snapshot(1.0))
        assert [s.timestamp_s for s in read_recording(path)] == [1.0]  # no close() needed
    finally:
        writer.close()


# --- ReplaySource -------------------------------------------------------------------------------


def play(source: ReplaySource) -> list[Snapshot]:
    seen: list[Snapshot] = []
    source.add_listener(seen.append)
    source.start()
    source.join(10)
    source.stop()
    return seen


def test_replay_feeds_every_snapshot_in_order_and_fills_history(tmp_path: Path) -> None:
    snaps = [simple_snapshot(100.0 + i, 250.0 + i) for i in range(6)]
    path = tmp_path / "r.gwrec"
    write(path, snaps)
    source = ReplaySource(path, speed=0)
    assert source.latest() is None
    seen = play(source)
    assert [s.gpus for s in seen] == [s.gpus for s in snaps]
    assert [s.timestamp_s for s in seen] == [s.timestamp_s for s in snaps]
    assert all(s.source == "replay" for s in seen)
    assert source.latest() == seen[-1]
    assert source.finished and source.error is None
    assert not source.simulated  # recorded from real NVML
    _, values = source.history.series(0, "power_w")
    assert list(values[-6:]) == [250.0 + i for i in range(6)]


def test_replay_keeps_recorded_pace_scaled_by_speed(tmp_path: Path) -> None:
    path = tmp_path / "paced.gwrec"
    write(path, [simple_snapshot(100.0), simple_snapshot(101.0), simple_snapshot(102.0)])
    arrivals: list[float] = []
    source = ReplaySource(path, speed=10.0)  # 2 s recorded → 0.2 s
    source.add_listener(lambda s: arrivals.append(time.monotonic()))
    source.start()
    source.join(10)
    assert len(arrivals) == 3
    assert arrivals[-1] - arrivals[0] >= 0.2 * 0.9  # never early; lateness is the machine's business


def test_replay_of_a_damaged_file_stops_at_the_last_good_snapshot(tmp_path: Path) -> None:
    snaps = [simple_snapshot(100.0 + i) for i in range(5)]
    path = tmp_path / "dmg.gwrec"
    write(path, snaps)
    starts = record_starts(path)
    path.write_bytes(path.read_bytes()[: starts[4] + 3])
    source = ReplaySource(path, speed=0)
    seen = play(source)
    assert len(seen) == 4
    latest = source.latest()
    assert latest is not None and latest.timestamp_s == snaps[3].timestamp_s
    assert source.error is not None and f"corrupt record at byte {starts[4]}" in source.error
    assert not source.finished


def test_replay_of_a_simulated_recording_says_so(tmp_path: Path) -> None:
    path = tmp_path / "sim.gwrec"
    write(path, [full_snapshot()])
    source = ReplaySource(path, speed=0)
    assert source.simulated
    assert str(path) in source.description


def test_empty_recording_reports_why_nothing_plays(tmp_path: Path) -> None:
    path = tmp_path / "empty.gwrec"
    RecordWriter(path).close()
    source = ReplaySource(path, speed=0)
    assert play(source) == []
    assert source.error is not None and "holds no snapshots" in source.error


def test_loop_replays_with_time_moving_forward(tmp_path: Path) -> None:
    path = tmp_path / "loop.gwrec"
    write(path, [simple_snapshot(100.0), simple_snapshot(101.0)])
    seen: list[Snapshot] = []
    source = ReplaySource(path, speed=0, loop=True)
    source.add_listener(seen.append)
    source.start()
    deadline = time.monotonic() + 10
    while len(seen) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    source.stop()
    stamps = [s.timestamp_s for s in seen[:6]]
    assert stamps[:2] == [100.0, 101.0]
    assert all(b > a for a, b in itertools.pairwise(stamps))


def test_listener_failure_does_not_stop_replay(tmp_path: Path) -> None:
    path = tmp_path / "l.gwrec"
    write(path, [simple_snapshot(float(i)) for i in range(3)])
    source = ReplaySource(path, speed=0)

    def broken(_: Snapshot) -> None:
        raise RuntimeError("face bug")

    source.add_listener(broken)
    assert len(play(source)) == 3
    assert source.error is None


@pytest.mark.parametrize("speed", [-1.0, math.nan])
def test_bad_speed_is_refused(tmp_path: Path, speed: float) -> None:
    path = tmp_path / "s.gwrec"
    write(path, [simple_snapshot(1.0)])
    with pytest.raises(RecordingError, match="replay speed"):
        ReplaySource(path, speed=speed)
