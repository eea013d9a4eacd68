"""Command-palette entries (ctrl+p) for the panes and the GPUs, so both are reachable by name."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Protocol, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider


class PaletteTarget(Protocol):
    """What the provider needs of the app (kept as a protocol so this module does not import app.py)."""

    def palette_panes(self) -> list[tuple[str, str]]: ...  # (pane id, title)

    def palette_gpus(self) -> list[tuple[int, str]]: ...  # (index, name)

    def show_pane(self, pane_id: str) -> None: ...

    def select_gpu(self, index: int) -> None: ...


class PanesAndGpus(Provider):
    def _entries(self) -> list[tuple[str, Callable[[], None], str]]:
        app = cast(PaletteTarget, self.app)
        entries: list[tuple[str, Callable[[], None], str]] = [
            (f"Show {title}", partial(app.show_pane, pane_id), f"switch to the {title.lower()} pane")
            for pane_id, title in app.palette_panes()
        ]
        entries += [
            (
                f"Select GPU {index}: {name}",
                partial(app.select_gpu, index),
                "processes, roofline and cost follow it",
            )
            for index, name in app.palette_gpus()
        ]
        return entries

    async def discover(self) -> Hits:
        for text, command, help_text in self._entries():
            yield DiscoveryHit(text, command, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, command, help_text in self._entries():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), command, text=text, help=help_text)
