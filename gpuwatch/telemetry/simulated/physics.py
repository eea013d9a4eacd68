"""Physical state of one simulated card: power, clocks, heat, fan, throttle reasons, counters.

Integrated on a fixed 0.25 s grid so a run depends only on (seed, scenario timeline), not on how often
or in what chunks a caller looks at it. Each step:

1. demand from the scenario, times a seeded AR(1) jitter;
2. the clock the card wants (idle clock when nothing runs, else its load clock), lowered by the
   SW thermal controller (integral action above max-operating temperature), halved while HW thermal
   slowdown is engaged (slowdown temperature, released 4 C below it), and then by the SW power cap:
   power = idle + (full - idle) x activity x f/f0 x (V(f)/V(f0))^2 with V linear in f (the planner's power
   model, gpuwatch/model/power.py), solved for the highest clock that stays at or under the limit;
3. the thermal RC: C dT/dt = P - G (T - T_ambient) with G = G_passive + G_fan x fan, integrated exactly
   over the step (stable at any step size); the fan follows a curve with zero-RPM below 45-50 C;
4. counters: energy (exact integral of the step's constant power), time under each throttle reason,
   PCIe/NVLink bytes and the activity integrals GPM differences.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from gpuwatch.model.catalog import GpuSpec
from gpuwatch.model.power import activity_weight, board_power_w
from gpuwatch.telemetry.simulated.profiles import DeviceProfile
from gpuwatch.telemetry.simulated.scenarios import IDLE_DEMAND, Demand, Scenario

STEP_S = 0.25
AMBIENT_C = 25.0

# nvml.h clock-event reason bits
REASON_GPU_IDLE = 0x001
REASON_SW_POWER_CAP = 0x004
REASON_HW_SLOWDOWN = 0x008
REASON_SW_THERMAL = 0x020
REASON_HW_THERMAL = 0x040

_SW_THERMAL_GAIN_PER_K_S = 0.006  # clock-scale reduction per kelvin over max-operating, per second
_SW_THERMAL_RECOVERY_PER_S = 0.02
_SW_THERMAL_RELEASE_K = 3.0
_HW_THERMAL_RELEASE_K = 4.0
_UTIL_TAU_S = 0.5  # NVML utilization: "sample period between 1 second and 1/6 second"
_POWER_AVG_TAU_S = 1.0  # nvmlDeviceGetPowerUsage: 1 s average on Ampere (except GA100) and newer
_FAN_SLEW_PER_S = 0.10


@dataclass
class Counters:
    """Monotonic integrals since the simulated driver load."""

    energy_mj: float = 0.0
    violation_ns: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(
            ("sw_power_cap", "sync_boost", "sw_thermal", "hw_thermal", "hw_power_brake", "thermal"), 0.0
        )
    )
    pcie_tx_bytes: float = 0.0
    pcie_rx_bytes: float = 0.0
    nvlink_tx_bytes: float = 0.0
    nvlink_rx_bytes: float = 0.0
    # activity integrals (ratio x seconds) for GPM
    kernel_busy_s: float = 0.0
    sm_activity_s: float = 0.0
    sm_occupancy_s: float = 0.0
    tensor_s: float = 0.0
    fp16_s: float = 0.0
    fp32_s: float = 0.0
    dram_bandwidth_s: float = 0.0

    def copy(self) -> Counters:
        c = Counters(**{k: v for k, v in self.__dict__.items() if k != "violation_ns"})
        c.violation_ns = dict(self.violation_ns)
        return c


class SimDevice:
    """One card's physical state. Not thread-safe on its own: the owner holds the simulator lock."""

    def __init__(
        self,
        index: int,
        chip: GpuSpec,
        profile: DeviceProfile,
        scenario: Scenario,
        seed: int,
        ambient_c: float = AMBIENT_C,
    ) -> None:
        self.index = index
        self.chip = chip
        self.profile = profile
        self.scenario = scenario
        self.ambient_c = ambient_c
        self._rng = random.Random(f"gpuwatch-sim:{seed}:{index}:{profile.id}")
        self._jitter = 0.0
        self.elapsed_s = 0.0  # sim time of the last grid step
        self.power_limit_w = profile.power_default_w
        self.user_power_limit_w: float | None = None
        p = profile
        g0 = self._conductance(0.0)
        self.temperature_c = ambient_c + p.power_idle_w / g0
        self.fan_ratio = 0.0
        self._fan_spinning = False
        self.sm_clock_mhz = float(p.sm_clock_idle_mhz)
        self.memory_clock_mhz = float(p.memory_clock_idle_mhz)
        self.power_w = p.power_idle_w
        self.power_avg_w = p.power_idle_w
        self.reasons = REASON_GPU_IDLE
        self._sw_thermal_scale = 1.0
        self._hw_thermal = False
        self.demand: Demand = IDLE_DEMAND
        self.delivered_dram_ratio = 0.0
        self.util_gpu_ratio = 0.0
        self.util_memory_ratio = 0.0
        self.counters = Counters(energy_mj=self._rng.uniform(2e9, 8e9))  # driver loaded days ago
        self.pcie_link_gen = 1
        self._apply_limit()

    # --- derived readings ---------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.demand.kernel_busy_ratio > 0.02

    @property
    def sm_clock_hz(self) -> float:
        return self.sm_clock_mhz * 1e6

    @property
    def memory_temperature_c(self) -> float:
        return self.temperature_c + 8.0 + 6.0 * self.delivered_dram_ratio

    @property
    def performance_state(self) -> int:
        if self.profile.brand == "geforce":
            return 2 if self.active else 8
        return 0

    @property
    def memory_total_bytes(self) -> int:
        return int(self.chip.memory_bytes)

    @property
    def memory_reserved_bytes(self) -> int:
        return min(1 << 30, int(self.chip.memory_bytes * 0.015)) & ~0xFFFFF

    @property
    def process_memory_bytes(self) -> int:
        if self.scenario.process_name is None:
            return 0
        usable = self.memory_total_bytes - self.memory_reserved_bytes
        return int(usable * self.scenario.memory_used_ratio) & ~0xFFFFF

    @property
    def memory_used_bytes(self) -> int:
        """Used, excluding reserved (the v2 struct's meaning)."""
        return self.process_memory_bytes + (4 << 20)

    # --- control ------------------------------------------------------------------------------------
    def set_scenario(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self._apply_limit()

    def set_power_limit(self, watts: float | None) -> None:
        self.user_power_limit_w = watts
        self._apply_limit()

    def _apply_limit(self) -> None:
        p = self.profile
        limit = self.user_power_limit_w if self.user_power_limit_w is not None else p.power_default_w
        if self.scenario.power_limit_ratio is not None:
            limit = min(limit, p.power_default_w * self.scenario.power_limit_ratio)
        self.power_limit_w = max(p.power_min_w, min(p.power_max_w, limit))

    def _conductance(self, fan: float) -> float:
        p = self.profile
        if p.num_fans:
            return p.conductance_passive_w_per_k + p.conductance_fan_w_per_k * fan
        airflow = 1.0
        stuck = self.scenario.fan_stuck_ratio
        if stuck is not None:
            airflow = 0.35 + 0.65 * stuck  # chassis fans failing on a passive card
        return p.conductance_passive_w_per_k * airflow

    def _power_at(self, ratio: float, weight: float) -> float:
        """gpuwatch/model/power.py's board power: the planner and the simulated cards share one model."""
        p = self.profile
        return board_power_w(p.power_idle_w, p.power_full_load_w, weight, ratio)

    # --- integration --------------------------------------------------------------------------------
    def advance_to(self, elapsed_s: float) -> None:
        """Integrate whole grid steps up to ``elapsed_s`` (sim seconds since start)."""
        while self.elapsed_s + STEP_S <= elapsed_s + 1e-9:
            self._step(STEP_S)

    def energy_mj_at(self, elapsed_s: float) -> float:
        """Energy counter at a time between grid steps: exact for the step's constant power."""
        return self.counters.energy_mj + self.power_w * max(0.0, elapsed_s - self.elapsed_s) * 1e3

    def _jittered(self, d: Demand) -> Demand:
        rho = 0.9
        self._jitter = rho * self._jitter + math.sqrt(1 - rho * rho) * self._rng.gauss(0.0, 0.03)
        k = 1.0 + self._jitter

        def j(x: float) -> float:
            return min(1.0, max(0.0, x * k))

        return Demand(
            j(d.kernel_busy_ratio),
            j(d.sm_activity_ratio),
            j(d.sm_occupancy_ratio),
            j(d.tensor_ratio),
            j(d.fp16_ratio),
            j(d.fp32_ratio),
            j(d.dram_bandwidth_ratio),
            d.pcie_tx_bytes_s * k,
            d.pcie_rx_bytes_s * k,
            j(d.nvlink_ratio),
        )

    def _step(self, dt: float) -> None:
        p = self.profile
        t_mid = self.elapsed_s + dt / 2
        d = self._jittered(self.scenario.demand(t_mid))
        self.demand = d
        active = self.active
        load = float(p.sm_clock_load_mhz)
        idle_ratio = p.sm_clock_idle_mhz / load
        reasons = 0

        # thermal controllers (act on the temperature at the start of the step)
        t = self.temperature_c
        if t > p.max_operating_c:
            self._sw_thermal_scale -= _SW_THERMAL_GAIN_PER_K_S * (t - p.max_operating_c) * dt
        elif t < p.max_operating_c - _SW_THERMAL_RELEASE_K:
            self._sw_thermal_scale += _SW_THERMAL_RECOVERY_PER_S * dt
        self._sw_thermal_scale = min(1.0, max(idle_ratio, self._sw_thermal_scale))
        if t >= p.slowdown_c:
            self._hw_thermal = True
        elif t < p.slowdown_c - _HW_THERMAL_RELEASE_K:
            self._hw_thermal = False

        weight = activity_weight(d.sm_activity_ratio, d.tensor_ratio, d.dram_bandwidth_ratio, d.fp32_ratio)
        if not active:
            ratio = idle_ratio
            reasons |= REASON_GPU_IDLE
        else:
            ratio = 1.0
            if self._sw_thermal_scale < 0.999:
                ratio = min(ratio, self._sw_thermal_scale)
                reasons |= REASON_SW_THERMAL
            if self._hw_thermal:
                ratio *= 0.5
                reasons |= REASON_HW_THERMAL | REASON_HW_SLOWDOWN
            ratio = max(ratio, idle_ratio)
            if self._power_at(ratio, weight) > self.power_limit_w:
                lo, hi = idle_ratio, ratio
                for _ in range(30):
                    mid = (lo + hi) / 2
                    if self._power_at(mid, weight) > self.power_limit_w:
                        hi = mid
                    else:
                        lo = mid
                ratio = lo
                reasons |= REASON_SW_POWER_CAP
        power = self._power_at(ratio, weight) if active else p.power_idle_w
        self.sm_clock_mhz = ratio * load
        self.memory_clock_mhz = float(p.memory_clock_max_mhz if active else p.memory_clock_idle_mhz)
        self.reasons = reasons
        self.power_w = power
        self.power_avg_w += (power - self.power_avg_w) * (1 - math.exp(-dt / _POWER_AVG_TAU_S))

        # delivered memory traffic falls somewhat with a throttled clock
        self.delivered_dram_ratio = d.dram_bandwidth_ratio * (0.6 + 0.4 * ratio) if active else 0.0
        a = 1 - math.exp(-dt / _UTIL_TAU_S)
        mem_busy = min(1.0, 1.15 * self.delivered_dram_ratio + (0.02 if active else 0.0))
        self.util_gpu_ratio += (d.kernel_busy_ratio - self.util_gpu_ratio) * a
        self.util_memory_ratio += (mem_busy - self.util_memory_ratio) * a

        # fan and thermal RC
        self._update_fan(dt)
        g = self._conductance(self.fan_ratio)
        t_ss = self.ambient_c + power / g
        self.temperature_c = t_ss + (self.temperature_c - t_ss) * math.exp(-g * dt / p.heat_capacity_j_per_k)

        # counters
        c = self.counters
        c.energy_mj += power * dt * 1e3
        ns = dt * 1e9
        if reasons & REASON_SW_POWER_CAP:
            c.violation_ns["sw_power_cap"] += ns
        if reasons & REASON_SW_THERMAL:
            c.violation_ns["sw_thermal"] += ns
        if reasons & REASON_HW_THERMAL:
            c.violation_ns["hw_thermal"] += ns
        if reasons & (REASON_SW_THERMAL | REASON_HW_THERMAL):
            c.violation_ns["thermal"] += ns
        c.pcie_tx_bytes += d.pcie_tx_bytes_s * dt
        c.pcie_rx_bytes += d.pcie_rx_bytes_s * dt
        if p.nvlink_links and self.chip.nvlink_bytes_s:
            nv = d.nvlink_ratio * self.chip.nvlink_bytes_s / 2 * dt
            c.nvlink_tx_bytes += nv
            c.nvlink_rx_bytes += nv
        if active:
            c.kernel_busy_s += d.kernel_busy_ratio * dt
            c.sm_activity_s += d.sm_activity_ratio * dt
            c.sm_occupancy_s += d.sm_occupancy_ratio * dt
            c.tensor_s += d.tensor_ratio * dt
            c.fp16_s += d.fp16_ratio * dt
            c.fp32_s += d.fp32_ratio * dt
            c.dram_bandwidth_s += self.delivered_dram_ratio * dt
        self.pcie_link_gen = min(self.chip.pcie_gen, p.pcie_gen_max) if active else 1
        self.elapsed_s += dt

    def _update_fan(self, dt: float) -> None:
        if not self.profile.num_fans:
            self.fan_ratio = 0.0
            return
        stuck = self.scenario.fan_stuck_ratio
        if stuck is not None:
            self.fan_ratio = stuck
            return
        t = self.temperature_c
        if t >= 50.0:
            self._fan_spinning = True
        elif t < 45.0:
            self._fan_spinning = False
        target = min(1.0, 0.30 + max(0.0, t - 50.0) * 0.55 / 30.0) if self._fan_spinning else 0.0
        step = _FAN_SLEW_PER_S * dt
        self.fan_ratio += max(-step, min(step, target - self.fan_ratio))
