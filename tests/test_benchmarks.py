"""`python -m benchmarks --tiny` runs and prints its table (no timing asserted: speed is not a test)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks/ sits beside gpuwatch/ and is not an installed package

from benchmarks.harness import Row, fmt, nvitop_installed  # noqa: E402


def test_row_ratio_and_direction() -> None:
    faster = Row("exporter", "scrape latency", 2.0, 8.0, "ms", "nvitop-exporter", target="faster scrape")
    assert faster.ratio == 0.25
    assert faster.better is True and faster.met is True
    fewer = Row("exporter", "scrapes/s", 50.0, 100.0, "scrapes/s", "x", lower_is_better=False)
    assert fewer.better is False and fewer.met is None
    alone = Row("tui", "CPU", 3.0, None, "% of a core", "nvitop", target="< 2 %", target_met=False)
    assert alone.ratio is None and alone.better is None and alone.met is False
    assert fmt(None, "ms") == "n/a" and fmt(0.01234, "ms") == "0.0123 ms" and fmt(12345.6, "s") == "12,346 s"


@pytest.mark.slow
def test_tiny_benchmark_prints_every_row() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--tiny"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    for measure in (
        "scrape latency, median (1 GPU)",
        "scrape latency, p99 (8 GPUs)",
        "scrapes/s, 4 concurrent (8 GPUs)",
        "CPU at 1 s poll, unscraped (8 GPUs)",
        "resident memory, NVML child included (8 GPUs)",
        "scrapes answered (",
        "scrape p99 under attack (",
        "wall per poll per GPU, free NVML",
        "CPU per poll per GPU, 0.36 ms/call",
        "NVML calls per poll per GPU",
        "time to first frame with GPU names",
        "time to the full live view (Textual's first frame)",
        "what-if scenarios",
    ):
        assert measure in out, f"row {measure!r} missing from:\n{out}"
    assert "gpustat#76" in out  # the per-call latency is cited
    assert "tui floor: a minimal Textual app showing 8 static lines" in out  # measured beside the TUI rows
    if nvitop_installed():
        assert "nvitop-exporter 1.7.2" in out
    else:
        assert "nvitop / nvitop-exporter not installed" in out


def test_only_selects_sections_and_json_prints_the_rows() -> None:
    import json

    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--tiny", "--only", "planner", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(done.stdout)["rows"]
    assert rows and {r["section"] for r in rows} == {"planner"}
    assert {"section", "measure", "gpuwatch", "counterpart", "ratio"} <= set(rows[0])
    assert rows[0]["ratio"] == rows[0]["gpuwatch"] / rows[0]["counterpart"]
    assert any("total run time" in note for note in json.loads(done.stdout)["notes"])
    bad = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--only", "planner,nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "unknown section(s) ['nope']" in bad.stderr
