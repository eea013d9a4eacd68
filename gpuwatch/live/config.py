"""The live configuration: prices, the declared workload, engine URLs, poll interval, alert thresholds.

One TOML file (the platformdirs user config path, or ``--config FILE``) read with tomllib; every key
can be overridden on the command line. Keys, types, ranges and defaults are the option declarations'
(gpuwatch/options/settings.py), so the file, the flags and the TUI agree. Bad input is a one-line
ConfigError naming the key, the value given and what is allowed, because a cost figure computed from
a mistyped price is worse than none. Unknown keys are errors for the same reason: a typo must not
silently fall back to a default. A file that is not UTF-8, too big, nested too deeply, or in a
directory this user cannot read is one line too.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import platformdirs

from gpuwatch.errors import UserError
from gpuwatch.model.catalog import GpuSpec, get_gpu, load_user_gpus
from gpuwatch.model.cost import OwnershipCost
from gpuwatch.model.errors import ModelInputError
from gpuwatch.model.plan_inputs import PlanInputs
from gpuwatch.options import Option, OptionError, get, given, toml_options

#: a config is a few hundred bytes; a file far bigger than this is not one (and is not read whole)
MAX_CONFIG_BYTES = 1 << 20


class ConfigError(UserError):
    """A config value (file or command line) that cannot be used."""


def _default(key: str) -> Any:
    return get(key).default


@dataclass(frozen=True)
class Workload:
    """A declared serving workload: model (catalog id or config.json) and quantisation, concurrent
    sequences, context. Batch and context default to the planner's (PlanInputs), so that a workload
    declared without them is the one the Plan pane starts from."""

    model_id: str
    quant_id: str
    batch: int = PlanInputs.batch
    context_tokens: int = PlanInputs.context_tokens
    engine_profile: str | None = None  # model engine profile (llama.cpp, vllm, ...); None = model default
    #: how the engine stores the KV cache (vLLM --kv-cache-dtype fp8, llama.cpp -ctk q8_0)
    kv_dtype: str = PlanInputs.kv_dtype

    @property
    def spec(self) -> str:
        """The ``--workload`` string that reproduces this workload."""
        kv = "" if self.kv_dtype == PlanInputs.kv_dtype else f":kv={self.kv_dtype}"
        return f"{self.model_id}:{self.quant_id}:batch={self.batch}:context={self.context_tokens}{kv}"


@dataclass(frozen=True)
class AlertThresholds:
    #: warn when the distance to the slowdown temperature is at most this
    temperature_margin_c: float = _default("temperature_margin_c")
    #: the margin must recover by this much before the warning may fire again (no flapping)
    temperature_hysteresis_c: float = _default("temperature_hysteresis_c")
    #: alert when live tokens/s < (1 - this) x the modelled ceiling ...
    throughput_shortfall_ratio: float = _default("throughput_shortfall_ratio")
    #: ... continuously for this long (a single slow poll is not a finding)
    throughput_hold_s: float = _default("throughput_hold_s")


@dataclass(frozen=True)
class LiveConfig:
    prices: OwnershipCost = field(default_factory=OwnershipCost)
    workload: Workload | None = None
    engine_urls: tuple[str, ...] = ()
    interval_s: float = _default("interval")
    alerts: AlertThresholds = field(default_factory=AlertThresholds)
    #: catalog GPU ids to price the same workload on; empty = DEFAULT_ALTERNATIVES
    alternatives: tuple[str, ...] = ()
    #: catalog GPU id -> purchase price in USD, over the catalog's list price (datacenter parts have none)
    gpu_prices: Mapping[str, float] = field(default_factory=dict)
    #: --gpu-price: what each of THIS box's GPUs cost (over [gpu_prices] and the list price)
    gpu_price_usd: float | None = None
    #: --gpus-file / gpus_file: user GPU catalog entries (loaded into the catalog by load_config)
    gpus_file: str | None = None
    path: Path | None = None  # the file it came from, for display


#: compared against when the config names none, in this order: the first three with a price (list
#: price or [gpu_prices]) that are not the card itself. Datacenter parts have no list price, so
#: they appear once the user prices them.
DEFAULT_ALTERNATIVES = ("rtx4090", "rtx5090", "h100-sxm", "a100-80gb-sxm", "rtx3090")


def gpu_price_usd(config: LiveConfig, gpu: GpuSpec) -> float | None:
    """What one of these cards costs to buy: the config's figure, else the catalog's list price."""
    return config.gpu_prices.get(gpu.id, gpu.list_price_usd)


def box_gpu_price_usd(config: LiveConfig, gpu: GpuSpec) -> float | None:
    """What one of THIS box's cards cost: --gpu-price, else as :func:`gpu_price_usd`."""
    return config.gpu_price_usd if config.gpu_price_usd is not None else gpu_price_usd(config, gpu)


def plan_inputs(config: LiveConfig) -> PlanInputs:
    """The what-if the Plan pane starts from: the declared workload at the live prices."""
    inputs = PlanInputs(prices=config.prices)
    w = config.workload
    if w is not None:
        inputs = inputs.with_(
            model=w.model_id,
            quant=w.quant_id,
            batch=w.batch,
            context_tokens=w.context_tokens,
            kv_dtype=w.kv_dtype,
        )
        if w.engine_profile:
            inputs = inputs.with_(engine=w.engine_profile)
    return inputs


def default_config_path() -> Path:
    return platformdirs.user_config_path("gpuwatch") / "config.toml"


# --- checking -------------------------------------------------------------------------------------------


def _check(option: Option, value: Any, *, where: str = "", name: str | None = None) -> Any:
    try:
        return option.check(value, where=where, name=name)
    except OptionError as exc:
        raise ConfigError(str(exc)) from None


def _unknown(where: str, key: str, known: list[str]) -> ConfigError:
    return ConfigError(f"{where}unknown key {key!r}; known keys: {', '.join(known)}")


_WORKLOAD_PARTS = {
    "batch": "batch",
    "context": "context_tokens",
    "engine": "engine_profile",
    "kv": "kv_dtype",
}
_WORKLOAD_FORM = (
    "MODEL:QUANT[:batch=N][:context=N][:engine=PROFILE][:kv=DTYPE], e.g. llama-3-8b:fp16:batch=8:context=4096"
)


def parse_workload(spec: str, *, key: str = "--workload") -> Workload:
    """``MODEL:QUANT[:batch=N][:context=N][:engine=PROFILE][:kv=DTYPE]``, e.g.
    llama-3-8b:fp16:batch=8:context=4096:kv=fp8."""
    if not isinstance(spec, str) or len(spec) > 4096:
        raise ConfigError(f"{key} is not allowed: expected {_WORKLOAD_FORM}")
    parts = [p.strip() for p in spec.split(":")]
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ConfigError(f"{key} = {spec!r} is not allowed: expected {_WORKLOAD_FORM}")
    values: dict[str, Any] = {
        "model": _check(get("model"), parts[0], name=key),
        "quant": _check(get("quant"), parts[1], name=key),
    }
    for part in parts[2:]:
        name, sep, raw = part.partition("=")
        if not sep or name not in _WORKLOAD_PARTS:
            raise ConfigError(f"{key} = {spec!r}: unknown part {part[:40]!r}; expected {_WORKLOAD_FORM}")
        values[_WORKLOAD_PARTS[name]] = _check(get(_WORKLOAD_PARTS[name]), raw, name=f"{key} {name}")
    return _workload_from(values)


def _workload_from(values: Mapping[str, Any]) -> Workload:
    kwargs = {k: v for k, v in values.items() if k not in ("model", "quant")}
    return Workload(model_id=values["model"], quant_id=values["quant"], **kwargs)


def _gpu_prices(where: str, value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}gpu_prices = {value!r:.60} is not allowed: expected a [gpu_prices] table")
    ids, price = get("gpu"), get("gpu_price_usd")
    return {
        _check(ids, k, where=where, name=f"gpu_prices.{k}"): _check(
            price, v, where=where, name=f"gpu_prices.{k}"
        )
        for k, v in value.items()
    }


def _load_gpus_file(path: str, where: str) -> None:
    try:
        load_user_gpus(Path(path).expanduser())
    except ModelInputError as exc:
        raise ConfigError(f"{where}{exc}") from None


#: the [sections] of the file, besides [gpu_prices]
_SECTIONS = ("prices", "workload", "alerts")


def _parse_file(path: Path, data: Mapping[str, Any]) -> LiveConfig:
    where = f"{path}: "
    top_known = toml_options(None)
    if "gpus_file" in data:  # first: the other keys may name the cards it adds
        _load_gpus_file(_check(top_known["gpus_file"], data["gpus_file"], where=where), where)
    top: dict[str, Any] = {}
    gpu_prices: dict[str, float] = {}
    sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    for key, value in data.items():
        if key in _SECTIONS:
            known = toml_options(key)
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{key} = {value!r:.60} is not allowed: expected a [{key}] table")
            for sub, sub_value in value.items():
                if sub not in known:
                    raise _unknown(where, f"{key}.{sub}", [f"{key}.{k}" for k in known])
                sections[key][sub] = _check(known[sub], sub_value, where=where, name=f"{key}.{sub}")
        elif key in top_known:
            top[key] = _check(top_known[key], value, where=where, name=key)
        elif key == "gpu_prices":
            gpu_prices = _gpu_prices(where, value)
        else:
            raise _unknown(where, key, [*top_known, *(f"[{s}]" for s in (*_SECTIONS, "gpu_prices"))])
    workload = None
    if sections["workload"]:
        missing = [k for k in ("model", "quant") if k not in sections["workload"]]
        if missing:
            raise ConfigError(
                f"{where}[workload] lacks {' and '.join(missing)}: both model and quant are required"
            )
        workload = _workload_from(sections["workload"])
    return LiveConfig(
        prices=OwnershipCost(**sections["prices"]),
        workload=workload,
        engine_urls=top.get("engine_urls", ()),
        interval_s=top.get("interval_s", LiveConfig.interval_s),
        alerts=AlertThresholds(**sections["alerts"]),
        alternatives=top.get("alternatives", ()),
        gpu_prices=gpu_prices,
        gpus_file=top.get("gpus_file"),
        path=path,
    )


def _exists(p: Path, explicit: bool) -> bool:
    """Whether the file is there; a directory this user may not look into is one line, not a traceback
    (as under ``sudo -u`` or a systemd unit whose HOME the user cannot read)."""
    try:
        return p.exists()
    except OSError as exc:
        what = f"--config {p}" if explicit else f"the config directory {p.parent}"
        raise ConfigError(
            f"cannot look into {what} ({exc.strerror or exc}): pass --config FILE with a readable file, "
            "or set XDG_CONFIG_HOME to a readable directory"
        ) from None


def read_config_file(path: str | Path | None) -> LiveConfig:
    """The file's config; the defaults when ``path`` is None and the default file does not exist."""
    explicit = path is not None
    p = Path(path) if path is not None else default_config_path()
    if not _exists(p, explicit):
        if explicit:
            raise ConfigError(f"--config {p}: no such file")
        return LiveConfig()
    try:
        with p.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{p}: over {MAX_CONFIG_BYTES >> 20} MiB, not a gpuwatch config")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start}): TOML files are UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{p}: not valid TOML: arrays or tables nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise ConfigError(f"{p}: not valid TOML: {str(exc)[:120]}") from None
    return _parse_file(p, data)


# --- command-line values on top -------------------------------------------------------------------------

#: OwnershipCost field names; each is also the option key of its flag
_PRICE_KEYS = tuple(f.name for f in fields(OwnershipCost))


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> LiveConfig:
    """The config file (or defaults) with command-line values on top.

    ``overrides`` maps option keys (gpuwatch/options/settings.py: ``workload``, ``engine``,
    ``interval``, ``gpus_file``, ``alternatives``, ``gpu_price_usd`` and the OwnershipCost field names) to
    values; None values are ignored. Each is checked against its declaration, so a value that did not
    come through argparse is checked too.
    """
    o = given(overrides or {})
    if "gpus_file" in o:  # before the file: its [gpu_prices] and alternatives may name the cards it adds
        _load_gpus_file(_check(get("gpus_file"), o["gpus_file"]), "--gpus-file: ")
    config = read_config_file(path)
    price_changes = {k: _check(get(k), o[k]) for k in _PRICE_KEYS if k in o}
    if price_changes:
        config = replace(config, prices=replace(config.prices, **price_changes))
    if "workload" in o:
        w = o["workload"]
        config = replace(config, workload=w if isinstance(w, Workload) else parse_workload(str(w)))
    if "engine" in o:
        # --engine is repeatable; the command line replaces the file's list rather than adding to it
        config = replace(config, engine_urls=_check(get("engine"), o["engine"]))
    if "interval" in o:
        config = replace(config, interval_s=_check(get("interval"), o["interval"]))
    if "alternatives" in o:
        config = replace(config, alternatives=_check(get("alternatives"), o["alternatives"]))
    if "gpu_price_usd" in o:
        config = replace(config, gpu_price_usd=_check(get("gpu_price_usd"), o["gpu_price_usd"]))
    if "gpus_file" in o:
        config = replace(config, gpus_file=o["gpus_file"])
    for gpu_id in config.alternatives:
        if gpu_price_usd(config, get_gpu(gpu_id)) is None:
            raise ConfigError(
                f"alternative {gpu_id!r} has no list price in the catalog: give it one under [gpu_prices] "
                f"in {config.path or default_config_path()}, e.g. {gpu_id} = 30000"
            )
    return config
