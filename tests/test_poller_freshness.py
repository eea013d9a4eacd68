"""Honest freshness through the real poller on simulated cards: a hang makes readings stale, not old.

Faults with an end time (``slow:0:30000@5-15``: every call on GPU 0 hangs from simulated second 5 to
15) let the same test see the hang, the staleness and the recovery, on a manual simulated clock.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gpuwatch.errors import UserError
from gpuwatch.telemetry.freshness import stale_after_s
from gpuwatch.telemetry.poller import NvmlPoller
from gpuwatch.telemetry.sample import Snapshot, Unavailable
from gpuwatch.telemetry.simspec import SimSpec
from gpuwatch.telemetry.simulated import install, uninstall
from gpuwatch.telemetry.simulated.faults import parse_faults

INTERVAL_S = 0.05  # wall seconds each poll waits for slow reads


@pytest.fixture
def hung() -> Iterator[tuple[object, NvmlPoller]]:
    made: list[NvmlPoller] = []

    def make(faults: str) -> tuple[object, NvmlPoller]:
        sim = install("rtx4090,rtx4090", manual_clock=True, faults=faults)
        poller = NvmlPoller(
            interval_s=INTERVAL_S,
            clock=sim.now_s,
            sim=SimSpec("2xrtx4090"),
            backoff_initial_s=1.0,
            xid_events=False,
        )
        poller.start(background=False)
        made.append(poller)
        return sim, poller

    yield make  # type: ignore[misc]
    for p in made:
        p.stop()
    uninstall()


def poll_until(sim: object, poller: NvmlPoller, until_s: float) -> list[tuple[float, Snapshot]]:
    """One poll per simulated second up to ``until_s`` (seconds since the start)."""
    out = []
    while sim.elapsed_s() < until_s:  # type: ignore[attr-defined]
        sim.advance(1.0)  # type: ignore[attr-defined]
        out.append((sim.elapsed_s(), poller.poll_once()))  # type: ignore[attr-defined]
    return out


def test_the_bound_is_three_intervals_and_at_least_five_seconds() -> None:
    assert stale_after_s(1.0) == 5.0
    assert stale_after_s(0.1) == 5.0
    assert stale_after_s(10.0) == 30.0


def test_a_hung_gpu_goes_stale_the_others_stay_fresh_and_it_recovers_by_itself(hung) -> None:  # type: ignore[no-untyped-def]
    sim, poller = hung("slow:0:30000@5-15")
    before = poll_until(sim, poller, 4)
    assert all(not g.stale for _, s in before for g in s.gpus)
    last_good = before[-1][1].gpus[0]
    assert last_good.read_timestamp_s == before[-1][1].timestamp_s

    during = poll_until(sim, poller, 14)
    for t, snap in during:
        fresh = snap.gpus[1]
        assert fresh.current and fresh.read_timestamp_s == snap.timestamp_s  # GPU 1 read every poll
        assert snap.last_read_timestamp_s == snap.timestamp_s  # a GPU really was read: the poll succeeded
        gpu0 = snap.gpus[0]
        age = snap.timestamp_s - last_good.read_timestamp_s
        if age > poller.stale_after_s:
            # past the bound: no old value passed off as current; when it last succeeded is kept
            assert gpu0.stale and not gpu0.current and gpu0.temperature_c is None and gpu0.power_w is None, t
            assert gpu0.unavailable["temperature_c"] is Unavailable.STALE
            assert gpu0.read_timestamp_s == last_good.read_timestamp_s
        else:
            assert not gpu0.stale and gpu0.temperature_c == last_good.temperature_c  # within the bound
    assert any(s.gpus[0].stale for _, s in during)
    # the poll duration is the real read time (the hung read so far), not capped at the interval
    assert max(s.poll_duration_s or 0.0 for _, s in during) > 4 * INTERVAL_S

    after = poll_until(sim, poller, 20)
    recovered = after[-1][1].gpus[0]
    assert not recovered.stale and recovered.temperature_c is not None
    assert recovered.read_timestamp_s == after[-1][1].timestamp_s


def test_with_every_gpu_hung_the_last_successful_poll_does_not_advance(hung) -> None:  # type: ignore[no-untyped-def]
    sim, poller = hung("slow:30000@5-15")
    before = poll_until(sim, poller, 4)
    last_read = before[-1][1].last_read_timestamp_s
    during = poll_until(sim, poller, 14)
    assert all(s.last_read_timestamp_s in (None, last_read) for _, s in during)
    assert all(g.stale for g in during[-1][1].gpus)
    after = poll_until(sim, poller, 20)
    assert after[-1][1].last_read_timestamp_s == after[-1][1].timestamp_s
    assert not any(g.stale for g in after[-1][1].gpus)


def test_a_gpu_lost_for_a_while_comes_back_by_itself(hung) -> None:  # type: ignore[no-untyped-def]
    sim, poller = hung("lost:1@5-12")
    during = poll_until(sim, poller, 11)
    assert during[-1][1].gpus[1].lost and not during[-1][1].gpus[0].lost
    after = poll_until(sim, poller, 30)
    back = after[-1][1].gpus[1]
    assert not back.lost and back.temperature_c is not None and not back.stale
    assert back.xid_errors_total == 0  # xid_events off here; the lost window itself is what ended


def test_fault_end_times_parse() -> None:
    slow, lost = parse_faults("slow:0:30000@20-80,lost:1@30-90")
    assert (slow.device, slow.latency_s, slow.at_s, slow.until_s) == (0, 30000.0, 20.0, 80.0)
    assert (lost.device, lost.at_s, lost.until_s) == (1, 30.0, 90.0)


@pytest.mark.parametrize(
    "spec",
    [
        "slow:inf",
        "slow:nan",
        "slow:0:1e999",
        "slow:-1",
        "lost:1@30-20",
        "lost:1@30-30",
        "lost:1@abc",
        "lost:1@5-",
        "lost:1@5-x",
        "slow:0:1@2@3",
        "crash:x",
    ],
)
def test_every_bad_fault_string_is_one_line(spec: str) -> None:
    with pytest.raises(UserError) as info:
        parse_faults(spec)
    message = str(info.value)
    assert "\n" not in message and spec in message


def test_a_failed_re_init_leaves_no_healthy_gpu_up_with_empty_readings(hung) -> None:  # type: ignore[no-untyped-def]
    # GPU 0 falls off; the re-init it triggers fails (driver gone for a while): GPU 1 cannot be read
    sim, poller = hung("lost:0@3-40,init:driver_not_loaded@4-15")
    during = poll_until(sim, poller, 12)
    healthy = during[-1][1].gpus[1]
    assert not healthy.lost
    assert healthy.stale and healthy.temperature_c is None  # not "up" with every reading "supported"
    assert healthy.unavailable["temperature_c"] is not None
    after = poll_until(sim, poller, 35)
    back = after[-1][1].gpus[1]
    assert not back.stale and back.temperature_c is not None  # the next re-init succeeded by itself
    assert after[-1][1].gpus[0].lost
