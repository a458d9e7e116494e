"""Opening images safely and fast, and turning them into model input.

`load_image` returns the model's input as a uint8 HxWx3 array (normalisation to the
model's mean/std happens in embed.py, on the model's device) together with the photo's
metadata. Every failure becomes a DecodeError whose message is fit to show a user.
Pillow releases the GIL for part of a decode: threads decode side by side, but only worker
processes scale with cores (ingest/workers.py chooses).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import threading
import warnings
from contextlib import contextmanager, nullcontext
from datetime import datetime
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features

from ..filetypes import MISSING, is_raw_name
from ..records import ImageMeta, Preprocess
from .formats import bmff_kind, bmff_truncated, enable_heif, library_reason

# clipsearch enforces its own, configurable pixel limit (max_pixels) before decoding, with a
# clearer message; Pillow's fixed default would refuse 180-200 MP photos the user allowed.
Image.MAX_IMAGE_PIXELS = None
warnings.simplefilter("ignore", Image.DecompressionBombWarning)

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
             "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}
_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_MAKE, _MODEL, _DATETIME, _DATETIME_ORIGINAL, _ORIENTATION = 271, 272, 306, 36867, 274


class DecodeError(Exception):
    """The file is not a usable image; the message says why in plain words."""


def file_hash(path: str, chunk: int = 1 << 20) -> str:
    """Content hash of a whole file (BLAKE2b, 128 bits, hex); equal bytes give equal hashes.
    A file that cannot be read raises DecodeError."""
    digest = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
    except OSError as exc:
        raise DecodeError(_os_message(exc)) from None
    return digest.hexdigest()


def bytes_hash(data: bytes | bytearray) -> str:
    """file_hash of bytes already in memory."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _os_message(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "file vanished before it could be read"
    return exc.strerror or str(exc)


def _is_empty(path: str | BinaryIO) -> bool:
    try:
        if not isinstance(path, str):
            return path.seek(0, os.SEEK_END) == 0
        return os.path.getsize(path) == 0
    except (OSError, ValueError):
        return False


class MemoryBudget:
    """Bytes that decodes running at the same time may hold; a decode that would go over
    waits for others to finish (one alone may always run, however large). Without it two
    threads decoding 12 MP WebP files hold 0.3 GB between them: WebP and PNG have no
    reduced-size decoding, and Pillow keeps four bytes per pixel plus copies."""

    def __init__(self, limit: int):
        self.limit = limit
        self._used = 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, nbytes: int):
        with self._cond:
            self._cond.wait_for(lambda: self._used == 0 or self._used + nbytes <= self.limit)
            self._used += nbytes
        try:
            yield
        finally:
            with self._cond:
                self._used -= nbytes
                self._cond.notify_all()


# Decode budget: what decodes running side by side may hold (estimated at 12 bytes a pixel).
BUDGET_FLOOR = 128 << 20  # a 6 MP PNG beside reduced JPEGs, a 12 MP WebP or PNG (~150 MB) alone
_LARGE_DECODE = 160 << 20  # room for one more 12 MP WebP or PNG at full size


def decode_budget(workers: int, available: int | None = None) -> int:
    """The crawl's decode budget for this many decode workers, in bytes. The floor keeps a
    2-core laptop where it was measured (docs/benchmarks.md: peak RSS); each worker beyond
    two adds room for one large decode, so on a 16-core workstation large files decode side
    by side instead of one at a time (a fixed 128 MB serialised them: issue 12). Never more
    than an eighth of the memory available now (`available`, else asked of the system)."""
    wanted = max(BUDGET_FLOOR, (workers - 2) * _LARGE_DECODE)
    if available is None:
        available = available_memory()
    if available is not None:
        wanted = min(wanted, available // 8)
    return max(BUDGET_FLOOR, wanted)


def available_memory() -> int | None:
    """Bytes of memory available to new allocations now, where the system says (Linux's
    MemAvailable; else free physical pages), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


# Formats that decode smaller for free: libjpeg at 1/2, 1/4 or 1/8 scale; pillow-heif by
# decoding an embedded thumbnail (Apple's are 320 px on the long side: they serve a 224 px
# model and the gallery's grid, not a 256 px model). Pillow's draft() asks for the smallest
# that still covers the size on both sides.
_DRAFTABLE = ("JPEG", "HEIF")


def load_image(path: str | BinaryIO, prep: Preprocess, max_pixels: int,
               budget: MemoryBudget | None = None,
               formats: tuple[str, ...] | None = None, preview: int = 0,
               crop: tuple[float, float, float, float] | None = None) -> tuple[np.ndarray, ImageMeta]:
    """Decode path (or an open binary file) into model input (uint8, prep.size x prep.size x 3)
    and its metadata; `formats`: Pillow's names of the only formats to accept. Camera RAW
    files go through LibRaw (raw.py), HEIC through the HEIF opener (formats.enable_heif).
    `preview`: also a JPEG of the photo at most this many pixels on its long side, from the
    same decode (meta.preview: the words pass detects text on it instead of decoding again).
    `crop`: only this region (x, y, width, height of the upright photo: pixels, or shares of
    its width and height where they are fractions) is the input."""
    if isinstance(path, str) and not formats and is_raw_name(path):
        if crop is not None:
            raise DecodeError("a region of a camera RAW file cannot be searched with yet: crop its JPEG or preview")
        from .raw import NotRaw, raw_image

        try:
            return raw_image(path, prep, max_pixels, budget)
        except NotRaw:
            pass  # a JPEG or a plain TIFF under a RAW's name: Pillow reads it
    enable_heif()
    try:
        with Image.open(path, formats=formats) as img:
            _refuse_over_limit(*img.size, max_pixels)
            meta = image_metadata(img)
            if img.format in _DRAFTABLE and crop is None:  # a region needs the full resolution
                want = (prep.size, prep.size)
                if preview:  # the preview's long side too (a 12 MP JPEG still decodes at 1/8)
                    scale = min(1.0, preview / max(img.size))
                    want = (max(want[0], math.ceil(img.width * scale)), max(want[1], math.ceil(img.height * scale)))
                img.draft("RGB" if img.mode == "RGB" else None, want)
            # Pillow holds 4 bytes a pixel; decoders and conversions add about two copies.
            with budget.hold(img.width * img.height * 4 * 3) if budget else nullcontext():
                img.load()
                upright: Image.Image = img
                if exif_orientation(img) not in (None, 1):
                    upright = ImageOps.exif_transpose(img)
                rgb = _to_rgb(upright if crop is None else _cropped(upright, crop))
                pixels = _to_model_input(rgb, prep)
                if preview:
                    meta.preview = _jpeg(fit(rgb, preview))
            return pixels, meta
    except DecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - bad bytes raise all sorts (SyntaxError, struct.error, ...)
        raise _container_error(exc, path, formats) from None


def _cropped(img: Image.Image, crop: tuple[float, float, float, float]) -> Image.Image:
    """The region crop of img: whole numbers are pixels, fractions shares of the width and
    height (the web page's box, drawn over a smaller view of the photo)."""
    if any(isinstance(v, float) for v in crop):
        crop = (round(crop[0] * img.width), round(crop[1] * img.height), max(1, round(crop[2] * img.width)),
                max(1, round(crop[3] * img.height)))
    x, y, width, height = (int(v) for v in crop)
    if width < 1 or height < 1:
        raise DecodeError(f"the region {x},{y},{width},{height} is empty: its width and height must be above 0")
    if x < 0 or y < 0 or x + width > img.width or y + height > img.height:
        raise DecodeError(f"the region {x},{y},{width},{height} is not inside the image ({img.width} x {img.height})")
    return img.crop((x, y, x + width, y + height))


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composed onto white."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        values = np.asarray(img, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        if img.mode != "F" and low >= 0 and high <= 65535:
            scaled = values / 257.0  # 16-bit samples: keep absolute brightness
        else:
            scaled = (values - low) * (255.0 / max(high - low, 1e-9))  # float or odd ranges: stretch
        return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


# Images 6x (or more) the model's input are box-reduced by an integer factor first, then
# resampled: a 15 MP WebP to 256 px in 12 ms instead of 63, within 0.4 of 255 on average of
# resampling the full image (open_clip's own transform). JPEGs arrive reduced already (draft).
_REDUCING_GAP = 3.0


def _to_model_input(img: Image.Image, prep: Preprocess) -> np.ndarray:
    """Resize and crop (or pad) as open_clip's own transforms do for PIL input."""
    side = prep.size
    resample = _RESAMPLE.get(prep.interpolation, Image.Resampling.BICUBIC)
    width, height = img.size
    if prep.resize_mode == "squash":
        img = img.resize((side, side), resample, reducing_gap=_REDUCING_GAP)
    elif prep.resize_mode == "longest":
        scale = side / max(width, height)
        fitted = img.resize((max(1, round(width * scale)), max(1, round(height * scale))), resample,
                            reducing_gap=_REDUCING_GAP)
        canvas = Image.new("RGB", (side, side), (prep.fill_color,) * 3)
        canvas.paste(fitted, ((side - fitted.width) // 2, (side - fitted.height) // 2))
        img = canvas
    else:
        # torchvision's Resize(int): the short side becomes `side`, the long side is truncated.
        if width <= height:
            new_size = (side, int(side * height / width))
        else:
            new_size = (int(side * width / height), side)
        if new_size != img.size:
            img = img.resize(new_size, resample, reducing_gap=_REDUCING_GAP)
        left = int(round((img.width - side) / 2.0))
        top = int(round((img.height - side) / 2.0))
        img = img.crop((left, top, left + side, top + side))
    return np.asarray(img, dtype=np.uint8)


def image_metadata(img: Image.Image) -> ImageMeta:
    """The photo's upright size, date, camera and place, from its header (nothing is decoded)."""
    width, height = img.size
    meta = ImageMeta(width=width, height=height, format=img.format)
    try:
        exif = img.getexif()
    except Exception:  # noqa: BLE001 - broken EXIF never fails the photo
        return meta
    try:
        if exif_orientation(img) in (5, 6, 7, 8):
            meta.width, meta.height = height, width
        meta.camera_make = _text(exif.get(_MAKE))
        meta.camera_model = _text(exif.get(_MODEL))
        taken = exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)
        meta.taken_at = _exif_date(taken)
        gps = exif.get_ifd(_GPS_IFD)
        if gps and 2 in gps and 4 in gps:
            meta.gps_lat = _degrees(gps[2], gps.get(1))
            meta.gps_lon = _degrees(gps[4], gps.get(3))
    except Exception:  # noqa: BLE001
        pass
    return meta


def exif_orientation(img: Image.Image) -> int | None:
    """EXIF orientation 1-8 (1: upright as stored), or None without one."""
    try:
        return img.getexif().get(_ORIENTATION)
    except Exception:  # noqa: BLE001
        return None


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).strip("\x00 ").strip() or None


def _exif_date(value) -> str | None:
    text = _text(value)
    if not text:
        return None
    try:
        return datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S").isoformat()
    except ValueError:
        return None


def _degrees(dms, ref) -> float | None:
    degrees, minutes, seconds = (float(v) for v in dms)
    value = degrees + minutes / 60 + seconds / 3600
    if _text(ref) in ("S", "W"):
        value = -value
    return round(value, 7)


def load_thumbnail(path: str, size: int, max_pixels: int, budget: MemoryBudget | None = None) -> Image.Image:
    """Decode path into an upright RGB image whose longer side is at most `size` pixels (smaller
    images keep their size). Raises DecodeError, as load_image does, for a file over max_pixels
    or one that cannot be read."""
    if is_raw_name(path):
        from .raw import NotRaw, raw_thumbnail

        try:
            return raw_thumbnail(path, size, max_pixels, budget)
        except NotRaw:
            pass
    enable_heif()
    try:
        with Image.open(path) as img:
            width, height = img.size
            _refuse_over_limit(width, height, max_pixels)
            if img.format in _DRAFTABLE:
                # The smallest free reduction whose longer side still covers size.
                scale = min(1.0, size / max(width, height, 1))
                img.draft("RGB" if img.mode == "RGB" else None,
                          (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))))
            with budget.hold(img.width * img.height * 4 * 3) if budget else nullcontext():
                img.load()
                upright: Image.Image = img
                if exif_orientation(img) not in (None, 1):
                    upright = ImageOps.exif_transpose(img)
                return fit(_to_rgb(upright), size)
    except DecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - bad bytes raise all sorts (SyntaxError, struct.error, ...)
        raise _container_error(exc, path) from None


def _jpeg(rgb: Image.Image) -> bytes:
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=90)
    return out.getvalue()


def fit(rgb: Image.Image, size: int) -> Image.Image:
    """rgb with its longer side at most size (a copy: it must outlive the file it came from)."""
    scale = min(1.0, size / max(rgb.size))
    fitted = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    if fitted == rgb.size:
        return rgb.copy()
    # reducing_gap: box-reduce first, then Lanczos; as good to the eye and several times faster.
    return rgb.resize(fitted, Image.Resampling.LANCZOS, reducing_gap=2.0)


def _container_error(exc: Exception, path: str | BinaryIO,
                     formats: tuple[str, ...] | None = None) -> DecodeError:
    """decode._decode_error, in plainer words for HEIC and AVIF files: a file cut short says so
    (libheif and libavif only say that a box points past the end), and a HEIC on an install
    without pillow-heif says what to install."""
    kind = bmff_kind(path)
    if kind is None:
        return _decode_error(exc, path)
    if formats is not None and ("AVIF" if kind == "AVIF" else "HEIF") not in formats:
        return DecodeError(f"{kind} images are not accepted here (only {', '.join(formats)})")
    truncated = bmff_truncated(path)
    if truncated:
        return DecodeError(f"truncated {kind} file ({truncated}); was it copied or downloaded completely?")
    if kind == "HEIC" and isinstance(exc, UnidentifiedImageError) and not enable_heif():
        return DecodeError(f"HEIC photo, but {MISSING['HEIC']}")
    if kind == "AVIF" and isinstance(exc, UnidentifiedImageError) and not features.check("avif"):
        return DecodeError(f"AVIF photo, but {MISSING['AVIF']}")
    detail = library_reason(kind, path) if isinstance(exc, UnidentifiedImageError) else None
    detail = detail or " ".join(str(exc).split()) or type(exc).__name__
    return DecodeError(f"corrupt or unsupported {kind} image data ({detail})")



def _refuse_over_limit(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise DecodeError(
            f"image is {width}x{height} ({width * height / 1e6:.0f} MP), over the "
            f"{max_pixels / 1e6:.0f} MP limit (setting max_pixels)")


def _decode_error(exc: Exception, path: str | BinaryIO) -> DecodeError:
    """What went wrong while decoding path, in words fit to show a user."""
    if isinstance(exc, UnidentifiedImageError):
        if _is_empty(path):
            return DecodeError("empty file (0 bytes)")
        return DecodeError("not an image that Pillow can read (unknown or unsupported format)")
    if isinstance(exc, (PermissionError, FileNotFoundError)):
        return DecodeError(_os_message(exc))
    if isinstance(exc, Image.DecompressionBombError):
        return DecodeError(str(exc))
    if isinstance(exc, OSError):
        text = str(exc)
        if "truncated" in text or "broken data stream" in text or "image file is" in text:
            return DecodeError(f"truncated or corrupt image data ({text})")
        return DecodeError(f"corrupt or unsupported image data ({text})")
    return DecodeError(f"corrupt or unsupported image data ({type(exc).__name__}: {exc})")
