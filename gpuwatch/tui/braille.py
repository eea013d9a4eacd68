"""A small Unicode-braille canvas: 2x4 dots per terminal cell, one style per cell, text overlays.

Enough to draw a roofline (lines and points on log axes) without a plotting dependency.
"""

from __future__ import annotations

from rich.text import Text

#: dot bit of (x, y) inside a cell, per the Unicode braille pattern block (U+2800)
_DOT_BITS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))


class BrailleCanvas:
    """``width`` x ``height`` cells addressed in dots: x in [0, 2*width), y in [0, 4*height), y down."""

    def __init__(self, width: int, height: int) -> None:
        self.width = max(1, width)
        self.height = max(1, height)
        self._bits = [[0] * self.width for _ in range(self.height)]
        self._styles: list[list[str]] = [[""] * self.width for _ in range(self.height)]
        self._text: dict[tuple[int, int], tuple[str, str]] = {}

    @property
    def dot_width(self) -> int:
        return self.width * 2

    @property
    def dot_height(self) -> int:
        return self.height * 4

    def dot(self, x: int, y: int, style: str = "") -> None:
        """Set one dot; dots outside the canvas are ignored so callers can draw clipped shapes."""
        if not (0 <= x < self.dot_width and 0 <= y < self.dot_height):
            return
        col, row = x // 2, y // 4
        self._bits[row][col] |= _DOT_BITS[x % 2][y % 4]
        if style:
            self._styles[row][col] = style

    def line(self, x0: int, y0: int, x1: int, y1: int, style: str = "", *, dash: int = 0) -> None:
        """Bresenham line; ``dash`` > 0 draws ``dash`` dots on, ``dash`` off."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        step = 0
        while True:
            if not dash or (step // dash) % 2 == 0:
                self.dot(x0, y0, style)
            if x0 == x1 and y0 == y1:
                return
            step += 1
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def text(self, col: int, row: int, text: str, style: str = "") -> None:
        """Characters over the dots (labels, markers); clipped at the edges."""
        for i, char in enumerate(text):
            if 0 <= col + i < self.width and 0 <= row < self.height:
                self._text[(col + i, row)] = (char, style)

    def is_free(self, col: int, row: int, length: int) -> bool:
        """True where no text overlay is in cells ``col .. col+length-1`` of ``row`` (label placement)."""
        return 0 <= row < self.height and all((c, row) not in self._text for c in range(col, col + length))

    def render(self) -> Text:
        out = Text()
        for row in range(self.height):
            if row:
                out.append("\n")
            for col in range(self.width):
                overlay = self._text.get((col, row))
                if overlay is not None:
                    out.append(overlay[0], style=overlay[1])
                else:
                    bits = self._bits[row][col]
                    out.append(chr(0x2800 + bits) if bits else " ", style=self._styles[row][col])
        return out
