"""The pane row: every pane's number and title on one line, the chosen one marked; a click chooses one.

Textual's TabbedContent draws this as a tab widget per pane over a content switcher with a pane widget
each: ~20 widgets, ~2 MiB of the TUI's resident memory, when the planning panes mount only when first
shown anyway. The app keeps the panes (see ``GpuwatchApp.show_pane``); this only draws the row and says
which title was clicked.
"""

from __future__ import annotations

from collections.abc import Mapping

from rich.cells import cell_len
from rich.segment import Segment
from textual import events
from textual.message import Message
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget

#: between two titles
GAP = "  "


class PaneTabs(Widget, can_focus=False):
    """``panes``: pane id -> title, in the order of their keys (1, 2, ...)."""

    COMPONENT_CLASSES = {"pane-tabs--active"}  # noqa: RUF012
    DEFAULT_CSS = """
    PaneTabs {
        height: 1;
        padding: 0 1;
        color: $foreground 70%;
        text-wrap: nowrap;
        & > .pane-tabs--active {
            color: $block-cursor-foreground;
            background: $block-cursor-background;
            text-style: bold;
        }
    }
    """

    active: reactive[str] = reactive("live")

    class Chosen(Message):
        """A title was clicked."""

        def __init__(self, pane_id: str) -> None:
            super().__init__()
            self.pane_id = pane_id

    def __init__(self, panes: Mapping[str, str], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.labels = {pane_id: f"{n} {title}" for n, (pane_id, title) in enumerate(panes.items(), start=1)}

    def _titles(self) -> list[tuple[str, str]]:
        """(pane id, its title as drawn), in order; GAP between two."""
        return [(pane_id, f" {label} ") for pane_id, label in self.labels.items()]

    def spans(self) -> dict[str, tuple[int, int]]:
        """Pane id -> (first column, past the last column) of its title, in this widget's content."""
        out, x = {}, 0
        for pane_id, title in self._titles():
            out[pane_id] = (x, x + cell_len(title))
            x += cell_len(title) + cell_len(GAP)
        return out

    def render_line(self, y: int) -> Strip:
        base = self.rich_style
        chosen = base + self.get_component_rich_style("pane-tabs--active", partial=True)
        segments: list[Segment] = []
        for n, (pane_id, title) in enumerate(self._titles()):
            if n:
                segments.append(Segment(GAP, base))
            segments.append(Segment(title, chosen if pane_id == self.active else base))
        width = self.content_size.width
        return Strip(segments).crop_extend(0, width, base) if y == 0 else Strip.blank(width, base)

    def on_click(self, event: events.Click) -> None:
        x = event.x - self.styles.padding.left
        for pane_id, (start, end) in self.spans().items():
            if start <= x < end:
                self.post_message(self.Chosen(pane_id))
                return
