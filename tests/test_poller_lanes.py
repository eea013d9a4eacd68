"""One shared read thread for every card; a hung card gets its own, and only it goes stale.

The poller reads all GPUs on one worker thread (one wake-up a tick, as nvitop does), yet a hung card
must still cost the others nothing: they stay fresh every tick, the process keeps a handful of threads
(not one per card, not one more per tick), and the hung card is fresh again once its hang ends.
Simulated cards on a manual clock; ``slow:I:S@T-E`` hangs every call on card I from second T to E.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from gpuwatch.telemetry.poller import NvmlPoller
from gpuwatch.telemetry.sample import Snapshot
from gpuwatch.telemetry.simspec import SimSpec
from gpuwatch.telemetry.simulated import install, uninstall

INTERVAL_S = 0.2  # wall seconds each poll waits for slow reads
CARDS = 8

Make = Callable[..., tuple[object, NvmlPoller]]


@pytest.fixture
def box() -> Iterator[Make]:
    made: list[NvmlPoller] = []

    def make(faults: str, interval_s: float = INTERVAL_S) -> tuple[object, NvmlPoller]:
        sim = install(f"{CARDS}xrtx4090", manual_clock=True, faults=faults)
        poller = NvmlPoller(
            interval_s=interval_s, clock=sim.now_s, sim=SimSpec(f"{CARDS}xrtx4090"), xid_events=False
        )
        poller.start(background=False)
        made.append(poller)
        return sim, poller

    yield make
    for p in made:
        p.stop()
    uninstall()


def tick(sim: object, poller: NvmlPoller) -> Snapshot:
    sim.advance(1.0)  # type: ignore[attr-defined]
    return poller.poll_once()


def read_this_tick(snap: Snapshot, index: int) -> bool:
    gpu = snap.gpus[index]
    return not gpu.stale and gpu.read_timestamp_s == snap.timestamp_s


def quiet_baseline(timeout_s: float = 5.0) -> int:
    """The thread count once an earlier test's read threads have ended (each ends just after its read)."""
    deadline = time.monotonic() + timeout_s
    while any(t.name.startswith("gpuwatch-") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return threading.active_count()


def settle_threads(limit: int, timeout_s: float = 5.0) -> int:
    """The thread count once finished lanes have ended (they end on their own, just after their read)."""
    deadline = time.monotonic() + timeout_s
    while threading.active_count() > limit and time.monotonic() < deadline:
        time.sleep(0.02)
    return threading.active_count()


def test_one_hung_card_among_eight_the_others_stay_fresh_every_tick_and_it_recovers(box: Make) -> None:
    baseline = quiet_baseline()
    sim, poller = box("slow:3:30000@5-15")
    before = [tick(sim, poller) for _ in range(4)]
    assert all(read_this_tick(s, i) for s in before for i in range(CARDS))
    # healthy: one read thread for all eight cards, not one each
    assert threading.active_count() == baseline + 1

    during = [tick(sim, poller) for _ in range(10)]  # seconds 5..14: card 3 hangs the whole time
    for snap in during:
        # the seven others are read every tick, the first tick of the hang included
        assert all(read_this_tick(snap, i) for i in range(CARDS) if i != 3)
        assert not read_this_tick(snap, 3) and snap.errors["stale"] >= 1
        # the hung card keeps the thread it is stuck on, the others share one more: no growth per tick
        assert threading.active_count() <= baseline + 2
    hung = during[-1].gpus[3]
    assert hung.stale and hung.temperature_c is None  # past the freshness bound: unknown, not old
    assert hung.read_timestamp_s == before[-1].gpus[3].read_timestamp_s  # when it last answered

    after = [tick(sim, poller) for _ in range(4)]
    assert all(read_this_tick(after[-1], i) for i in range(CARDS))
    assert after[-1].gpus[3].temperature_c is not None
    assert settle_threads(baseline + 1) == baseline + 1  # the hung card's thread ended with its read


def test_threads_grow_only_with_the_number_of_hung_cards(box: Make) -> None:
    baseline = quiet_baseline()
    sim, poller = box("slow:2:30000@3-12,slow:5:30000@3-12")
    snaps = [tick(sim, poller) for _ in range(10)]
    assert threading.active_count() <= baseline + 3  # two hung cards, one shared thread
    for snap in snaps[3:]:
        assert all(read_this_tick(snap, i) for i in range(CARDS) if i not in (2, 5))
    after = [tick(sim, poller) for _ in range(4)]
    assert all(read_this_tick(after[-1], i) for i in range(CARDS))
    assert settle_threads(baseline + 1) == baseline + 1


def test_a_hung_cards_read_time_is_the_poll_duration_not_capped_at_the_interval(box: Make) -> None:
    sim, poller = box("slow:0:30000@2-10")
    snaps = [tick(sim, poller) for _ in range(8)]
    assert snaps[0].poll_duration_s is not None and snaps[0].poll_duration_s < INTERVAL_S
    assert max(s.poll_duration_s or 0.0 for s in snaps) > 3 * INTERVAL_S


def test_reads_too_slow_for_one_lane_are_shared_out_and_every_card_is_read_every_tick(box: Make) -> None:
    # every call takes 1.5 ms more: one card's read (~25 calls) is short of the hang bound (50 ms), but
    # eight of them one after another are more than the interval. After the first tick shows it, the
    # reads run on as many lanes as keep each under a tenth of the interval: all eight every tick.
    baseline = quiet_baseline()
    sim, poller = box("slow:0.0015")
    snaps = [tick(sim, poller) for _ in range(12)]
    for snap in snaps[2:]:
        assert all(read_this_tick(snap, i) for i in range(CARDS)), [g.index for g in snap.gpus if g.stale]
    assert baseline + 2 <= threading.active_count() <= baseline + CARDS  # more than one, at most one each
