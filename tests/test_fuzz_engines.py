"""Property-based fuzz of serving engines' exposition text: whatever an engine sends, a scrape gives a
reading whose figures are finite, non-negative and below the ceiling, or an unknown with one line
saying why; never an exception. (Fixed seed, bounded examples: a few seconds in CI.)"""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuwatch.telemetry.engines import ENGINES, EngineReading, parse_engine_metrics

FUZZ = settings(
    max_examples=600,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

NAMES = sorted(
    {n for e in ENGINES for n in (e.generation_total, e.prompt_total, e.running, e.generation_gauge) if n}
)
VALUES = st.one_of(
    st.sampled_from(
        ["NaN", "+Inf", "-Inf", "1e308", "-1e308", "1.7976931348623157e308", "0", "-0", "1e-320"]
    ),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**400), max_value=10**400).map(str),
    st.text(alphabet="0123456789.eE+-_xX", min_size=1, max_size=12),
)
LABELS = st.dictionaries(
    st.sampled_from(["model_name", "engine", "le", "quantile", "x"]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters='\n"\\'), max_size=12),
    max_size=3,
)


@st.composite
def sample_line(draw: st.DrawFn) -> str:
    name = draw(st.one_of(st.sampled_from(NAMES), st.from_regex(r"[a-z_:][a-z0-9_:]{0,20}", fullmatch=True)))
    labels = draw(LABELS)
    body = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{name}{{{body}}} {draw(VALUES)}" if labels or draw(st.booleans()) else f"{name} {draw(VALUES)}"


LINE = st.one_of(
    sample_line(),
    st.sampled_from(NAMES).map(lambda n: f"# TYPE {n.removesuffix('_total')} counter"),
    st.sampled_from(NAMES).map(lambda n: f"# TYPE {n} gauge"),
    st.sampled_from(["# HELP x y", "# EOF", "", "{}", "#", "# TYPE", "a{b=", '\x00\xff"']),
    st.text(max_size=40),
)
TEXT = st.one_of(st.lists(LINE, max_size=12).map("\n".join), st.text(max_size=300))


def check(reading: EngineReading, ceiling: float) -> None:
    if reading.error is not None:
        assert "\n" not in reading.error and reading.error.strip()
        assert reading.generation_tokens_per_s is None and reading.prompt_tokens_per_s is None
        return
    for value in (reading.generation_tokens_per_s, reading.prompt_tokens_per_s, reading.requests_running):
        assert value is None or (math.isfinite(value) and value >= 0), reading
    for total in (reading.generation_tokens_total, reading.prompt_tokens_total):
        assert total is None or (math.isfinite(total) and 0 <= total <= 2**53), reading
    assert reading.generation_tokens_per_s is None or reading.generation_tokens_per_s <= ceiling


@FUZZ
@given(
    first=TEXT, second=TEXT, dt_s=st.floats(min_value=-5, max_value=1e6), ceiling=st.sampled_from([1e3, 1e8])
)
def test_any_exposition_text_gives_a_sane_reading_or_one_line_why(
    first: str, second: str, dt_s: float, ceiling: float
) -> None:
    a = parse_engine_metrics(first, "http://e/metrics", None, 1000.0, max_tokens_per_s=ceiling)
    check(a, ceiling)
    previous = a if a.error is None else None
    b = parse_engine_metrics(second, "http://e/metrics", previous, 1000.0 + dt_s, max_tokens_per_s=ceiling)
    check(b, ceiling)


@FUZZ
@given(
    totals=st.lists(
        st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**20), 10**20)),
        min_size=2,
        max_size=8,
    )
)
def test_any_sequence_of_counter_values_never_publishes_an_impossible_rate(totals: list[float]) -> None:
    previous = None
    for i, total in enumerate(totals):
        text = f"# TYPE vllm:generation_tokens counter\nvllm:generation_tokens_total {float(total)!r}\n"
        reading = parse_engine_metrics(text, "u", previous, 1000.0 + i, max_tokens_per_s=1e6)
        check(reading, 1e6)
        if reading.error is None:
            previous = reading
