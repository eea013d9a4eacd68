"""The framework's floor for the TUI rows: the least a Textual app can be, showing eight GPU names.

benchmarks/tui.py starts this beside gpuwatch and nvitop, so the table's notes can say how much of
gpuwatch's first frame and memory is Textual itself (nvitop draws with curses).
"""

from __future__ import annotations

import sys

from textual.app import App, ComposeResult
from textual.widgets import Static


class Floor(App[None]):
    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.names = names

    def compose(self) -> ComposeResult:
        for i, name in enumerate(self.names):
            yield Static(f"GPU {i}  {name}")


if __name__ == "__main__":
    Floor([sys.argv[1]] * int(sys.argv[2])).run()
