"""Property-based fuzz of `gpuwatch plan` argument lists: whatever a user types, the command prints
an answer with no NaN or infinity in it, or one line saying what was wrong (exit 2); never a
traceback. The options and their types are read from the CLI's own parser, so new options are
fuzzed as soon as they exist. (Fixed seed, bounded examples.)"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import re
from collections.abc import Iterator

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuwatch import cli
from gpuwatch.model.catalog import gpu_ids
from gpuwatch.model.llm import model_ids
from gpuwatch.model.quant import quant_ids

FUZZ = settings(
    max_examples=500,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
#: how Python formats a float that is not a number, in a table (JSON is parsed: NaN, Infinity)
NOT_A_NUMBER = re.compile(r"(?<![A-Za-z])(nan|inf)(?![A-Za-z])", re.IGNORECASE)


def _no_nan_in_json(text: str) -> None:
    def refuse(constant: str) -> float:
        raise AssertionError(f"{constant} in the JSON output")

    json.loads(text, parse_constant=refuse)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


PLAN = _subparsers(cli.build_parser())["plan"]
LEAVES = _subparsers(PLAN) or {"": PLAN}

NUMBER_TEXT = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "1e999", "-0", "0", "1e-320", "1e308", "0x10", "1_000", ""]),
    st.integers(-(10**400), 10**400).map(str),
    st.integers(-5, 100_000).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=0, max_value=10).map(repr),
)
IDS = sorted({*gpu_ids(), *model_ids(), *quant_ids(), "vllm", "llama.cpp", "sglang", "tgi"})
TEXT = st.one_of(
    st.sampled_from(IDS),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20),
    st.just("x" * 5000),
)


def _value(action: argparse.Action) -> st.SearchStrategy[str]:
    if action.choices is not None:
        return st.one_of(st.sampled_from([str(c) for c in action.choices]), TEXT)
    if action.type in (int, float):
        return st.one_of(NUMBER_TEXT, st.sampled_from(["1", "2", "8", "0.5", "4096"]))
    return st.one_of(TEXT, NUMBER_TEXT)


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


@st.composite
def plan_argv(draw: st.DrawFn) -> list[str]:
    name = draw(st.sampled_from(sorted(LEAVES)))
    argv = ["plan", name] if name else ["plan"]
    options = _options(LEAVES[name])
    for action in draw(st.lists(st.sampled_from(options), max_size=6, unique_by=lambda a: a.dest)):
        argv.append(action.option_strings[-1])
        if action.nargs != 0:
            argv.append(draw(_value(action)))
    return argv


@contextlib.contextmanager
def _one_parser() -> Iterator[None]:
    """Build the CLI parser once for all examples (it is not changed by parsing)."""
    original = cli.build_parser
    cli.build_parser = functools.lru_cache(maxsize=1)(original)  # type: ignore[method-assign]
    try:
        yield
    finally:
        cli.build_parser = original  # type: ignore[method-assign]


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = cli.main(argv)
        except SystemExit as exc:  # argparse's usage errors
            status = exc.code if isinstance(exc.code, int) else 2
    return status, out.getvalue(), err.getvalue()


def test_plan_argument_lists_never_trace_back_nor_print_nan_or_inf() -> None:
    with _one_parser():

        @FUZZ
        @given(argv=plan_argv())
        def check(argv: list[str]) -> None:
            status, out, err = run(argv)  # an exception here is the traceback a user would see
            if status == 0 and "--json" in argv:
                _no_nan_in_json(out)
            elif status == 0:
                assert not NOT_A_NUMBER.search(out), (argv, NOT_A_NUMBER.search(out))
            else:
                assert status == 2, (argv, status, err)
                assert err.startswith("gpuwatch: error: ") and err.count("\n") == 1, (argv, err)

        check()
