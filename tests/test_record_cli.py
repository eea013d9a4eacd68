"""`gpuwatch record`: a real recording from the simulated NVML, read back and damaged."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpuwatch.cli import main
from gpuwatch.telemetry.recording import HEADER_SIZE, RecordingError, ReplaySource, read_recording


def gpuwatch(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpuwatch", *args], capture_output=True, text=True, timeout=timeout_s
    )


def test_record_then_read_back(tmp_path: Path) -> None:
    path = tmp_path / "box.gwrec"
    done = gpuwatch(
        "record", str(path), "--duration", "2", "--sim", "rtx4090", "--time-scale", "10", "--interval", "0.25"
    )
    assert done.returncode == 0, done.stderr
    snaps = list(read_recording(path))
    assert len(snaps) >= 3
    assert done.stdout.strip() == f"recorded {len(snaps)} snapshots to {path}"
    assert all(len(s.gpus) == 1 and "4090" in s.gpus[0].name for s in snaps)
    stamps = [s.timestamp_s for s in snaps]
    assert stamps == sorted(stamps)
    # time-scale 10: sim time runs ~10x the 0.25 s poll interval between snapshots
    assert (stamps[-1] - stamps[0]) / (len(stamps) - 1) > 1.0

    # a second run continues the same file
    again = gpuwatch("--sim", "rtx4090", "record", str(path), "--duration", "1", "--interval", "0.25")
    assert again.returncode == 0, again.stderr
    assert len(list(read_recording(path))) > len(snaps)


def test_truncated_recording_names_the_byte_and_earlier_snapshots_replay(tmp_path: Path) -> None:
    path = tmp_path / "cut.gwrec"
    done = gpuwatch(
        "record", str(path), "--duration", "2", "--sim", "rtx4090", "--time-scale", "10", "--interval", "0.2"
    )
    assert done.returncode == 0, done.stderr
    whole = list(read_recording(path))
    data = path.read_bytes()
    starts, pos = [], HEADER_SIZE
    while pos < len(data):
        starts.append(pos)
        pos += 8 + struct.unpack(">I", data[pos : pos + 4])[0]
    assert len(starts) >= 3
    cut = starts[2] + 30
    path.write_bytes(data[:cut])

    got = []
    try:
        for snap in read_recording(path):
            got.append(snap)
        raise AssertionError("no error for a truncated file")
    except RecordingError as exc:
        message = str(exc)
    assert got == whole[:2]
    assert "\n" not in message
    assert f"corrupt record at byte {starts[2]}" in message and "the 2 snapshots before it replay" in message

    source = ReplaySource(path, speed=0)
    source.start()
    source.join(10)
    latest = source.latest()
    assert latest is not None and latest.timestamp_s == whole[1].timestamp_s
    assert source.error == message


def test_ctrl_c_ends_the_recording_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "ctrlc.gwrec"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpuwatch", "record", str(path), "--sim", "rtx4090", "--interval", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not path.exists() or path.stat().st_size < HEADER_SIZE + 100):
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err  # 128 + SIGINT, as a shell expects of an interrupted command
    snaps = list(read_recording(path))  # no torn record at the end
    assert (
        snaps and out.strip() == f"recorded {len(snaps)} snapshot{'s' if len(snaps) != 1 else ''} to {path}"
    )


def test_bad_duration_is_a_one_line_error(tmp_path: Path) -> None:
    done = gpuwatch("record", str(tmp_path / "x.gwrec"), "--duration", "-3", "--sim", "rtx4090")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "gpuwatch: error: record: --duration = '-3' is not allowed: expected a number > 0 and <= 315360000"
    )


def test_foreign_file_is_refused_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("my notes\n")
    done = gpuwatch("record", str(path), "--duration", "1", "--sim", "rtx4090")
    assert done.returncode == 2
    assert done.stderr.strip().startswith(f"gpuwatch: error: cannot append: {path}: not a gpuwatch recording")
    assert path.read_text() == "my notes\n"


def test_snapshots_from_the_simulated_poller_round_trip_equal(tmp_path: Path) -> None:
    from gpuwatch.telemetry.recording import RecordWriter
    from gpuwatch.telemetry.sample import Snapshot
    from gpuwatch.telemetry.sources import open_source

    source = open_source(
        sim="h100-sxm,rtx4090",
        scenario="decode-batched",
        time_scale=30.0,
        seed=3,
        replay=None,
        replay_speed=1.0,
        interval_s=0.1,
    )
    seen: list[Snapshot] = []
    source.add_listener(seen.append)
    source.start()
    try:
        deadline = time.monotonic() + 30
        while len(seen) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        source.stop()
    snaps = seen[:5]
    assert len(snaps) == 5
    assert any(g.gpm is not None for g in snaps[-1].gpus)  # the H100's GPM block is in there
    path = tmp_path / "poller.gwrec"
    with RecordWriter(path) as writer:
        for snap in snaps:
            writer.write(snap)
    assert list(read_recording(path)) == snaps


def test_bad_source_options_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "x.gwrec")
    cases = {
        # inf used to pass the > 0 check and hang the simulator integrating forever
        (
            "record",
            path,
            "--sim",
            "rtx4090",
            "--time-scale",
            "inf",
            "--duration",
            "1",
        ): "--time-scale = 'inf' is not allowed",
        # an empty --sim used to fall through to the real driver
        ("record", path, "--sim", "", "--duration", "1"): "--sim '': bad device entry",
        ("record", path, "--sim", "rtx4090", "--faults", "junk", "--duration", "1"): "bad fault 'junk'",
        ("record", str(tmp_path / "nodir" / "x.gwrec"), "--sim", "rtx4090"): "cannot open for recording",
    }
    for argv, fragment in cases.items():
        assert main(list(argv)) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("gpuwatch: error: ") and fragment in err and err.count("\n") == 1, err
