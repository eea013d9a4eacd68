"""Joins one snapshot with the model: one GpuAssessment per card and the box's totals, each figure with
its provenance.

The jobs are in their own modules: gpuwatch/live/attribution.py (what each card attains, measured /
derived / modelled), gpuwatch/live/bound.py (what holds it back), gpuwatch/live/pricing.py (what it
costs); gpuwatch/live/workload.py runs the model at live clocks. This module keeps the per-session state
(caches, alert tracker) and puts the pieces together.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from gpuwatch.live.alerts import AlertTracker
from gpuwatch.live.assessment import (
    Bound,
    BoundKind,
    BoxAssessment,
    GpuAssessment,
    Provenance,
    weakest,
)
from gpuwatch.live.attribution import (
    EngineShare,
    engine_shares,
    engine_work_by_gpu,
    is_idle,
    live_power_w,
    roofline_position,
)
from gpuwatch.live.bound import bound as bound_of
from gpuwatch.live.bound import throttle_of
from gpuwatch.live.config import LiveConfig, gpu_price_usd
from gpuwatch.live.idle_burn import BurnWindow, IdleTracker
from gpuwatch.live.power_advice import advice_kind, advise_gpu
from gpuwatch.live.pricing import Pricing
from gpuwatch.live.workload import ResolvedWorkload, clock_scales, derated
from gpuwatch.model.catalog import GpuSpec, get_gpu
from gpuwatch.model.errors import ModelInputError, UnknownIdError
from gpuwatch.telemetry.engine_state import EngineWork
from gpuwatch.telemetry.engines import EngineReading
from gpuwatch.telemetry.history import History
from gpuwatch.telemetry.sample import GpuSample, Snapshot

if TYPE_CHECKING:
    from gpuwatch.model.throughput import ThroughputEstimate

__all__ = ["Assessor", "ResolvedWorkload", "clock_scales", "derated", "identify_gpu"]


def identify_gpu(sample: GpuSample) -> GpuSpec | None:
    """The catalog entry telemetry matched for this card (``sample.catalog_id``); None when it has none."""
    if sample.catalog_id is None:
        return None
    try:
        return get_gpu(sample.catalog_id)
    except UnknownIdError:  # a recording made with a catalog entry this catalog lacks
        return None


log = logging.getLogger(__name__)

#: the board power the assessment works from is the mean over this many polls (at least the minimum)
POWER_WINDOW_POLLS = 5
POWER_WINDOW_MIN_S = 2.0


def history_points(interval_s: float, time_scale: float = 1.0) -> int:
    """Points of History per GPU the assessment reads (the power mean's window), with room to spare.

    Why: a face that shows no history (the exporter) keeps this many instead of History's 15 minutes,
    which at ~80 readings per point is ~0.5 MiB per GPU; the figures are the same, since nothing
    older than the window is read. A slowed simulated clock (``time_scale`` < 1) packs more polls into
    the window's simulated seconds.
    """
    window_s = max(POWER_WINDOW_MIN_S, POWER_WINDOW_POLLS * interval_s)
    return 2 * math.ceil(window_s / (interval_s * min(1.0, time_scale))) + 8


class Assessor:
    """Stateful (alerts, caches): feed it every snapshot of one source, in order.

    ``advise_every_poll`` False leaves the power-cap advice (the costliest figure: ~30 caps solved per
    GPU) out of :meth:`assess` and computes it in :meth:`with_advice`, once per assessment, for the
    face that shows it: an exporter polls every second but is scraped every 15-60 s, so it advises per
    scrape, from the same poll and with the same figures, instead of per poll. The poll after one that
    was asked for is advised in :meth:`assess` already, so a face that asks every poll (scrapes faster
    than polls) gets its advice ready-made and its first scrape of a poll pays no solve.
    """

    def __init__(self, config: LiveConfig, *, advise_every_poll: bool = True) -> None:
        self.config = config
        self.advise_every_poll = advise_every_poll
        self._advice_lock = threading.Lock()
        #: the last two assessments made without advice (a scrape may hold the one before the latest),
        #: each with what advising it needs: (sample, power, assessed without failure) per GPU, box size
        self._unadvised: list[
            tuple[BoxAssessment, tuple[tuple[GpuSample, float | None, bool], ...], int]
        ] = []
        self._advised: tuple[BoxAssessment, BoxAssessment] | None = None  # (as assessed, with advice)
        self._asked = False  # with_advice() was called since the last assess()
        self.workload = ResolvedWorkload.of(config.workload) if config.workload else None
        self._alerts = AlertTracker(config.alerts)
        self._specs: dict[str, GpuSpec | None] = {}
        self._fits: dict[str, bool] = {}
        self._capex_usd: dict[tuple[str, int], float | None] = {}
        self._estimates: dict[tuple[str, float, float], ThroughputEstimate] = {}
        self.pricing = Pricing(config, self.workload)
        self._idle = IdleTracker()
        self._failures: dict[int, str] = {}  # GPU index -> the last assessment failure logged for it

    # -- caches: the model is pure, prices are fixed for a session ---------------------------------

    def _spec(self, sample: GpuSample) -> GpuSpec | None:
        key = sample.catalog_id or ""
        if key not in self._specs:
            self._specs[key] = identify_gpu(sample)
        return self._specs[key]

    def _box_capex_usd(self, sample: GpuSample, n_gpus: int) -> float | None:
        """This GPU's share of the box's capex; None without a price. Prices are fixed for a session."""
        key = (sample.catalog_id or "", n_gpus)
        if key not in self._capex_usd:
            box = self.pricing.box_prices(self._spec(sample), n_gpus)
            self._capex_usd[key] = None if box is None else float(box[0].capex_usd(box[1]) or 0.0)
        return self._capex_usd[key]

    def _workload_fits(self, gpu: GpuSpec) -> bool | None:
        if self.workload is None:
            return None
        if gpu.id not in self._fits:
            self._fits[gpu.id] = self.workload.fits(gpu)
        return self._fits[gpu.id]

    def _estimate(self, gpu: GpuSpec, compute_scale: float, memory_scale: float) -> ThroughputEstimate | None:
        """The declared workload modelled on this card at these clocks; None without one, or where it
        does not fit (a model that cannot load has no speed)."""
        if self.workload is None or not self._workload_fits(gpu):
            return None
        key = (gpu.id, round(compute_scale, 3), round(memory_scale, 3))
        if key not in self._estimates:
            if len(self._estimates) > 4096:
                self._estimates.clear()
            self._estimates[key] = self.workload.estimate(derated(gpu, key[1], key[2]))
        return self._estimates[key]

    # -- the assessment -----------------------------------------------------------------------------

    def assess(
        self, snap: Snapshot, history: History, engines: Sequence[EngineReading] = ()
    ) -> BoxAssessment:
        shares = engine_shares(snap, engines)
        work = engine_work_by_gpu(snap, engines)
        engines_answer = any(e.error is None and e.generation_tokens_per_s is not None for e in engines)
        n = max(1, len(snap.gpus))
        window_s = max(POWER_WINDOW_MIN_S, POWER_WINDOW_POLLS * self.config.interval_s)
        gpus = []
        powers: list[float] = []
        capex_usd = 0.0  # the box's: each GPU's share added up
        priced = 0
        with self._advice_lock:  # read and reset at once: a scrape during this poll asks for the next
            advise, self._asked = self.advise_every_poll or self._asked, False
        pending: list[tuple[GpuSample, float | None, bool]] = []
        for sample in snap.gpus:
            power = None if sample.lost else live_power_w(sample, history, window_s)
            share = shares.get(sample.index)
            burn = None
            if not sample.lost:
                # an answering engine with no tokens for this GPU means it idles; no engine: not known
                tokens = share.generation_tokens_per_s if share else (0.0 if engines_answer else None)
                requests = share.requests_per_s if share else (0.0 if engines_answer else None)
                burn = self._idle.update(sample.index, snap.timestamp_s, tokens, power, requests)
            try:
                g = self._assess_gpu(sample, share, power, n, work.get(sample.index), burn)
                if advise:
                    g = self._advise(sample, g, power, n)
                self._failures.pop(sample.index, None)
                pending.append((sample, power, True))
            except Exception as exc:  # one card's failure must not cost the others their figures
                g = self._failed_gpu(sample, exc)
                pending.append((sample, power, False))
            gpus.append(g)
            if power is not None:
                powers.append(power)
            gpu_capex_usd = self._box_capex_usd(sample, n)
            if gpu_capex_usd is not None:
                capex_usd += gpu_capex_usd
                priced += 1
        producing = [g for g in gpus if g.tokens_per_s is not None]
        box_tokens = sum(g.tokens_per_s or 0.0 for g in producing) if producing else None
        box_power = sum(powers) if powers else None
        box_usd = None
        if box_tokens and box_power is not None and priced == len(snap.gpus):
            box_usd = self.pricing.box_usd_per_mtok(capex_usd, box_tokens, box_power)
        alerts = self._alerts.update(snap, gpus)
        assessed = BoxAssessment(
            timestamp_s=snap.timestamp_s,
            gpus=tuple(gpus),
            tokens_per_s=box_tokens,
            usd_per_mtok=box_usd,
            tokens_per_joule=box_tokens / box_power if box_tokens is not None and box_power else None,
            alerts=alerts,
            tokens_per_s_provenance=weakest(g.tokens_per_s_provenance for g in producing),
        )
        if not advise:  # an advised one needs nothing more: with_advice() returns it as it is
            with self._advice_lock:
                self._unadvised = [*self._unadvised[-1:], (assessed, tuple(pending), n)]
        return assessed

    def with_advice(self, assessed: BoxAssessment) -> BoxAssessment:
        """``assessed`` with each GPU's power-cap advice, computed once per assessment (see the class
        docstring); as it is where advice is computed every poll. An assessment older than the last two
        is returned as it is: its inputs are no longer kept, and a face shows only the latest.
        """
        if self.advise_every_poll:
            return assessed
        with self._advice_lock:
            self._asked = True
            if self._advised is not None and self._advised[0] is assessed:
                return self._advised[1]
            found = [(pending, n) for box, pending, n in self._unadvised if box is assessed]
            if not found:
                return assessed
            pending, n = found[0]
            gpus = []
            for (sample, power, ok), g in zip(pending, assessed.gpus, strict=True):
                if ok:
                    try:
                        g = self._advise(sample, g, power, n)
                    except Exception as exc:  # as in assess(): this card's figures unknown, the others kept
                        g = self._failed_gpu(sample, exc)
                gpus.append(g)
            advised = replace(assessed, gpus=tuple(gpus))
            self._advised = (assessed, advised)
            return advised

    def _failed_gpu(self, sample: GpuSample, exc: Exception) -> GpuAssessment:
        """Every figure of this GPU unknown, with the reason; logged once per distinct failure."""
        why = f"{type(exc).__name__}: {exc}"
        if self._failures.get(sample.index) != why:
            log.exception("GPU %d: assessment failed; its figures are unknown this poll", sample.index)
            self._failures[sample.index] = why
        return GpuAssessment(
            index=sample.index,
            gpu_id=sample.catalog_id,
            roofline=None,
            bound=Bound(BoundKind.UNKNOWN, detail=f"assessment failed: {why}"),
            cost=None,
            tokens_per_s=None,
            tokens_per_s_provenance=Provenance.UNKNOWN,
        )

    def _advise(
        self, sample: GpuSample, g: GpuAssessment, power_w: float | None, n_gpus: int
    ) -> GpuAssessment:
        """The power-cap advice for this poll (gpuwatch/live/power_advice.py), on the assessment."""
        if sample.lost:
            return g
        spec = self._spec(sample)
        price = gpu_price_usd(self.config, spec) if spec is not None else None
        try:
            live = advise_gpu(sample, g, spec, self.config.prices, price, power_w=power_w, n_gpus=n_gpus)
        except ModelInputError as exc:  # a reading the power model cannot take: no advice, and why
            return replace(g, power_advice_kind="no_advice", power_advice_reason=str(exc))
        a = live.advice
        return replace(
            g,
            advised_power_limit_w=a.advised_limit_w if a is not None else None,
            power_advice_kind=advice_kind(live),
            power_advice_reason=live.reason,
            advised_speed_loss_ratio=a.expected_speed_loss_ratio if a is not None else None,
        )

    def _assess_gpu(
        self,
        sample: GpuSample,
        share: EngineShare | None,
        power_w: float | None,
        n_gpus: int,
        work: EngineWork | None = None,
        burn: BurnWindow | None = None,
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
            throttle = throttle_of(sample, None) if not idle else None
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

        fits = self._workload_fits(gpu)
        # engine traffic is not the declared workload's where that cannot load here: nothing derived from it
        workload = self.workload if fits else None
        roofline = roofline_position(sample, gpu, workload, share, at_live, idle, compute_scale, work)
        bound = bound_of(sample, gpu, roofline, idle, at_live)
        if fits is False and bound.kind == BoundKind.UNKNOWN and self.workload is not None:
            w = self.workload
            bound = replace(
                bound,
                detail=f"the declared workload ({w.model.name} {w.quant.id}, batch {w.batch} x "
                f"{w.context_tokens:,} tokens) does not fit in {gpu.memory_gib:g} GiB",
            )
        return GpuAssessment(
            index=sample.index,
            gpu_id=gpu.id,
            roofline=roofline,
            bound=bound,
            cost=self.pricing.gpu_cost(
                gpu,
                n_gpus,
                power_w,
                tokens,
                modelled_tokens,
                window=burn,
                concurrency=share.batch if share is not None and share.batch else None,
            ),
            tokens_per_s=tokens,
            tokens_per_s_provenance=tokens_prov,
            modelled_tokens_per_s=modelled_tokens,
            workload_fits=fits,
        )
