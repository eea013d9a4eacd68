"""Joins one snapshot with the model: where each GPU sits on the roofline, what bounds it, what it costs.

Every attained figure says where it came from, best source first:
  MEASURED  GPM (Hopper+): DRAM_BW_UTIL x the card's peak bandwidth; tensor-pipe utilisation x the
            compute ceiling at the live SM clock (busy time, so an upper bound on useful FLOP/s).
  DERIVED   serving-engine tokens/s x the model's FLOPs per token and bytes per decode step at the
            declared context (KV-cache reads included).
  MODELLED  the declared workload's roofline projection, with the GPU's ceilings scaled to its live
            clocks so that a throttled card is modelled slower.
Memory-controller busy % is a duty cycle, not a share of bandwidth: it is never used for bandwidth.

Attribution assumption: the engines' tokens/s are split evenly over the GPUs that are busy, and the
declared workload (batch, context) describes one replica per GPU. That is exact on a one-GPU box and
for data-parallel replicas; under tensor parallelism the per-GPU bytes are over-counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from gpuwatch.live.alerts import AlertTracker
from gpuwatch.live.assessment import (
    Alternative,
    Bound,
    BoundKind,
    BoxAssessment,
    CostSplit,
    CostView,
    GpuAssessment,
    Provenance,
    RooflinePosition,
    weakest,
)
from gpuwatch.live.config import DEFAULT_ALTERNATIVES, LiveConfig, Workload, box_gpu_price_usd, gpu_price_usd
from gpuwatch.model import cost
from gpuwatch.model.catalog import GpuSpec, get_gpu
from gpuwatch.model.cost import OwnershipCost
from gpuwatch.model.engine_profiles import EngineProfile, get_engine_profile
from gpuwatch.model.errors import UnknownIdError
from gpuwatch.model.llm import ModelSpec, resolve_model
from gpuwatch.model.memory import inference_memory
from gpuwatch.model.quant import QuantFormat, get_quant
from gpuwatch.model.roofline import attainable_flops, ridge_point_flop_per_byte
from gpuwatch.model.throughput import (
    ThroughputEstimate,
    bytes_per_decode_step,
    estimate_throughput,
    flops_per_token,
)
from gpuwatch.telemetry.engines import EngineReading
from gpuwatch.telemetry.history import History
from gpuwatch.telemetry.sample import THROTTLING_REASONS, ClockEventReason, GpuSample, Snapshot, reason_names

#: below this SM busy share a card with no engine traffic counts as idle
IDLE_SM_BUSY_RATIO = 0.05
#: a link this busy, and busier than DRAM and the tensor pipes, bounds the workload
INTERCONNECT_BOUND_RATIO = 0.5
#: a power cap (or sync boost) that pulls the SM clock this far under spec boost is the bound
POWER_CAP_BOUND_RATIO = 0.10
_POWER_REASONS = frozenset({"sw_power_cap", "sync_boost"})
#: at most this many alternative GPUs are priced (the faces have room for three)
MAX_ALTERNATIVES = 3


@dataclass(frozen=True)
class ResolvedWorkload:
    """A declared workload looked up in the catalogs, once."""

    model: ModelSpec
    quant: QuantFormat
    batch: int
    context_tokens: int
    engine: EngineProfile

    @classmethod
    def of(cls, w: Workload) -> ResolvedWorkload:
        engine = get_engine_profile(w.engine_profile) if w.engine_profile else get_engine_profile()
        return cls(resolve_model(w.model_id), get_quant(w.quant_id), w.batch, w.context_tokens, engine)

    def dtype(self, gpu: GpuSpec) -> str:
        """The ceiling the engine's matmuls run against (the model's own choice, e.g. fp16acc on GeForce)."""
        return self.engine.matmul_dtype(self.quant.compute_dtype, gpu)

    def estimate(self, gpu: GpuSpec, batch: float | None = None) -> ThroughputEstimate:
        return estimate_throughput(
            self.model,
            self.quant,
            gpu,
            self.batch if batch is None else batch,
            self.context_tokens,
            engine=self.engine,
        )


def identify_gpu(sample: GpuSample) -> GpuSpec | None:
    """The catalog entry telemetry matched for this card (``sample.catalog_id``); None when it has none."""
    if sample.catalog_id is None:
        return None
    try:
        return get_gpu(sample.catalog_id)
    except UnknownIdError:  # a recording made with a catalog entry this catalog lacks
        return None


def clock_scales(sample: GpuSample, gpu: GpuSpec) -> tuple[float, float]:
    """(compute, memory) ceilings' share of spec at the live clocks, each at most 1.

    Compute scales with the SM clock over the SPEC boost clock the catalog peaks assume (NVML's max
    SM clock is higher: 3105 vs 2520 MHz on a 4090), capped at 1 so that a card boosting above spec
    is not credited with more than its datasheet; memory with the memory clock over its maximum.
    """
    compute = 1.0
    if sample.sm_clock_hz is not None and gpu.boost_clock_hz > 0:
        compute = min(1.0, sample.sm_clock_hz / gpu.boost_clock_hz)
    memory = 1.0
    if sample.memory_clock_hz is not None and sample.memory_clock_max_hz:
        memory = min(1.0, sample.memory_clock_hz / sample.memory_clock_max_hz)
    return compute, memory


def derated(gpu: GpuSpec, compute_scale: float, memory_scale: float) -> GpuSpec:
    """The same GPU with its ceilings at live clocks, so the model's own estimate runs on them."""
    if compute_scale == 1.0 and memory_scale == 1.0:
        return gpu
    return replace(
        gpu,
        peak_flops={k: v * compute_scale for k, v in gpu.peak_flops.items()},
        memory_bandwidth_bytes_s=gpu.memory_bandwidth_bytes_s * memory_scale,
    )


def live_power_w(sample: GpuSample, history: History, window_s: float) -> float | None:
    """Mean power over the window from the energy counter (an exact integral), else NVML's power."""
    rate = history.rate(sample.index, "energy_j", window_s)
    if rate is not None and rate >= 0:
        return rate
    return sample.power_w


def is_idle(sample: GpuSample, tokens_per_s: float | None) -> bool:
    if tokens_per_s is not None and tokens_per_s > 0:
        return False
    if (sample.clock_event_reasons or 0) & ClockEventReason.GPU_IDLE:
        return True
    return sample.sm_busy_ratio is not None and sample.sm_busy_ratio < IDLE_SM_BUSY_RATIO


@dataclass(frozen=True)
class _EngineShare:
    """One GPU's share of the engines' traffic."""

    generation_tokens_per_s: float
    prompt_tokens_per_s: float
    batch: float  # concurrent sequences on this GPU


def _engine_shares(snap: Snapshot, engines: Sequence[EngineReading]) -> dict[int, _EngineShare]:
    good = [e for e in engines if e.error is None and e.generation_tokens_per_s is not None]
    if not good:
        return {}
    gen = sum(e.generation_tokens_per_s or 0.0 for e in good)
    prompt = sum(e.prompt_tokens_per_s or 0.0 for e in good)
    running = [e.requests_running for e in good if e.requests_running is not None]
    alive = [g for g in snap.gpus if not g.lost]
    busy = [g for g in alive if g.sm_busy_ratio is None or g.sm_busy_ratio >= IDLE_SM_BUSY_RATIO] or alive
    if not busy:
        return {}
    n = len(busy)
    batch = max(1.0, sum(running) / n) if running else 0.0  # 0: unknown, use the declared batch
    return {g.index: _EngineShare(gen / n, prompt / n, batch) for g in busy}


class Assessor:
    """Stateful (alerts, caches): feed it every snapshot of one source, in order."""

    def __init__(self, config: LiveConfig) -> None:
        self.config = config
        self.workload = ResolvedWorkload.of(config.workload) if config.workload else None
        self._alerts = AlertTracker(config.alerts)
        self._specs: dict[str, GpuSpec | None] = {}
        self._estimates: dict[tuple[str, float, float], ThroughputEstimate] = {}
        self._alternatives: dict[tuple[str, int], tuple[Alternative, ...]] = {}

    # -- caches: the model is pure, prices are fixed for a session ---------------------------------

    def _spec(self, sample: GpuSample) -> GpuSpec | None:
        if sample.name not in self._specs:
            self._specs[sample.name] = identify_gpu(sample)
        return self._specs[sample.name]

    def _estimate(self, gpu: GpuSpec, compute_scale: float, memory_scale: float) -> ThroughputEstimate | None:
        if self.workload is None:
            return None
        key = (gpu.id, round(compute_scale, 3), round(memory_scale, 3))
        if key not in self._estimates:
            if len(self._estimates) > 4096:
                self._estimates.clear()
            self._estimates[key] = self.workload.estimate(derated(gpu, key[1], key[2]))
        return self._estimates[key]

    # -- prices -------------------------------------------------------------------------------------

    def box_prices(self, gpu: GpuSpec | None, n_gpus: int) -> tuple[OwnershipCost, float | None] | None:
        """ONE GPU's share of the box's prices and that GPU's purchase price; None without a capex."""
        share = self.config.prices.share(n_gpus)
        price = box_gpu_price_usd(self.config, gpu) if gpu is not None else None
        if share.capex_usd(price) is None:
            return None
        return share, price

    def alternatives(self, gpu_id: str | None, n_gpus: int) -> tuple[Alternative, ...]:
        """The declared workload's projection on other catalog GPUs at the same running prices.

        An alternative is priced from its list price plus the server overhead: a configured server
        capex is THIS box's, not what a box of other cards would cost.
        """
        if self.workload is None:
            return ()
        key = (gpu_id or "", n_gpus)
        if key not in self._alternatives:
            w = self.workload
            ids = [i for i in (self.config.alternatives or DEFAULT_ALTERNATIVES) if i != gpu_id]
            out: list[Alternative] = []
            # a configured server capex is THIS box's: other cards are priced at theirs + the overhead
            prices = replace(self.config.prices, server_capex_usd=None).share(n_gpus)
            for alt in (get_gpu(i) for i in ids):
                price = gpu_price_usd(self.config, alt)
                if price is None or len(out) == MAX_ALTERNATIVES:
                    continue
                tokens = float(w.estimate(alt).decode_tokens_per_s)
                usd = float(
                    cost.usd_per_mtok(prices, tokens_per_s=tokens, gpu_capex_usd=price, power_w=alt.tdp_w)
                )
                fits = bool(inference_memory(w.model, w.quant, w.batch, w.context_tokens).fits(alt))
                out.append(Alternative(alt.id, alt.name, tokens, usd, fits))
            self._alternatives[key] = tuple(out)
        return self._alternatives[key]

    # -- the assessment -----------------------------------------------------------------------------

    def assess(
        self, snap: Snapshot, history: History, engines: Sequence[EngineReading] = ()
    ) -> BoxAssessment:
        shares = _engine_shares(snap, engines)
        n = max(1, len(snap.gpus))
        window_s = max(2.0, 5 * self.config.interval_s)
        gpus = []
        powers: list[float] = []
        capex_usd = 0.0  # the box's: each GPU's share added up
        priced = 0
        for sample in snap.gpus:
            power = None if sample.lost else live_power_w(sample, history, window_s)
            gpus.append(self._assess_gpu(sample, shares.get(sample.index), power, n))
            if power is not None:
                powers.append(power)
            box = self.box_prices(self._spec(sample), n)
            if box is not None:
                capex_usd += float(box[0].capex_usd(box[1]) or 0.0)
                priced += 1
        producing = [g for g in gpus if g.tokens_per_s is not None]
        box_tokens = sum(g.tokens_per_s or 0.0 for g in producing) if producing else None
        box_power = sum(powers) if powers else None
        box_usd = None
        if box_tokens and box_power is not None and priced == len(snap.gpus):
            whole = replace(self.config.prices, server_capex_usd=capex_usd)
            box_usd = float(
                cost.usd_per_mtok(whole, tokens_per_s=box_tokens, gpu_capex_usd=None, power_w=box_power)
            )
        alerts = self._alerts.update(snap, gpus)
        return BoxAssessment(
            timestamp_s=snap.timestamp_s,
            gpus=tuple(gpus),
            tokens_per_s=box_tokens,
            usd_per_mtok=box_usd,
            tokens_per_joule=box_tokens / box_power if box_tokens is not None and box_power else None,
            alerts=alerts,
            tokens_per_s_provenance=weakest(g.tokens_per_s_provenance for g in producing),
        )

    def _assess_gpu(
        self, sample: GpuSample, share: _EngineShare | None, power_w: float | None, n_gpus: int
    ) -> GpuAssessment:
        gpu = self._spec(sample)
        gpu_id = gpu.id if gpu else None
        if sample.lost:
            return GpuAssessment(
                sample.index,
                gpu_id,
                None,
                Bound(BoundKind.UNKNOWN, detail="GPU lost"),
                None,
                None,
                Provenance.UNKNOWN,
            )
        engine_tokens = share.generation_tokens_per_s if share else None
        idle = is_idle(sample, engine_tokens)
        if gpu is None:
            throttle = _throttle(sample, None) if not idle else None
            bound = throttle.bound() if throttle is not None else None
            return GpuAssessment(
                sample.index,
                None,
                None,
                bound
                or Bound(
                    BoundKind.IDLE if idle else BoundKind.UNKNOWN,
                    detail="idle" if idle else f"{sample.name} is not in the catalog",
                ),
                None,
                engine_tokens,
                Provenance.MEASURED if engine_tokens is not None else Provenance.UNKNOWN,
            )

        compute_scale, memory_scale = clock_scales(sample, gpu)
        at_spec = self._estimate(gpu, 1.0, 1.0)
        at_live = self._estimate(gpu, compute_scale, memory_scale)
        modelled_tokens = float(at_spec.decode_tokens_per_s) if at_spec is not None else None

        if engine_tokens is not None:
            tokens, tokens_prov = engine_tokens, Provenance.MEASURED
        elif at_live is not None and not idle:
            tokens, tokens_prov = float(at_live.decode_tokens_per_s), Provenance.MODELLED
        else:
            tokens, tokens_prov = None, Provenance.UNKNOWN

        roofline = self._roofline(sample, gpu, share, at_live, idle, compute_scale)
        bound = self._bound(sample, gpu, roofline, idle, at_live)
        return GpuAssessment(
            index=sample.index,
            gpu_id=gpu.id,
            roofline=roofline,
            bound=bound,
            cost=self._cost(gpu, n_gpus, power_w, tokens, modelled_tokens),
            tokens_per_s=tokens,
            tokens_per_s_provenance=tokens_prov,
            modelled_tokens_per_s=modelled_tokens,
        )

    def _roofline(
        self,
        sample: GpuSample,
        gpu: GpuSpec,
        share: _EngineShare | None,
        at_live: ThroughputEstimate | None,
        idle: bool,
        compute_scale: float,
    ) -> RooflinePosition:
        w = self.workload
        dtype = w.dtype(gpu) if w else "fp16"
        peak_bw = gpu.memory_bandwidth_bytes_s
        peak = gpu.peak(dtype)
        current_peak = peak * compute_scale

        bw: float | None = None
        bw_prov = Provenance.UNKNOWN
        flops: float | None = None
        flops_prov = Provenance.UNKNOWN
        gpm = sample.gpm
        if gpm is not None and gpm.dram_bandwidth_util_ratio is not None:
            # DRAM_BW_UTIL is "vs theoretical maximum": the card's own figure where NVML gives one
            bw = gpm.dram_bandwidth_util_ratio * (sample.peak_memory_bandwidth_bytes_s or peak_bw)
            bw_prov = Provenance.MEASURED
        if gpm is not None and gpm.tensor_util_ratio is not None:
            flops = gpm.tensor_util_ratio * current_peak
            flops_prov = Provenance.MEASURED
        if w is not None and share is not None:
            batch = share.batch or w.batch
            steps_s = share.generation_tokens_per_s / batch
            if bw is None:
                bw = steps_s * float(bytes_per_decode_step(w.model, w.quant, batch, w.context_tokens))
                bw_prov = Provenance.DERIVED
            if flops is None:
                # a prompt token attends on average to half the prompt
                flops = share.generation_tokens_per_s * float(flops_per_token(w.model, w.context_tokens)) + (
                    share.prompt_tokens_per_s * float(flops_per_token(w.model, w.context_tokens / 2))
                )
                flops_prov = Provenance.DERIVED
        if at_live is not None and not idle:
            steps_s = 1.0 / float(at_live.decode_step_s)
            if bw is None:
                bw, bw_prov = float(at_live.bytes_per_decode_step) * steps_s, Provenance.MODELLED
            if flops is None:
                flops, flops_prov = float(at_live.flops_per_decode_step) * steps_s, Provenance.MODELLED

        intensity: float | None = None
        if flops is not None and bw:
            intensity = flops / bw
        elif at_live is not None:
            intensity = float(at_live.arithmetic_intensity_flop_per_byte)
        attainable = None
        if intensity is not None:
            attainable = float(attainable_flops(gpu, dtype, intensity, peak_flops_override=current_peak))
        headroom = None
        if flops is not None and attainable:
            headroom = min(1.0, flops / attainable)
        return RooflinePosition(
            peak_bandwidth_bytes_s=peak_bw,
            peak_flops=peak,
            current_peak_flops=current_peak,
            ridge_flop_per_byte=ridge_point_flop_per_byte(gpu, dtype),
            attained_bandwidth_bytes_s=bw,
            attained_flops=flops,
            arithmetic_intensity_flop_per_byte=intensity,
            attainable_flops=attainable,
            headroom_ratio=headroom,
            bandwidth_provenance=bw_prov,
            flops_provenance=flops_prov,
            dtype=dtype,
        )

    def _bound(
        self,
        sample: GpuSample,
        gpu: GpuSpec,
        r: RooflinePosition,
        idle: bool,
        at_live: ThroughputEstimate | None,
    ) -> Bound:
        if idle:
            return Bound(BoundKind.IDLE, detail="idle")
        throttle = _throttle(sample, gpu)
        if throttle is not None and throttle.holding_back:
            return throttle.bound()
        bound = self._roofline_bound(sample, gpu, r, at_live)
        if throttle is not None:  # active but not what holds the card back (e.g. a 6 % power-cap dip)
            bound = replace(
                bound,
                throttle_reasons=throttle.reasons,
                clock_loss_ratio=throttle.loss_ratio,
                detail=f"{bound.detail}; {throttle.text}",
            )
        return bound

    def _roofline_bound(
        self, sample: GpuSample, gpu: GpuSpec, r: RooflinePosition, at_live: ThroughputEstimate | None
    ) -> Bound:
        link = _link_ratio(sample, gpu)
        mem_ratio = (
            r.attained_bandwidth_bytes_s / r.peak_bandwidth_bytes_s if r.attained_bandwidth_bytes_s else 0.0
        )
        cmp_ratio = (
            r.attained_flops / r.current_peak_flops if r.attained_flops and r.current_peak_flops else 0.0
        )
        if link is not None and link[0] >= INTERCONNECT_BOUND_RATIO and link[0] >= max(mem_ratio, cmp_ratio):
            return Bound(
                BoundKind.INTERCONNECT, detail=f"interconnect bound: {link[1]} at {link[0]:.0%} of its peak"
            )
        if r.bandwidth_provenance == r.flops_provenance == Provenance.MODELLED and at_live is not None:
            # the model's own verdict: it weighs the engine's effective ceilings, not the datasheet's
            kind = BoundKind(str(at_live.bound))
        elif r.arithmetic_intensity_flop_per_byte is None:
            return Bound(BoundKind.UNKNOWN, detail="no workload declared and no GPM or engine readings")
        elif r.arithmetic_intensity_flop_per_byte < r.current_peak_flops / r.peak_bandwidth_bytes_s:
            kind = BoundKind.MEMORY  # under the ridge at live clocks (a slower SM clock moves it left)
        else:
            kind = BoundKind.COMPUTE
        if kind == BoundKind.INTERCONNECT:
            return Bound(kind, detail="interconnect bound (modelled)")
        if kind == BoundKind.MEMORY:
            used = f"{mem_ratio:.0%} of " if r.attained_bandwidth_bytes_s else ""
            return Bound(
                BoundKind.MEMORY,
                detail=(
                    f"memory-bandwidth bound ({r.bandwidth_provenance.value}): {used}"
                    f"{r.peak_bandwidth_bytes_s / 1e9:.0f} GB/s, {1 - mem_ratio:.0%} headroom"
                ),
            )
        return Bound(
            BoundKind.COMPUTE,
            detail=(
                f"compute bound ({r.flops_provenance.value}): {cmp_ratio:.0%} of "
                f"{r.current_peak_flops / 1e12:.0f} TFLOP/s {r.dtype}"
            ),
        )

    def _cost(
        self,
        gpu: GpuSpec,
        n_gpus: int,
        power_w: float | None,
        tokens: float | None,
        modelled_tokens: float | None,
    ) -> CostView | None:
        box = self.box_prices(gpu, n_gpus)
        if box is None:
            return None
        prices, price = box
        hourly = cost.cost_per_hour(
            prices, gpu_capex_usd=price, power_w=power_w if power_w is not None else gpu.tdp_w
        )
        split = CostSplit(
            float(hourly.capex_usd_per_h), float(hourly.power_usd_per_h), float(hourly.hosting_usd_per_h)
        )
        live = None
        if tokens and power_w is not None:
            live = float(cost.usd_per_mtok(prices, tokens_per_s=tokens, gpu_capex_usd=price, power_w=power_w))
        projected = None
        if modelled_tokens:
            # the projection assumes the card draws its TDP, as `gpuwatch plan cost` does
            projected = float(
                cost.usd_per_mtok(
                    prices, tokens_per_s=modelled_tokens, gpu_capex_usd=price, power_w=gpu.tdp_w
                )
            )
        cloud = None
        cloud_price = prices.cloud_usd_per_gpu_h
        reference = modelled_tokens or tokens
        if cloud_price and reference:
            cloud = float(cost.cloud_usd_per_mtok(tokens_per_s=reference, cloud_usd_per_h=cloud_price))
        return CostView(
            live_usd_per_mtok=live,
            projected_usd_per_mtok=projected,
            tokens_per_joule=tokens / power_w if tokens is not None and power_w else None,
            cost_per_hour=split,
            cloud_usd_per_mtok=cloud,
            alternatives=self.alternatives(gpu.id, n_gpus),
            power_provenance=Provenance.MEASURED if power_w is not None else Provenance.MODELLED,
        )


@dataclass(frozen=True)
class _Throttle:
    reasons: tuple[str, ...]
    loss_ratio: float | None  # 1 - SM clock / NVML's max SM clock (the contract's clock loss)
    holding_back: bool
    text: str

    def bound(self) -> Bound:
        return Bound(BoundKind.THROTTLED, self.reasons, self.loss_ratio, self.text)


def _throttle(sample: GpuSample, gpu: GpuSpec | None) -> _Throttle | None:
    """The active throttle reasons, and whether they are what holds the card back.

    Heat and hardware slowdown always are. A power cap is only when it pulls the SM clock at least
    POWER_CAP_BOUND_RATIO under the spec boost clock: a datacenter card doing dense GEMMs sits at its
    cap a few % under boost all day, and calling that "throttled" would hide its compute bound.
    """
    reasons = tuple(reason_names((sample.clock_event_reasons or 0) & THROTTLING_REASONS))
    if not reasons:
        return None
    loss = None
    text = f"throttled by {', '.join(reasons)}"
    if sample.sm_clock_hz is not None and sample.sm_clock_max_hz:
        loss = max(0.0, 1.0 - sample.sm_clock_hz / sample.sm_clock_max_hz)
        mhz = f"{sample.sm_clock_hz / 1e6:.0f} of {sample.sm_clock_max_hz / 1e6:.0f} MHz"
        text += f": SM clock {mhz}, {loss:.0%} lost"
    holding = bool(set(reasons) - _POWER_REASONS)
    if not holding:
        holding = (
            gpu is None
            or sample.sm_clock_hz is None
            or sample.sm_clock_hz < (1 - POWER_CAP_BOUND_RATIO) * gpu.boost_clock_hz
        )
    return _Throttle(reasons, loss, holding, text)


def _link_ratio(sample: GpuSample, gpu: GpuSpec) -> tuple[float, str] | None:
    """The busiest link's share of its one-direction peak, and its name."""
    best: tuple[float, str] | None = None
    pcie = [v for v in (sample.pcie_tx_bytes_s, sample.pcie_rx_bytes_s) if v is not None]
    if pcie and gpu.pcie_bytes_s > 0:
        best = (max(pcie) / gpu.pcie_bytes_s, "PCIe")
    if sample.gpm is not None and gpu.nvlink_bytes_s:
        nv = [v for v in (sample.gpm.nvlink_tx_bytes_s, sample.gpm.nvlink_rx_bytes_s) if v is not None]
        if nv:
            ratio = max(nv) / (gpu.nvlink_bytes_s / 2)
            if best is None or ratio > best[0]:
                best = (ratio, "NVLink")
    return best
