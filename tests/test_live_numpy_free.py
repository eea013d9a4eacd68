"""The live path runs without numpy, and its scalar figures are the array path's, bit for bit.

numpy costs the exporter and the TUI ~15 MiB and ~150 ms at start; the planner's sweeps keep it
(gpuwatch/model/elementwise.py picks plain floats or numpy per call). Each check runs in a fresh
interpreter, since this test process has long imported numpy for the planner tests.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import gpuwatch
from gpuwatch.live.config import parse_workload
from gpuwatch.model import cost
from gpuwatch.model.catalog import get_gpu
from gpuwatch.model.cost import OwnershipCost
from gpuwatch.model.errors import ModelInputError
from gpuwatch.model.llm import get_model
from gpuwatch.model.memory import inference_memory
from gpuwatch.model.roofline import place_workload
from gpuwatch.model.throughput import estimate_throughput

ROOT = Path(gpuwatch.__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def _fresh(code: str, *argv: str) -> dict[str, object]:
    """Run ``code`` in a new interpreter; it prints one JSON object as its last line."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_importing_the_live_path_and_the_exporter_leaves_numpy_out() -> None:
    out = _fresh(
        """
        import importlib, json, pkgutil, sys
        import gpuwatch.live.session, gpuwatch.live.assessor, gpuwatch.exporter.collector
        import gpuwatch.commands.exporter, gpuwatch.options
        import gpuwatch.telemetry as telemetry
        names = [m.name for m in pkgutil.walk_packages(telemetry.__path__, "gpuwatch.telemetry.")]
        for name in names:
            importlib.import_module(name)
        print(json.dumps({"telemetry_modules": len(names), "numpy": "numpy" in sys.modules}))
        """
    )
    assert out["telemetry_modules"] >= 20  # the simulator, replay, engine scrapes... all imported
    assert out["numpy"] is False


SESSION = """
    import json, sys
    from gpuwatch.live.config import LiveConfig, parse_workload
    from gpuwatch.live.session import LiveSession
    from gpuwatch.telemetry.poller import NvmlPoller, SimSpec
    from gpuwatch.telemetry.simulated import install, uninstall

    devices, scenario, workload = sys.argv[1:4]
    sim = install(devices, scenario=scenario, manual_clock=True, seed=1)
    poller = NvmlPoller(
        interval_s=1.0, clock=sim.now_s, sim=SimSpec(devices, scenario), on_stop=uninstall, xid_events=False
    )
    config = LiveConfig(workload=parse_workload(workload) if workload != "-" else None)
    session = LiveSession(poller, config)
    poller.start(background=False)
    polls = []
    for _ in range(6):
        sim.advance(1.0)
        poller.poll_once()
        _, a = session.latest()
        polls.append(a)
    poller.stop()
    g = polls[-1].gpus[0]
    print(json.dumps({
        "gpus": len(polls[-1].gpus),
        "bound": g.bound.kind.value,
        "intensity": g.roofline.arithmetic_intensity_flop_per_byte if g.roofline else None,
        "tokens_per_s": g.tokens_per_s,
        "modelled_tokens_per_s": g.modelled_tokens_per_s,
        "usd_per_mtok": g.cost.projected_usd_per_mtok if g.cost else None,
        "fits": g.workload_fits,
        "advice": g.power_advice_kind,
        "advised_w": g.advised_power_limit_w,
        "numpy": "numpy" in sys.modules,
    }))
"""


def _session(devices: str, scenario: str, workload: str) -> dict[str, object]:
    return _fresh(SESSION, devices, scenario, workload)


def test_a_dense_workload_on_8_simulated_4090s_is_assessed_without_numpy() -> None:
    out = _session("8xrtx4090", "decode-batched", "llama-3-8b:fp16:batch=8")
    assert out["numpy"] is False
    assert out["gpus"] == 8 and out["fits"] is True and out["bound"] == "memory"
    # bit for bit what the model's numpy (array) path gives for the declared workload at spec clocks
    w = parse_workload("llama-3-8b:fp16:batch=8")
    est = estimate_throughput(
        get_model(w.model_id),
        w.quant_id,
        get_gpu("rtx4090"),
        np.array([w.batch]),
        np.array([w.context_tokens]),
    )
    assert out["modelled_tokens_per_s"] == _one(est.decode_tokens_per_s)
    assert isinstance(out["usd_per_mtok"], float) and out["usd_per_mtok"] > 0
    assert out["advice"] in ("lower_cap", "keep_default") and out["advised_w"] is not None


def test_a_moe_workload_and_idle_cards_without_one_are_assessed_without_numpy() -> None:
    for workload in ("qwen3-30b-a3b:int4-awq:batch=4:context=4096", "gpt-oss-20b:mxfp4:batch=8"):
        moe = _session("4xrtx4090", "decode-batched", workload)
        assert moe["numpy"] is False and moe["fits"] is True, workload
        assert isinstance(moe["tokens_per_s"], float) and moe["tokens_per_s"] > 0
    too_big = _session("2xrtx4090", "decode-batched", "mixtral-8x7b:fp16:batch=4")
    assert too_big["numpy"] is False and too_big["fits"] is False and too_big["modelled_tokens_per_s"] is None
    idle = _session("8xrtx4090", "idle", "-")
    assert idle["numpy"] is False and idle["bound"] == "idle" and idle["advice"] == "idle"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _process_tree(pid: int) -> list[int]:
    pids, i = [pid], 0
    while i < len(pids):
        for task in Path(f"/proc/{pids[i]}/task").iterdir():
            children = (task / "children").read_text().split()
            pids.extend(int(c) for c in children)
        i += 1
    return pids


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/PID/maps (Linux)")
def test_the_exporter_on_sim_with_a_workload_never_maps_numpy() -> None:
    port = _free_port()
    argv = [
        sys.executable,
        "-m",
        "gpuwatch",
        "exporter",
        "--sim",
        "8xrtx4090",
        "--listen",
        f"127.0.0.1:{port}",
    ]
    argv += ["--workload", "llama-3-8b:fp16:batch=8", "--interval", "0.5"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(), cwd=ROOT)
    try:
        deadline, body = time.monotonic() + 60, b""
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/metrics")
                body = conn.getresponse().read()
                conn.close()
                if body.count(b"gpuwatch_modelled_tokens_per_second{") == 8:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        assert body.count(b"gpuwatch_modelled_tokens_per_second{") == 8, body[-2000:]
        tree = _process_tree(proc.pid)
        mapped = {pid: Path(f"/proc/{pid}/maps").read_text() for pid in tree}
        assert all("_multiarray_umath" not in maps for maps in mapped.values()), sorted(mapped)
        assert all("python" in maps for maps in mapped.values())  # the maps were read, not empty
    finally:
        proc.kill()
        proc.wait(timeout=10)


# --- one implementation, two paths: scalars through math, arrays through numpy, the same figures ---------
MODELS = ("llama-3-8b", "mixtral-8x7b", "gpt-oss-20b", "gemma-3-4b", "deepseek-v3", "qwen3-30b-a3b")
GPUS = ("rtx4090", "h100-sxm", "a100-80gb-sxm")
QUANTS = ("fp16", "int4-awq", "fp8", "q4_K_M")


def _one(value: object) -> float:
    arr = np.asarray(value)
    assert arr.shape == (1,), arr.shape
    return float(arr[0])


@pytest.mark.parametrize("model_id", MODELS)
def test_scalar_estimates_are_bit_for_bit_the_array_ones(model_id: str) -> None:
    model = get_model(model_id)
    compared = 0
    for gpu_id, quant, (batch, context), (parallel, count) in itertools.product(
        GPUS, QUANTS, [(1, 2048), (8, 4096), (48, 7000)], [("tp", 1), ("tp", 4), ("pp", 2)]
    ):
        gpu = get_gpu(gpu_id)
        try:
            scalar = estimate_throughput(model, quant, gpu, batch, context, count=count, parallel=parallel)
        except ModelInputError:
            with pytest.raises(ModelInputError):  # the array path refuses the same input
                estimate_throughput(
                    model, quant, gpu, np.array([batch]), np.array([context]), count=count, parallel=parallel
                )
            continue
        array = estimate_throughput(
            model, quant, gpu, np.array([batch]), np.array([float(context)]), count=count, parallel=parallel
        )
        for field in (
            "decode_step_s",
            "decode_tokens_per_s",
            "prefill_tokens_per_s",
            "time_to_first_token_s",
            "flops_per_decode_step",
            "bytes_per_decode_step",
            "comm_s_per_decode_step",
            "arithmetic_intensity_flop_per_byte",
        ):
            value = getattr(scalar, field)
            assert type(value) is float, field
            assert value == _one(getattr(array, field)), (gpu_id, quant, batch, context, parallel, field)
        assert scalar.bound == str(np.asarray(array.bound)[0])
        assert scalar.prefill_bound == str(np.asarray(array.prefill_bound)[0])
        compared += 1
    assert compared > 50


@pytest.mark.parametrize("model_id", MODELS)
def test_scalar_memory_fit_and_gpus_needed_are_the_array_ones(model_id: str) -> None:
    model = get_model(model_id)
    for quant, batch, context in itertools.product(QUANTS, (1, 16), (1024, 8000)):
        scalar = inference_memory(model, quant, batch, context)
        array = inference_memory(model, quant, np.array([batch]), np.array([float(context)]))
        assert type(scalar.total_bytes) is float and scalar.total_bytes == _one(array.total_bytes)
        for gpu_id in GPUS:
            gpu = get_gpu(gpu_id)
            assert scalar.fits(gpu) is bool(np.asarray(array.fits(gpu))[0])
            needed = scalar.gpus_needed(gpu)
            assert type(needed) is int and needed == int(np.asarray(array.gpus_needed(gpu))[0])
        assert scalar.as_dict()["breakdown"] == {k: v[0] for k, v in array.as_dict()["breakdown"].items()}


def test_scalar_prices_are_the_array_ones_and_refuse_the_same_bad_input() -> None:
    prices = OwnershipCost(server_capex_usd=4000.0, hosting_usd_per_h=0.1)
    for power_w, tokens_per_s, cloud in [(300.0, 1234.5, 2.0), (450.0, 10.0, 0.01), (0.0, 5e4, 0.69)]:
        s = cost.usd_per_mtok(prices, tokens_per_s=tokens_per_s, gpu_capex_usd=None, power_w=power_w)
        a = cost.usd_per_mtok(
            prices, tokens_per_s=np.array([tokens_per_s]), gpu_capex_usd=None, power_w=power_w
        )
        assert type(s) is float and s == _one(a)
        sb = cost.buy_vs_rent(
            prices, cloud_usd_per_h=cloud, gpu_capex_usd=None, power_w=power_w, idle_power_w=40.0
        )
        ab = cost.buy_vs_rent(
            prices, cloud_usd_per_h=np.array([cloud]), gpu_capex_usd=None, power_w=power_w, idle_power_w=40.0
        )
        assert sb.breakeven_utilisation_ratio == _one(ab.breakeven_utilisation_ratio)
        assert sb.breakeven_months == _one(ab.breakeven_months)
        assert sb.owning_wins is bool(np.asarray(ab.owning_wins)[0])
    never = cost.buy_vs_rent(prices, cloud_usd_per_h=0.01, gpu_capex_usd=None, power_w=300.0)
    assert never.breakeven_months == float("inf") and never.breakeven_utilisation_ratio == float("inf")
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ModelInputError, match="tokens_per_s"):
            cost.usd_per_mtok(prices, tokens_per_s=bad, gpu_capex_usd=None, power_w=300.0)


def test_a_ceiling_at_zero_clock_gives_inf_and_zero_not_a_division_error() -> None:
    """A card reporting 0 MHz derates its peak to 0: the step takes forever (numpy's answer), never a
    ZeroDivisionError that would blank the card's assessment."""
    gpu = get_gpu("rtx4090")
    placed = place_workload(gpu, "fp16", flops=1e12, dram_bytes=1e9, peak_flops_override=0.0)
    assert placed.compute_s == float("inf") and placed.step_s == float("inf") and placed.bound == "compute"
    with np.errstate(divide="ignore"):
        array = place_workload(gpu, "fp16", flops=np.array([1e12]), dram_bytes=1e9, peak_flops_override=0.0)
    assert _one(array.compute_s) == placed.compute_s and _one(array.step_s) == placed.step_s
    assert placed.ridge_flop_per_byte == 0.0
