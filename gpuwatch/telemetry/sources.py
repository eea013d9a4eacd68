"""open_source: the one place that decides where snapshots come from (replay, simulator, real NVML)."""

from __future__ import annotations

from collections import Counter

from gpuwatch.telemetry.nvml_unavailable import NvmlUnavailable, unavailable_message
from gpuwatch.telemetry.simspec import SimSpec
from gpuwatch.telemetry.source import SnapshotSource

__all__ = ["NvmlUnavailable", "describe_sim", "open_source"]


def describe_sim(devices: str, scenario: str | None) -> str:
    """E.g. "simulated NVML: 2x rtx4090, 1x h100-sxm (scenario decode)"; UserError on a bad spec."""
    from gpuwatch.telemetry.simulated import parse_devices

    counts = Counter(parse_devices(devices))
    cards = ", ".join(f"{n}x {dev}" for dev, n in counts.items())
    return f"simulated NVML: {cards} (scenario {scenario or 'decode'})"


_CHECK_CODE = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from gpuwatch.telemetry.sources import _check_sim_here; _check_sim_here()"
)


def _check_sim_here() -> None:
    """The throwaway interpreter's side of :func:`_check_sim`: spec and the parent's catalog (pickled) on
    stdin, one line out."""
    import pickle
    import sys

    from gpuwatch.errors import UserError
    from gpuwatch.model.catalog import adopt_catalog_state

    spec, catalog = pickle.load(sys.stdin.buffer)
    adopt_catalog_state(catalog)  # the cards a --gpus-file added are known here too, as in the NVML child
    try:
        spec.validate()
        print("ok " + describe_sim(spec.devices, spec.scenario))
    except UserError as exc:
        print("error " + str(exc).replace("\n", " "))


def _check_sim(spec: SimSpec) -> str:
    """describe_sim + SimSpec.validate in a throwaway interpreter, so that a supervising parent never
    loads the simulator and pynvml (~2.5 MiB resident kept for the exporter's life) only to check its
    options; UserError (one line) on a bad spec, as in-process. Done here if that interpreter fails.
    """
    import os
    import pickle
    import subprocess
    import sys

    import gpuwatch
    from gpuwatch.errors import UserError
    from gpuwatch.model.catalog import catalog_state

    root = os.path.dirname(os.path.dirname(os.path.abspath(gpuwatch.__file__)))
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHECK_CODE, root],
            input=pickle.dumps((spec, catalog_state())),
            capture_output=True,
            timeout=60,
            check=False,
        )
        kind, _, line = done.stdout.decode().strip().partition(" ")
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
        kind, line = "", ""
    if kind == "ok" and done.returncode == 0:
        return line
    if kind == "error":
        raise UserError(line)
    spec.validate()  # the interpreter could not answer: check here (a bad spec still fails in one line)
    return describe_sim(spec.devices, spec.scenario)


def _require_driver_library() -> None:
    """NvmlUnavailable (one line) when libnvidia-ml cannot even be found; nothing in it is called."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return  # pynvml's Windows search path: leave it to the child
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        import pynvml as N

        raise NvmlUnavailable(unavailable_message(N.NVMLError(N.NVML_ERROR_LIBRARY_NOT_FOUND))) from None


def open_source(
    *,
    sim: str | None,
    scenario: str | None,
    time_scale: float,
    seed: int,
    replay: str | None,
    replay_speed: float,
    interval_s: float | None,
    isolate: bool = False,
    faults: str | None = None,
    history_capacity: int | None = None,
) -> SnapshotSource:
    """A source, not yet started.

    ``isolate=True`` (exporter, TUI, record): NVML runs in a supervised child process, so a crash or
    hang in the driver is a state (``source.state()``) and never touches this process; start() returns
    at once. In-process, real NVML is opened now (the GPUs listed, nothing polled) so a missing driver
    fails here, in one line.
    ``history_capacity``: points of History kept per GPU (None: History's default).
    """
    interval = 1.0 if interval_s is None else interval_s
    if replay:
        from gpuwatch.telemetry.recording import ReplaySource

        return ReplaySource(replay, speed=replay_speed)
    if sim is not None:  # an empty --sim is a bad device list, not "use the real driver"
        spec = SimSpec(devices=sim, scenario=scenario, seed=seed, time_scale=time_scale, faults=faults)
        if isolate:
            from gpuwatch.telemetry.nvml_supervisor import NvmlSupervisor

            description = _check_sim(spec)  # a bad option is this command's one-line error, not the child's
            return NvmlSupervisor(
                interval_s=interval, sim=spec, description=description, history_capacity=history_capacity
            )
        from gpuwatch.telemetry.poller import NvmlPoller
        from gpuwatch.telemetry.simulated import uninstall

        description = describe_sim(sim, scenario)
        simulated = spec.install()
        return NvmlPoller(
            interval_s=interval,
            clock=simulated.now_s,
            sim=spec,
            description=description,
            on_stop=uninstall,
            history_capacity=history_capacity,
        )
    if isolate:
        # no NVML call in this process (a hung or crashing driver must not reach it): only "is there a
        # driver library at all", the common no-GPU case, fails here; any other NVML trouble is the
        # supervisor's state, shown by the face and retried
        _require_driver_library()
        from gpuwatch.telemetry.nvml_supervisor import NvmlSupervisor

        return NvmlSupervisor(interval_s=interval, history_capacity=history_capacity)
    from gpuwatch.telemetry.poller import NvmlPoller

    poller = NvmlPoller(interval_s=interval, history_capacity=history_capacity)
    # opened once, here: a probe's nvmlInit and nvmlShutdown before start()'s own nvmlInit cost a second
    # driver start-up where no persistence daemon keeps the driver loaded
    poller.attach()
    return poller
