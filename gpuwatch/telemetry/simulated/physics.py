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
from gpuwatch.model.power import MAX_ACTIVITY, activity_weight, board_power_w
from gpuwatch.telemetry.simulated.profiles import DeviceProfile
from gpuwatch.telemetry.simulated.scenarios import IDLE_DEMAND, Demand, Scenario

STEP_S = 0.25
AMBIENT_C = 25.0
#: grid steps integrated per real second: a faster --time-scale coarsens the grid up to MAX_STEP_S (the
#: controllers and the fan stay stable there), beyond that a backlog over FAST_FORWARD_AFTER_S is
#: skipped with the state held, so ``--time-scale 1e6`` no longer spins a CPU catching up
MAX_STEPS_PER_REAL_S = 200.0
MAX_STEP_S = 2.0
FAST_FORWARD_AFTER_S = 150.0
_MIB = 1 << 20
#: weight of NVENC activity in the power model: two 1080p120 NVENC streams (encoder ~65 %) add ~60 W on
#: the captured 4080 SUPER, L40S and 2080 SUPER (tests/data/captures), i.e. ~0.13 of their dynamic range
_ENCODER_POWER_WEIGHT = 0.2


def step_for(time_scale: float) -> float:
    """The grid step for a clock running ``time_scale`` simulated seconds per real second."""
    return min(MAX_STEP_S, max(STEP_S, time_scale / MAX_STEPS_PER_REAL_S))


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
        ambient_c: float | None = None,
        step_s: float = STEP_S,
        fast_forward_after_s: float | None = None,
    ) -> None:
        self.index = index
        self.chip = chip
        self.profile = profile
        self.scenario = scenario
        self.ambient_c = profile.inlet_c if ambient_c is None else ambient_c
        self.step_s = step_s
        self.fast_forward_after_s = fast_forward_after_s
        self.steps = 0  # grid steps integrated (what a fast clock costs)
        self._rng = random.Random(f"gpuwatch-sim:{seed}:{index}:{profile.id}")
        self._jitter = 0.0
        self.elapsed_s = 0.0  # sim time of the last grid step
        self.power_limit_w = profile.power_default_w
        self.user_power_limit_w: float | None = None
        p = profile
        always_on = bool(p.num_fans) and not p.zero_rpm
        self.fan_ratio = p.fan_min_ratio if always_on else 0.0
        self._fan_spinning = always_on
        self.temperature_c = self.ambient_c + p.power_idle_w / self._conductance(self.fan_ratio)
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
        self.util_encoder_ratio = 0.0
        self.counters = Counters(energy_mj=self._rng.uniform(2e9, 8e9))  # driver loaded days ago
        self.pcie_link_gen = self._pcie_gen(active=False)
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
        """NVML's FB total: the captured figure, else the catalog size less what NVML hides (HBM: 0.44 %
        on the captured H100; GDDR with ECC on: 1/16, 46068 of 49152 MiB on the captured L40S)."""
        p = self.profile
        if p.memory_total_mib is not None:
            return p.memory_total_mib * _MIB
        size = int(self.chip.memory_bytes)
        if self.chip.memory_type.upper().startswith("HBM"):
            return int(size * 81559 / 81920) & ~0xFFFFF
        if p.ecc:
            return int(size * 46068 / 49152) & ~0xFFFFF
        return size

    @property
    def memory_reserved_bytes(self) -> int:
        if self.profile.memory_reserved_mib is not None:
            return self.profile.memory_reserved_mib * _MIB
        return min(1 << 30, int(self.chip.memory_bytes * 0.015)) & ~0xFFFFF

    @property
    def process_memory_bytes(self) -> int:
        s = self.scenario
        if s.process_name is None:
            return 0
        usable = (
            self.memory_total_bytes - self.memory_reserved_bytes - self.profile.memory_used_idle_mib * _MIB
        )
        if s.memory_used_mib is not None:
            return int(min(usable, s.memory_used_mib * _MIB)) & ~0xFFFFF
        return int(usable * s.memory_used_ratio) & ~0xFFFFF

    @property
    def memory_used_bytes(self) -> int:
        """Used, excluding reserved (the v2 struct's meaning)."""
        return self.process_memory_bytes + self.profile.memory_used_idle_mib * _MIB

    @property
    def video_clock_mhz(self) -> float:
        p = self.profile
        if not self.active and p.video_clock_idle_mhz is not None:
            return float(p.video_clock_idle_mhz)
        if self.active:
            return float(p.video_clock_max_mhz) * min(1.0, self.sm_clock_mhz / p.sm_clock_load_mhz)
        return min(float(p.video_clock_max_mhz), self.sm_clock_mhz * 0.9)

    def _pcie_gen(self, active: bool) -> int:
        top = min(self.chip.pcie_gen, self.profile.pcie_gen_max)
        idle = self.profile.pcie_idle_gen
        return top if active or idle is None else min(top, idle)

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
        """Integrate whole grid steps up to ``elapsed_s`` (sim seconds since start).

        With ``fast_forward_after_s`` set (a real-time clock), a backlog longer than that is first
        skipped holding the state (counters advance at the held power and activity), so a very fast
        clock costs a bounded number of steps per read instead of a CPU spinning to catch up.
        """
        horizon = self.fast_forward_after_s
        if horizon is not None and elapsed_s - self.elapsed_s > horizon + self.step_s:
            n = int((elapsed_s - self.elapsed_s - horizon) / self.step_s)
            self._count(n * self.step_s)
            self.elapsed_s += n * self.step_s
        while self.elapsed_s + self.step_s <= elapsed_s + 1e-9:
            self._step(self.step_s)

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
            d.encoder_ratio,
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

        # NVENC is a fixed-function block beside the pipes model.power weighs
        weight = min(
            MAX_ACTIVITY,
            activity_weight(d.sm_activity_ratio, d.tensor_ratio, d.dram_bandwidth_ratio, d.fp32_ratio)
            + _ENCODER_POWER_WEIGHT * d.encoder_ratio,
        )
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
        load_mem = p.memory_clock_load_mhz if p.memory_clock_load_mhz is not None else p.memory_clock_max_mhz
        self.memory_clock_mhz = float(load_mem if active else p.memory_clock_idle_mhz)
        self.reasons = reasons
        self.power_w = power
        self.power_avg_w += (power - self.power_avg_w) * (1 - math.exp(-dt / _POWER_AVG_TAU_S))

        # delivered memory traffic falls somewhat with a throttled clock
        self.delivered_dram_ratio = d.dram_bandwidth_ratio * (0.6 + 0.4 * ratio) if active else 0.0
        a = 1 - math.exp(-dt / _UTIL_TAU_S)
        mem_busy = min(1.0, 1.15 * self.delivered_dram_ratio + (0.02 if active else 0.0))
        self.util_gpu_ratio += (d.kernel_busy_ratio - self.util_gpu_ratio) * a
        self.util_memory_ratio += (mem_busy - self.util_memory_ratio) * a
        encoder_busy = min(1.0, d.encoder_ratio / p.nvenc_speed_ratio)
        self.util_encoder_ratio += (encoder_busy - self.util_encoder_ratio) * a

        # fan and thermal RC
        self._update_fan(dt)
        g = self._conductance(self.fan_ratio)
        t_ss = self.ambient_c + power / g
        self.temperature_c = t_ss + (self.temperature_c - t_ss) * math.exp(-g * dt / p.heat_capacity_j_per_k)

        self._count(dt)
        self.pcie_link_gen = self._pcie_gen(active)
        self.elapsed_s += dt
        self.steps += 1

    def _count(self, dt: float) -> None:
        """Counters over ``dt`` at the current power, throttle reasons and demand."""
        p, d, reasons, active = self.profile, self.demand, self.reasons, self.active
        c = self.counters
        c.energy_mj += self.power_w * dt * 1e3
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

    def _update_fan(self, dt: float) -> None:
        if not self.profile.num_fans:
            self.fan_ratio = 0.0
            return
        stuck = self.scenario.fan_stuck_ratio
        if stuck is not None:
            self.fan_ratio = stuck
            return
        t = self.temperature_c
        lo = self.profile.fan_min_ratio
        if t >= 50.0 or not self.profile.zero_rpm:
            self._fan_spinning = True
        elif t < 45.0:
            self._fan_spinning = False
        target = min(1.0, lo + max(0.0, t - 50.0) * (0.85 - lo) / 30.0) if self._fan_spinning else 0.0
        step = _FAN_SLEW_PER_S * dt
        self.fan_ratio += max(-step, min(step, target - self.fan_ratio))
