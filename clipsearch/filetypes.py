"""The kinds of photo file clipsearch reads, and the files in photo folders that are not photos.

`FORMATS` says, per extension, which reader opens a file and what Python package it needs
(ingest/decode.py, ingest/formats.py and ingest/raw.py do the reading):

- Pillow alone: JPEG, PNG, WebP, BMP, TIFF, GIF, and AVIF (Pillow's own since 11.2).
- Pillow with a HEIF opener: HEIC/HEIF (libheif through pi-heif, or pillow-heif).
- LibRaw through rawpy: camera RAW files.

`raw_siblings` pairs a RAW with the JPEG or HEIC of the same shot beside it (the crawl skips
such RAWs unless `raw = "all"`); `NOT_PHOTOS` are never crawled nor counted as failures.
Nothing here imports more than the standard library: the settings check extensions
against it.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

RAW_EXTENSIONS = ("dng", "cr2", "cr3", "nef", "nrw", "arw", "raf", "orf", "rw2", "pef", "srw")


@dataclass(frozen=True)
class Format:
    """A kind of photo file: the extensions that name it, the reader that opens it, the Python
    package it needs (None: Pillow alone) and whether a crawl takes it unless told otherwise."""

    name: str
    extensions: tuple[str, ...]
    reader: str = "pillow"  # pillow | raw
    package: str | None = None
    default: bool = True


FORMATS: tuple[Format, ...] = (
    Format("JPEG", ("jpg", "jpeg")),
    Format("PNG", ("png",)),
    Format("WebP", ("webp",)),
    Format("BMP", ("bmp",)),
    Format("TIFF", ("tif", "tiff")),
    Format("GIF", ("gif",)),
    # hif: Canon's and Fujifilm's 10-bit HEIF. pillow-heif, or pi-heif (its decode-only build).
    Format("HEIC", ("heic", "heif", "hif"), package="pillow_heif|pi_heif"),
    Format("AVIF", ("avif",)),
    # On wherever rawpy is installed: through its preview a RAW decodes as fast as a JPEG
    # (6-20 ms a 12 MP DNG here, JPEG 18 ms), rendered by LibRaw in 0.12-0.27 s, less than a
    # HEIC's 0.57 s. What costs is reading 15-60 MB to hash it, so a crawl skips RAWs that have a
    # JPEG or HEIC of the same shot beside them (raw_siblings). README: measurements.
    Format("camera RAW", RAW_EXTENSIONS, reader="raw", package="rawpy"),
)
_BY_EXTENSION = {ext: fmt for fmt in FORMATS for ext in fmt.extensions}

# Files that live in photo folders and are not photos: a crawl never opens them and never
# reports them as failures, even when a user lists one of them in `extensions`.
NOT_PHOTOS: dict[str, str] = {
    **dict.fromkeys(("mov", "mp4", "m4v", "3gp", "avi", "mkv", "webm", "wmv", "mpg", "mts", "m2ts",
                     "lrv", "insv"), "a video (Live Photo halves are .mov beside a .heic of the same name)"),
    **dict.fromkeys(("heics", "heifs", "avis"), "an image sequence (a HEIF or AVIF animation)"),
    **dict.fromkeys(("aae", "xmp", "dop", "pp3", "cos", "on1", "thm", "json", "srt", "lrf"),
                    "a sidecar (edits, captions or metadata of the photo beside it)"),
    **dict.fromkeys(("psd", "psb", "xcf", "kra", "afphoto", "svg", "pdf", "eps", "ai"),
                    "an editor's document or a drawing"),
    **dict.fromkeys(("ini", "db", "lnk", "url"), "a folder's housekeeping file (Picasa.ini, Thumbs.db)"),
}


def format_for(path: str) -> Format | None:
    """The Format a file's extension names, or None for one clipsearch does not read."""
    return _BY_EXTENSION.get(os.path.splitext(path)[1][1:].lower())


def same_kind(ext: str) -> tuple[str, ...]:
    """The extensions of the format ext names, for the query's ext: filter: jpg also finds
    jpeg, heic also heif and hif, tif also tiff; "raw" names every camera RAW extension."""
    ext = ext.lower().lstrip(".")
    if ext == "raw":
        return RAW_EXTENSIONS
    fmt = _BY_EXTENSION.get(ext)
    return fmt.extensions if fmt is not None and fmt.reader != "raw" else (ext,)


def is_raw_name(path: str) -> bool:
    """True for a name with a camera RAW extension (raw.py reads it, not Pillow)."""
    fmt = format_for(path)
    return fmt is not None and fmt.reader == "raw"


# What to say when a format's package is not installed (`errors` and `status` say it once).
MISSING = {"HEIC": "pi-heif is not installed (pip install pi-heif)",
           "AVIF": "this Pillow reads no AVIF (pip install -U pillow)",
           "camera RAW": "rawpy is not installed (pip install rawpy)"}


def available(fmt: Format) -> bool:
    """True where this install can read fmt (its package imports; AVIF: Pillow's own or the plugin)."""
    if fmt.name == "AVIF":
        from PIL import features  # Pillow's own AVIF, or the plugin

        return bool(features.check("avif")) or importlib.util.find_spec("pillow_avif") is not None
    return fmt.package is None or any(importlib.util.find_spec(name) is not None for name in fmt.package.split("|"))


def default_extensions() -> tuple[str, ...]:
    """The extensions a crawl takes unless told otherwise: every format's, whether or not its
    package is installed here (a file of a format this install cannot read is recorded with
    the package to install, and `errors` and `status` say so once)."""
    return tuple(ext for fmt in FORMATS if fmt.default for ext in fmt.extensions)


def not_a_photo(name: str) -> str | None:
    """Why a file is never a photo to index (video, sidecar, ...), or None."""
    return NOT_PHOTOS.get(os.path.splitext(name)[1][1:].lower())


# A RAW's stem, less Google Pixel's ".RAW-02.ORIGINAL" (its JPEG is "<stem>.RAW-01.COVER.jpg").
_PIXEL_RAW = re.compile(r"\.RAW-\d\d\..*$", re.IGNORECASE)
_SIBLING_EXTENSIONS = frozenset(("jpg", "jpeg", "heic", "heif", "hif", "avif"))


def raw_siblings(names: Iterable[str]) -> dict[str, str]:
    """RAW files of one folder listing that have a JPEG or HEIC of the same shot beside them:
    {raw name: sibling name}. Names compare without case (cameras write IMG_0001.CR2 beside
    IMG_0001.JPG; import tools lower-case one of them). The walk lists a folder's entries
    together, so this costs one pass over names already in memory."""
    names = list(names)
    pictures: dict[str, str] = {}
    for name in names:
        stem, ext = os.path.splitext(name)
        if ext[1:].lower() in _SIBLING_EXTENSIONS:
            pictures.setdefault(_PIXEL_RAW.sub("", stem).lower(), name)
    found = {}
    for name in names:
        stem, ext = os.path.splitext(name)
        if ext[1:].lower() in RAW_EXTENSIONS:
            sibling = pictures.get(_PIXEL_RAW.sub("", stem).lower())
            if sibling is not None:
                found[name] = sibling
    return found


def refused_extensions(extensions: Iterable[str]) -> str | None:
    """Why a list of extensions to crawl names files that are not photos ("mov is a video
    (...): clipsearch indexes photos"), or None."""
    for ext in extensions:
        why = NOT_PHOTOS.get(ext.lower().lstrip("."))
        if why:
            return f"{ext.lower().lstrip('.')} is {why}: clipsearch indexes photos"
    return None


RAW_MODES = ("unpaired", "all")  # the `raw` setting: RAWs without a JPEG/HEIC of the same shot, or all

# What a web browser shows by itself; the gallery offers the others' originals as downloads
# (its pages show JPEG renditions of every photo).
BROWSER_SHOWS = frozenset(("jpg", "jpeg", "png", "webp", "gif", "bmp", "avif"))


def shows_in_browser(path: str) -> bool:
    return os.path.splitext(path)[1][1:].lower() in BROWSER_SHOWS
