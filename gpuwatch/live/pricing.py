"""What the box costs: each GPU's share of the owner's prices, $/1M tokens live and projected, the cloud
rate for the same tokens, and the declared workload on other GPUs at the same running prices.

Prices are one OwnershipCost (gpuwatch/model/cost.py), the same defaults `gpuwatch plan cost` uses, so
the projection equals the plan's for the same workload and card.
"""

from __future__ import annotations

from dataclasses import replace

from gpuwatch.live.assessment import Alternative, CostSplit, CostView, IdleBurn, Provenance
from gpuwatch.live.config import DEFAULT_ALTERNATIVES, LiveConfig, box_gpu_price_usd, gpu_price_usd
from gpuwatch.live.idle_burn import BurnWindow
from gpuwatch.live.workload import ResolvedWorkload
from gpuwatch.model import cost
from gpuwatch.model.catalog import GpuSpec, get_gpu
from gpuwatch.model.cost import OwnershipCost

#: at most this many alternative GPUs are priced (the faces have room for three)
MAX_ALTERNATIVES = 3


class Pricing:
    """Prices are fixed for a session: alternatives are computed once per (card, box size)."""

    def __init__(self, config: LiveConfig, workload: ResolvedWorkload | None) -> None:
        self.config = config
        self.workload = workload
        self._alternatives: dict[tuple[str, int], tuple[Alternative, ...]] = {}

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
                if not w.fits(alt):  # a model that cannot load has no speed and no price per token
                    out.append(Alternative(alt.id, alt.name, None, None, False))
                    continue
                tokens = float(w.estimate(alt).decode_tokens_per_s)
                usd = float(
                    cost.usd_per_mtok(
                        prices, tokens_per_s=tokens, gpu_capex_usd=price, power_w=w.modelled_power_w(alt)
                    )
                )
                out.append(Alternative(alt.id, alt.name, tokens, usd, True))
            self._alternatives[key] = tuple(out)
        return self._alternatives[key]

    def gpu_cost(
        self,
        gpu: GpuSpec,
        n_gpus: int,
        power_w: float | None,
        tokens: float | None,
        modelled_tokens: float | None,
        *,
        window: BurnWindow | None = None,
        concurrency: float | None = None,
    ) -> CostView | None:
        box = self.box_prices(gpu, n_gpus)
        if box is None:
            return None
        prices, price = box
        # the workload's modelled draw, as `gpuwatch plan cost` prices it; TDP only with nothing declared
        modelled_w = self.workload.modelled_power_w(gpu) if self.workload is not None else gpu.tdp_w
        hourly = cost.cost_per_hour(
            prices, gpu_capex_usd=price, power_w=power_w if power_w is not None else modelled_w
        )
        split = CostSplit(
            float(hourly.capex_usd_per_h), float(hourly.power_usd_per_h), float(hourly.hosting_usd_per_h)
        )
        live = None
        if tokens and power_w is not None:
            live = float(cost.usd_per_mtok(prices, tokens_per_s=tokens, gpu_capex_usd=price, power_w=power_w))
        projected = None
        if modelled_tokens:
            # the projection prices the modelled draw, as `gpuwatch plan cost` does
            projected = float(
                cost.usd_per_mtok(
                    prices, tokens_per_s=modelled_tokens, gpu_capex_usd=price, power_w=modelled_w
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
            burn=self.idle_burn(prices, price, window) if window is not None else None,
            concurrency=concurrency,
        )

    @staticmethod
    def idle_burn(prices: OwnershipCost, gpu_price_usd: float | None, w: BurnWindow) -> IdleBurn:
        """The window priced: the measured idle share replaces the configured utilisation, so "overall"
        charges every hour of the window (idle ones at their power) to the tokens made in it."""
        every_hour = replace(prices, utilisation_ratio=1.0)
        serving = overall = per_k = None
        if w.serving_tokens_per_s and w.serving_power_w is not None:
            serving = float(
                cost.usd_per_mtok(
                    every_hour,
                    tokens_per_s=w.serving_tokens_per_s,
                    gpu_capex_usd=gpu_price_usd,
                    power_w=w.serving_power_w,
                )
            )
        if w.tokens_per_s and w.power_w is not None:
            overall = float(
                cost.usd_per_mtok(
                    every_hour, tokens_per_s=w.tokens_per_s, gpu_capex_usd=gpu_price_usd, power_w=w.power_w
                )
            )
        joules = None
        if w.requests_per_s and w.power_w is not None:
            joules = w.power_w / w.requests_per_s
            hourly = cost.cost_per_hour(every_hour, gpu_capex_usd=gpu_price_usd, power_w=w.power_w)
            per_k = float(hourly.total_usd_per_h) / 3600.0 / w.requests_per_s * 1000.0
        return IdleBurn(
            window_s=w.window_s,
            idle_ratio=w.idle_ratio,
            idle_power_w=w.idle_power_w,
            usd_per_mtok_serving=serving,
            usd_per_mtok_overall=overall,
            joules_per_request=joules,
            usd_per_k_requests=per_k,
        )

    def box_usd_per_mtok(self, capex_usd: float, tokens_per_s: float, power_w: float) -> float:
        """The whole box: its GPUs' capex shares added up, the full hosting, the summed power."""
        whole = replace(self.config.prices, server_capex_usd=capex_usd)
        return float(cost.usd_per_mtok(whole, tokens_per_s=tokens_per_s, gpu_capex_usd=None, power_w=power_w))
