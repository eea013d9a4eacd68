"""Every published power and engine-memory measurement is predicted within the tolerance its entry states."""

from __future__ import annotations

import pytest

from gpuwatch.model.published import Check, published_checks

CHECKS = published_checks()


@pytest.mark.parametrize("check", CHECKS, ids=[c.what for c in CHECKS])
def test_published_measurement_within_tolerance(check: Check) -> None:
    assert abs(check.error_ratio) <= check.tolerance_ratio, (check.measured, check.predicted, check.source)


def test_both_groups_have_held_out_points() -> None:
    for group in ("power", "memory"):
        assert any(c.group == group and c.use == "holdout" for c in CHECKS)


def test_readme_accuracy_table_is_the_scripts_output() -> None:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.accuracy", "--markdown"], cwd=root, capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip
    readme = (root / "README.md").read_text("utf-8")
    table = readme.split("<!-- accuracy-table -->\n", 1)[1].split("<!-- /accuracy-table -->", 1)[0]
    assert table == done.stdout
