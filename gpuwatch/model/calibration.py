"""Fit engine profiles to the published measurements in data/engine_profiles.toml, and predict them.

Each measurement is turned into a time per token the model can be compared with (1 / tokens/s):
a decode step per stream, a prefill per prompt token, or a whole ``benchmark_latency`` run per
generated token (prefill of the prompt + (output - 1) decode steps at the mean context). That time is
piecewise *linear* in the inverse bandwidth ratio, the per-layer overhead and the inverse prefill
ratio, so the fit is an ordinary least-squares solve on relative time errors, repeated until the
bound regime of every measurement (memory vs compute) stops changing. Only the parameters the
profile lists in ``fit_params`` are solved for: the data file declares them, because e.g. one
decode configuration cannot separate a bandwidth ratio from a per-layer overhead. The rest keep the
profile's value and stay labelled assumed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from gpuwatch.model.catalog import GpuSpec, get_gpu
from gpuwatch.model.engine_profiles import (
    PARAM_NAMES,
    EngineProfile,
    Measurement,
    get_engine_profile,
    load_measurements,
)
from gpuwatch.model.errors import ModelInputError
from gpuwatch.model.llm import get_model
from gpuwatch.model.quant import get_quant
from gpuwatch.model.throughput import estimate_throughput

# (EngineProfile field, whether the fit variable is its inverse, finite-difference step)
_PARAMS: tuple[tuple[str, bool, float], ...] = (
    ("hbm_bandwidth_ratio", True, 0.01),
    ("gddr_bandwidth_ratio", True, 0.01),
    ("per_layer_overhead_s", False, 1e-6),
    ("hbm_prefill_peak_ratio", True, 0.01),
    ("gddr_prefill_peak_ratio", True, 0.01),
    ("fp8_peak_scale_ratio", True, 0.01),
)
assert tuple(p[0] for p in _PARAMS) == PARAM_NAMES


def gpu_for(m: Measurement) -> GpuSpec:
    """The catalog GPU, or for a card outside it a same-class spec with its own bandwidth."""
    if m.bandwidth_bytes_s is None:
        return get_gpu(m.gpu)
    return dataclasses.replace(
        get_gpu("rtx4090"),
        id=m.gpu,
        memory_bandwidth_bytes_s=m.bandwidth_bytes_s,
        memory_type=m.memory_type or "GDDR6X",
    )


def predict_tokens_per_s(m: Measurement, profile: EngineProfile | None = None) -> float:
    """What the model says for the measurement's setting, in the measurement's own unit."""
    prof = get_engine_profile(m.engine) if profile is None else profile
    model, quant, gpu = get_model(m.model), get_quant(m.quant), gpu_for(m)

    def est(context: float) -> tuple[float, float]:
        e = estimate_throughput(
            model, quant, gpu, m.batch, context, prompt_tokens=m.context_tokens, engine=prof, count=m.count
        )
        return float(e.decode_tokens_per_s), float(e.time_to_first_token_s)

    if m.phase == "decode":
        return est(m.context_tokens)[0]
    if m.phase == "prefill":
        return m.batch * m.context_tokens / est(m.context_tokens)[1]
    # "e2e": one benchmark_latency run. The first output token comes out of the prefill.
    decode_tps, ttft_s = est(m.context_tokens + m.output_tokens / 2)
    latency_s = ttft_s + (m.output_tokens - 1) * m.batch / decode_tps
    return m.batch * m.output_tokens / latency_s


def relative_error(m: Measurement, profile: EngineProfile | None = None) -> float:
    """predicted / published - 1 (positive: the model is optimistic)."""
    return predict_tokens_per_s(m, profile) / m.tokens_per_s - 1.0


def _theta(profile: EngineProfile) -> np.ndarray:
    return np.array([1.0 / getattr(profile, n) if inv else getattr(profile, n) for n, inv, _ in _PARAMS])


def _profile(base: EngineProfile, theta: np.ndarray) -> EngineProfile:
    values = {n: (1.0 / v if inv else v) for (n, inv, _), v in zip(_PARAMS, theta, strict=True)}
    return dataclasses.replace(base, **values)


def _linearise(
    ms: Sequence[Measurement], base: EngineProfile, theta: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Time per token ~= A @ theta + c around theta (exact inside one bound regime)."""
    t0 = np.array([1.0 / predict_tokens_per_s(m, _profile(base, theta)) for m in ms])
    a = np.zeros((len(ms), len(_PARAMS)))
    for j, (_, _, step) in enumerate(_PARAMS):
        moved = theta.copy()
        moved[j] += step
        prof = _profile(base, moved)
        a[:, j] = (np.array([1.0 / predict_tokens_per_s(m, prof) for m in ms]) - t0) / step
    return a, t0 - a @ theta


@dataclasses.dataclass(frozen=True)
class FitResult:
    profile: EngineProfile  # the input profile with its fit_params replaced by the solution
    measurements: tuple[Measurement, ...]  # the use = "fit" set it was solved on
    fit_errors: tuple[float, ...]  # relative error per fitting measurement after the fit


def fit_profile(engine: str | EngineProfile, measurements: Sequence[Measurement] | None = None) -> FitResult:
    """Least-squares fit of an engine's ``fit_params`` to its ``use = "fit"`` measurements.

    Minimises the sum of squared relative errors in time per token; ratios are kept <= 1 and the
    overhead >= 0 (a parameter that would cross its bound is pinned there and the rest re-solved).
    """
    base = get_engine_profile(engine)
    pool = load_measurements() if measurements is None else measurements
    ms = tuple(m for m in pool if m.engine == base.name and m.use == "fit")
    theta = _theta(base)
    free = [PARAM_NAMES.index(p) for p in base.fit_params]
    if not ms or not free:
        return FitResult(base, ms, tuple(relative_error(m, base) for m in ms))
    lower = np.array([1.0 if inv else 0.0 for _, inv, _ in _PARAMS])  # ratio <= 1, overhead >= 0
    for _ in range(20):
        a, c = _linearise(ms, base, theta)
        t_meas = np.array([1.0 / m.tokens_per_s for m in ms])
        active = list(free)
        new = theta.copy()
        while active:  # pin whatever leaves its bound and re-solve the rest
            pinned = [j for j in range(len(_PARAMS)) if j not in active]
            if np.linalg.matrix_rank(a[:, active]) < len(active):
                names = ", ".join(PARAM_NAMES[j] for j in active)
                raise ModelInputError(
                    f"{base.name}: the fitting measurements cannot separate {names}; "
                    "add measurements that do or drop some from fit_params"
                )
            rhs = 1.0 - (c + a[:, pinned] @ new[pinned]) / t_meas
            new[active] = np.linalg.lstsq(a[:, active] / t_meas[:, None], rhs, rcond=None)[0]
            low = [j for j in active if new[j] < lower[j]]
            if not low:
                break
            new[low] = lower[low]
            active = [j for j in active if j not in low]
        done = np.allclose(new, theta, rtol=1e-6, atol=1e-12)
        theta = new
        if done:
            break
    prof = _profile(base, theta)
    return FitResult(prof, ms, tuple(relative_error(m, prof) for m in ms))
