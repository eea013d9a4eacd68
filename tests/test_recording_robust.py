"""Appending never harms a recording; damage is reported where it is, repaired without losing an
intact record; full disks, bad paths and signals end `gpuwatch record` in one line with every
snapshot written before still replaying; `record` honours --config, --engine and --workload."""

from __future__ import annotations

import errno
import os
import resource
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from loopback_http import PROMETHEUS_TEXT, serving

from gpuwatch.telemetry.recording import (
    HEADER_SIZE,
    RecordingError,
    RecordWriter,
    ReplaySource,
    ReplayStatus,
    read_recording,
    read_records,
    repair_recording,
)
from gpuwatch.telemetry.sample import GpuSample, Snapshot

ROOT = Path(__file__).resolve().parents[1]


def snap(i: int) -> Snapshot:
    gpu = GpuSample(
        index=0,
        uuid="GPU-1",
        name="NVIDIA GeForce RTX 4090",
        pci_bus_id="00000000:01:00.0",
        power_w=250.0 + i,
        temperature_c=40.0 + i % 30,
        catalog_id="rtx4090",  # as live telemetry sets them: nothing for the reader to fill in
        read_timestamp_s=1_700_000_000.0 + i,
    )
    return Snapshot(timestamp_s=1_700_000_000.0 + i, source="nvml", gpus=(gpu,))


def write(path: Path, n: int, first: int = 0) -> list[Snapshot]:
    snaps = [snap(first + i) for i in range(n)]
    with RecordWriter(path) as writer:
        for s in snaps:
            writer.write(s)
    return snaps


def starts(data: bytes) -> list[int]:
    out, pos = [], HEADER_SIZE
    while pos < len(data):
        out.append(pos)
        pos += 8 + struct.unpack(">I", data[pos : pos + 4])[0]
    return out


def gpuwatch(*args: str, timeout_s: float = 60, **kw: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "gpuwatch", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
        **kw,  # type: ignore[arg-type]
    )


def flip_length_bit(path: Path, record: int, bit: int) -> tuple[bytes, int]:
    """Flip one bit of record ``record``'s length field; (the damaged bytes, its byte offset)."""
    data = bytearray(path.read_bytes())
    pos = starts(bytes(data))[record]
    length = struct.unpack(">I", data[pos : pos + 4])[0]
    struct.pack_into(">I", data, pos, length ^ (1 << bit))
    path.write_bytes(bytes(data))
    return bytes(data), pos


# -- appending onto a damaged file -------------------------------------------------------------------


@pytest.mark.parametrize("bit", [12, 16, 20, 23])  # each makes the length run past the end of the file
def test_a_flipped_length_bit_refuses_the_append_and_repair_keeps_every_record(
    tmp_path: Path, bit: int
) -> None:
    path = tmp_path / "day.gwrec"
    snaps = write(path, 60)
    damaged, offset = flip_length_bit(path, 17, bit)

    # today: "file ends inside a record" was taken for an interrupted write and 43 records were cut
    with pytest.raises(RecordingError) as refused:
        RecordWriter(path)
    message = str(refused.value)
    assert "\n" not in message and f"byte {offset}" in message and "--repair" in message
    assert path.read_bytes() == damaged  # untouched

    result = repair_recording(path)
    assert result.backup is not None and result.backup.read_bytes() == damaged
    assert result.kept == 60
    assert list(read_recording(path)) == snaps  # even the record whose length was hit comes back
    with RecordWriter(path) as writer:  # and the repaired file takes new records
        writer.write(snap(60))
    assert len(list(read_recording(path))) == 61


def test_garbage_in_the_middle_costs_only_its_record(tmp_path: Path) -> None:
    path = tmp_path / "mid.gwrec"
    snaps = write(path, 40)
    data = bytearray(path.read_bytes())
    pos = starts(bytes(data))[10]
    data[pos + 12 : pos + 20] = b"\xde\xad\xbe\xef" * 2  # inside the payload: a checksum mismatch
    path.write_bytes(bytes(data))
    with pytest.raises(RecordingError, match=rf"byte {pos}: checksum mismatch.*--repair"):
        RecordWriter(path)
    assert repair_recording(path).kept == 39
    assert list(read_recording(path)) == snaps[:10] + snaps[11:]


def test_a_torn_tail_with_nothing_intact_after_it_is_still_cut_on_append(tmp_path: Path) -> None:
    path = tmp_path / "killed.gwrec"
    write(path, 5)
    data = path.read_bytes()
    path.write_bytes(data[:-7])
    with RecordWriter(path) as writer:
        assert writer.dropped_tail_bytes > 0
        writer.write(snap(99))
    assert [s.timestamp_s for s in read_recording(path)][-1] == snap(99).timestamp_s


def test_record_cli_refuses_a_damaged_file_in_one_line_and_repair_keeps_every_record(tmp_path: Path) -> None:
    path = tmp_path / "cli.gwrec"
    snaps = write(path, 30)
    damaged, offset = flip_length_bit(path, 4, 20)
    done = gpuwatch("record", str(path), "--sim", "rtx4090", "--duration", "1", "--interval", "0.2")
    assert done.returncode == 2
    err = done.stderr.strip()
    assert err.count("\n") == 0 and f"byte {offset}" in err and "--repair" in err, err
    assert path.read_bytes() == damaged

    fixed = gpuwatch("record", "--repair", str(path))
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout.count("\n") == 1 and "kept 30 intact snapshots" in fixed.stdout
    assert list(read_recording(path)) == snaps
    assert (tmp_path / "cli.gwrec.damaged").read_bytes() == damaged


# -- replay reports damage and the end ---------------------------------------------------------------


def test_replay_reports_damage_with_the_byte_plays_past_it_and_reports_the_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "play.gwrec"
    snaps = write(path, 20)
    data = bytearray(path.read_bytes())
    pos = starts(bytes(data))[7]
    data[pos + 30] ^= 0x01
    path.write_bytes(bytes(data))

    source = ReplaySource(path, speed=0)
    seen: list[Snapshot] = []
    statuses: list[ReplayStatus] = []
    source.add_listener(seen.append)
    source.add_status_listener(statuses.append)
    with caplog.at_level("INFO", logger="gpuwatch.telemetry.recording"):
        source.start()
        source.join(10)
    assert [s.gpus[0].power_w for s in seen] == [s.gpus[0].power_w for s in snaps[:7] + snaps[8:]]
    assert [s.kind for s in statuses] == ["damaged", "ended"]
    assert statuses[0].position == pos and f"damaged at byte {pos}" in statuses[0].message
    assert "replay ended after 19 snapshots" in statuses[1].message
    assert source.statuses == statuses
    logged = [r.getMessage() for r in caplog.records]
    assert any(f"byte {pos}" in m for m in logged) and any("replay ended" in m for m in logged)


def test_record_from_a_damaged_replay_says_where_and_when_it_ends(tmp_path: Path) -> None:
    src = tmp_path / "src.gwrec"
    write(src, 12)
    data = bytearray(src.read_bytes())
    pos = starts(bytes(data))[3]
    data[pos + 25] ^= 0x10
    src.write_bytes(bytes(data))
    out = tmp_path / "copy.gwrec"
    done = gpuwatch("record", str(out), "--replay", str(src), "--replay-speed", "1000", "--duration", "20")
    assert done.returncode == 0, done.stderr
    assert f"damaged at byte {pos}" in done.stderr and "replay ended after 11 snapshots" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(list(read_recording(out))) == 11  # and it stopped when the replay did, not after 20 s


# -- full disk, bad paths ----------------------------------------------------------------------------


class _FullDisk:
    """A file object that takes ``room`` more bytes, writes part of the next record, then ENOSPC."""

    def __init__(self, fh: object, room: int) -> None:
        self._fh = fh
        self.room = room

    def write(self, data: bytes | memoryview) -> int:
        if len(data) > self.room:
            if self.room > 0:
                self._fh.write(bytes(data[: self.room]))  # type: ignore[attr-defined]
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self._fh.write(data)  # type: ignore[attr-defined,no-any-return]

    def __getattr__(self, name: str) -> object:
        return getattr(self._fh, name)


def test_a_full_disk_is_one_line_and_every_snapshot_before_it_replays(tmp_path: Path) -> None:
    path = tmp_path / "full.gwrec"
    writer = RecordWriter(path)
    writer.write(snap(0))
    writer._fh = _FullDisk(writer._fh, room=500)  # type: ignore[assignment]
    written = []
    with pytest.raises(RecordingError) as full:
        for i in range(1, 100):
            writer.write(snap(i))
            written.append(i)
    writer.close()  # no second error from a buffer that cannot be flushed
    assert "\n" not in str(full.value) and "No space left on device" in str(full.value)
    assert len(list(read_recording(path))) == 1 + len(written)  # no torn record left behind
    with RecordWriter(path) as again:  # the file is whole: appending works without cutting anything
        assert again.dropped_tail_bytes == 0


def test_a_file_size_limit_during_record_is_one_line_and_the_file_replays(tmp_path: Path) -> None:
    path = tmp_path / "limit.gwrec"

    def limit() -> None:  # in the child: EFBIG instead of the disk filling, SIGXFSZ not killing it
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))

    done = subprocess.run(
        [sys.executable, "-m", "gpuwatch", "record", str(path), "--sim", "rtx4090", "--interval", "0.05"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=limit,
    )
    assert done.returncode == 2, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if not ln.startswith("recording ")]
    assert len(lines) == 1 and lines[0].startswith("gpuwatch: error: ") and "File too large" in lines[0]
    snaps = list(read_recording(path))  # raises on a torn record
    assert snaps and path.stat().st_size <= 3000


@pytest.mark.parametrize(
    ("target", "fragment"),
    [("nodir/x.gwrec", "No such file or directory"), (".", "Is a directory")],
)
def test_unusable_paths_are_one_line(tmp_path: Path, target: str, fragment: str) -> None:
    done = gpuwatch("record", str(tmp_path / target), "--sim", "rtx4090", "--duration", "1")
    assert done.returncode == 2
    assert (
        done.stderr.count("\n") == 1
        and "cannot open for recording" in done.stderr
        and fragment in done.stderr
    )


def test_an_unreadable_replay_path_is_one_line(tmp_path: Path) -> None:
    done = gpuwatch("record", str(tmp_path / "out.gwrec"), "--replay", str(tmp_path), "--duration", "1")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Is a directory" in done.stderr


# -- signals -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_mid_recording_exits_128_plus_it_and_everything_written_replays(
    tmp_path: Path, sig: int, status: int
) -> None:
    path = tmp_path / "sig.gwrec"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpuwatch", "record", str(path), "--sim", "rtx4090", "--interval", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not path.exists() or path.stat().st_size < HEADER_SIZE + 600):
            time.sleep(0.02)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == status, err
    assert "Traceback" not in err
    snaps = list(read_recording(path))
    assert out.strip() == f"recorded {len(snaps)} snapshots to {path}"


_INTERRUPT_DURING_IMPORT = """
import os, signal, sys
target = sys.argv[1]

class Interrupter:
    def find_spec(self, name, path=None, target_=None):
        if name == target:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while this module is being imported
        return None

sys.argv = ["gpuwatch", *sys.argv[2:]]
sys.meta_path.insert(0, Interrupter())
import runpy
runpy.run_module("gpuwatch", run_name="__main__")
"""


# the sub-command module loads while the command line is parsed (only the named one); the last two are
# the latest imports of a supervising parent (it opens the NVML child's source); neither the in-process
# poller nor pynvml is one any more: only the child reads NVML, and --sim is checked in a throwaway one
@pytest.mark.parametrize(
    "module",
    [
        "gpuwatch.cli",
        "gpuwatch.commands.record",
        "gpuwatch.telemetry.sources",
        "gpuwatch.telemetry.nvml_supervisor",
    ],
)
def test_ctrl_c_while_the_cli_is_still_importing_is_exit_130_without_a_traceback(
    tmp_path: Path, module: str
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _INTERRUPT_DURING_IMPORT,
            module,
            "record",
            str(tmp_path / "x.gwrec"),
            "--sim",
            "rtx4090",
            "--duration",
            "0.5",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr, done.stderr
    assert done.returncode == 130, done.stderr


def test_ctrl_c_soon_after_start_is_exit_130_without_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
    bare_s = time.monotonic() - started  # the interpreter's own start-up, before any gpuwatch code
    # (before gpuwatch's first line runs, Python's own start-up is out of reach: the import test above
    # covers the rest of the window deterministically)
    for delay in (max(0.3, 3 * bare_s),):
        proc = subprocess.Popen(
            [sys.executable, "-m", "gpuwatch", "record", str(tmp_path / "y.gwrec"), "--sim", "rtx4090"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        # exit 130, or (when the signal still lands in the interpreter's own start-up on a loaded
        # machine) killed by SIGINT, which a shell reports as 130 too; never a traceback
        assert "Traceback" not in err and "KeyboardInterrupt" not in err, (delay, err)
        assert proc.returncode in (130, -signal.SIGINT), (delay, proc.returncode, err)


# -- --config, --engine, --workload --------------------------------------------------------------------


@pytest.fixture
def engine() -> Iterator[str]:
    scrapes = [0]

    def answer(path: str) -> tuple[int, str, bytes]:
        scrapes[0] += 1
        body = (
            "# TYPE vllm:generation_tokens counter\n"
            f'vllm:generation_tokens_total{{model_name="m"}} {100 * scrapes[0]}\n'
        )
        return 200, PROMETHEUS_TEXT, body.encode()

    with serving(answer) as base:
        yield f"{base}/metrics"


def test_record_keeps_the_engines_and_workload_it_is_given(tmp_path: Path, engine: str) -> None:
    path = tmp_path / "eng.gwrec"
    config = tmp_path / "c.toml"
    config.write_text("interval_s = 0.2\n")
    done = gpuwatch(
        "record", str(path), "--sim", "rtx4090", "--duration", "2.5", "--config", str(config),
        "--engine", engine, "--workload", "llama-3-8b:fp16:batch=8:context=4096",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = list(read_records(path))
    assert records and all(r.workload == "llama-3-8b:fp16:batch=8:context=4096" for r in records)
    engines = [e for r in records for e in r.engines]
    assert engines and engines[-1].engine == "vllm" and engines[-1].url == engine
    # interval_s from the config file: about 5 polls per second for 2.5 s, not 1 per second
    assert len(records) >= 6


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (("--workload", "no-such-model:fp16"), "no-such-model"),
        (("--config", "CONFIG"), "interval_s"),
    ],
)
def test_record_rejects_bad_config_engine_and_workload_in_one_line(
    tmp_path: Path, extra: tuple[str, ...], fragment: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('interval_s = "often"\n')
    args = [a.replace("CONFIG", str(config)) for a in extra]
    path = tmp_path / "never.gwrec"
    done = gpuwatch("record", str(path), "--sim", "rtx4090", "--duration", "1", *args)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stderr.count("\n") == 1 and fragment in done.stderr, done.stderr
    assert not path.exists()  # nothing created for a command that never ran


def test_record_with_a_slow_driver_ends_near_its_duration(tmp_path: Path) -> None:
    started = time.monotonic()
    done = gpuwatch(
        "record", str(tmp_path / "slow.gwrec"), "--sim", "rtx4090", "--faults", "slow:0.5", "--duration", "3",
        timeout_s=120,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    # 0.5 s per NVML call: this took 19 s once (107 s for --duration 20); now the duration, at most 5 s
    # waiting for a first snapshot that never comes, a stop bounded to 1.5 s, and the start-up
    assert elapsed < 3 + 5 + 1.5 + 5, f"record --duration 3 took {elapsed:.1f} s"


FAST = ("--replay-speed", "1000", "--listen", "127.0.0.1:0")


def test_the_exporter_logs_where_a_replayed_file_is_damaged_and_that_it_ended(tmp_path: Path) -> None:
    src = tmp_path / "src.gwrec"
    write(src, 6)
    data = bytearray(src.read_bytes())
    pos = starts(bytes(data))[2]
    data[pos + 25] ^= 0x10
    src.write_bytes(bytes(data))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpuwatch", "exporter", "--replay", str(src), *FAST],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("replay ended" in ln for ln in lines):
            lines.append(proc.stderr.readline())
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    log = "".join(lines)
    assert f"damaged at byte {pos}" in log and "replay ended after 5 snapshots" in log, log
    assert "Traceback" not in log


def test_a_replay_of_a_recording_made_with_an_engine_shows_the_measured_tokens(
    tmp_path: Path, engine: str
) -> None:
    from gpuwatch.live.assessment import Provenance
    from gpuwatch.live.config import LiveConfig, parse_workload
    from gpuwatch.live.session import SourceSpec, open_session

    path = tmp_path / "eng.gwrec"
    done = gpuwatch("record", str(path), "--sim", "rtx4090", "--duration", "2.5", "--interval", "0.2",
                    "--engine", engine)  # fmt: skip
    assert done.returncode == 0, done.stderr
    recorded = [r.engines[0] for r in read_records(path) if r.engines and r.engines[0].error is None]
    rated = [e for e in recorded if e.generation_tokens_per_s]
    assert rated, "the recording holds measured engine readings"

    config = LiveConfig(workload=parse_workload("llama-3-8b:fp16:batch=8:context=4096"))
    session = open_session(config, SourceSpec(replay=str(path), replay_speed=1000))
    boxes = []
    session.add_listener(lambda snap, box: boxes.append(box))
    session.start()
    try:
        session.source.join(10)  # type: ignore[attr-defined]
    finally:
        session.stop()
    measured = [b for b in boxes if b.tokens_per_s_provenance is Provenance.MEASURED]
    assert measured and measured[-1].tokens_per_s == pytest.approx(rated[-1].generation_tokens_per_s)
    assert session.engines is not None and session.engines.states()[0].engine == "vllm"
