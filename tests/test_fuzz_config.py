"""Property-based fuzz of config files: whatever is in the file (valid TOML with absurd values, TOML
that is not, bytes that are not UTF-8, nesting deep enough to break a recursive parser), loading it
gives a config whose every number is finite, or one line saying what is wrong; never a traceback.
The keys come from the shipped example config, so renamed or new keys are fuzzed too."""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpuwatch.live as live_package
from gpuwatch.errors import UserError
from gpuwatch.live.config import load_config

FUZZ = settings(
    max_examples=500,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
EXAMPLE = tomllib.loads((Path(live_package.__file__).parent / "config_example.toml").read_text())
TOP = sorted(k for k, v in EXAMPLE.items() if not isinstance(v, dict))
TABLES = {k: sorted(v) for k, v in EXAMPLE.items() if isinstance(v, dict)}

SCALAR = st.one_of(
    st.integers(-(10**30), 10**30),
    st.integers(-(10**400), 10**400),  # TOML allows only 64-bit integers: the parser must refuse
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 0.5, 1e308, 1e-320, 3600.0, 0.05]),
    st.booleans(),
    st.text(max_size=30),
    st.sampled_from(
        [
            "llama-3-8b",
            "fp16",
            "rtx4090",
            "h100-sxm",
            "http://127.0.0.1:8000/metrics",
            "http://[::1/metrics",
            "http://[::1]:8000",
            "ftp://x",
            "",
        ]
    ),
)
VALUE = st.one_of(SCALAR, st.lists(SCALAR, max_size=4))


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)  # a basic string (a lone surrogate escape makes it invalid TOML: also fine)
    return "[" + ", ".join(_toml_value(x) for x in v) + "]"


@st.composite
def toml_text(draw: st.DrawFn) -> str:
    lines = [f"{k} = {_toml_value(draw(VALUE))}" for k in draw(st.lists(st.sampled_from(TOP), unique=True))]
    if draw(st.booleans()):
        lines.append(f'"{draw(st.text(max_size=10))}" = 1')
    for table in draw(st.lists(st.sampled_from(sorted(TABLES)), unique=True)):
        lines.append(f"[{table}]")
        keys = TABLES[table] + ["h100-sxm", "rtx4090", "no_such_key"]
        for k in draw(st.lists(st.sampled_from(keys), unique=True, max_size=5)):
            lines.append(f'"{k}" = {_toml_value(draw(VALUE))}')
    return "\n".join(lines) + "\n"


CONTENT = st.one_of(
    toml_text().map(str.encode),
    st.binary(max_size=200),  # not UTF-8, not TOML
    st.integers(1, 20_000).map(lambda n: b"interval_s = " + b"[" * n + b"]" * n + b"\n"),
    st.integers(1, 5_000).map(lambda n: b"a = " + b"{b = " * n + b"1" + b"}" * n + b"\n"),
    st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


def _finite(value: Any, where: str = "config") -> None:
    if isinstance(value, float):
        assert math.isfinite(value), f"{where} = {value}"
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _finite(getattr(value, f.name), f"{where}.{f.name}")
    elif isinstance(value, dict):
        for k, v in value.items():
            _finite(v, f"{where}[{k!r}]")
    elif isinstance(value, tuple | list):
        for i, v in enumerate(value):
            _finite(v, f"{where}[{i}]")


@FUZZ
@given(content=CONTENT)
def test_any_config_file_loads_finite_or_fails_in_one_line(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gpuwatch.toml"
        path.write_bytes(content)
        try:
            config = load_config(path)
        except UserError as exc:
            message = str(exc)
            assert message.strip() and "\n" not in message, message
            return
    _finite(config)
