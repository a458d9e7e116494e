"""Opening the photo formats beyond Pillow's own: HEIC/HEIF registration and ISO base media
containers. The registry of formats (which extension, which reader, which package) is
clipsearch/filetypes.py:

- Pillow alone: JPEG, PNG, WebP, BMP, TIFF, GIF, and AVIF (Pillow's own since 11.2: libavif
  and dav1d in its wheel; pillow-avif-plugin only where a Pillow lacks it).
- Pillow with a HEIF opener registered (`enable_heif`): HEIC/HEIF from phones (libheif,
  through pi-heif, the decode-only build clipsearch installs, or pillow-heif where present).
- LibRaw through rawpy (ingest/raw.py): camera RAW files, from the camera's embedded preview
  when it covers what is asked for, else a half-size rendering.

Orientation, so that nothing is turned twice: JPEG, PNG, TIFF, WebP and AVIF give pixels as
stored, with EXIF Orientation saying how to turn them (for AVIF, Pillow writes the
container's irot/imir into it); libheif turns HEIC pixels itself and pillow-heif/pi-heif
reset EXIF Orientation to 1. So `exif_transpose` after decoding turns each exactly once.
RAW: LibRaw's flip is the one truth (raw.py).

`bmff_*` read ISO base media containers (HEIC, AVIF, CR3) to say a file is cut short,
which libheif and libavif do not.
"""

from __future__ import annotations

import importlib
import os
import struct
import threading
from collections.abc import Iterator
from contextlib import nullcontext
from typing import BinaryIO

from PIL import Image, features

# --- HEIC/HEIF and AVIF: Pillow with the openers registered -------------------------------------

_registered = False
_register_lock = threading.Lock()


def enable_heif(decode_threads: int | None = None) -> bool:
    """Register pillow-heif's opener once per process (True when HEIC can be read). Pillow's
    own plugins, AVIF among them, are initialised first so that they come first in
    Image.ID: a "mif1" file is tried as AVIF before libheif, which this wheel builds without
    an AV1 decoder. Depth maps and auxiliary images are not parsed: only the primary is used."""
    global _registered
    with _register_lock:
        if _registered:
            return True
        if not features.check("avif"):
            try:
                import pillow_avif  # noqa: F401 - registers itself; only for a Pillow without AVIF
            except ImportError:
                pass
        Image.init()
        heif = heif_module()
        if heif is None:
            return False
        options: dict[str, object] = {"depth_images": False, "aux_images": False}
        if decode_threads:
            options["decode_threads"] = decode_threads
        heif.register_heif_opener(**options)
        _registered = True
        return True


def heif_module():
    """pillow_heif, else pi_heif (the same code without the x265 encoder: 4 MB, not 27, and
    no GPL library, but no thumbnail draft() either), else None."""
    for name in ("pillow_heif", "pi_heif"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None




# ISO base media files (HEIC, AVIF, CR3) start with a box of type ftyp; its brand says which.
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}


def _head(path: str | BinaryIO, n: int) -> bytes:
    try:
        if isinstance(path, str):
            with open(path, "rb") as handle:
                return handle.read(n)
        here = path.tell()
        path.seek(0)
        data = path.read(n)
        path.seek(here)
        return data
    except (OSError, ValueError):
        return b""


def bmff_kind(path: str | BinaryIO) -> str | None:
    head = _head(path, 12)
    if head[4:8] != b"ftyp":
        return None
    brand = head[8:12]
    if brand in _AVIF_BRANDS:
        return "AVIF"
    return "HEIC" if brand in _HEIF_BRANDS else "CR3" if brand == b"crx " else "HEIF"


def bmff_boxes(fp: BinaryIO, start: int, end: int) -> Iterator[tuple[bytes, int, int, int]]:
    """(type, payload start, box end, declared end) of each box between start and end; box
    end is min(declared end, end). Stops at a box header that is cut off or nonsense."""
    position = start
    while position + 8 <= end:
        fp.seek(position)
        header = fp.read(16)
        if len(header) < 8:
            return
        size, kind = struct.unpack(">I4s", header[:8])
        payload = position + 8
        if size == 1:
            if len(header) < 16:
                return
            size = struct.unpack(">Q", header[8:16])[0]
            payload = position + 16
        elif size == 0:
            size = end - position  # "to the end of the file"
        if size < payload - position:
            return
        yield kind, payload, min(position + size, end), position + size
        position += size


def bmff_truncated(path: str | BinaryIO) -> str | None:
    """How an ISO base media file is cut short ('it ends after N of M bytes'), or None when
    every top-level box fits in the file."""
    try:
        handle = open(path, "rb") if isinstance(path, str) else path
        with handle if isinstance(path, str) else nullcontext(handle):
            length = handle.seek(0, os.SEEK_END)
            needed = max((declared for *_, declared in bmff_boxes(handle, 0, length)), default=0)
    except (OSError, ValueError):
        return None
    if needed > length:
        return f"it ends after {length:,} of {needed:,} bytes"
    if 0 < length - needed < 8:
        return f"it ends after {length:,} bytes, inside a box header"
    return None


def library_reason(kind: str, path: str | BinaryIO) -> str | None:
    """What libheif or libavif says about a file Pillow could not identify."""
    try:
        if kind == "AVIF":
            from PIL import AvifImagePlugin

            AvifImagePlugin.AvifImageFile(path).close()
        elif (heif := heif_module()) is not None:
            heif.open_heif(path)
    except Exception as exc:  # noqa: BLE001 - its words are what we are after
        return f"{'libavif' if kind == 'AVIF' else 'libheif'}: {' '.join(str(exc).split())}"
    return None


