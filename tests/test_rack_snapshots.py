"""SVG snapshots of the rack view (`gpuwatch --prometheus`) and a host's cards, on a fabricated rack read
through the real client from a fake Prometheus API. Regenerate with ``--snapshot-update`` on this file
and look at the SVGs in tests/__snapshots__/test_rack_snapshots/ before committing them."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator

import pytest
from test_prometheus_rack import FakePrometheus
from textual.pilot import Pilot

from gpuwatch.telemetry.prometheus_rack import PrometheusConfig, PrometheusRack, RackSnapshot
from gpuwatch.tui.rack_view import RackApp

SnapCompare = Callable[..., bool]


@pytest.fixture
def fabricated(monkeypatch: pytest.MonkeyPatch) -> Iterator[RackSnapshot]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    prom = FakePrometheus()
    try:
        snap = PrometheusRack(PrometheusConfig(prom.url)).read()
    finally:
        prom.close()
    assert snap.error is None
    yield dataclasses.replace(snap, timestamp_s=1_700_000_000.0)
    monkeypatch.undo()
    time.tzset()


def app_on(snap: RackSnapshot) -> RackApp:
    return RackApp(lambda: snap, source="http://prometheus:9090", interval_s=3600)


async def _settle(pilot: Pilot[None]) -> None:
    await pilot.pause(0.3)


def test_rack_screen(snap_compare: SnapCompare, fabricated: RackSnapshot) -> None:
    assert snap_compare(app_on(fabricated), terminal_size=(200, 14), run_before=_settle)


def test_host_cards(snap_compare: SnapCompare, fabricated: RackSnapshot) -> None:
    async def open_first(pilot: Pilot[None]) -> None:
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.3)

    assert snap_compare(app_on(fabricated), terminal_size=(100, 30), run_before=open_first)
