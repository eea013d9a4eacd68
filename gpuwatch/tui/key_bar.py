"""The key bar: the screen's shown bindings on the bottom line, as Textual's Footer lists them, in one widget.

Textual's Footer is a scrolling container of one widget per key, composed anew whenever the bindings
change (every focus change): for gpuwatch's dozen keys that was ~1.4 MiB of the TUI's resident memory
and a dozen widgets for the first frame to lay out. This draws the same line (each key, then what it
does; the command palette's key at the right edge) as one line of text; a click on a key presses it.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.screen import Screen
from textual.strip import Strip
from textual.widget import Widget


@dataclass(frozen=True)
class KeyItem:
    """One entry of the bar: the key pressed on a click, what the bar shows for it, and what it does."""

    key: str
    display: str
    description: str
    enabled: bool


#: between the keys and the command palette's entry at the right edge (Footer's vkey border)
PALETTE_RULE = "▏"


class KeyBar(Widget, can_focus=False):
    """The bindings the screen shows (``Binding.show``), one entry per action, in the order bound."""

    ALLOW_SELECT = False
    COMPONENT_CLASSES = {"key-bar--key", "key-bar--description", "key-bar--hover"}  # noqa: RUF012
    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;
        color: $footer-foreground;
        background: $footer-background;
        text-wrap: nowrap;
        & > .key-bar--key {
            color: $footer-key-foreground;
            background: $footer-key-background;
            text-style: bold;
        }
        & > .key-bar--description {
            color: $footer-description-foreground;
            background: $footer-description-background;
        }
        & > .key-bar--hover {
            background: $block-hover-background;
        }
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.items: tuple[KeyItem, ...] = ()
        self.palette: KeyItem | None = None
        #: (first column, past the last column, item) of each entry as last drawn, for clicks
        self._spans: list[tuple[int, int, KeyItem]] = []
        self._hover: KeyItem | None = None

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)
        self._bindings_changed(self.screen)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _bindings_changed(self, screen: Screen[object]) -> None:
        if not self.is_attached or screen is not self.screen:
            return
        active = screen.active_bindings
        by_action: dict[str, KeyItem] = {}
        for _node, binding, enabled, _tooltip in active.values():
            if binding.show and binding.action not in by_action:
                display = self.app.get_key_display(binding)
                by_action[binding.action] = KeyItem(binding.key, display, binding.description, enabled)
        palette = None
        if self.app.ENABLE_COMMAND_PALETTE and self.app.COMMAND_PALETTE_BINDING in active:
            _node, binding, enabled, _tooltip = active[self.app.COMMAND_PALETTE_BINDING]
            palette = KeyItem(binding.key, self.app.get_key_display(binding), binding.description, enabled)
        items = tuple(by_action.values())
        if (items, palette) != (self.items, self.palette):
            self.items, self.palette = items, palette
            self.refresh()

    def render_line(self, y: int) -> Strip:
        base = self.rich_style
        key_style = base + self.get_component_rich_style("key-bar--key", partial=True)
        description_style = base + self.get_component_rich_style("key-bar--description", partial=True)
        hover = self.get_component_rich_style("key-bar--hover", partial=True)
        width = self.size.width
        segments: list[Segment] = []
        spans: list[tuple[int, int, KeyItem]] = []
        x = 0

        def entry(item: KeyItem, lead: str = " ") -> None:
            nonlocal x
            extra = Style(dim=not item.enabled) + (hover if item is self._hover else Style())
            key, description = f"{lead}{item.display} ", f"{item.description} "
            segments.append(Segment(key, key_style + extra))
            segments.append(Segment(description, description_style + extra))
            end = x + cell_len(key) + cell_len(description)
            spans.append((x, end, item))
            x = end

        for item in self.items:
            entry(item)
        if self.palette is not None:
            tail = len(PALETTE_RULE) + cell_len(self.palette.display) + cell_len(self.palette.description) + 2
            if x + tail <= width:  # at the right edge, when the keys leave it room
                segments.append(Segment(" " * (width - x - tail) + PALETTE_RULE, base + Style(dim=True)))
                x = width - tail + len(PALETTE_RULE)
                entry(self.palette, lead="")
        self._spans = spans
        return Strip(segments).crop_extend(0, width, base) if y == 0 else Strip.blank(width, base)

    def item_at(self, x: int) -> KeyItem | None:
        return next((item for start, end, item in self._spans if start <= x < end), None)

    def on_mouse_down(self, event: events.MouseDown) -> None:
        """As a Footer key does: a click presses the key (a disabled one rings the bell)."""
        item = self.item_at(event.x)
        if item is None:
            return
        if item.enabled:
            self.app.simulate_key(item.key)
        else:
            self.app.bell()

    def on_mouse_move(self, event: events.MouseMove) -> None:
        item = self.item_at(event.x)
        if item is not self._hover:
            self._hover = item
            self.refresh()

    def on_leave(self, event: events.Leave) -> None:
        if self._hover is not None:
            self._hover = None
            self.refresh()
