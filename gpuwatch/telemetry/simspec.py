"""A simulated box as plain data, so a child process can install the same one as its parent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SimSpec:
    devices: str
    scenario: str | None = None
    seed: int = 0
    time_scale: float = 1.0
    faults: str | None = None
    driver: str | None = None  # None: the driver a calibrated card was captured on, else r580

    def validate(self) -> None:
        """UserError (one line) for a bad device list, scenario, time scale or fault string, now.

        A supervised child installs the box in its own process; without this a typo would only be a
        "failed" state there instead of the command's one-line error here. Builds and drops a box.
        """
        from gpuwatch.telemetry.simulated import SimulatedNvml

        SimulatedNvml(
            self.devices,
            scenario=self.scenario or "decode",
            seed=self.seed,
            time_scale=self.time_scale,
            manual_clock=True,
            driver=self.driver,
            faults=self.faults,
        )

    def install(self) -> Any:
        from gpuwatch.telemetry.simulated import install

        return install(
            self.devices,
            scenario=self.scenario or "decode",
            seed=self.seed,
            time_scale=self.time_scale,
            faults=self.faults,
            driver=self.driver,
        )
