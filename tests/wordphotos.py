"""Photos with words in them, drawn in the tests: words of several sizes, colours and slight
turns on photo-like scenes, a screenshot, a receipt on a table. Letter heights are given as
the photo is seen at 1280 px on its long side (the size the reader's words are measured at).

Pillow's own scalable font (load_default(size), FreeType) draws them: nothing depends on
the fonts a machine has."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .formatfiles import scene


def photo_like(width: int, height: int, seed: int) -> Image.Image:
    """A scene with sky, field, sun and tree, and leaf-like texture over the field: smooth
    regions and busy ones, as a photo has."""
    img = np.asarray(scene(width, height, seed), dtype=np.float64)
    rng = np.random.default_rng(seed + 1000)
    texture = rng.normal(0, 1, (height // 4 + 1, width // 4 + 1))
    texture = np.kron(texture, np.ones((4, 4)))[:height, :width]
    field = np.arange(height)[:, None] > 0.6 * height
    img += (18 * texture * field)[..., None]
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(ImageFilter.SMOOTH)


def font_for(letter_px: float, long_side: int) -> ImageFont.FreeTypeFont:
    """The font whose capital letters are letter_px high in a photo seen at 1280 px, drawn in
    a photo of long_side px."""
    wanted = letter_px * long_side / 1280
    size = max(6, round(wanted / 0.72))
    for _ in range(3):  # cap height is ~0.72 of the size: correct by measuring
        font = ImageFont.load_default(size)
        left, top, right, bottom = font.getbbox("H")
        size = max(6, round(size * wanted / max(1, bottom - top)))
    return ImageFont.load_default(size)  # type: ignore[return-value]


def draw_words(img: Image.Image, text: str, letter_px: float, at: tuple[int, int], colour=(255, 255, 255),
               angle: float = 0.0, outline: tuple[int, int, int] | None = (0, 0, 0)) -> Image.Image:
    """img with text written on it, turned by angle degrees, its capitals letter_px high at 1280."""
    font = font_for(letter_px, max(img.size))
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    stroke = max(1, round(font.size / 14)) if outline else 0
    draw.text(at, text, font=font, fill=(*colour, 255), stroke_width=stroke,
              stroke_fill=(*(outline or colour), 255))
    if angle:
        layer = layer.rotate(angle, resample=Image.Resampling.BICUBIC, center=at)
    out = img.convert("RGBA")
    out.alpha_composite(layer)
    return out.convert("RGB")


def screenshot(width: int = 1280, height: int = 800) -> Image.Image:
    """A window of a settings page: a title bar, a sidebar, lines of text."""
    img = Image.new("RGB", (width, height), (246, 246, 248))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, width, 56), fill=(52, 101, 164))
    draw.text((24, 12), "Network Settings", font=font_for(26, width), fill=(255, 255, 255))
    draw.rectangle((0, 56, 260, height), fill=(230, 230, 234))
    for i, item in enumerate(("Wireless", "Bluetooth", "Displays", "Printers")):
        draw.text((24, 90 + 60 * i), item, font=font_for(22, width), fill=(40, 40, 40))
    for i, line in enumerate(("Connected to Harbour Cafe", "Signal strength excellent", "Firewall enabled")):
        draw.text((300, 100 + 70 * i), line, font=font_for(24, width), fill=(20, 20, 20))
    return img


def receipt(seed: int = 7) -> Image.Image:
    """A till receipt on a wooden table, a little turned."""
    table = np.asarray(photo_like(900, 1200, seed), dtype=np.float64) * 0.55 + np.array([60, 35, 10])
    img = Image.fromarray(np.clip(table, 0, 255).astype(np.uint8))
    paper = Image.new("RGB", (560, 900), (250, 248, 240))
    draw = ImageDraw.Draw(paper)
    font = font_for(26, 1200)
    for i, line in enumerate(("CAFE CENTRAL", "Rua Augusta 12", "", "ESPRESSO 1.20", "PASTEL 1.50",
                              "ORANGE JUICE 3.00", "", "TOTAL 5.70", "THANK YOU")):
        draw.text((40, 40 + 80 * i), line, font=font, fill=(30, 30, 30))
    paper = paper.rotate(3, expand=True, fillcolor=(0, 0, 0))
    mask = Image.new("L", (560, 900), 255).rotate(3, expand=True)
    img.paste(paper, (170, 150), mask)
    return img


def save(img: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, quality=90) if path.suffix.lower() in (".jpg", ".jpeg") else img.save(path)
    return path
