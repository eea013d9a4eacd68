"""History: ring buffers per GPU and reading, and counter rates that never span a gap."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuwatch.telemetry.history import READINGS, History
from gpuwatch.telemetry.sample import GpmSample, GpuSample, Snapshot, Unavailable


def snap(ts: float, energy_j: float | None, power_w: float | None = 300.0, *, lost: bool = False) -> Snapshot:
    gpu = GpuSample(
        index=0,
        uuid="GPU-0",
        name="NVIDIA GeForce RTX 4090",
        pci_bus_id="00000000:01:00.0",
        lost=lost,
        energy_j=energy_j,
        power_w=power_w,
        gpm=GpmSample(interval_s=1.0, dram_bandwidth_util_ratio=0.5),
        clock_event_seconds_total={"sw_power_cap": ts / 10},
    )
    return Snapshot(timestamp_s=ts, source="sim", gpus=(gpu,))


def test_series_is_chronological_and_bounded_to_capacity() -> None:
    h = History(capacity=5)
    for t in range(8):
        h.append(snap(float(t), energy_j=100.0 * t))
    ts, values = h.series(0, "energy_j")
    assert ts.tolist() == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert values.tolist() == [300.0, 400.0, 500.0, 600.0, 700.0]


def test_absent_reading_is_nan_not_zero() -> None:
    h = History()
    h.append(snap(0.0, energy_j=None, power_w=None))
    _, power = h.series(0, "power_w")
    assert math.isnan(power[0])


def test_nested_readings_are_recorded() -> None:
    h = History()
    h.append(snap(20.0, energy_j=1.0))
    assert h.series(0, "gpm.dram_bandwidth_util_ratio")[1].tolist() == [0.5]
    assert h.series(0, "clock_event_seconds_total.sw_power_cap")[1].tolist() == [2.0]


def test_energy_rate_is_average_power() -> None:
    h = History()
    for t in range(11):
        h.append(snap(1000.0 + t, energy_j=5000.0 + 450.0 * t))
    assert h.rate(0, "energy_j", window_s=5.0) == pytest.approx(450.0)
    assert h.rate(0, "energy_j", window_s=60.0) == pytest.approx(450.0)


def test_rate_needs_two_points() -> None:
    h = History()
    assert h.rate(0, "energy_j", 10.0) is None
    h.append(snap(0.0, energy_j=1.0))
    assert h.rate(0, "energy_j", 10.0) is None


def test_rate_does_not_span_a_gap_or_a_counter_reset() -> None:
    h = History()
    for t in range(5):
        h.append(snap(float(t), energy_j=1000.0 + 100.0 * t))
    h.mark_gap(4.5)
    # after the gap the counter restarted (driver reload): a spanning rate would be negative
    for t in range(5, 8):
        h.append(snap(float(t), energy_j=10.0 + 200.0 * (t - 5)))
    assert h.rate(0, "energy_j", window_s=100.0) == pytest.approx(200.0)
    h2 = History()
    for t, e in enumerate([100.0, 200.0, 300.0, 5.0, 55.0, 105.0]):
        h2.append(snap(float(t), energy_j=e))
    assert h2.rate(0, "energy_j", window_s=100.0) == pytest.approx(50.0)


def test_lost_gpu_is_a_nan_row_with_lost_flag() -> None:
    h = History()
    h.append(snap(0.0, energy_j=1.0))
    h.append(
        Snapshot(
            timestamp_s=1.0,
            source="sim",
            gpus=(
                GpuSample(
                    index=0,
                    uuid="GPU-0",
                    name="x",
                    pci_bus_id="",
                    lost=True,
                    unavailable={"energy_j": Unavailable.GPU_LOST},
                ),
            ),
        )
    )
    _, energy = h.series(0, "energy_j")
    _, lost = h.series(0, "lost")
    assert np.isnan(energy[1]) and lost.tolist() == [0.0, 1.0]


def test_unknown_reading_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="energy_j"):
        History().series(0, "energy")
    assert "energy_j" in READINGS
    assert History().series(3, "energy_j")[0].size == 0


def _numpy_rate(points: list[tuple[float, float]], window_s: float) -> float | None:
    """The rate as History computed it over numpy arrays (before it went numpy-free): the reference."""
    if len(points) < 2:
        return None
    ts = np.array([p[0] for p in points])
    values = np.array([p[1] for p in points])
    with np.errstate(invalid="ignore"):
        broken = ~np.isfinite(values) | ~np.isfinite(ts)
        broken[1:] |= np.diff(values) < 0
    starts = np.flatnonzero(broken)
    first = 0
    if starts.size:
        last = int(starts[-1])
        first = last + 1 if not np.isfinite(values[last]) else last
    ts, values = ts[first:], values[first:]
    if ts.size < 2:
        return None
    with np.errstate(invalid="ignore"):
        in_window = ts >= ts[-1] - window_s
    ts, values = ts[in_window], values[in_window]
    if ts.size < 2 or ts[-1] <= ts[0]:
        return None
    return float((values[-1] - values[0]) / (ts[-1] - ts[0]))


_STEP = st.one_of(
    st.tuples(
        st.just("poll"),
        # seconds since the previous poll: mostly forward, sometimes back (a replay restarting), or NaN
        st.one_of(st.floats(0, 30), st.floats(-40, 0), st.just(math.nan)),
        # the counter: mostly a rise, sometimes a reset to a small value, an absent or an infinite reading
        st.one_of(
            st.floats(0, 1e4).map(lambda rise: ("rise", rise)),
            st.floats(0, 10).map(lambda low: ("reset", low)),
            st.sampled_from([("absent", 0.0), ("inf", 0.0)]),
        ),
    ),
    st.tuples(st.just("gap"), st.floats(0, 5), st.none()),
    st.tuples(st.just("rate"), st.floats(0, 60), st.none()),
)


@settings(max_examples=500, deadline=None)
@given(capacity=st.integers(2, 9), steps=st.lists(_STEP, max_size=60))
def test_rate_is_what_the_numpy_history_gave_over_any_sequence_of_polls_gaps_and_clock_jumps(
    capacity: int, steps: list[tuple[str, float, tuple[str, float] | None]]
) -> None:
    h = History(capacity=capacity)
    kept: list[tuple[float, float]] = []  # the reference ring: the last ``capacity`` (ts, energy) rows
    now, counter = 1000.0, 0.0
    for kind, x, change in steps:
        if kind == "rate":
            expected = _numpy_rate(kept, x)
            got = h.rate(0, "energy_j", x)
            assert (got is None and expected is None) or got == expected, (kept, x, got, expected)
            n = int(x) % (capacity + 2)  # a sparkline's last n polls, the known values only
            assert h.recent(0, "energy_j", n) == [
                v for _, v in kept[max(0, len(kept) - n) :] if math.isfinite(v)
            ]
            continue
        now = now + x if math.isfinite(x) else math.nan
        if kind == "gap":
            if h.gpu_indices():  # a gap row goes to the GPUs History already has
                h.mark_gap(now)
                kept = [*kept, (now, math.nan)][-capacity:]
        elif change is not None:
            how, amount = change
            counter = counter + amount if how == "rise" else amount if how == "reset" else counter
            energy = {"absent": None, "inf": math.inf}.get(how, counter)
            h.append(snap(now, energy_j=energy))
            kept = [*kept, (now, math.nan if energy is None else energy)][-capacity:]
        if not math.isfinite(now):
            now = 2000.0


def test_a_clock_that_went_back_inside_the_run_keeps_every_point_of_the_window() -> None:
    h = History()
    points = [(1000.0, 0.0), (1030.0, 300.0), (1001.0, 310.0), (1040.0, 400.0)]  # the clock stepped back
    for ts, energy in points:
        h.append(snap(ts, energy_j=energy))
    # within 20 s of the newest: 1030 and 1040, not 1001, which sits between them in the ring
    assert h.rate(0, "energy_j", 20.0) == pytest.approx((400.0 - 300.0) / 10.0)
    assert h.rate(0, "energy_j", 20.0) == _numpy_rate(points, 20.0)


def test_recent_gives_the_known_values_of_the_last_polls_oldest_first() -> None:
    h = History(capacity=4)
    for t, power in enumerate([100.0, 110.0, None, 130.0, 140.0, 150.0]):  # wraps the 4-slot ring
        h.append(snap(float(t), energy_j=float(t), power_w=power))
    assert h.recent(0, "power_w", 3) == [130.0, 140.0, 150.0]
    assert h.recent(0, "power_w", 4) == [130.0, 140.0, 150.0]  # the absent reading is left out, not 0
    assert h.recent(0, "power_w", 99) == [130.0, 140.0, 150.0]  # at most what the ring holds
    assert h.recent(0, "power_w", 0) == [] and h.recent(7, "power_w", 3) == []
    with pytest.raises(KeyError, match="power_w"):
        h.recent(0, "power", 3)
