"""Simulated NVML: a stand-in for ``libnvidia-ml.so.1`` beneath the real ``pynvml``.

``install("h100-sxm,2xrtx4090", scenario="training")`` before ``pynvml.nvmlInit()`` and every pynvml
call (and every tool built on pynvml, nvitop included) answers from simulated cards whose power, heat,
clocks and throttle reasons follow a physical model. See INTERFACES §1.
"""

from __future__ import annotations

from gpuwatch.telemetry.simulated.physics import SimDevice
from gpuwatch.telemetry.simulated.scenarios import SCENARIOS
from gpuwatch.telemetry.simulated.simulator import (
    SimulatedNvml,
    install,
    installed,
    parse_devices,
    uninstall,
)

__all__ = ["SCENARIOS", "SimDevice", "SimulatedNvml", "install", "installed", "parse_devices", "uninstall"]
