"""Simulated scenarios through the real poller and a LiveSession, asserted against the model by hand.

The simulator runs on a manual clock (time-scaled: each poll advances it by several seconds), the
poller is the real NvmlPoller reading it through pynvml, and the session assesses every snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from gpuwatch.live.assessment import BoundKind, BoxAssessment, Provenance
from gpuwatch.live.assessor import derated
from gpuwatch.live.config import LiveConfig, parse_workload, plan_inputs
from gpuwatch.live.session import LiveSession
from gpuwatch.model import cost
from gpuwatch.model.catalog import get_gpu
from gpuwatch.model.cost import OwnershipCost
from gpuwatch.model.llm import get_model
from gpuwatch.model.quant import get_quant
from gpuwatch.model.throughput import estimate_throughput
from gpuwatch.model.whatif import answer
from gpuwatch.telemetry.poller import NvmlPoller, SimSpec
from gpuwatch.telemetry.sample import Snapshot
from gpuwatch.telemetry.simulated import install, uninstall

PRICES = OwnershipCost(
    electricity_usd_per_kwh=0.25,
    pue=1.0,
    server_capex_usd=4000,
    service_life_years=3,
    hosting_usd_per_h=0.10,
    cloud_usd_per_gpu_h=0.69,
    utilisation_ratio=0.7,
)


@dataclass
class Box:
    session: LiveSession
    poller: NvmlPoller
    advance: Callable[[float], None]

    def run(self, polls: int, step_s: float) -> Iterator[tuple[Snapshot, BoxAssessment]]:
        for _ in range(polls):
            self.advance(step_s)
            self.poller.poll_once()
            latest = self.session.latest()
            assert latest is not None
            yield latest


MakeBox = Callable[[str, str, str], Box]


@pytest.fixture
def box() -> Iterator[MakeBox]:
    made: list[NvmlPoller] = []

    def make(devices: str, scenario: str, workload: str) -> Box:
        sim = install(devices, scenario=scenario, manual_clock=True, seed=1)
        poller = NvmlPoller(
            interval_s=1.0,
            clock=sim.now_s,
            sim=SimSpec(devices, scenario),
            on_stop=uninstall,
            xid_events=False,
        )
        made.append(poller)
        config = LiveConfig(prices=PRICES, workload=parse_workload(workload))
        session = LiveSession(poller, config)
        poller.start(background=False)
        return Box(session, poller, sim.advance)

    yield make
    for p in made:
        p.stop()


def test_decode_on_a_4090_is_memory_bound_with_bandwidth_headroom(box: MakeBox) -> None:
    b = box("rtx4090", "decode", "llama-2-7b:fp16:batch=1:context=2048")
    _, a = list(b.run(5, 1.0))[-1]
    g = a.gpus[0]
    gpu = get_gpu("rtx4090")
    est = estimate_throughput(get_model("llama-2-7b"), get_quant("fp16"), gpu, 1, 2048)
    r = g.roofline
    assert g.gpu_id == "rtx4090"
    assert g.bound.kind == BoundKind.MEMORY
    assert r is not None and r.bandwidth_provenance == Provenance.MODELLED  # a 4090 has no GPM
    # by hand: bytes per step over step time, against the 1008 GB/s datasheet peak
    attained = est.bytes_per_decode_step / est.decode_step_s
    assert r.attained_bandwidth_bytes_s == pytest.approx(attained)
    assert r.peak_bandwidth_bytes_s == 1008e9
    assert r.headroom_ratio == pytest.approx(attained / 1008e9)
    assert (
        r.headroom_ratio is not None and 0.5 < r.headroom_ratio < 0.95
    )  # a real headroom is shown, neither 0 nor 100 %
    assert f"{1 - attained / 1008e9:.0%} headroom" in g.bound.detail
    assert g.tokens_per_s == pytest.approx(est.decode_tokens_per_s)
    # live $ from the energy counter's mean power over the last polls
    power = b.session.source.history.rate(0, "energy_j", 5.0)
    assert power is not None and 100 < power < 450
    assert g.cost is not None
    assert g.cost.live_usd_per_mtok == pytest.approx(
        cost.usd_per_mtok(PRICES, tokens_per_s=est.decode_tokens_per_s, gpu_capex_usd=None, power_w=power)
    )
    assert a.tokens_per_joule == pytest.approx(est.decode_tokens_per_s / power)


def test_prefill_on_an_h100_is_compute_bound_with_measured_gpm(box: MakeBox) -> None:
    b = box("h100-sxm", "prefill", "llama-3-8b:fp16:batch=8:context=4096")
    h100 = get_gpu("h100-sxm")
    bursts = [
        (snap, a)
        for snap, a in b.run(12, 0.5)
        if snap.gpus[0].gpm is not None and (snap.gpus[0].gpm.tensor_util_ratio or 0) > 0.5
    ]
    assert bursts, "the prefill scenario produced no compute burst"
    for snap, a in bursts:
        s, g = snap.gpus[0], a.gpus[0]
        r = g.roofline
        gpm = s.gpm
        assert (
            gpm is not None
            and gpm.dram_bandwidth_util_ratio is not None
            and gpm.tensor_util_ratio is not None
        )
        assert s.sm_clock_hz is not None
        assert r is not None
        assert (r.bandwidth_provenance, r.flops_provenance) == (Provenance.MEASURED, Provenance.MEASURED)
        assert r.attained_bandwidth_bytes_s == pytest.approx(
            gpm.dram_bandwidth_util_ratio * (s.peak_memory_bandwidth_bytes_s or h100.memory_bandwidth_bytes_s)
        )
        clock = min(1.0, s.sm_clock_hz / h100.boost_clock_hz)
        assert r.attained_flops == pytest.approx(gpm.tensor_util_ratio * h100.peak("fp16") * clock)
        assert r.arithmetic_intensity_flop_per_byte is not None
        assert r.arithmetic_intensity_flop_per_byte > r.ridge_flop_per_byte
        assert g.bound.kind == BoundKind.COMPUTE
        assert "compute bound (measured)" in g.bound.detail


def test_failing_fan_4090_is_throttled_and_its_cost_per_token_rises(box: MakeBox) -> None:
    workload = "llama-3-8b:int4-awq:batch=128:context=512"  # batched decode: the tensor pipes matter
    b = box("rtx4090", "failing-fan", workload)
    gpu = get_gpu("rtx4090")
    w = parse_workload(workload)
    model, quant = get_model(w.model_id), get_quant(w.quant_id)
    history = list(b.run(60, 10.0))  # ten simulated minutes
    before = [(s, a) for s, a in history[:5]]
    throttled = [(s, a) for s, a in history if a.gpus[0].bound.kind == BoundKind.THROTTLED]
    assert all(a.gpus[0].bound.kind != BoundKind.THROTTLED for _, a in before)
    assert len(throttled) > 10
    alerts = [al.kind for _, a in history for al in a.alerts]
    assert "temperature_near_slowdown" in alerts and "throttle_started" in alerts

    for snap, a in throttled:
        s, g = snap.gpus[0], a.gpus[0]
        assert s.sm_clock_hz is not None and s.sm_clock_max_hz is not None
        assert "sw_thermal" in g.bound.throttle_reasons or "hw_thermal" in g.bound.throttle_reasons
        # against the clock the workload runs at (the rated boost), not NVML's opportunistic maximum
        running_hz = min(gpu.boost_clock_hz, s.sm_clock_max_hz)
        assert g.bound.clock_loss_ratio == pytest.approx(max(0.0, 1 - s.sm_clock_hz / running_hz))
        # by hand: the model on a 4090 whose compute ceiling follows the live SM clock
        scale = round(min(1.0, s.sm_clock_hz / gpu.boost_clock_hz), 3)
        est = estimate_throughput(model, quant, derated(gpu, scale, 1.0), 128, 512)
        assert g.tokens_per_s == pytest.approx(est.decode_tokens_per_s)
        assert g.tokens_per_s_provenance == Provenance.MODELLED

    def usd(item: tuple[Snapshot, BoxAssessment]) -> float:
        c = item[1].gpus[0].cost
        assert c is not None and c.live_usd_per_mtok is not None
        return c.live_usd_per_mtok

    def clock(item: tuple[Snapshot, BoxAssessment]) -> float:
        return item[0].gpus[0].sm_clock_hz or 0.0

    coolest = max(before, key=clock)
    slowest = min(throttled, key=clock)
    assert clock(slowest) < 0.85 * clock(coolest)
    assert usd(slowest) > usd(coolest)
    tokens_fell = slowest[1].gpus[0].tokens_per_s or 0.0
    assert tokens_fell < (coolest[1].gpus[0].tokens_per_s or 0.0)


def test_live_and_plan_agree_for_the_same_workload_and_card(box: MakeBox) -> None:
    """The live projection is the Plan pane's answer (model.whatif.answer, the path the pane and `gpuwatch
    plan` take) for the what-if the pane starts from: the declared workload at the live prices."""
    b = box("rtx4090", "decode-batched", "mistral-7b:q4_K_M:batch=4:context=1024")
    _, a = list(b.run(3, 1.0))[-1]
    g = a.gpus[0]
    plan = answer(plan_inputs(b.session.config).with_(gpu="rtx4090"))
    assert plan.throughput is not None and plan.cost is not None
    assert g.modelled_tokens_per_s == pytest.approx(float(plan.throughput.decode_tokens_per_s))
    assert g.cost is not None
    assert g.cost.projected_usd_per_mtok == pytest.approx(plan.cost.usd_per_mtok)
    assert g.cost.cloud_usd_per_mtok == pytest.approx(plan.cost.cloud_usd_per_mtok)


def test_live_assessment_agrees_with_the_plan_command(
    box: MakeBox, capsys: pytest.CaptureFixture[str]
) -> None:
    """What `gpuwatch plan cost --json` prints for a workload is what the live view projects for it."""
    import json

    from gpuwatch.cli import main

    b = box("rtx4090", "decode-batched", "mistral-7b:q4_K_M:batch=4:context=1024")
    _, a = list(b.run(3, 1.0))[-1]
    g = a.gpus[0]
    assert g.cost is not None
    rc = main(
        ["plan", "cost", "--model", "mistral-7b", "--quant", "q4_K_M", "--gpu", "rtx4090", "--batch", "4",
         "--context", "1024", "--gpu-price-usd", "4000", "--electricity-usd-per-kwh", "0.25",
         "--hosting-usd-per-h", "0.10", "--cloud-usd-per-gpu-h", "0.69", "--utilisation", "0.7",
         "--life-years", "3", "--pue", "1", "--json"]
    )  # fmt: skip
    assert rc == 0
    plan = json.loads(capsys.readouterr().out)
    assert g.modelled_tokens_per_s == pytest.approx(plan["decode_tokens_per_s"])
    assert g.cost.projected_usd_per_mtok == pytest.approx(plan["usd_per_mtok"])
    assert g.cost.cloud_usd_per_mtok == pytest.approx(plan["cloud_usd_per_mtok"])
