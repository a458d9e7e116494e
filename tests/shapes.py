"""Labelled shape photos: one coloured shape on a plain, noisy background.

The search-quality model (tests/fixtures/shapes-clip.json + shapes-clip.pt) was trained
on these by scripts/train_tiny_clip.py, and the end-to-end search tests search folders
of them generated with another seed. The label is in the file name
(`red-circle-0007.jpg`); the model and the search never see names, only pixels.

Shapes stay inside the central square of the picture, where a model's preprocessing
(resize the short side, centre crop) keeps them. Backgrounds are greys, whites and
browns of low saturation, so that no background looks like one of the shape colours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {
    "red": (215, 35, 35),
    "green": (35, 165, 60),
    "blue": (40, 75, 220),
    "yellow": (240, 210, 40),
    "purple": (135, 45, 170),
}
SHAPES = ("circle", "square", "triangle", "star")
TEMPLATES = ("a {colour} {shape}", "a photo of a {colour} {shape}")
TRAIN_SEED, HELD_OUT_SEED, TEST_SEED = 0, 1, 2
_SUPERSAMPLE = 4  # edges are drawn at 4x and scaled down: anti-aliased like a photo


@dataclass(frozen=True)
class ShapePhoto:
    path: Path
    colour: str
    shape: str


def caption(colour: str, shape: str, template: int = 0) -> str:
    return TEMPLATES[template].format(colour=colour, shape=shape)


def combos() -> list[tuple[str, str]]:
    """Every (colour, shape) pair of the vocabulary, colours first."""
    return [(colour, shape) for colour in COLOURS for shape in SHAPES]


def label_of(path: str | Path) -> tuple[str, str]:
    """(colour, shape) from a file name made by make_shape_folder, e.g. red-circle-0007.jpg."""
    colour, shape = Path(path).name.split("-")[:2]
    return colour, shape


def shape_photo(colour: str, shape: str, seed) -> Image.Image:
    """An RGB photo of one `colour` `shape`; `seed` (an int or a tuple of ints) fixes size,
    aspect, position, rotation, background and noise."""
    rng = np.random.default_rng(seed)
    long_side = int(rng.integers(96, 193))
    short_side = int(long_side / rng.uniform(1.0, 1.5))
    width, height = (long_side, short_side) if rng.random() < 0.6 else (short_side, long_side)
    side = min(width, height)
    x0, y0 = (width - side) / 2, (height - side) / 2

    radius = side * rng.uniform(0.17, 0.34)
    margin = radius * 1.05
    cx = x0 + rng.uniform(margin, side - margin)
    cy = y0 + rng.uniform(margin, side - margin)
    mask = _mask(shape, (width, height), (cx, cy), radius, rng.uniform(0, 2 * math.pi))

    background = _background(rng, width, height)
    fill = np.clip(np.array(COLOURS[colour]) * rng.uniform(0.85, 1.1) + rng.normal(0, 8, 3), 0, 255)
    pixels = background * (1 - mask[..., None]) + fill * mask[..., None]
    pixels += rng.normal(0, rng.uniform(3, 12), pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def save_shape_photo(path: Path, colour: str, shape: str, seed) -> Path:
    """Write shape_photo(...) to path: a real JPEG (quality from the seed) or PNG, by suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = shape_photo(colour, shape, seed)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        quality = int(np.random.default_rng(seed).integers(70, 96))
        image.save(path, "JPEG", quality=quality)
    else:
        image.save(path)
    return path


def make_shape_folder(folder: Path, per_combo: int, seed: int) -> list[ShapePhoto]:
    """per_combo photos of every (colour, shape) pair in folder, alternately JPEG and PNG,
    named colour-shape-NNNN.ext; the same seed always makes the same files."""
    photos = []
    for ci, si in np.ndindex(len(COLOURS), len(SHAPES)):
        colour, shape = list(COLOURS)[ci], SHAPES[si]
        for i in range(per_combo):
            suffix = ".jpg" if i % 2 == 0 else ".png"
            path = save_shape_photo(folder / f"{colour}-{shape}-{i:04d}{suffix}", colour, shape, (seed, ci, si, i))
            photos.append(ShapePhoto(path, colour, shape))
    return photos


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A low-saturation grey, white or brown with a gentle gradient."""
    kind = rng.integers(3)
    if kind == 0:  # grey, from dark to light
        base = np.full(3, rng.uniform(60, 200))
    elif kind == 1:  # white or off-white
        base = np.full(3, rng.uniform(215, 245)) - rng.uniform(0, 12, 3)
    else:  # brown, beige, sand: warm but far less saturated than any shape colour
        value = rng.uniform(90, 210)
        base = value * np.array([1.0, rng.uniform(0.82, 0.92), rng.uniform(0.66, 0.8)])
    angle = rng.uniform(0, 2 * math.pi)
    y, x = np.mgrid[0:height, 0:width]
    ramp = (np.cos(angle) * x / width + np.sin(angle) * y / height) * rng.uniform(-30, 30)
    return base[None, None, :] + ramp[..., None]


def _mask(shape: str, size: tuple[int, int], centre: tuple[float, float], radius: float,
          rotation: float) -> np.ndarray:
    """Coverage of the shape per pixel, 0..1 (float), anti-aliased by supersampling."""
    s = _SUPERSAMPLE
    canvas = Image.new("L", (size[0] * s, size[1] * s), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy, r = centre[0] * s, centre[1] * s, radius * s
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    else:
        if shape == "square":
            radii, count = [r], 4
        elif shape == "triangle":
            radii, count = [r], 3
        elif shape == "star":
            radii, count = [r, r * 0.42], 10
        else:
            raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
        points = [(cx + radii[i % len(radii)] * math.cos(rotation + 2 * math.pi * i / count),
                   cy + radii[i % len(radii)] * math.sin(rotation + 2 * math.pi * i / count))
                  for i in range(count)]
        draw.polygon(points, fill=255)
    return np.asarray(canvas.resize(size, Image.Resampling.BOX), dtype=np.float64) / 255.0


def small_shape_photo(colour: str, shape: str, seed, scale: tuple[float, float] = (0.5, 0.8)) -> Image.Image:
    """A harder photo of a shape: shape_photo(...) shrunk by a factor in `scale` and pasted at a
    random place on a 200 x 200 grey noise canvas (the shape a small part of the picture)."""
    rng = np.random.default_rng(seed)
    canvas = np.clip(rng.normal(rng.uniform(80, 200), 25, (200, 200, 3)), 0, 255).astype(np.uint8)
    photo = shape_photo(colour, shape, seed)
    factor = rng.uniform(*scale)
    small = photo.resize((max(8, int(photo.width * factor)), max(8, int(photo.height * factor))))
    image = Image.fromarray(canvas)
    image.paste(small, (int(rng.integers(0, 201 - small.width)), int(rng.integers(0, 201 - small.height))))
    return image


def make_split(root: Path, gallery_per_combo: int, queries_per_combo: int, seed: int) -> None:
    """An `eval` split whose classes are the colours, any shape: root/gallery/<colour>/ holds
    shape photos of every shape, root/query/<colour>/ small shapes on noise (small_shape_photo)."""
    for ci, colour in enumerate(COLOURS):
        for si, shape in enumerate(SHAPES):
            for i in range(gallery_per_combo):
                save_shape_photo(root / "gallery" / colour / f"{shape}-{i:03d}.jpg", colour, shape, (seed, ci, si, i))
            for i in range(queries_per_combo):
                path = root / "query" / colour / f"{shape}-q{i:03d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                small_shape_photo(colour, shape, (seed + 1, ci, si, i)).save(path, quality=90)
