"""Exporter benchmark: `gpuwatch exporter` against nvitop-exporter on the same simulated cards.

Both exporters run at the same time, over the same simulated box (same cards, scenario and seed), at a
1 s poll. Scrape latency is sampled alternately from the two so that machine noise lands on both;
sustained throughput alternates short windows of concurrent scrapers; idle CPU is one window measured
on both processes at once. gpuwatch's figures include its NVML child process.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from benchmarks.harness import (
    Child,
    Row,
    cpu_while_idle,
    free_port,
    interleaved_latencies,
    on_sim,
    percentile,
    python,
    rss_bytes,
    running,
    scrape,
    short_gpu_name,
    sim_nvml_name,
    sustained_rate,
    wait_until,
)

SECTION = "exporter"
COUNTERPART = "nvitop-exporter 1.7.2"
CARD = "rtx4090"
#: seconds an exporter may take to list every GPU (64 simulated cards and a spawned NVML child)
START_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class Sizes:
    gpu_counts: tuple[int, ...]
    latency_scrapes: int  # sequential scrapes of each exporter per size
    load_window_s: float  # one throughput window; each exporter gets two
    idle_window_s: float  # the concurrent CPU window


FULL = Sizes(gpu_counts=(1, 8, 64), latency_scrapes=200, load_window_s=3.0, idle_window_s=30.0)
TINY = Sizes(gpu_counts=(1, 8), latency_scrapes=20, load_window_s=0.5, idle_window_s=3.0)


def gpus_in_metrics(body: bytes, family: str, index_label: str, name_label: str) -> dict[str, str]:
    """GPU index -> device name, from every sample of ``family`` carrying both labels."""
    found: dict[str, str] = {}
    for fam in text_string_to_metric_families(body.decode()):
        if fam.name != family:
            continue
        for sample in fam.samples:
            if index_label in sample.labels and name_label in sample.labels:
                found[sample.labels[index_label]] = sample.labels[name_label]
    return found


def lists_gpus(port: int, family: str, index_label: str, name_label: str, n: int, name: str) -> str | None:
    """None when /metrics lists exactly ``n`` GPUs, all named ``name``; else what it lists instead."""
    status, body = scrape(port)
    if status != 200:
        return f"HTTP {status}"
    gpus = gpus_in_metrics(body, family, index_label, name_label)
    if len(gpus) == n and set(gpus.values()) == {name}:
        return None
    return f"{family} lists {len(gpus)} GPU(s) named {sorted(set(gpus.values()))}, expected {n}x {name!r}"


def check_nvitop_once(devices: str, n: int) -> None:
    """`nvitop --once` on the simulated cards must print every card: proof the fake sits beneath it."""
    done = subprocess.run(
        on_sim(devices, "nvitop", "--once"),
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "160", "LINES": "400", "PATH": "/usr/bin:/bin"},
    )
    short = short_gpu_name(sim_nvml_name(devices))
    rows = [line for line in done.stdout.splitlines() if short in line and "GPU" not in line]
    if done.returncode != 0 or len(rows) < n:
        raise RuntimeError(
            f"nvitop --once on {devices} shows {len(rows)} card(s) named {short!r}, expected {n} "
            f"(exit {done.returncode}): {(done.stderr or done.stdout)[-500:]}"
        )


def _gpuwatch_cmd(devices: str, port: int) -> list[str]:
    return [
        python(),
        "-m",
        "gpuwatch",
        "exporter",
        "--sim",
        devices,
        "--listen",
        f"127.0.0.1:{port}",
        "--interval",
        "1",
    ]


def _nvitop_cmd(devices: str, port: int) -> list[str]:
    return on_sim(
        devices, "nvitop-exporter", "--bind-address", "127.0.0.1", "--port", str(port), "--interval", "1"
    )


def _ready(child: Child, check: Callable[[], str | None]) -> None:
    wait_until(check, child, START_TIMEOUT_S)


def measure_size(n: int, sizes: Sizes, with_nvitop: bool) -> list[Row]:
    devices = f"{n}x{CARD}"
    name = sim_nvml_name(devices)
    gw_port = free_port()
    with running(_gpuwatch_cmd(devices, gw_port)) as gw:
        if with_nvitop:
            nv_port = free_port()
            check_nvitop_once(devices, n)
            with running(_nvitop_cmd(devices, nv_port)) as nv:
                _ready(
                    nv,
                    lambda: lists_gpus(nv_port, "gpu_utilization_Percentage", "index", "devicename", n, name),
                )
                _ready(gw, lambda: lists_gpus(gw_port, "gpuwatch_gpu_info", "gpu", "name", n, name))
                return _measure(n, sizes, gw, gw_port, (nv, nv_port))
        _ready(gw, lambda: lists_gpus(gw_port, "gpuwatch_gpu_info", "gpu", "name", n, name))
        return _measure(n, sizes, gw, gw_port, None)


def _measure(n: int, sizes: Sizes, gw: Child, gw_port: int, nv: tuple[Child, int] | None) -> list[Row]:
    ports = [gw_port] if nv is None else [gw_port, nv[1]]
    interleaved_latencies(ports, 3)  # warm both: first scrapes build caches, open sockets
    lat = interleaved_latencies(ports, sizes.latency_scrapes)
    counts = [0] * len(ports)
    secs = [0.0] * len(ports)
    for _ in range(2):
        for k, port in enumerate(ports):
            done, elapsed = sustained_rate(port, sizes.load_window_s)
            counts[k] += done
            secs[k] += elapsed
    rate = [c / s for c, s in zip(counts, secs, strict=True)]
    time.sleep(1.0)  # let the last responses drain before the idle window
    pids = [gw.pid] if nv is None else [gw.pid, nv[0].pid]
    cpu = cpu_while_idle(pids, sizes.idle_window_s)
    rss = [rss_bytes(p) / 2**20 for p in pids]

    def theirs(values: list[float]) -> float | None:
        return values[1] if nv is not None else None

    med = [statistics.median(v) * 1e3 for v in lat]
    p99 = [percentile(v, 0.99) * 1e3 for v in lat]
    gpus = f"{n} GPU{'s' if n > 1 else ''}"
    return [
        Row(
            SECTION,
            f"scrape latency, median ({gpus})",
            med[0],
            theirs(med),
            "ms",
            COUNTERPART,
            target="faster scrape",
        ),
        Row(SECTION, f"scrape latency, p99 ({gpus})", p99[0], theirs(p99), "ms", COUNTERPART),
        Row(
            SECTION,
            f"scrapes/s, 4 concurrent ({gpus})",
            rate[0],
            theirs(rate),
            "scrapes/s",
            COUNTERPART,
            lower_is_better=False,
        ),
        Row(
            SECTION,
            f"CPU at 1 s poll, unscraped ({gpus})",
            cpu[0],
            theirs(cpu),
            "CPU s/min",
            COUNTERPART,
            target="less CPU",
        ),
        Row(
            SECTION,
            f"resident memory, NVML child included ({gpus})",
            rss[0],
            theirs(rss),
            "MiB",
            COUNTERPART,
            # issue 11: at most 1.5x nvitop-exporter's at 8 GPUs (the crash-isolating child kept light)
            target="<= 1.5x counterpart" if n == 8 and nv is not None else "",
            target_met=(rss[0] <= 1.5 * rss[1]) if n == 8 and nv is not None else None,
        ),
    ]


def run(tiny: bool, with_nvitop: bool) -> list[Row]:
    sizes = TINY if tiny else FULL
    rows: list[Row] = []
    for n in sizes.gpu_counts:
        rows += measure_size(n, sizes, with_nvitop)
    return rows


# -- hostile clients -------------------------------------------------------------------------------

SLOWLORIS_SECTION = "slowloris"


@dataclass(frozen=True)
class Attack:
    slow_sockets: int  # send a request line, then one header line every ``trickle_s``, never the end
    silent_sockets: int  # connect and say nothing
    trickle_s: float
    window_s: float  # how long the attack (and the 1/s scrape beside it) lasts
    scrape_timeout_s: float = 10.0


FULL_ATTACK = Attack(slow_sockets=200, silent_sockets=64, trickle_s=5.0, window_s=60.0)
TINY_ATTACK = Attack(slow_sockets=40, silent_sockets=16, trickle_s=1.0, window_s=4.0)


async def _hold(port: int, attack: Attack, stop_at: float, slow: bool) -> None:
    """One hostile socket for the whole window: reconnects whenever the server drops it."""
    import asyncio

    loop = asyncio.get_running_loop()
    while loop.time() < stop_at:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.2)
            continue
        try:
            if slow:
                writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            while (left := stop_at - loop.time()) > 0:
                try:
                    if await asyncio.wait_for(reader.read(4096), min(attack.trickle_s, left)) == b"":
                        break  # the server hung up: reconnect, as an attacker would
                except TimeoutError:
                    if slow:
                        writer.write(b"X-Trickle: 1\r\n")
                        await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


def _attack(port: int, attack: Attack, stop_at_monotonic: float) -> None:
    """Run every hostile socket in one event loop on this thread until the window ends (bounded)."""
    import asyncio

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + (stop_at_monotonic - time.monotonic())
        tasks = [_hold(port, attack, stop_at, slow=True) for _ in range(attack.slow_sockets)]
        tasks += [_hold(port, attack, stop_at, slow=False) for _ in range(attack.silent_sockets)]
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), attack.window_s + 30)

    asyncio.run(main())


def under_attack(port: int, attack: Attack) -> tuple[float, float]:
    """(share of 1/s scrapes answered 200, p99 seconds) while ``attack`` runs against ``port``.

    A scrape that times out counts as unanswered, with the timeout as its latency.
    """
    import http.client
    import threading

    stop_at = time.monotonic() + attack.window_s
    attacker = threading.Thread(target=_attack, args=(port, attack, stop_at), daemon=True)
    attacker.start()
    time.sleep(min(1.0, attack.window_s / 4))  # let the sockets open before the first scrape
    latencies: list[float] = []
    answered = 0
    while time.monotonic() < stop_at:
        t0 = time.perf_counter()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=attack.scrape_timeout_s)
            try:
                conn.request("GET", "/metrics")
                resp = conn.getresponse()
                resp.read()
                answered += resp.status == 200
            finally:
                conn.close()
        except (OSError, http.client.HTTPException):
            pass
        elapsed = time.perf_counter() - t0
        latencies.append(elapsed)
        time.sleep(max(0.0, 1.0 - elapsed))
    attacker.join(timeout=attack.window_s + 40)
    return answered / max(1, len(latencies)), percentile(latencies, 0.99)


def slowloris_run(tiny: bool, with_nvitop: bool) -> list[Row]:
    """One exporter at a time under the same attack, while a client scrapes it every second."""
    attack = TINY_ATTACK if tiny else FULL_ATTACK
    devices = f"8x{CARD}"
    n, name = 8, sim_nvml_name(devices)
    results: dict[str, tuple[float, float]] = {}
    gw_port = free_port()
    with running(_gpuwatch_cmd(devices, gw_port)) as gw:
        _ready(gw, lambda: lists_gpus(gw_port, "gpuwatch_gpu_info", "gpu", "name", n, name))
        results["gpuwatch"] = under_attack(gw_port, attack)
    if with_nvitop:
        nv_port = free_port()
        with running(_nvitop_cmd(devices, nv_port)) as nv:
            _ready(
                nv, lambda: lists_gpus(nv_port, "gpu_utilization_Percentage", "index", "devicename", n, name)
            )
            results["nvitop"] = under_attack(nv_port, attack)
    what = f"{attack.slow_sockets} slow + {attack.silent_sockets} silent sockets, {attack.window_s:.0f} s"
    theirs = results.get("nvitop")
    return [
        Row(
            SLOWLORIS_SECTION,
            f"scrapes answered ({what})",
            results["gpuwatch"][0] * 100,
            theirs[0] * 100 if theirs else None,
            "%",
            COUNTERPART,
            lower_is_better=False,
            target="every scrape answers",
            target_met=results["gpuwatch"][0] == 1.0,
        ),
        Row(
            SLOWLORIS_SECTION,
            f"scrape p99 under attack ({what})",
            results["gpuwatch"][1] * 1e3,
            theirs[1] * 1e3 if theirs else None,
            "ms",
            COUNTERPART,
            target="p99 < 1 s",
            target_met=results["gpuwatch"][1] < 1.0,
        ),
    ]
