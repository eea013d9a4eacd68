"""README's `gpuwatch plan …` examples are what the code prints now (docs/regen_readme_examples.py rewrites
them; this runs its --check)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_console_examples_match_the_code() -> None:
    done = subprocess.run(
        [sys.executable, "docs/regen_readme_examples.py", "--check"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
