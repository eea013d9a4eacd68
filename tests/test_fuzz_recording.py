"""Property-based fuzz of damaged recordings: whatever happens to the bytes, reading, replaying,
appending and repairing never raise anything but a one-line RecordingError, never touch a file they
refuse, and never lose a record the damage did not reach. (Fixed seed, bounded examples.)"""

from __future__ import annotations

import struct
import tempfile
import zlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuwatch.telemetry.recording import (
    HEADER_SIZE,
    Damage,
    RecordingError,
    RecordWriter,
    encode_snapshot,
    read_recording,
    repair_recording,
)
from gpuwatch.telemetry.sample import GpuSample, Snapshot

FUZZ = settings(
    max_examples=500,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def snap(i: int) -> Snapshot:
    gpu = GpuSample(
        index=0,
        uuid="GPU-1",
        name="NVIDIA GeForce RTX 4090",
        pci_bus_id="0:1",
        power_w=200.0 + i,
        catalog_id="rtx4090",
        read_timestamp_s=1_700_000_000.0 + i,
    )
    return Snapshot(timestamp_s=1_700_000_000.0 + i, source="nvml", gpus=(gpu,))


SNAPS = [snap(i) for i in range(24)]
RECORDS = [encode_snapshot(s) for s in SNAPS]
FRAMES = [struct.pack(">II", len(p), zlib.crc32(p)) + p for p in RECORDS]
HEADER = b"\x89GPUWREC" + struct.pack(">I", 1)


@st.composite
def damaged(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """A recording of n records with one kind of damage, and the indices of the records it spared."""
    n = draw(st.integers(1, len(SNAPS)))
    starts, pos = [], HEADER_SIZE
    for frame in FRAMES[:n]:
        starts.append(pos)
        pos += len(frame)
    data = bytearray(HEADER + b"".join(FRAMES[:n]))
    ends = [s + len(f) for s, f in zip(starts, FRAMES[:n], strict=True)]
    kind = draw(st.sampled_from(["flip", "overwrite", "truncate", "insert", "delete", "length"]))
    body = (HEADER_SIZE, len(data) - 1)
    if kind == "flip":
        hits = draw(st.lists(st.integers(*body), min_size=1, max_size=4))
        for h in hits:
            data[h] ^= 1 << draw(st.integers(0, 7))
        spans = [(h, h + 1) for h in hits]
    elif kind == "length":  # one bit of one record's length field
        r = draw(st.integers(0, n - 1))
        data[starts[r] + draw(st.integers(0, 3))] ^= 1 << draw(st.integers(0, 7))
        spans = [(starts[r], starts[r] + 4)]
    elif kind == "overwrite":
        at = draw(st.integers(*body))
        junk = draw(st.binary(min_size=1, max_size=64))
        data[at : at + len(junk)] = junk[: len(data) - at]
        spans = [(at, at + len(junk))]
    elif kind == "truncate":
        cut = draw(st.integers(HEADER_SIZE, len(data)))
        del data[cut:]
        spans = [(cut, 10**12)]
    elif kind == "insert":
        at = draw(st.integers(HEADER_SIZE, len(data)))
        data[at:at] = draw(st.binary(min_size=1, max_size=64))
        spans = [(at, at)]  # records on either side keep their bytes (shifted)
    else:
        at = draw(st.integers(*body))
        length = draw(st.integers(1, 64))
        del data[at : at + length]
        spans = [(at, at + length)]
    if kind == "insert":
        spared = [i for i in range(n) if ends[i] <= spans[0][0] or starts[i] >= spans[0][0]]
    else:
        spared = [i for i in range(n) if all(ends[i] <= a or starts[i] >= b for a, b in spans)]
    return bytes(data), spared


def one_line(exc: BaseException) -> None:
    assert "\n" not in str(exc) and str(exc).strip()


@FUZZ
@given(case=damaged())
def test_damage_never_costs_a_record_it_did_not_touch(case: tuple[bytes, list[int]]) -> None:
    data, spared = case
    wanted = [SNAPS[i] for i in spared]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.gwrec"
        path.write_bytes(data)

        strict: list[Snapshot] = []  # the strict reader: everything before the first damage, then one line
        try:
            strict.extend(read_recording(path))
        except RecordingError as exc:
            one_line(exc)
        assert strict == SNAPS[: len(strict)]

        damages: list[Damage] = []
        tolerant = list(read_recording(path, on_damage=damages.append))  # the replay's reader
        assert all(s in tolerant for s in wanted), "an intact record was lost"
        assert all("\n" not in d.describe(path) for d in damages)

        try:  # appending: refused in one line with the file untouched, or every intact record kept
            with RecordWriter(path) as writer:
                writer.write(snap(99))
            after = list(read_recording(path))
            assert all(s in after for s in wanted) and after[-1] == snap(99)
        except RecordingError as exc:
            one_line(exc)
            assert path.read_bytes() == data
            repaired = repair_recording(path)
            after = list(read_recording(path))  # the strict reader finds nothing wrong now
            assert all(s in after for s in wanted) and repaired.kept == len(after)
            assert repaired.backup is not None and repaired.backup.read_bytes() == data
