"""Re-run every ``$ gpuwatch …`` example in README.md's console blocks and put in what the code prints now.

    python docs/regen_readme_examples.py [--check]

``--check`` exits 1 (and names the command) where README's text differs from the output, without writing:
tests/test_readme_examples.py runs it so the examples cannot drift from the code.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"```console\n(.*?)```", re.S)
#: the width the examples are printed at (a terminal of 110 columns, README's line length)
COLUMNS = "110"


def run(command: str) -> str:
    argv = shlex.split(command)
    assert argv[0] == "gpuwatch", command
    env = {**os.environ, "COLUMNS": COLUMNS, "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "gpuwatch", *argv[1:]], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    return (done.stdout + done.stderr).rstrip("\n") + "\n"


def regenerate(block: str) -> str:
    out: list[str] = []
    for chunk in re.split(r"(?m)^(?=\$ )", block):
        if not chunk.startswith("$ "):
            out.append(chunk)
            continue
        command = chunk.splitlines()[0][2:]
        out.append(f"$ {command}\n{run(command)}\n")
    return "".join(out).rstrip("\n") + "\n"


def main() -> int:
    text = README.read_text("utf-8")
    new = BLOCK.sub(lambda m: "```console\n" + regenerate(m.group(1)) + "```", text)
    if "--check" in sys.argv:
        if new != text:
            print("README.md's console examples differ from what the code prints: run "
                  "python docs/regen_readme_examples.py")  # fmt: skip
            return 1
        return 0
    README.write_text(new, "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
