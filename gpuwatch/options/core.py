"""The option registry's machinery: one :class:`Option` per user-facing setting, and what derives from it.

An Option knows its flag(s), its TOML key, its type, unit, default, allowed range and help. From it come
the argparse argument (:func:`add_options`), the config-file check (:meth:`Option.check`, called by
gpuwatch/live/config.py), the TUI form's validation and the text of a ``gpuwatch plan …`` command
(:meth:`Option.text`). A value outside the range is a one-line :class:`OptionError` naming the flag or
key, the value given and what is allowed: a mistyped price must not become a cost figure.

This module imports nothing of gpuwatch but its errors, so every layer above the model may use it.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from gpuwatch.errors import UserError


class OptionError(UserError):
    """A value (command line, config file or form) that the option's declaration does not allow."""


class UsageError(OptionError):
    """A command line argparse cannot parse (unknown flag, missing value, value out of range)."""


class Invalid(Exception):
    """Raised by a ``parse`` function: ``allowed`` completes "expected …", ``reason`` is a whole sentence."""

    def __init__(self, allowed: str = "", *, reason: str | None = None) -> None:
        super().__init__(reason or allowed)
        self.allowed = allowed
        self.reason = reason


#: the types an Option's value can have; "text" is any string (ids are checked by ``parse``)
KINDS = ("float", "int", "text", "bool", "list")
#: most values a repeatable option takes (a config file with a million URLs is not a config)
MAX_ITEMS = 64


def _g(value: float) -> str:
    """A bound as a user reads it: 10000000 rather than 1e+07, 1e+16 rather than 16 zeros."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e9 else f"{value:g}"


@dataclass(frozen=True)
class Option:
    """One user-facing setting.

    ``key`` is the argparse dest and the name the rest of gpuwatch uses; ``toml`` the config-file key
    ("prices.pue"; None: command line only); ``flags`` the command-line spellings, the first one the
    canonical (what a written command uses). Numbers: ``minimum``/``maximum`` are inclusive, ``above``
    exclusive. ``parse`` converts and checks what the kind alone cannot (a catalog id, a URL), raising
    :class:`Invalid`. ``default`` is documentation and the form's starting value: the single place a
    default lives is the dataclass the value lands in, and declarations read it from there.
    """

    key: str
    flags: tuple[str, ...]
    kind: str
    help: str
    default: Any = None
    unit: str = ""
    toml: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    choices: tuple[Any, ...] = ()
    optional: bool = False  # None / "" / "none" stand for "unset"
    parse: Callable[[Any], Any] | None = None
    metavar: str | None = None
    label: str | None = None  # the TUI form's label, where the form has the field
    repeatable: bool = False  # flag given several times gives a list (kind "list")
    #: checked when the value is used rather than when the command line is parsed: a catalog id that
    #: --gpus-file (loaded after parsing) may add
    late: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # further add_argument keywords

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"option {self.key}: kind {self.kind!r} is not one of {KINDS}")

    @property
    def flag(self) -> str:
        return self.flags[0] if self.flags else self.key

    # -- checking ---------------------------------------------------------------------------------

    def allowed(self) -> str:
        """What completes "expected …" for this option."""
        if self.choices:
            return "one of " + ", ".join(str(c) for c in self.choices)
        if self.kind not in ("float", "int"):
            return "a value" if self.kind != "bool" else "true or false"
        what = "a whole number" if self.kind == "int" else "a number"
        if self.minimum is not None and self.maximum is not None:
            return f"{what} from {_g(self.minimum)} to {_g(self.maximum)}"
        parts = []
        if self.above is not None:
            parts.append(f"> {_g(self.above)}")
        if self.minimum is not None:
            parts.append(f">= {_g(self.minimum)}")
        if self.maximum is not None:
            parts.append(f"<= {_g(self.maximum)}")
        return what + (" " + " and ".join(parts) if parts else "")

    def convert(self, value: Any) -> Any:
        """The value as this option's type, in range; :class:`Invalid` otherwise. A repeatable option
        takes a list (the config file) or one item (each time the flag is given) and gives a tuple."""
        if self.repeatable:
            items = list(value) if isinstance(value, list | tuple) else [value]
            if len(items) > MAX_ITEMS:
                raise Invalid(f"at most {MAX_ITEMS} values")
            return tuple(self.convert_one(v) for v in items)
        return self.convert_one(value)

    def convert_one(self, value: Any) -> Any:
        if self.optional and (
            value is None or (isinstance(value, str) and value.strip().lower() in ("", "none"))
        ):
            return None
        if self.parse is not None:
            return self.parse(value)
        if self.kind == "float":
            return self._number(value, float)
        if self.kind == "int":
            return self._number(value, int)
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            raise Invalid(self.allowed())
        if self.choices:
            if value in self.choices:
                return value
            raise Invalid(self.allowed())
        if self.kind == "text":
            if not isinstance(value, str) or len(value) > 4096:
                raise Invalid("a string of at most 4096 characters")
            return value
        return value

    def _number(self, value: Any, kind: type) -> float | int:
        allowed = self.allowed()
        if isinstance(value, str):
            text = value.strip()
            try:
                value = int(text) if kind is int else float(text)
            except (ValueError, OverflowError):
                raise Invalid(allowed) from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid(allowed)
        if kind is int and not isinstance(value, int):
            raise Invalid(allowed)
        if kind is float:
            try:
                value = float(value)  # a 400-digit TOML integer does not fit a float
            except OverflowError:
                raise Invalid(allowed) from None
            if not math.isfinite(value):
                raise Invalid(allowed)
        if (
            (self.above is not None and value <= self.above)
            or (self.minimum is not None and value < self.minimum)
            or (self.maximum is not None and value > self.maximum)
        ):
            raise Invalid(allowed)
        if self.choices and value not in self.choices:
            raise Invalid(allowed)
        return value

    def check(self, value: Any, *, where: str = "", name: str | None = None) -> Any:
        """:meth:`convert`; a failure is one OptionError line ``{where}{name} = {value!r} is not allowed``."""
        try:
            return self.convert(value)
        except Invalid as bad:
            why = bad.reason or f"expected {bad.allowed}"
            shown = _short_repr(value)
            raise OptionError(f"{where}{name or self.flag} = {shown} is not allowed: {why}") from None

    # -- writing ----------------------------------------------------------------------------------

    def text(self, value: Any) -> str:
        """The value as it would be typed after the flag, reading back as the same value."""
        if isinstance(value, float):
            short = f"{value:g}"
            return short if float(short) == value else repr(value)
        return str(value)

    def argv(self, value: Any) -> list[str]:
        """The command-line words that set this value (a boolean flag writes --x / --no-x)."""
        if self.kind == "bool":
            return [self.flag if value else "--no-" + self.flag.removeprefix("--")]
        return [self.flag, self.text(value)]


def _short_repr(value: Any) -> str:
    """A value in an error message: a 400-digit number or a long string is cut, never the whole of it."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's str() digit limit
        text = "<a number too long to print>"
    return text if len(text) <= 60 else text[:40] + f"… ({len(text)} characters)"


# --- the registry ---------------------------------------------------------------------------------------

_REGISTRY: dict[str, Option] = {}


def declare(option: Option) -> Option:
    """Add an option; a second declaration of the same key or flag is a programming error."""
    if option.key in _REGISTRY and _REGISTRY[option.key] != option:
        raise ValueError(f"option {option.key!r} is declared twice")
    taken = {f: o.key for o in _REGISTRY.values() for f in o.flags if o.key != option.key}
    for flag in option.flags:
        if flag in taken:
            raise ValueError(f"flag {flag} of {option.key!r} is already {taken[flag]!r}'s")
    _REGISTRY[option.key] = option
    return option


def get(key: str) -> Option:
    return _REGISTRY[key]


def all_options() -> tuple[Option, ...]:
    return tuple(_REGISTRY.values())


def toml_options(section: str | None = None) -> dict[str, Option]:
    """Config-file key (within ``section``; None: the top level) -> option."""
    out = {}
    for option in _REGISTRY.values():
        if option.toml is None:
            continue
        sec, _, name = option.toml.rpartition(".")
        if (sec or None) == section:
            out[name] = option
    return out


# --- argparse -------------------------------------------------------------------------------------------


class OneLineParser(argparse.ArgumentParser):
    """Usage mistakes as one line, like every other gpuwatch error (exit status 2). No abbreviations: a
    prefix that is one option today (--gpu) becomes ambiguous when another is declared (--gpus-file)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Raise :class:`UsageError`: gpuwatch/cli.py prints it as one line and returns 2."""
        where = self.prog.removeprefix("gpuwatch").strip()
        # argparse names an option by all its spellings ("--cloud-price/--cloud-usd-per-gpu-h"): the first
        message = re.sub(r"(--[\w-]+)(?:/--[\w-]+)+", r"\1", message.removeprefix("argument "))
        # as the config file says it: "--batch = '2.5' is not allowed: …"
        message = re.sub(r"^(--[\w-]+): (.* is not allowed)", r"\1 = \2", message)
        raise UsageError(f"{where}: {message}" if where else message)


class _Cleared:
    """What argparse stores for an optional option given as "none": set to None, unlike "not given"."""

    def __repr__(self) -> str:
        return "none"


CLEARED: Any = _Cleared()


def _argparse_type(option: Option) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        if option.late and len(text) <= 4096:
            return text
        try:
            value = option.convert_one(text)
            return CLEARED if value is None else value
        except Invalid as bad:
            why = bad.reason or f"expected {bad.allowed}"
            raise argparse.ArgumentTypeError(f"{_short_repr(text)} is not allowed: {why}") from None

    convert.__name__ = option.key  # argparse names the type in some messages
    return convert


def add_options(
    parser: argparse.ArgumentParser | Any,
    keys: Iterable[str],
    *,
    group: str | None = None,
    suppress_defaults: bool = False,
    help_defaults: bool = True,
) -> None:
    """Add the options ``keys`` (each checked at parse time; not given: None, or absent with
    ``suppress_defaults``, so that a value given before a sub-command is not overwritten by the
    sub-parser's default)."""
    target = parser.add_argument_group(group) if group else parser
    for key in keys:
        option = _REGISTRY[key]
        kwargs: dict[str, Any] = {"dest": option.key, "help": _help(option, help_defaults)}
        kwargs["default"] = argparse.SUPPRESS if suppress_defaults else None
        if option.kind == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _argparse_type(option)
            kwargs["metavar"] = option.metavar or (option.unit.upper().replace(" ", "_") or "VALUE")
            if option.repeatable:
                kwargs["action"] = "append"
        kwargs.update(option.extra)
        target.add_argument(*option.flags, **kwargs)


def _help(option: Option, with_default: bool) -> str:
    text = option.help
    if option.unit and option.unit not in text:
        text += f" ({option.unit})"
    bounded = option.minimum is not None or option.maximum is not None or option.above is not None
    if option.kind in ("float", "int") and bounded and not option.choices:
        text += "; " + option.allowed().removeprefix("a whole number ").removeprefix("a number ")
    if with_default and option.default is not None and option.kind != "list":
        shown = (
            option.text(option.default)
            if not isinstance(option.default, bool)
            else ("on" if option.default else "off")
        )
        text += f"; default {shown}"
    return text.replace("%", "%%")


def given(values: Any, keys: Sequence[str] | None = None) -> dict[str, Any]:
    """The options that were set in a parsed namespace or mapping, by key (an optional one given as
    "none" is there, as None; one not given is not)."""
    items = vars(values) if isinstance(values, argparse.Namespace) else dict(values)
    known = set(_REGISTRY) if keys is None else set(keys)
    return {k: (None if v is CLEARED else v) for k, v in items.items() if k in known and v is not None}
