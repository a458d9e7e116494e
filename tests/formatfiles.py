"""Photos made in the format tests (HEIC, AVIF, RAW): a small outdoor scene that no turn or mirror maps onto itself,
its EXIF as a phone writes it, and a check that decoded pixels come out upright."""

from __future__ import annotations

import numpy as np
from PIL import Image

TAKEN = "2023:07:14 18:30:05"
LISBON = (38.7075, -9.1364)
_TRANSPOSES = (None, *Image.Transpose)  # identity and the seven turns and mirrors


def scene(width: int = 96, height: int = 64, seed: int = 0) -> Image.Image:
    """Sky over a field, a low sun on the left, a tree on the right, with grain: smooth
    regions and texture, like a photo, and asymmetric both ways."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    horizon = 0.6 * height
    sky = np.stack([110 + 80 * y / horizon, 160 + 60 * y / horizon, np.full_like(y, 235)], -1)
    field = np.stack([70 + 30 * np.sin(x / 5), 120 + 20 * np.cos(y / 3), 40 + 0 * x], -1)
    img = np.where((y < horizon)[..., None], sky, field)
    sun = (x - 0.22 * width) ** 2 + (y - 0.25 * height) ** 2 < (0.09 * height) ** 2
    img[sun] = (250, 200, 60)
    trunk = (abs(x - 0.78 * width) < 0.03 * width) & (y > 0.35 * height) & (y < 0.8 * height)
    img[trunk] = (80, 50, 30)
    crown = (x - 0.78 * width) ** 2 + (y - 0.3 * height) ** 2 < (0.16 * height) ** 2
    img[crown] = (30, 110, 40)
    img += rng.normal(0, 6, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def phone_exif(orientation: int = 1, taken: str = TAKEN, gps=LISBON, make="Apple", model="iPhone 15") -> Image.Exif:
    exif = Image.Exif()
    exif[271], exif[272], exif[274], exif[306] = make, model, orientation, taken
    exif.get_ifd(0x8769)[36867] = taken
    if gps:
        lat, lon = gps
        g = exif.get_ifd(0x8825)
        g[1], g[3] = ("N" if lat >= 0 else "S"), ("E" if lon >= 0 else "W")
        g[2], g[4] = _dms(lat), _dms(lon)
    return exif


def _dms(value: float):
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = round((value - degrees - minutes / 60) * 3600, 2)
    return (float(degrees), float(minutes), seconds)


def stored_for(upright: Image.Image, orientation: int) -> Image.Image:
    """How a camera held that way stores `upright` (the inverse of EXIF Orientation)."""
    inverse = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
               4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
               6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}
    return upright.transpose(inverse[orientation]) if orientation != 1 else upright.copy()


def turn_found(got: Image.Image | np.ndarray, upright: Image.Image) -> Image.Transpose | None:
    """Which turn or mirror of `upright` the decoded image is closest to (None: none, it is
    upright). Colours are normalised per channel first: LibRaw brightens what it renders."""
    got = Image.fromarray(got) if isinstance(got, np.ndarray) else got

    def signature(img: Image.Image) -> np.ndarray:
        a = np.asarray(img.convert("RGB").resize((24, 24), Image.Resampling.BILINEAR), np.float64)
        return (a - a.mean((0, 1))) / (a.std((0, 1)) + 1e-9)

    target = signature(got)
    errors = [float(((signature(upright if t is None else upright.transpose(t)) - target) ** 2).mean())
              for t in _TRANSPOSES]
    best = int(np.argmin(errors))
    assert sorted(errors)[1] > 2 * errors[best], f"no clear match: {errors}"
    return _TRANSPOSES[best]
