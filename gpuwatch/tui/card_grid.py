"""Every GPU's card, drawn by one line-API widget.

Eight card widgets in a grid cost each repaint a pass through every card and the containers under them,
for each line a card changed; one widget draws a screen row of cards as one strip, and a poll repaints
only the card lines whose values moved. What a card shows is ``gpu_card``'s; this module places the
cards, draws their borders and answers clicks and keys.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import ClassVar

from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

from gpuwatch.tui.gpu_card import (
    FULL_HEIGHT,
    CardReading,
    Layout,
    badges_of,
    card_plans,
    line_segments,
    waiting_plans,
)
from gpuwatch.tui.gpu_names import short_name

#: (top left, top, top right, side, bottom left, bottom, bottom right)
_ROUND = ("╭", "─", "╮", "│", "╰", "─", "╯")
_HEAVY = ("┏", "━", "┓", "┃", "┗", "━", "┛")


class Card:
    """One GPU's card: what it shows and where the grid draws it (state, not a widget)."""

    def __init__(self, grid: CardGrid, index: int, name: str, position: int) -> None:
        self._grid = grid
        self.index = index
        self.position = position  # where it comes in the grid, in the order the GPUs came
        self.gpu_name = name
        self.reading: CardReading | None = None
        #: its state as classes: -selected, -lost, -throttle-critical/-warning/-info
        self.classes: frozenset[str] = frozenset()
        self._keys: list[Hashable] = []
        self._lines: list[Text] = []
        #: each line's segments over the card's style, padded to its width (None: to draw)
        self._segments: list[list[Segment] | None] = []

    # --- what the app and the tests read ------------------------------------------------------------

    @property
    def lines(self) -> list[str]:
        """The plain text of every line now shown."""
        return [line.plain for line in self._lines]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def badge_labels(self) -> list[str]:
        return [b.label for b in badges_of(self.reading.sample)] if self.reading is not None else []

    @property
    def drawn(self) -> bool:
        return bool(self._lines)

    def has_class(self, name: str) -> bool:
        return name in self.classes

    @property
    def layout_mode(self) -> Layout:
        return self._grid.layout_mode

    @property
    def content_width(self) -> int:
        return self._grid.content_width

    @property
    def region(self) -> Region:
        """Where the card is on the screen."""
        return self._grid.card_region(self.index)

    # --- drawing ------------------------------------------------------------------------------------

    def update_lines(self, width: int) -> list[int]:
        """Draw the lines whose key moved; the lines whose text changed (all of them when their count did)."""
        if self.reading is None:
            plans = waiting_plans(self.index, self.gpu_name, self.layout_mode, width)
        else:
            plans = card_plans(self.reading, self.layout_mode, width)
        if len(plans) != len(self._lines):
            self._keys = [key for key, _ in plans]
            self._lines = [draw() for _, draw in plans]
            self._segments = [None] * len(plans)
            return list(range(max(len(plans), self._grid.content_lines)))
        changed = []
        for y, (key, draw) in enumerate(plans):
            if key == self._keys[y]:
                continue
            self._keys[y] = key
            line = draw()
            if line != self._lines[y]:
                self._lines[y] = line
                self._segments[y] = None
                changed.append(y)
        return changed

    def restyle(self) -> None:
        self._segments = [None] * len(self._lines)

    def forget_lines(self) -> None:
        """A new width or layout: every line is drawn again."""
        self._keys, self._lines, self._segments = [], [], []

    def segments(self, y: int, width: int, style: Style, console: Console) -> list[Segment]:
        """Line ``y`` of the card's content as segments over ``style``, exactly ``width`` cells."""
        if y >= len(self._lines):
            return [Segment(" " * width, style)]
        cached = self._segments[y]
        if cached is not None:
            return cached
        line = self._lines[y]
        segments = line_segments(line, style, console)
        if segments is None:  # overlapping spans: rich's general renderer
            text = line.copy()
            text.stylize_before(style)
            segments = list(text.render(console))
        short = width - line.cell_len
        if short > 0:
            segments.append(Segment(" " * short, style))
        elif short < 0:
            segments = list(Segment.adjust_line_length(segments, width, style))
        self._segments[y] = segments
        return segments


class CardGrid(Widget, can_focus=True):
    """The cards in rows of ``columns``; click a card, or move with the arrow keys, to select its GPU."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "card-grid--border",
        "card-grid--selected",
        "card-grid--critical",
        "card-grid--lost",
        "card-grid--title",
        "card-grid--title-focus",
        "card-grid--compact-selected",
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_gpu", "Select GPU", show=False),
        Binding("left", "move(-1, 0)", show=False),
        Binding("right", "move(1, 0)", show=False),
        Binding("up", "move(0, -1)", show=False),
        Binding("down", "move(0, 1)", show=False),
    ]

    class Selected(Message):
        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index

    def __init__(
        self,
        devices: tuple[tuple[int, str], ...] = (),
        layout: Layout = "full",
        columns: int = 1,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.layout_mode: Layout = layout
        self.columns = columns
        #: index -> card, in the order the GPUs came (they never leave: a lost GPU keeps its card)
        self.cards: dict[int, Card] = {
            index: Card(self, index, name, at) for at, (index, name) in enumerate(devices)
        }
        self.selected: int | None = None
        self._width: int | None = None
        self._rows: dict[int, Strip] = {}  # drawn screen rows
        self._styles: dict[str, Style] = {}
        self._text_console = Console(width=1000, color_system="truecolor", markup=False, highlight=False)

    # --- geometry -----------------------------------------------------------------------------------

    @property
    def card_height(self) -> int:
        return FULL_HEIGHT if self.layout_mode == "full" else 1 if self.layout_mode == "one" else 2

    @property
    def content_lines(self) -> int:
        return self.card_height - 2 if self.layout_mode == "full" else self.card_height

    @property
    def column_width(self) -> int:
        return self._grid_width() // max(1, self.columns)

    @property
    def content_width(self) -> int:
        """A card's inner width: less its border (full) or its one-cell margins (compact)."""
        return max(0, self.column_width - 2)

    def _grid_width(self) -> int:
        """The widget's width as of the last resize (``content_size`` finds the widget on its screen each
        time); Textual fits a row it is handed to the width it lays out."""
        if self._width is None:
            self._width = self.content_size.width
        return self._width

    def _card_rect(self, index: int) -> Region:
        row, column = divmod(self.cards[index].position, max(1, self.columns))
        return Region(column * self.column_width, row * self.card_height, self.column_width, self.card_height)

    def card_region(self, index: int) -> Region:
        return self._card_rect(index).translate(self.content_region.offset)

    def card_at(self, x: int, y: int) -> int | None:
        for index in self.cards:
            if self._card_rect(index).contains(x, y):
                return index
        return None

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        rows = -(-len(self.cards) // max(1, self.columns))
        return rows * self.card_height

    # --- what the live view sets --------------------------------------------------------------------

    def set_layout(self, layout: Layout, columns: int) -> None:
        if (layout, columns) == (self.layout_mode, self.columns):
            return
        self.layout_mode, self.columns = layout, columns
        self._redraw_all()
        self.refresh(layout=True)

    def show(self, readings: Mapping[int, CardReading], selected: int | None) -> None:
        """A poll's readings: repaint the card lines that changed (and the cards whose state did)."""
        added = [index for index in readings if index not in self.cards]
        for index in added:
            self.cards[index] = Card(self, index, readings[index].sample.name, len(self.cards))
        if added:
            self._redraw_all()
            self.refresh(layout=True)
        moved = selected != self.selected
        self.selected = selected
        width = self.content_width
        dirty: list[Region] = []
        for index, reading in readings.items():
            card = self.cards[index]
            card.reading = reading
            rect = self._card_rect(index)
            classes = _classes(reading, index == selected)
            if classes != card.classes:
                card.classes = classes
                card.restyle()
                dirty.append(rect)
            top = rect.y + (1 if self.layout_mode == "full" else 0)
            for y in card.update_lines(width):
                dirty.append(Region(rect.x, top + y, rect.width, 1))
        self._repaint(dirty)
        if moved and selected in self.cards:
            self._keep_on_screen(selected)

    def _keep_on_screen(self, index: int) -> None:
        """Keep the selected card on screen when the cards scroll (more GPUs than the terminal holds)."""
        parent = self.parent
        if isinstance(parent, Widget) and self.virtual_region:
            card = self._card_rect(index).translate(self.virtual_region.offset)
            parent.scroll_to_region(card, animate=False, immediate=True)

    def _repaint(self, dirty: list[Region]) -> None:
        if not dirty:
            return
        for region in dirty:
            for y in range(region.y, region.bottom):
                self._rows.pop(y, None)
        self.refresh(*dirty)  # one refresh for them all: each call wakes the screen

    def _redraw_all(self) -> None:
        width = self.content_width
        for card in self.cards.values():
            card.forget_lines()
            if width > 0:
                card.update_lines(width)
        self._rows.clear()

    # --- events -------------------------------------------------------------------------------------

    def on_resize(self) -> None:
        width = self.content_size.width
        if width != self._width:
            self._width = width
            self._redraw_all()
            self.refresh()

    def notify_style_update(self) -> None:
        """A theme or focus change restyles every card."""
        super().notify_style_update()
        self._styles.clear()
        for card in self.cards.values():
            card.restyle()
        self._rows.clear()

    def on_focus(self) -> None:
        self._restyle_selected()

    def on_blur(self) -> None:
        self._restyle_selected()

    def _restyle_selected(self) -> None:
        if self.selected in self.cards:
            self._repaint([self._card_rect(self.selected)])

    def on_click(self, event: events.Click) -> None:
        index = self.card_at(event.x, event.y)
        if index is not None:
            self.post_message(self.Selected(index))

    def action_select_gpu(self) -> None:
        if self.selected is not None:
            self.post_message(self.Selected(self.selected))

    def action_move(self, dx: int, dy: int) -> None:
        """The next card left, right, above or below the selected one."""
        order = list(self.cards)
        if not order:
            return
        at = self.cards[self.selected].position if self.selected in self.cards else 0
        step = dx + dy * (max(1, self.columns) if self.layout_mode == "full" else 1)
        target = at + step
        if 0 <= target < len(order):
            self.selected = order[target]  # a second key before the app's answer moves on from here
            self._keep_on_screen(order[target])
            self.post_message(self.Selected(order[target]))

    # --- drawing ------------------------------------------------------------------------------------

    def _style(self, name: str) -> Style:
        """A component's style over the grid's own (its colours blended as Textual blends them)."""
        style = self._styles.get(name)
        if style is None:
            base = self.rich_style
            if name:
                base_background, background = self.background_colors
                component = self.get_component_styles(name)
                under = base_background + background
                extra = Style(
                    color=(under + component.color).rich_color if component.has_rule("color") else None,
                    bgcolor=(under + component.background).rich_color
                    if component.has_rule("background")
                    else None,
                )
                text_style = component.text_style if component.has_rule("text_style") else None
                style = Style.combine([base, extra, Style.parse(str(text_style)) if text_style else Style()])
            else:
                style = base
            self._styles[name] = style
        return style

    def _card_styles(self, card: Card) -> tuple[Style, Style, tuple[str, ...]]:
        """(content style, border style, box characters) of a card in its state."""
        if self.layout_mode != "full":
            if card.has_class("-lost"):
                return self._style("card-grid--lost"), self._style(""), _ROUND
            if card.has_class("-selected"):
                return self._style("card-grid--compact-selected"), self._style(""), _ROUND
            return self._style(""), self._style(""), _ROUND
        if card.has_class("-lost"):
            lost = self._style("card-grid--lost")
            return lost, lost, _HEAVY
        content = self._style("")
        if card.has_class("-throttle-critical"):
            return content, self._style("card-grid--critical"), _HEAVY
        if card.has_class("-selected"):
            return content, self._style("card-grid--selected"), _HEAVY
        return content, self._style("card-grid--border"), _ROUND

    def _card_row(self, card: Card, y: int, width: int) -> list[Segment]:
        """Row ``y`` of a card ``width`` cells wide: its border, or a content line between its sides."""
        content, border, box = self._card_styles(card)
        inner = max(0, width - 2)
        if self.layout_mode != "full":
            return [
                Segment(" ", content),
                *card.segments(y, inner, content, self._text_console),
                Segment(" ", content),
            ]
        if y == 0:
            title = f"{card.index} {short_name(card.gpu_name)}"
            room = inner - 3
            if room < 1:
                return [Segment(box[0] + box[1] * inner + box[2], border)]
            if len(title) > room:
                title = title[: room - 1] + "…"
            focused = self.has_focus and card.index == self.selected
            title_style = self._style("card-grid--title-focus" if focused else "card-grid--title")
            title_style = Style.combine([border, title_style]) if not focused else title_style
            rest = inner - 3 - len(title)
            return [
                Segment(box[0] + box[1] + " ", border),
                Segment(title, title_style),
                Segment(" " + box[1] * rest + box[2], border),
            ]
        if y == self.card_height - 1:
            return [Segment(box[4] + box[5] * inner + box[6], border)]
        side = Segment(box[3], border)
        return [side, *card.segments(y - 1, inner, content, self._text_console), side]

    def render_line(self, y: int) -> Strip:
        width = self._grid_width()
        strip = self._rows.get(y)
        if strip is not None and strip.cell_length == width:
            return strip
        columns = max(1, self.columns)
        row, line = divmod(y, self.card_height)
        order = list(self.cards.values())[row * columns : (row + 1) * columns]
        column_width = self.column_width
        segments: list[Segment] = []
        for card in order:
            if not card.drawn and self.content_width > 0:  # drawn before the first resize
                card.update_lines(self.content_width)
            segments.extend(self._card_row(card, line, column_width))
        drawn = column_width * len(order)
        if drawn < width:
            segments.append(Segment(" " * (width - drawn), self.rich_style))
        strip = (
            Strip(segments).crop_extend(0, width, self.rich_style)
            if drawn > width
            else Strip(segments, width)
        )
        self._rows[y] = strip
        return strip


def _classes(reading: CardReading, selected: bool) -> frozenset[str]:
    sample = reading.sample
    classes = set()
    if selected:
        classes.add("-selected")
    if sample.lost or sample.stale:
        classes.add("-lost")
    badges = badges_of(sample)
    if badges and not sample.lost:
        classes.add(f"-throttle-{badges[0].severity}")
    return frozenset(classes)
