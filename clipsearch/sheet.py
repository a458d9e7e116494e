"""Contact sheets: search results drawn as one PNG grid of captioned thumbnails.

`make_sheet` owns the layout (cells, captions, placeholders for unreadable files) and the
atomic write of the PNG; decoding a thumbnail is decode.load_thumbnail's job, showing the
sheet is viewer.py's.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from PIL import Image, ImageDraw, ImageFont

from ._files import OWN, replaced
from .errors import ClipsearchError
from .ingest.decode import DecodeError, MemoryBudget, load_thumbnail

MAX_COLUMNS = 6
_WORKERS = 4
# Decodes side by side hold at most this much (12 bytes a pixel estimated; one alone may go over).
_DECODE_BUDGET = 128 << 20
_SHEET_BACKGROUND = (18, 18, 18)
_CELL_BACKGROUND = (38, 38, 38)
_RANK_COLOUR = (240, 240, 240)
_SCORE_COLOUR = (150, 190, 255)
_NAME_COLOUR = (190, 190, 190)
_PLACEHOLDER_COLOUR = (200, 110, 110)


class Result(Protocol):
    """What a sheet needs of a search result (search.SearchResult has it)."""

    @property
    def rank(self) -> int: ...
    @property
    def score(self) -> float | None: ...  # None: listed by a filter alone
    @property
    def path(self) -> str: ...


@dataclass(frozen=True)
class Sheet:
    """A written contact sheet: where it is, its grid and its size in pixels."""

    path: str
    columns: int
    rows: int
    width: int
    height: int


def make_sheet(items: Sequence[Result], path: str | os.PathLike[str], *, cell: int = 192,
               columns: int | None = None, max_pixels: int = 200_000_000) -> Sheet:
    """Draw items (in the order given) as a grid of `cell`-pixel thumbnails, each captioned with
    "#rank  score" (just "#rank" for a result a filter alone listed) and its file name, and write
    it to path as a PNG (its folder is created). Files that cannot be decoded, or are over
    max_pixels, get a cell that says "unreadable". `columns` defaults to a square-ish grid of at
    most MAX_COLUMNS. Raises ValueError for no items and ClipsearchError when the PNG cannot be
    written."""
    if not items:
        raise ValueError("a contact sheet needs at least one item")
    if cell < 16:
        raise ValueError(f"cell must be at least 16 pixels, not {cell}")
    columns = columns if columns is not None else min(MAX_COLUMNS, math.ceil(math.sqrt(len(items))))
    if columns < 1:
        raise ValueError(f"columns must be at least 1, not {columns}")
    columns = min(columns, len(items))
    rows = math.ceil(len(items) / columns)

    layout = _Layout(cell)
    sheet = Image.new("RGB", (columns * layout.width, rows * layout.height), _SHEET_BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for index, (item, thumb) in enumerate(zip(items, _thumbnails(items, cell, max_pixels))):
        row, column = divmod(index, columns)
        layout.draw_cell(sheet, draw, column * layout.width, row * layout.height, item, thumb)

    target = os.path.abspath(os.fspath(path))
    _write_png(sheet, target)
    return Sheet(path=target, columns=columns, rows=rows, width=sheet.width, height=sheet.height)


def _thumbnails(items: Sequence[Result], cell: int, max_pixels: int) -> list[Image.Image | None]:
    """Thumbnails in the order of items, None for a file that could not be decoded. Decoding is
    most of a sheet's time and Pillow releases the GIL while it decodes, so a few threads share it."""
    budget = MemoryBudget(_DECODE_BUDGET)

    def one(item: Result) -> Image.Image | None:
        try:
            return load_thumbnail(item.path, cell, max_pixels, budget)
        except DecodeError:
            return None

    with ThreadPoolExecutor(max_workers=min(_WORKERS, len(items)), thread_name_prefix="sheet") as pool:
        return list(pool.map(one, items))


class _Layout:
    """Sizes of one cell for a thumbnail side: padding, thumbnail box, two caption lines."""

    def __init__(self, cell: int):
        self.cell = cell
        self.pad = max(4, cell // 24)
        self.font = _font(max(10, round(cell / 14)))
        self.line = round(self.font.getbbox("Ag#_|")[3]) + max(2, self.pad // 2)
        self.width = cell + 2 * self.pad
        self.height = cell + 2 * self.pad + 2 * self.line
        self.ellipsis = "\u2026" if isinstance(self.font, ImageFont.FreeTypeFont) else "..."

    def draw_cell(self, sheet: Image.Image, draw: ImageDraw.ImageDraw, left: int, top: int,
                  item: Result, thumb: Image.Image | None) -> None:
        box_left, box_top = left + self.pad, top + self.pad
        draw.rectangle((box_left, box_top, box_left + self.cell - 1, box_top + self.cell - 1), fill=_CELL_BACKGROUND)
        if thumb is None:
            self._placeholder(sheet, box_left, box_top)
        else:
            sheet.paste(thumb, (box_left + (self.cell - thumb.width) // 2, box_top + (self.cell - thumb.height) // 2))
        caption_top = box_top + self.cell + self.pad // 2
        rank = f"#{item.rank}"
        draw.text((box_left, caption_top), rank, font=self.font, fill=_RANK_COLOUR)
        if item.score is not None:
            score_left = box_left + draw.textlength(rank + "  ", font=self.font)
            draw.text((score_left, caption_top), f"{item.score:.3f}", font=self.font, fill=_SCORE_COLOUR)
        name = self._shorten(os.path.basename(item.path) or item.path, self.cell)
        draw.text((box_left, caption_top + self.line), name, font=self.font, fill=_NAME_COLOUR)

    def _placeholder(self, sheet: Image.Image, left: int, top: int) -> None:
        # Drawn on its own tile, so that in a small cell the words are clipped, not spilled over a neighbour.
        tile = Image.new("RGB", (self.cell, self.cell), _CELL_BACKGROUND)
        draw, inset = ImageDraw.Draw(tile), self.cell // 6
        draw.rectangle((inset, inset, self.cell - 1 - inset, self.cell - 1 - inset),
                       outline=_PLACEHOLDER_COLOUR, width=max(1, self.cell // 96))
        x0, y0, x1, y1 = draw.textbbox((0, 0), "unreadable", font=self.font)  # no anchors in the bitmap font
        draw.text(((self.cell - x1 - x0) / 2, (self.cell - y1 - y0) / 2), "unreadable", font=self.font,
                  fill=_PLACEHOLDER_COLOUR)
        sheet.paste(tile, (left, top))

    def _shorten(self, text: str, width: int) -> str:
        """text, cut in the middle with an ellipsis to fit width pixels (the extension stays visible)."""
        text = self._safe(text)
        if self.font.getlength(text) <= width:
            return text
        low, high = 0, len(text)  # the most characters kept that still fit
        while low < high:
            keep = (low + high + 1) // 2
            if self.font.getlength(_cut(text, keep, self.ellipsis)) <= width:
                low = keep
            else:
                high = keep - 1
        return _cut(text, low, self.ellipsis)

    def _safe(self, text: str) -> str:
        # Pillow's bitmap fallback font only has Latin-1 glyphs and refuses other characters.
        if isinstance(self.font, ImageFont.FreeTypeFont):
            return text
        return text.encode("latin-1", "replace").decode("latin-1")


def _cut(text: str, keep: int, ellipsis: str) -> str:
    head = (keep + 1) // 2
    tail = keep - head
    return text[:head] + ellipsis + (text[len(text) - tail:] if tail else "")


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable font
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _write_png(image: Image.Image, target: str) -> None:
    """Write image to target as a PNG so that no reader ever sees half a file."""
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with replaced(target, policy=OWN, durable=False) as out:
            image.save(out, format="PNG", compress_level=3)  # mostly photos: more effort buys little
    except OSError as exc:
        raise ClipsearchError(f"cannot write the contact sheet to {target}: {exc.strerror or exc}") from None
