"""`gpuwatch doctor`: versions and the per-GPU support matrix a user pastes into a bug report."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from importlib import metadata
from typing import Any

import pynvml as N
from rich.console import Console
from rich.table import Table

from gpuwatch import __version__
from gpuwatch.commands import SUMMARIES
from gpuwatch.errors import UserError
from gpuwatch.telemetry.history import VIOLATION_KEYS
from gpuwatch.telemetry.nvml_reader import READING_NAMES, NvmlReader
from gpuwatch.telemetry.nvml_unavailable import unavailable_message
from gpuwatch.telemetry.sample import GpuSample, Unavailable
from gpuwatch.telemetry.simspec import SimSpec

REASON_TEXT = {
    Unavailable.NOT_SUPPORTED: "not supported",
    Unavailable.NO_PERMISSION: "no permission",
    Unavailable.FUNCTION_NOT_FOUND: "function not found",
    Unavailable.GPU_LOST: "GPU lost",
    Unavailable.ERROR: "error",
}
#: matrix rows: every reading, violation counters one by one (last_xid is an event, not a capability)
MATRIX_ROWS: tuple[str, ...] = tuple(
    row
    for name in READING_NAMES
    if name != "last_xid"
    for row in (
        [f"clock_event_seconds_total.{k}" for k in VIOLATION_KEYS]
        if name == "clock_event_seconds_total"
        else [name]
    )
)
#: seconds between the two reads: GPM differences two samples, which must be >= 0.1 s apart (margin kept)
GPM_WAIT_S = 0.3


def _scenario_epilog() -> str:
    try:
        from gpuwatch.telemetry.simulated import SCENARIOS
    except ImportError:
        return ""
    lines = [f"  {name:<16} {text}" for name, text in SCENARIOS.items()]
    return "simulated scenarios (--scenario):\n" + "\n".join(lines)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "doctor",
        help=SUMMARIES["doctor"],
        description="Print driver, NVML and CUDA versions and, per GPU, which readings NVML gives "
        "(✓) or why not. Paste the output into bug reports.",
        epilog=_scenario_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # SUPPRESS: `gpuwatch --sim X doctor` (top-level option) must not be overwritten by a default
    p.add_argument(
        "--sim",
        metavar="DEVICES",
        default=argparse.SUPPRESS,
        help="check the simulated NVML instead, e.g. 2xrtx4090,h100-sxm",
    )
    p.add_argument(
        "--scenario", metavar="NAME", default=argparse.SUPPRESS, help="simulated workload scenario"
    )
    p.add_argument("--seed", type=int, default=argparse.SUPPRESS, help="seed of the simulation")
    p.add_argument(
        "--driver",
        default=argparse.SUPPRESS,
        choices=("r470", "r535", "r580", "r590", "r595", "r610"),
        help="simulated driver generation (which NVML symbols exist); default: the driver a calibrated "
        "card was captured on, else r580",
    )
    p.add_argument(
        "--faults",
        metavar="SCHEDULE",
        default=argparse.SUPPRESS,
        help="simulated fault schedule, e.g. notsup:0:fan",
    )
    p.set_defaults(run=run)


def _value(gpu: GpuSample, row: str) -> Any:
    if row.startswith("clock_event_seconds_total."):
        return gpu.clock_event_seconds_total.get(row.split(".", 1)[1])
    return getattr(gpu, row)


def _cell(reader: NvmlReader, gpu: GpuSample, row: str) -> str:
    reason = gpu.unavailable.get(row)
    if reason is not None:
        return REASON_TEXT[reason]
    if _value(gpu, row) is None:
        return "—"
    via = reader.devices[gpu.index].fallbacks.get(row)
    return f"✓ via {via}" if via else "✓"


def _header(console: Console, reader: NvmlReader | None, source: str, error: str | None) -> None:
    try:
        pynvml_version = metadata.version("nvidia-ml-py")
    except metadata.PackageNotFoundError:
        pynvml_version = "not installed"
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("gpuwatch", __version__)
    table.add_row("nvidia-ml-py", pynvml_version)
    table.add_row("source", source)
    if reader is not None:
        cuda = reader.cuda_driver_version
        table.add_row("driver", reader.driver_version or "?")
        table.add_row("NVML", reader.nvml_version or "?")
        table.add_row("CUDA driver API", f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else "?")
        table.add_row("GPUs", str(len(reader.devices)))
    if error:
        table.add_row("NVML", f"[red]{error}[/red]")
    console.print(table)


def render(console: Console, reader: NvmlReader, gpus: Sequence[GpuSample]) -> None:
    """The matrix: readings as rows, GPUs as columns; then bandwidth provenance and fallbacks."""
    matrix = Table(title="support matrix", title_justify="left")
    matrix.add_column("reading", no_wrap=True)
    for gpu in gpus:
        matrix.add_column(f"GPU {gpu.index}\n{gpu.name.removeprefix('NVIDIA ')}", no_wrap=True)
    for row in MATRIX_ROWS:
        matrix.add_row(row, *(_cell(reader, gpu, row) for gpu in gpus))
    console.print(matrix)
    for gpu in gpus:
        dev = reader.devices[gpu.index]
        if gpu.lost:
            console.print(f"GPU {gpu.index} ({gpu.uuid or '?'}): [red]lost[/red] (GPU_IS_LOST)")
            continue
        peak = gpu.peak_memory_bandwidth_bytes_s
        where = (
            "catalog"
            if dev.fallbacks.get("peak_memory_bandwidth_bytes_s")
            else "2 × max mem clock × bus width"
        )
        line = f"GPU {gpu.index} {gpu.pci_bus_id} {gpu.uuid}: peak memory bandwidth "
        line += f"{peak / 1e9:.0f} GB/s ({where})" if peak else "unknown"
        catalog = dev.catalog.id if dev.catalog is not None else "not in catalog"
        console.print(f"{line}; catalog entry: {catalog}")
        if dev.bandwidth_note:
            console.print(f"  [yellow]bandwidth mismatch: {dev.bandwidth_note}[/yellow]")
        missing = sorted(k for k, why in dev.unsupported.items() if why is Unavailable.FUNCTION_NOT_FOUND)
        if missing:
            console.print(f"  driver lacks: {', '.join(missing)}")


def run(args: argparse.Namespace) -> int:
    console = Console(width=None if Console().is_terminal else 200)
    sim = getattr(args, "sim", None)
    if getattr(args, "replay", None):
        raise UserError(
            "doctor probes the NVML driver (or --sim); a recording has no support matrix: drop --replay"
        )
    simulated: Any = None
    if sim is not None:
        spec = SimSpec(
            devices=sim,
            scenario=getattr(args, "scenario", None),
            seed=getattr(args, "seed", 0) or 0,
            faults=getattr(args, "faults", None),
            driver=getattr(args, "driver", None),
        )
        simulated = spec.install()
        source = f"simulated NVML ({sim}, driver profile {simulated.driver.name})"
    else:
        source = "NVML (real driver)"
    reader = NvmlReader(
        source_label="nvml" if sim is None else "sim", clock=simulated.now_s if simulated else None
    )
    try:
        try:
            reader.open()
        except N.NVMLError as exc:
            _header(console, None, source, unavailable_message(exc))
            return 1
        reader.read_all()  # first GPM sample of each pair
        time.sleep(GPM_WAIT_S)
        snap = reader.read_all()
        _header(console, reader, source, None)
        render(console, reader, snap.gpus)
        return 0
    finally:
        reader.close()
        if simulated is not None:
            from gpuwatch.telemetry.simulated import uninstall

            uninstall()
