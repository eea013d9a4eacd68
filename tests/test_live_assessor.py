"""The assessor on hand-built snapshots: provenance, bound, cost, each against the model by hand."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gpuwatch.live.assessment import BoundKind, BoxAssessment, Provenance
from gpuwatch.live.assessor import Assessor
from gpuwatch.live.config import LiveConfig, parse_workload
from gpuwatch.model import cost
from gpuwatch.model.catalog import get_gpu
from gpuwatch.model.cost import OwnershipCost
from gpuwatch.model.llm import get_model
from gpuwatch.model.memory import inference_memory
from gpuwatch.model.quant import get_quant
from gpuwatch.model.serving import powered_throughput
from gpuwatch.model.throughput import bytes_per_decode_step, estimate_throughput, flops_per_token
from gpuwatch.telemetry.engines import EngineReading
from gpuwatch.telemetry.history import History
from gpuwatch.telemetry.sample import ClockEventReason, GpmSample, GpuSample, Snapshot

RTX4090 = get_gpu("rtx4090")
H100 = get_gpu("h100-sxm")
PRICES = OwnershipCost(
    electricity_usd_per_kwh=0.2,
    pue=1.1,
    server_capex_usd=3000,
    service_life_years=3,
    hosting_usd_per_h=0.05,
    cloud_usd_per_gpu_h=0.7,
    utilisation_ratio=0.7,
)


def config(workload: str | None = "llama-3-8b:fp16:batch=8:context=4096") -> LiveConfig:
    return LiveConfig(prices=PRICES, workload=parse_workload(workload) if workload else None)


def sample(gpu: str = "rtx4090", index: int = 0, **changes: Any) -> GpuSample:
    """A busy, cool card at its spec boost clock; ``changes`` override any reading."""
    spec = get_gpu(gpu)
    base = GpuSample(
        index=index,
        uuid=f"GPU-{index}",
        name=spec.nvml_names[0],
        pci_bus_id=f"0:{index}",
        catalog_id=spec.id,  # telemetry identifies the card once (model.catalog.identify_gpu)
        sm_clock_hz=spec.boost_clock_hz,
        sm_clock_max_hz=spec.boost_clock_hz * 1.2,
        power_w=300.0,
        sm_busy_ratio=0.95,
        clock_event_reasons=0,
        temperature_c=60.0,
        slowdown_margin_c=25.0,
    )
    return dataclasses.replace(base, **changes)


def assess(
    cfg: LiveConfig, *samples: GpuSample, engines: tuple[EngineReading, ...] = (), t: float = 1000.0
) -> BoxAssessment:
    snap = Snapshot(t, "sim", samples)
    history = History()
    history.append(snap)
    return Assessor(cfg).assess(snap, history, engines)


def engine(generation: float, prompt: float = 0.0, running: float | None = 8) -> EngineReading:
    return EngineReading("http://e/metrics", "vllm", 1000.0, generation, prompt, running, None)


def test_modelled_decode_on_a_4090_is_memory_bound_with_headroom() -> None:
    box = assess(config(), sample())
    g = box.gpus[0]
    est = estimate_throughput(get_model("llama-3-8b"), get_quant("fp16"), RTX4090, 8, 4096)
    r = g.roofline
    assert r is not None
    assert r.bandwidth_provenance == r.flops_provenance == Provenance.MODELLED
    assert r.attained_bandwidth_bytes_s == pytest.approx(est.bytes_per_decode_step / est.decode_step_s)
    assert r.attained_flops == pytest.approx(est.flops_per_decode_step / est.decode_step_s)
    assert r.arithmetic_intensity_flop_per_byte == pytest.approx(est.arithmetic_intensity_flop_per_byte)
    assert r.arithmetic_intensity_flop_per_byte is not None and r.attained_bandwidth_bytes_s is not None
    assert r.arithmetic_intensity_flop_per_byte < r.ridge_flop_per_byte
    headroom = r.attained_bandwidth_bytes_s / RTX4090.memory_bandwidth_bytes_s
    assert r.headroom_ratio == pytest.approx(headroom)
    assert g.bound.kind == BoundKind.MEMORY
    assert f"{1 - headroom:.0%} headroom" in g.bound.detail
    assert g.tokens_per_s == pytest.approx(est.decode_tokens_per_s)
    assert g.tokens_per_s_provenance == Provenance.MODELLED


def test_an_fp8_kv_cache_is_modelled_live_as_the_planner_models_it() -> None:
    """A long-context batch reads its KV cache every step: fp8 halves those bytes, so the live figure
    (and whether the workload fits) must follow the declared KV dtype, as `plan --kv-dtype` does."""
    spec = "llama-3-8b:fp16:batch=8:context=8192"
    fp16 = assess(config(spec), sample()).gpus[0]
    fp8 = assess(config(spec + ":kv=fp8"), sample()).gpus[0]
    model, quant = get_model("llama-3-8b"), get_quant("fp16")
    planned = estimate_throughput(model, quant, RTX4090, 8, 8192, kv_dtype="fp8")
    assert not inference_memory(model, quant, 8, 8192).fits(RTX4090)  # 16 GB of weights + 8.6 of fp16 KV
    assert inference_memory(model, quant, 8, 8192, kv_dtype="fp8").fits(RTX4090)
    assert fp16.tokens_per_s is None  # a workload that cannot load has no speed
    assert fp8.tokens_per_s == pytest.approx(planned.decode_tokens_per_s)


def test_engine_tokens_derive_the_roofline_position() -> None:
    box = assess(config(), sample(), engines=(engine(400.0, prompt=1000.0, running=8),))
    g = box.gpus[0]
    m = get_model("llama-3-8b")
    r = g.roofline
    assert r is not None
    assert (r.bandwidth_provenance, r.flops_provenance) == (Provenance.DERIVED, Provenance.DERIVED)
    # 400 tokens/s at batch 8 = 50 decode steps/s, each reading weights + 8 x 4096 tokens of KV
    assert r.attained_bandwidth_bytes_s == pytest.approx(
        50 * bytes_per_decode_step(m, get_quant("fp16"), 8, 4096)
    )
    assert r.attained_flops == pytest.approx(400 * flops_per_token(m, 4096) + 1000 * flops_per_token(m, 2048))
    assert g.tokens_per_s == 400.0
    assert g.tokens_per_s_provenance == Provenance.MEASURED
    assert box.tokens_per_s == 400.0
    assert box.tokens_per_joule == pytest.approx(400.0 / 300.0)


def test_gpm_figures_are_measured_and_beat_the_engine() -> None:
    gpm = GpmSample(interval_s=1.0, dram_bandwidth_util_ratio=0.3, tensor_util_ratio=0.8)
    s = sample(
        "h100-sxm", sm_clock_hz=H100.boost_clock_hz * 0.9, gpm=gpm, peak_memory_bandwidth_bytes_s=3.35e12
    )
    g = assess(config(), s, engines=(engine(2000.0),)).gpus[0]
    r = g.roofline
    assert r is not None
    assert (r.bandwidth_provenance, r.flops_provenance) == (Provenance.MEASURED, Provenance.MEASURED)
    assert r.attained_bandwidth_bytes_s == pytest.approx(0.3 * 3.35e12)
    assert r.current_peak_flops == pytest.approx(0.9 * H100.peak("fp16"))
    assert r.attained_flops == pytest.approx(0.8 * 0.9 * H100.peak("fp16"))
    assert g.bound.kind == BoundKind.COMPUTE


def test_memory_controller_busy_is_never_taken_for_bandwidth() -> None:
    g = assess(config(workload=None), sample(memory_controller_busy_ratio=0.9)).gpus[0]
    assert g.roofline is not None
    assert g.roofline.attained_bandwidth_bytes_s is None
    assert g.roofline.bandwidth_provenance == Provenance.UNKNOWN
    assert g.bound.kind == BoundKind.UNKNOWN


def test_a_thermally_throttled_decode_stays_memory_bound_with_the_throttle_as_a_warning() -> None:
    # issue 13: a memory-bound decode on a hot card is memory-bound; the lower SM clock is a warning, and
    # the clock it lost is measured against the clock the workload runs at (the rated boost), not NVML's max
    spec = get_gpu("rtx4090")
    s = sample(
        sm_clock_hz=0.5 * spec.boost_clock_hz,
        sm_clock_max_hz=1.2 * spec.boost_clock_hz,
        clock_event_reasons=ClockEventReason.HW_THERMAL | ClockEventReason.SW_THERMAL,
    )
    g = assess(config(), s).gpus[0]
    assert g.bound.kind == BoundKind.MEMORY
    assert g.bound.throttle_reasons == ("sw_thermal", "hw_thermal")
    assert g.bound.clock_loss_ratio == pytest.approx(0.5)
    assert "throttled by sw_thermal, hw_thermal" in g.bound.detail and "50% lost" in g.bound.detail


def test_a_hardware_slowdown_is_the_bound_even_of_memory_bound_work() -> None:
    spec = get_gpu("rtx4090")
    s = sample(sm_clock_hz=0.5 * spec.boost_clock_hz, clock_event_reasons=ClockEventReason.HW_SLOWDOWN)
    g = assess(config(), s).gpus[0]
    assert g.bound.kind == BoundKind.THROTTLED
    assert g.bound.throttle_reasons == ("hw_slowdown",)
    assert g.bound.clock_loss_ratio == pytest.approx(0.5)


def test_idle_card_is_idle_not_throttled() -> None:
    s = sample(sm_busy_ratio=0.0, clock_event_reasons=ClockEventReason.GPU_IDLE)
    g = assess(config(), s).gpus[0]
    assert g.bound.kind == BoundKind.IDLE
    assert g.tokens_per_s is None
    assert g.cost is not None and g.cost.live_usd_per_mtok is None


def test_busy_pcie_link_is_an_interconnect_bound() -> None:
    s = sample(pcie_rx_bytes_s=0.9 * RTX4090.pcie_bytes_s)
    g = assess(config(), s).gpus[0]
    assert g.bound.kind == BoundKind.INTERCONNECT
    assert "PCIe" in g.bound.detail


def test_cost_against_the_model_by_hand() -> None:
    box = assess(config(), sample(power_w=320.0), engines=(engine(500.0),))
    c = box.gpus[0].cost
    assert c is not None
    # the configured server capex ($3,000) is this box's price; the GPU's list price is not used
    assert c.live_usd_per_mtok == pytest.approx(
        cost.usd_per_mtok(PRICES, tokens_per_s=500.0, gpu_capex_usd=None, power_w=320.0)
    )
    modelled = estimate_throughput(
        get_model("llama-3-8b"), get_quant("fp16"), RTX4090, 8, 4096
    ).decode_tokens_per_s
    # the projection prices the modelled draw of the declared workload (as `plan cost` does), not TDP
    drawn = powered_throughput(get_model("llama-3-8b"), "fp16", RTX4090, 8, 4096).power.power_w
    assert drawn < RTX4090.tdp_w
    assert c.projected_usd_per_mtok == pytest.approx(
        cost.usd_per_mtok(PRICES, tokens_per_s=modelled, gpu_capex_usd=None, power_w=drawn)
    )
    assert c.cost_per_hour.capex_usd_per_h == pytest.approx(3000 / (3 * 8760))
    assert c.cost_per_hour.power_usd_per_h == pytest.approx(0.320 * 1.1 * 0.2)
    assert c.cost_per_hour.hosting_usd_per_h == pytest.approx(0.05)
    assert c.tokens_per_joule == pytest.approx(500.0 / 320.0)
    assert c.cloud_usd_per_mtok == pytest.approx(0.7 / (modelled * 3600) * 1e6)
    assert box.usd_per_mtok == pytest.approx(c.live_usd_per_mtok)


def test_energy_counter_beats_the_power_reading() -> None:
    cfg = config()
    a = Assessor(cfg)
    history = History()
    box = None
    for t, energy in ((0.0, 0.0), (1.0, 250.0), (2.0, 500.0)):
        snap = Snapshot(t, "sim", (sample(power_w=400.0, energy_j=energy),))
        history.append(snap)
        box = a.assess(snap, history, (engine(500.0),))
    assert box is not None and box.tokens_per_joule == pytest.approx(500.0 / 250.0)


def test_alternatives_price_the_same_workload() -> None:
    cfg = dataclasses.replace(
        config(), alternatives=("rtx5090", "h100-sxm"), gpu_prices={"h100-sxm": 30000.0}
    )
    c = assess(cfg, sample()).gpus[0].cost
    assert c is not None
    assert [a.gpu_id for a in c.alternatives] == ["rtx5090", "h100-sxm"]
    h100 = c.alternatives[1]
    est = estimate_throughput(get_model("llama-3-8b"), get_quant("fp16"), H100, 8, 4096)
    assert h100.tokens_per_s == pytest.approx(est.decode_tokens_per_s)
    assert h100.usd_per_mtok == pytest.approx(
        # priced at its own price, not this box's server capex
        cost.usd_per_mtok(
            dataclasses.replace(PRICES, server_capex_usd=None),
            tokens_per_s=est.decode_tokens_per_s,
            gpu_capex_usd=30000.0,
            power_w=powered_throughput(get_model("llama-3-8b"), "fp16", H100, 8, 4096).power.power_w,
        )
    )
    assert h100.fits


def test_default_alternatives_skip_the_card_itself_and_unpriced_cards() -> None:
    c = assess(config(), sample()).gpus[0].cost
    assert c is not None
    assert [a.gpu_id for a in c.alternatives] == ["rtx5090", "rtx3090"]
    need = inference_memory(get_model("llama-3-8b"), "fp16", 8, 4096)
    assert [a.fits for a in c.alternatives] == [need.fits(get_gpu("rtx5090")), need.fits(get_gpu("rtx3090"))]


def test_a_card_outside_the_catalog_and_a_lost_card() -> None:
    unknown = dataclasses.replace(sample(index=0), name="NVIDIA Future GPU 9000", catalog_id=None)
    lost = GpuSample(index=1, uuid="GPU-1", name=RTX4090.nvml_names[0], pci_bus_id="0:1", lost=True)
    box = assess(config(), unknown, lost)
    assert box.gpus[0].gpu_id is None and box.gpus[0].roofline is None
    assert "not in the catalog" in box.gpus[0].bound.detail
    assert box.gpus[1].bound.kind == BoundKind.UNKNOWN and box.gpus[1].bound.detail == "GPU lost"


def test_box_figures_and_the_power_cost_say_how_they_were_obtained() -> None:
    # no engine: the box's tokens/s (and its $/1M tokens, tokens/J) come from the model, not a meter
    modelled = assess(config(), sample(), sample(index=1))
    assert modelled.tokens_per_s is not None
    assert modelled.tokens_per_s_provenance == Provenance.MODELLED
    # an engine on every busy card: measured
    measured = assess(config(), sample(), engines=(engine(400.0),))
    assert measured.tokens_per_s_provenance == Provenance.MEASURED
    # no workload, no engine: nothing to label
    assert assess(config(None), sample()).tokens_per_s_provenance == Provenance.UNKNOWN
    # a card that reports no power is costed at its TDP, and says so
    no_power = assess(config(), sample(power_w=None)).gpus[0].cost
    assert no_power is not None and no_power.power_provenance == Provenance.MODELLED
    with_power = assess(config(), sample()).gpus[0].cost
    assert with_power is not None and with_power.power_provenance == Provenance.MEASURED


def test_a_declared_workload_that_does_not_fit_has_no_modelled_speed_or_price() -> None:
    # llama-3-70b at fp16 is ~140 GB of weights: it cannot load on a 24 GB card
    g = assess(config("llama-3-70b:fp16:batch=1:context=4096"), sample()).gpus[0]
    assert g.workload_fits is False
    assert g.modelled_tokens_per_s is None and g.tokens_per_s is None
    assert g.cost is not None and g.cost.projected_usd_per_mtok is None and g.cost.cloud_usd_per_mtok is None
    assert "does not fit in 24 GiB" in g.bound.detail
    assert all(a.tokens_per_s is None and a.usd_per_mtok is None and not a.fits for a in g.cost.alternatives)
    fitting = assess(config(), sample()).gpus[0]
    assert fitting.workload_fits is True and fitting.modelled_tokens_per_s is not None


def test_one_gpus_failing_assessment_leaves_the_others_their_figures(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A card whose readings the model cannot take (here: one that makes the roofline code raise) is
    unknown, with the reason, for that poll; the other cards keep every figure (issue 12)."""
    from gpuwatch.live import assessor as assessor_module

    real = assessor_module.roofline_position

    def breaks_on_gpu_1(sample: GpuSample, *args: Any, **kwargs: Any) -> Any:
        if sample.index == 1:
            raise ZeroDivisionError("a reading the model cannot take")
        return real(sample, *args, **kwargs)

    monkeypatch.setattr(assessor_module, "roofline_position", breaks_on_gpu_1)
    box = assess(config(), sample(index=0), sample(index=1), sample(index=2))
    ok, broken, other = box.gpus
    assert broken.bound.kind == BoundKind.UNKNOWN and "a reading the model cannot take" in broken.bound.detail
    assert broken.tokens_per_s is None and broken.cost is None and broken.roofline is None
    for g in (ok, other):
        assert g.roofline is not None and g.tokens_per_s is not None and g.cost is not None
    assert sum("GPU 1: assessment failed" in r.getMessage() for r in caplog.records) == 1


def test_advice_on_demand_is_the_every_poll_advice_computed_once_per_scraped_poll(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The exporter advises per scrape (Assessor(advise_every_poll=False)): an unscraped poll solves no
    cap, and the advice a scrape gets is exactly the one computed every poll, once per assessment."""
    from gpuwatch.live import assessor as assessor_module

    calls = []
    real = assessor_module.advise_gpu

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0].index)
        return real(*args, **kwargs)

    monkeypatch.setattr(assessor_module, "advise_gpu", counting)
    every, on_demand = Assessor(config()), Assessor(config(), advise_every_poll=False)
    history = History()
    boxes = []
    for k, watts in enumerate((300.0, 310.0, 280.0)):  # a memory-bound decode drawing less than its limit
        on_demand._asked = False  # each poll here as if the last was not scraped (see the end)
        gpus = tuple(
            sample(index=i, power_w=watts + i, power_limit_default_w=450.0, power_limit_min_w=150.0)
            for i in range(2)
        )
        snap = Snapshot(1000.0 + k, "sim", gpus)
        history.append(snap)
        expected = every.assess(snap, history)
        calls.clear()
        boxes.append(on_demand.assess(snap, history))
        assert calls == []  # nothing advised while nobody asks
        assert all(
            g.advised_power_limit_w is None and g.power_advice_kind == "unknown" for g in boxes[-1].gpus
        )
        advised = on_demand.with_advice(boxes[-1])
        assert advised.gpus == expected.gpus  # the same figures, to the last digit
        assert any(g.power_advice_kind == "lower_cap" for g in advised.gpus)
        assert on_demand.with_advice(boxes[-1]) is advised and calls == [0, 1]  # once per assessment
        # a scrape still holding the poll before the latest gets its advice; older ones are left as they were
        if k >= 1:
            assert on_demand.with_advice(boxes[k - 1]).gpus[0].advised_power_limit_w is not None
        if k >= 2:
            assert on_demand.with_advice(boxes[k - 2]) is boxes[k - 2]
    # asked for the last poll: the next one is advised as it is assessed, ready for the next scrape
    snap = dataclasses.replace(snap, timestamp_s=snap.timestamp_s + 1.0)
    history.append(snap)
    expected = every.assess(snap, history)
    calls.clear()
    ready = on_demand.assess(snap, history)
    assert calls == [0, 1] and ready.gpus == expected.gpus and on_demand.with_advice(ready) is ready
    # a face that advises every poll gets its assessment back as it is
    assert every.with_advice(expected) is expected


@pytest.mark.parametrize(("interval_s", "time_scale"), [(1.0, 1.0), (0.1, 1.0), (1.0, 0.25)])
def test_the_exporters_short_history_gives_the_same_figures_as_fifteen_minutes(
    interval_s: float, time_scale: float
) -> None:
    """The exporter keeps history_points() per GPU, not History's 900: nothing the assessment reads is
    older, so every figure (the power mean from the energy counter among them) is the same."""
    from gpuwatch.live.assessor import history_points

    capacity = history_points(interval_s, time_scale)
    assert capacity < 900
    cfg = dataclasses.replace(config(), interval_s=interval_s)
    long, short = Assessor(cfg), Assessor(cfg)
    long_history, short_history = History(), History(capacity)
    energy_j = 0.0
    for k in range(3 * capacity):
        watts = 250.0 + 60.0 * ((k * 7) % 5)  # a power that moves, so the window's mean matters
        energy_j += watts * interval_s * time_scale
        gpu = sample(power_w=watts, energy_j=energy_j, power_limit_default_w=450.0, power_limit_min_w=150.0)
        snap = Snapshot(1000.0 + k * interval_s * time_scale, "sim", (gpu,))
        long_history.append(snap)
        short_history.append(snap)
        assert short.assess(snap, short_history).gpus == long.assess(snap, long_history).gpus
