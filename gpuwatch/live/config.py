"""The live configuration: prices, the declared workload, engine URLs, poll interval, alert thresholds.

One TOML file (the platformdirs user config path, or ``--config FILE``) read with tomllib; every key
can be overridden on the command line. Bad input is a one-line ConfigError naming the key, the value
given and what is allowed, because a cost figure computed from a mistyped price is worse than none.
Unknown keys are errors for the same reason: a typo must not silently fall back to a default.
"""

from __future__ import annotations

import argparse
import math
import tomllib
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import platformdirs

from gpuwatch.errors import UserError
from gpuwatch.model.catalog import GpuSpec, get_gpu
from gpuwatch.model.errors import ModelInputError, UnknownIdError
from gpuwatch.model.llm import get_model
from gpuwatch.model.quant import get_quant
from gpuwatch.telemetry.engines import metrics_url


class ConfigError(UserError):
    """A config value (file or command line) that cannot be used."""


@dataclass(frozen=True)
class Prices:
    """What running and owning the box costs; defaults are gpuwatch.model.cost's, so that the live
    view and `gpuwatch plan cost` agree out of the box.

    ``server_capex_usd`` is the whole server (GPUs, host, PSU, chassis, network). Unset, it is the
    GPUs' catalog list prices x (1 + ``server_overhead_ratio``).
    """

    electricity_usd_per_kwh: float = 0.12
    pue: float = 1.0  # a box under a desk has no facility overhead; a data hall is ~1.2-1.6
    server_capex_usd: float | None = None
    server_overhead_ratio: float = 0.0  # host share of the GPUs' price, used when server_capex_usd is unset
    service_life_years: float = 3.0
    hosting_usd_per_h: float = 0.0
    cloud_usd_per_gpu_h: float | None = None  # None: no cloud comparison
    utilisation_ratio: float = 0.7  # share of the service life the box does paid work (capex amortisation)


@dataclass(frozen=True)
class Workload:
    """A declared serving workload: catalog model and quantisation, concurrent sequences, context."""

    model_id: str
    quant_id: str
    batch: int = 1
    context_tokens: int = 2048
    engine_profile: str | None = None  # model engine profile (llama.cpp, vllm, ...); None = model default

    @property
    def spec(self) -> str:
        """The ``--workload`` string that reproduces this workload."""
        return f"{self.model_id}:{self.quant_id}:batch={self.batch}:context={self.context_tokens}"


@dataclass(frozen=True)
class AlertThresholds:
    #: warn when the distance to the slowdown temperature is at most this
    temperature_margin_c: float = 5.0
    #: the margin must recover by this much before the warning may fire again (no flapping)
    temperature_hysteresis_c: float = 2.0
    #: alert when live tokens/s < (1 - this) x the modelled ceiling ...
    throughput_shortfall_ratio: float = 0.3
    #: ... continuously for this long (a single slow poll is not a finding)
    throughput_hold_s: float = 30.0


@dataclass(frozen=True)
class LiveConfig:
    prices: Prices = field(default_factory=Prices)
    workload: Workload | None = None
    engine_urls: tuple[str, ...] = ()
    interval_s: float = 1.0
    alerts: AlertThresholds = field(default_factory=AlertThresholds)
    #: catalog GPU ids to price the same workload on; empty = DEFAULT_ALTERNATIVES
    alternatives: tuple[str, ...] = ()
    #: catalog GPU id -> purchase price in USD, over the catalog's list price (datacenter parts have none)
    gpu_prices: Mapping[str, float] = field(default_factory=dict)
    path: Path | None = None  # the file it came from, for display


#: compared against when the config names none, in this order: the first three with a price (list
#: price or [gpu_prices]) that are not the card itself. Datacenter parts have no list price, so
#: they appear once the user prices them.
DEFAULT_ALTERNATIVES = ("rtx4090", "rtx5090", "h100-sxm", "a100-80gb-sxm", "rtx3090")


def gpu_price_usd(config: LiveConfig, gpu: GpuSpec) -> float | None:
    """What one of these cards costs to buy: the config's figure, else the catalog's list price."""
    return config.gpu_prices.get(gpu.id, gpu.list_price_usd)


def default_config_path() -> Path:
    return platformdirs.user_config_path("gpuwatch") / "config.toml"


# --- value checks ---------------------------------------------------------------------------------
# Each returns the converted value or raises _Bad(allowed) saying what would have been accepted.


class _Bad(Exception):
    """``allowed`` completes "expected ..."; ``reason`` is a whole sentence (a catalog's own error)."""

    def __init__(self, allowed: str = "", *, reason: str | None = None) -> None:
        super().__init__(reason or allowed)
        self.allowed = allowed
        self.reason = reason


def _number(
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    optional: bool = False,
) -> Callable[[Any], float | None]:
    parts = []
    if above is not None:
        parts.append(f"> {above:g}")
    if minimum is not None:
        parts.append(f">= {minimum:g}")
    if maximum is not None:
        parts.append(f"<= {maximum:g}")
    allowed = "a number" + (" " + " and ".join(parts) if parts else "")

    def check(value: Any) -> float | None:
        if isinstance(value, str):
            if optional and value.strip().lower() in ("", "none"):
                return None
            try:
                value = float(value)
            except ValueError:
                raise _Bad(allowed) from None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise _Bad(allowed)
        v = float(value)
        if (
            (above is not None and v <= above)
            or (minimum is not None and v < minimum)
            or (maximum is not None and v > maximum)
        ):
            raise _Bad(allowed)
        return v

    return check


def _integer(*, minimum: int) -> Callable[[Any], int]:
    allowed = f"a whole number >= {minimum}"

    def check(value: Any) -> int:
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise _Bad(allowed) from None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _Bad(allowed)
        return value

    return check


def _url(value: Any) -> str:
    """What the engine watcher can scrape: host:port, or an http(s) URL (a bare host gets /metrics)."""
    allowed = "an engine URL like http://127.0.0.1:8000/metrics or 127.0.0.1:8000"
    if not isinstance(value, str) or not value.strip():
        raise _Bad(allowed)
    parts = urllib.parse.urlsplit(metrics_url(value.strip()))
    try:
        parts.port  # noqa: B018 -- raises on a port that is not a number
    except ValueError:
        raise _Bad(allowed) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Bad(allowed)
    return value.strip()


def _url_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        raise _Bad('a list of engine URLs, e.g. ["http://127.0.0.1:8000/metrics"]')
    return tuple(_url(v) for v in value)


def _gpu_id(value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad("a catalog GPU id (see `gpuwatch plan gpus`)")
    try:
        return get_gpu(value).id
    except UnknownIdError as exc:
        raise _Bad(reason=str(exc)) from None


def _gpu_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple):
        raise _Bad("a list of catalog GPU ids (see `gpuwatch plan gpus`)")
    return tuple(_gpu_id(v.strip() if isinstance(v, str) else v) for v in value)


def _model_id(value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad("a catalog model id (see `gpuwatch plan --help`)")
    try:
        return get_model(value).id
    except UnknownIdError as exc:
        raise _Bad(reason=str(exc)) from None


def _quant_id(value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad("a quantisation id, e.g. fp16, int4-awq, q4_K_M")
    try:
        return get_quant(value).id
    except UnknownIdError as exc:
        raise _Bad(reason=str(exc)) from None


def _engine_profile(value: Any) -> str:
    from gpuwatch.model.engine_profiles import get_engine_profile

    if not isinstance(value, str):
        raise _Bad("an engine profile name, e.g. vllm, llama.cpp")
    try:
        get_engine_profile(value)
    except (UnknownIdError, ModelInputError) as exc:
        raise _Bad(reason=str(exc)) from None
    return value


#: file section -> key -> check. The key names are the dataclass field names.
_PRICE_KEYS: dict[str, Callable[[Any], Any]] = {
    "electricity_usd_per_kwh": _number(minimum=0),
    "pue": _number(minimum=1, maximum=5),
    "server_capex_usd": _number(minimum=0, optional=True),
    "server_overhead_ratio": _number(minimum=0, maximum=10),
    "service_life_years": _number(above=0, maximum=50),
    "hosting_usd_per_h": _number(minimum=0),
    "cloud_usd_per_gpu_h": _number(minimum=0, optional=True),
    "utilisation_ratio": _number(above=0, maximum=1),
}
_WORKLOAD_KEYS: dict[str, Callable[[Any], Any]] = {
    "model": _model_id,
    "quant": _quant_id,
    "batch": _integer(minimum=1),
    "context_tokens": _integer(minimum=1),
    "engine_profile": _engine_profile,
}
_ALERT_KEYS: dict[str, Callable[[Any], Any]] = {
    "temperature_margin_c": _number(minimum=0, maximum=50),
    "temperature_hysteresis_c": _number(minimum=0, maximum=20),
    "throughput_shortfall_ratio": _number(above=0, maximum=1),
    "throughput_hold_s": _number(minimum=0),
}
_TOP_KEYS: dict[str, Callable[[Any], Any]] = {
    "interval_s": _number(minimum=0.05, maximum=3600),
    "engine_urls": _url_list,
    "alternatives": _gpu_list,
}
_SECTIONS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "prices": _PRICE_KEYS,
    "workload": _WORKLOAD_KEYS,
    "alerts": _ALERT_KEYS,
}


def _check(where: str, key: str, value: Any, check: Callable[[Any], Any]) -> Any:
    try:
        return check(value)
    except _Bad as bad:
        why = bad.reason or f"expected {bad.allowed}"
        raise ConfigError(f"{where}{key} = {value!r} is not allowed: {why}") from None


def _unknown(where: str, key: str, known: Iterable[str]) -> ConfigError:
    return ConfigError(f"{where}unknown key {key!r}; known keys: {', '.join(known)}")


def parse_workload(spec: str, *, key: str = "--workload") -> Workload:
    """``MODEL:QUANT[:batch=N][:context=N][:engine=PROFILE]``, e.g. llama-3-8b:fp16:batch=8:context=4096."""
    form = "MODEL:QUANT[:batch=N][:context=N][:engine=PROFILE], e.g. llama-3-8b:fp16:batch=8:context=4096"
    parts = [p.strip() for p in spec.split(":")]
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ConfigError(f"{key} = {spec!r} is not allowed: expected {form}")
    values: dict[str, Any] = {
        "model": _check("", key, parts[0], _model_id),
        "quant": _check("", key, parts[1], _quant_id),
    }
    names = {"batch": "batch", "context": "context_tokens", "engine": "engine_profile"}
    for part in parts[2:]:
        name, sep, raw = part.partition("=")
        if not sep or name not in names:
            raise ConfigError(f"{key} = {spec!r}: unknown part {part!r}; expected {form}")
        field_name = names[name]
        values[field_name] = _check("", f"{key} {name}", raw, _WORKLOAD_KEYS[field_name])
    return _workload_from(values)


def _workload_from(values: Mapping[str, Any]) -> Workload:
    kwargs = {k: v for k, v in values.items() if k not in ("model", "quant")}
    return Workload(model_id=values["model"], quant_id=values["quant"], **kwargs)


def _gpu_prices(where: str, value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}gpu_prices = {value!r} is not allowed: expected a [gpu_prices] table")
    return {
        _check(where, f"gpu_prices.{k}", k, _gpu_id): _check(where, f"gpu_prices.{k}", v, _number(above=0))
        for k, v in value.items()
    }


def _parse_file(path: Path, data: Mapping[str, Any]) -> LiveConfig:
    where = f"{path}: "
    top: dict[str, Any] = {}
    gpu_prices: dict[str, float] = {}
    sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    for key, value in data.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{key} = {value!r} is not allowed: expected a [{key}] table")
            known = _SECTIONS[key]
            for sub, sub_value in value.items():
                if sub not in known:
                    raise _unknown(where, f"{key}.{sub}", (f"{key}.{k}" for k in known))
                sections[key][sub] = _check(where, f"{key}.{sub}", sub_value, known[sub])
        elif key in _TOP_KEYS:
            top[key] = _check(where, key, value, _TOP_KEYS[key])
        elif key == "gpu_prices":
            gpu_prices = _gpu_prices(where, value)
        else:
            raise _unknown(where, key, [*_TOP_KEYS, *(f"[{s}]" for s in (*_SECTIONS, "gpu_prices"))])
    workload = None
    if sections["workload"]:
        missing = [k for k in ("model", "quant") if k not in sections["workload"]]
        if missing:
            raise ConfigError(
                f"{where}[workload] lacks {' and '.join(missing)}: both model and quant are required"
            )
        workload = _workload_from(sections["workload"])
    return LiveConfig(
        prices=Prices(**sections["prices"]),
        workload=workload,
        engine_urls=top.get("engine_urls", ()),
        interval_s=top.get("interval_s", 1.0),
        alerts=AlertThresholds(**sections["alerts"]),
        alternatives=top.get("alternatives", ()),
        gpu_prices=gpu_prices,
        path=path,
    )


def read_config_file(path: str | Path | None) -> LiveConfig:
    """The file's config; the defaults when ``path`` is None and the default file does not exist."""
    explicit = path is not None
    p = Path(path) if path is not None else default_config_path()
    if not p.exists():
        if explicit:
            raise ConfigError(f"--config {p}: no such file")
        return LiveConfig()
    try:
        with p.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
    return _parse_file(p, data)


# --- command line ---------------------------------------------------------------------------------

#: price option -> Prices field
PRICE_OPTIONS: dict[str, str] = {
    "--electricity-price": "electricity_usd_per_kwh",
    "--pue": "pue",
    "--server-capex": "server_capex_usd",
    "--server-overhead": "server_overhead_ratio",
    "--service-life": "service_life_years",
    "--hosting-price": "hosting_usd_per_h",
    "--cloud-price": "cloud_usd_per_gpu_h",
    "--utilisation": "utilisation_ratio",
}
_PRICE_HELP = {
    "--electricity-price": ("USD", "electricity price in $/kWh"),
    "--pue": ("X", "power usage effectiveness of the room (1.0 = no overhead)"),
    "--server-capex": ("USD", "purchase price of the whole server (default: estimated from GPU list prices)"),
    "--server-overhead": (
        "RATIO",
        "host/chassis/network share of the GPU price, when --server-capex is unset",
    ),
    "--service-life": ("YEARS", "years over which the server is written off"),
    "--hosting-price": ("USD", "hosting/colocation $/h for the box"),
    "--cloud-price": ("USD", "cloud $/GPU-hour to compare against"),
    "--utilisation": ("RATIO", "share of the service life the box does paid work, 0..1"),
}


def add_price_options(parser: argparse.ArgumentParser) -> None:
    """The price and comparison options; values are checked by load_config so errors name the option."""
    g = parser.add_argument_group("prices (override the config file)")
    for option, field_name in PRICE_OPTIONS.items():
        metavar, text = _PRICE_HELP[option]
        g.add_argument(option, dest=field_name, metavar=metavar, default=None, help=text)
    g.add_argument(
        "--compare",
        dest="alternatives",
        metavar="GPUS",
        default=None,
        help="comma-separated catalog GPU ids to price the workload on, e.g. rtx4090,h100-sxm",
    )


def _overrides(overrides: argparse.Namespace | Mapping[str, Any] | None) -> dict[str, Any]:
    if overrides is None:
        return {}
    if isinstance(overrides, argparse.Namespace):
        overrides = vars(overrides)
    return {k: v for k, v in overrides.items() if v is not None}


def load_config(
    path: str | Path | None = None, overrides: argparse.Namespace | Mapping[str, Any] | None = None
) -> LiveConfig:
    """The config file (or defaults) with command-line values on top.

    ``overrides`` is the parsed CLI namespace (dests: workload, engine, interval, the Prices field
    names from add_price_options, alternatives) or a Mapping with the same keys; None values are ignored.
    """
    config = read_config_file(path)
    o = _overrides(overrides)
    price_changes: dict[str, Any] = {}
    option_of = {v: k for k, v in PRICE_OPTIONS.items()}
    for f in fields(Prices):
        if f.name in o:
            price_changes[f.name] = _check("", option_of[f.name], o[f.name], _PRICE_KEYS[f.name])
    if price_changes:
        config = replace(config, prices=replace(config.prices, **price_changes))
    if "workload" in o:
        w = o["workload"]
        config = replace(config, workload=w if isinstance(w, Workload) else parse_workload(str(w)))
    if "engine" in o:
        # --engine is repeatable; the command line replaces the file's list rather than adding to it
        config = replace(config, engine_urls=_check("", "--engine", o["engine"], _url_list))
    if "interval" in o:
        config = replace(config, interval_s=_check("", "--interval", o["interval"], _TOP_KEYS["interval_s"]))
    if "alternatives" in o:
        config = replace(config, alternatives=_check("", "--compare", o["alternatives"], _gpu_list))
    for gpu_id in config.alternatives:
        if gpu_price_usd(config, get_gpu(gpu_id)) is None:
            raise ConfigError(
                f"alternative {gpu_id!r} has no list price in the catalog: give it one under [gpu_prices] "
                f"in {config.path or default_config_path()}, e.g. {gpu_id} = 30000"
            )
    return config
