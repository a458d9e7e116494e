"""Camera RAW files through LibRaw (rawpy): what the crawl, the gallery and the contact sheet
get from a .dng, .cr2, .nef ... file, in the same shapes and errors as decode.py's.

Preview first: most cameras embed a JPEG of 1.6 MP to full size, which decodes as fast as
any JPEG (6-20 ms a 12 MP DNG here); it is used when it has the sensor's shape and covers
what is asked for. Without one, LibRaw renders the sensor data at half size (each 2x2 block
one pixel: no demosaicing), 0.12-0.27 s. LibRaw's flip (from the container or the maker
notes) is the one truth for orientation: postprocess applies it, a preview is turned by it,
and a preview's own EXIF Orientation is ignored.

Metadata, best source first: the container's IFD0 / EXIF IFD / GPS IFD (TIFF-shaped RAWs;
Olympus's and Panasonic's own magic too), Canon CR3's CMT boxes, the preview JPEG's EXIF
(Fujifilm's RAF keeps it there), LibRaw's timestamp for the date.

A file cut short is found from its container (the furthest strip, tile or preview the IFDs
point to; for CR3 the box sizes): LibRaw notices only when it unpacks the sensor data, and a
preview would hide it.
"""

from __future__ import annotations

import io
import math
import os
import struct
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, TiffImagePlugin

from ..filetypes import MISSING
from ..records import ImageMeta, Preprocess
from .decode import (
    DecodeError,
    MemoryBudget,
    _decode_error,
    _degrees,
    _exif_date,
    _refuse_over_limit,
    _text,
    _to_model_input,
    _to_rgb,
    fit,
)
from .formats import bmff_boxes, bmff_kind, bmff_truncated

# LibRaw's flip (bit 0: mirror left-right, 1: top-bottom, 2: transpose) as an EXIF Orientation.
_FLIP_TO_ORIENTATION = {0: 1, 1: 2, 3: 3, 2: 4, 4: 5, 6: 6, 7: 7, 5: 8}
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}
# A preview whose shape differs from the sensor's by more than this is letterboxed or cropped.
_ASPECT_SLACK = 0.02
# LibRaw's memory for a half-size rendering: the unpacked raw (2 bytes a photosite), its
# 4-channel half-size image (2) and the 8-bit output (0.75), rounded up.
_RAW_BYTES_PER_PIXEL = 6


def raw_image(path: str, prep: Preprocess, max_pixels: int, budget: MemoryBudget | None):
    need_short = prep.size if prep.resize_mode != "longest" else 0
    need_long = prep.size
    with _RawPhoto(path, max_pixels) as photo:
        rgb = photo.upright_rgb(need_short, need_long, (prep.size, prep.size), budget)
        return _to_model_input(rgb, prep), photo.meta


def raw_thumbnail(path: str, size: int, max_pixels: int, budget: MemoryBudget | None) -> Image.Image:
    with _RawPhoto(path, max_pixels) as photo:
        width, height = photo.stored_size
        scale = min(1.0, size / max(width, height))
        cover = (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale)))
        return fit(photo.upright_rgb(0, min(size, max(width, height)), cover, budget), size)


class _RawPhoto:
    """One RAW file opened by LibRaw: its size and metadata from the headers (nothing decoded
    yet), then its upright pixels from the preview or from a half-size rendering."""

    def __init__(self, path: str, max_pixels: int):
        self.path = path
        self.max_pixels = max_pixels
        self._raw: Any = None  # rawpy.RawPy, imported only when a RAW is opened

    def __enter__(self) -> _RawPhoto:
        try:
            import rawpy
        except ImportError:
            raise DecodeError(f"camera RAW file, but {MISSING['camera RAW']}") from None
        self._rawpy = rawpy
        try:
            if os.path.getsize(self.path) == 0:
                raise DecodeError("empty file (0 bytes)")
        except OSError as exc:
            raise _raw_error(exc, self.path) from None
        problem = _raw_truncated(self.path)
        if problem:
            raise DecodeError(f"truncated RAW file ({problem}); was it copied completely?")
        try:
            self._raw = rawpy.imread(self.path)  # reads the headers; nothing is decoded yet
            sizes = self._raw.sizes
            self.flip = sizes.flip
            self.orientation = _FLIP_TO_ORIENTATION.get(sizes.flip, 1)
            self.stored_size = (sizes.width, sizes.height)
            _refuse_over_limit(sizes.width, sizes.height, self.max_pixels)
            self._preview_data = self._extract_preview()
            self.meta = self._metadata()
        except rawpy.LibRawFileUnsupportedError:
            self.__exit__()
            raise self._not_raw() from None
        except (rawpy.LibRawError, OSError) as exc:
            self.__exit__()
            raise _raw_error(exc, self.path) from None
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    def _not_raw(self) -> Exception:
        # A .dng or .nef that is really a JPEG or a plain TIFF (renamed, or exported under the
        # wrong name) goes to Pillow; a DNG or a sensor mosaic LibRaw does not know stays an
        # error: Pillow would show its mosaic as a grey picture.
        try:
            with Image.open(self.path) as img:
                tags = getattr(img, "tag_v2", {})
                if 50706 not in tags and tags.get(262) not in (32803, 34892):
                    return NotRaw()
        except Exception:  # noqa: BLE001
            pass
        return DecodeError("not a camera RAW file that LibRaw can read (unknown or unsupported camera)")

    def _extract_preview(self):
        try:
            return self._raw.extract_thumb()
        except (self._rawpy.LibRawNoThumbnailError, self._rawpy.LibRawUnsupportedThumbnailError):
            return None
        except self._rawpy.LibRawError:
            return None  # a damaged preview: the sensor data may still be whole

    def _preview_image(self) -> Image.Image | None:
        thumb = self._preview_data
        if thumb is None:
            return None
        try:
            if thumb.format == self._rawpy.ThumbFormat.JPEG:
                return Image.open(io.BytesIO(thumb.data), formats=("JPEG",))
            return Image.fromarray(np.ascontiguousarray(thumb.data[..., :3]), "RGB")
        except Exception:  # noqa: BLE001 - a preview Pillow cannot read: render the sensor data
            return None

    def upright_rgb(self, need_short: int, need_long: int, cover: tuple[int, int],
                    budget: MemoryBudget | None) -> Image.Image:
        """The photo upright in RGB, from the preview when it is the sensor's shape and at
        least need_short x need_long, else rendered by LibRaw at half size."""
        preview = self._preview_image()
        if preview is not None and self._serves(preview.size, need_short, need_long):
            try:
                if preview.format == "JPEG":
                    preview.draft("RGB", cover)
                with budget.hold(preview.width * preview.height * 4 * 3) if budget else nullcontext():
                    preview.load()
                    rgb = _to_rgb(preview)
                    return rgb.transpose(_TRANSPOSE[self.orientation]) if self.orientation != 1 else rgb
            except Exception:  # noqa: BLE001 - a broken preview: render the sensor data instead
                pass
        width, height = self.stored_size
        with budget.hold(width * height * _RAW_BYTES_PER_PIXEL) if budget else nullcontext():
            try:
                # half_size takes each 2x2 block as one pixel: no demosaicing at all, a quarter
                # of the pixels to colour-convert, and still 1500 px high for a 12 MP sensor.
                pixels = self._raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
            except (self._rawpy.LibRawError, OSError, MemoryError) as exc:
                raise _raw_error(exc, self.path) from None
        return Image.fromarray(pixels, "RGB")  # LibRaw applied the flip

    def _serves(self, size: tuple[int, int], need_short: int, need_long: int) -> bool:
        width, height = self.stored_size
        p_width, p_height = size
        if min(p_width, p_height) < need_short or max(p_width, p_height) < need_long:
            return False
        return abs(p_width * height - p_height * width) <= _ASPECT_SLACK * width * p_height

    def _metadata(self) -> ImageMeta:
        width, height = self.stored_size
        if self.flip & 4:
            width, height = height, width
        ext = os.path.splitext(self.path)[1][1:].upper()
        meta = ImageMeta(width=width, height=height, format=ext or "RAW")
        for ifd0, exif, gps in _raw_tag_sources(self.path, self._preview_data, self._rawpy):
            _fill_meta(meta, ifd0, exif, gps)
        if meta.taken_at is None:
            try:
                stamp = self._raw.other.timestamp  # LibRaw's, from wherever the maker keeps it
                if stamp.year > 1970:
                    meta.taken_at = stamp.replace(microsecond=0, tzinfo=None).isoformat()
            except Exception:  # noqa: BLE001
                pass
        return meta


class NotRaw(Exception):
    """A RAW-named file that is an ordinary image (a JPEG under a .dng name): Pillow reads it."""


def _raw_error(exc: BaseException, path: str) -> DecodeError:
    if isinstance(exc, (PermissionError, FileNotFoundError)):
        return _decode_error(exc, path)
    if isinstance(exc, MemoryError):
        return DecodeError("not enough memory to render this RAW file")
    text = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
    if "Input/output" in text or "end of file" in text.lower():
        return DecodeError(f"truncated or unreadable RAW data (LibRaw: {text})")
    return DecodeError(f"corrupt or unsupported RAW data (LibRaw: {text or type(exc).__name__})")


# --- RAW metadata: the container's EXIF, else the preview's, else LibRaw's --------------------

# TIFF-based RAWs: the standard magic (DNG, CR2, NEF, ARW, PEF, SRW) and Olympus's and
# Panasonic's own (ORF: IIRO/IIRS/MMOR, RW2: IIU).
_TIFF_MAGIC = {b"II*\x00": "<", b"MM\x00*": ">", b"IIRO": "<", b"IIRS": "<", b"MMOR": ">", b"IIU\x00": "<"}
_EXIF_IFD, _GPS_IFD, _SUB_IFDS = 0x8769, 0x8825, 330
_CANON_UUID = bytes.fromhex("85c0b687820f11e08111f4ce462b6a48")
# Canon CR3: moov/uuid holds CMT1 (IFD0), CMT2 (the EXIF IFD) and CMT4 (the GPS IFD), each a
# little TIFF file of its own.
_CR3_BOXES = {b"CMT1": 0, b"CMT2": 1, b"CMT4": 2}
_MAX_IFDS = 32  # a loop of IFD offsets in a damaged file ends here


def _read_ifd(fp: BinaryIO, order: str, offset: int) -> TiffImagePlugin.ImageFileDirectory_v2 | None:
    header = b"II*\x00\x00\x00\x00\x00" if order == "<" else b"MM\x00*\x00\x00\x00\x00"
    ifd = TiffImagePlugin.ImageFileDirectory_v2(header)
    try:
        fp.seek(offset)
        ifd.load(fp)
    except Exception:  # noqa: BLE001 - damaged tags never fail the photo
        return None
    return ifd


def _tiff_tags(fp: BinaryIO) -> tuple[dict, dict, dict] | None:
    """IFD0's, the EXIF IFD's and the GPS IFD's tags of a TIFF-shaped file (tag -> value)."""
    fp.seek(0)
    head = fp.read(8)
    order = _TIFF_MAGIC.get(head[:4])
    if order is None:
        return None
    ifd0 = _read_ifd(fp, order, struct.unpack(order + "I", head[4:8])[0])
    if ifd0 is None:
        return None
    found = [dict(ifd0), {}, {}]
    for slot, tag in ((1, _EXIF_IFD), (2, _GPS_IFD)):
        offset = ifd0.get(tag)
        if isinstance(offset, int) and offset > 0:
            child = _read_ifd(fp, order, offset)
            if child is not None:
                found[slot] = dict(child)
    return found[0], found[1], found[2]


def _tiff_extent(fp: BinaryIO) -> int:
    """The end of the furthest image data (strips, tiles, JPEG previews) any IFD of a
    TIFF-shaped file points to, following the IFD chain and SubIFDs; 0 when unknown."""
    fp.seek(0)
    head = fp.read(8)
    order = _TIFF_MAGIC.get(head[:4])
    if order is None:
        return 0
    length = fp.seek(0, os.SEEK_END)
    pending = [struct.unpack(order + "I", head[4:8])[0]]
    seen: set[int] = set()
    extent = 0
    while pending and len(seen) < _MAX_IFDS:
        offset = pending.pop()
        if offset <= 0 or offset in seen:
            continue
        seen.add(offset)
        fp.seek(offset)
        count = fp.read(2)
        # The directory itself must fit too (some writers put it after the data it describes).
        end = offset + 6 + 12 * struct.unpack(order + "H", count)[0] if len(count) == 2 else offset + 2
        extent = max(extent, end)
        ifd = _read_ifd(fp, order, offset) if end <= length else None
        if ifd is None:
            continue
        for offsets_tag, counts_tag in ((273, 279), (324, 325), (513, 514)):
            starts, counts = ifd.get(offsets_tag), ifd.get(counts_tag)
            if starts is None or counts is None:
                continue
            starts = starts if isinstance(starts, tuple) else (starts,)
            counts = counts if isinstance(counts, tuple) else (counts,)
            extent = max([extent] + [s + c for s, c in zip(starts, counts)])
        sub = ifd.get(_SUB_IFDS)
        if sub:
            pending.extend(sub if isinstance(sub, tuple) else (sub,))
        if ifd.next:
            pending.append(ifd.next)
    return extent


def _cr3_tags(fp: BinaryIO, length: int) -> tuple[dict, dict, dict] | None:
    found: list[dict] = [{}, {}, {}]
    for kind, start, end, _ in bmff_boxes(fp, 0, length):
        if kind != b"moov":
            continue
        for kind2, start2, end2, _ in bmff_boxes(fp, start, end):
            fp.seek(start2)
            if kind2 != b"uuid" or fp.read(16) != _CANON_UUID:
                continue
            for kind3, start3, end3, _ in bmff_boxes(fp, start2 + 16, end2):
                if kind3 in _CR3_BOXES:
                    fp.seek(start3)
                    tags = _tiff_tags(io.BytesIO(fp.read(end3 - start3)))
                    if tags:
                        found[_CR3_BOXES[kind3]] = tags[0]  # each box's IFD0 is the IFD it holds
    return (found[0], found[1], found[2]) if any(found) else None


def _raw_tag_sources(path: str, preview, rawpy) -> Iterator[tuple[dict, dict, dict]]:
    """Tag sets to read metadata from, best first: the container's, then the preview JPEG's
    (RAF keeps all of it there; CR2's and NEF's previews have none)."""
    try:
        with open(path, "rb") as fp:
            length = fp.seek(0, os.SEEK_END)
            tags = _tiff_tags(fp)
            if tags is None and bmff_kind(path) == "CR3":
                tags = _cr3_tags(fp, length)
    except OSError:
        tags = None
    if tags:
        yield tags
    if preview is not None and preview.format == rawpy.ThumbFormat.JPEG:
        try:
            exif = Image.open(io.BytesIO(preview.data), formats=("JPEG",)).getexif()
            yield dict(exif), dict(exif.get_ifd(_EXIF_IFD)), dict(exif.get_ifd(_GPS_IFD))
        except Exception:  # noqa: BLE001
            pass


def _fill_meta(meta: ImageMeta, ifd0: dict, exif: dict, gps: dict) -> None:
    """Fill what meta lacks from one source's tags (as decode.image_metadata reads them)."""
    try:
        meta.camera_make = meta.camera_make or _text(ifd0.get(271))
        meta.camera_model = meta.camera_model or _text(ifd0.get(272))
        meta.taken_at = meta.taken_at or _exif_date(exif.get(36867) or ifd0.get(306))
        if meta.gps_lat is None and gps and 2 in gps and 4 in gps:
            meta.gps_lat = _degrees(gps[2], gps.get(1))
            meta.gps_lon = _degrees(gps[4], gps.get(3))
    except Exception:  # noqa: BLE001 - broken EXIF never fails the photo
        pass


def _raw_truncated(path: str) -> str | None:
    """How a RAW file is cut short, from its container alone (LibRaw notices a short read of
    the sensor data only when it decodes it; a preview would hide a truncated file)."""
    try:
        with open(path, "rb") as fp:
            head = fp.read(12)
            length = fp.seek(0, os.SEEK_END)
            if head[4:8] == b"ftyp":
                return bmff_truncated(path)
            if head[:4] not in _TIFF_MAGIC:
                return None  # RAF: its header holds offsets too; not checked without a sample to test on
            extent = _tiff_extent(fp)
    except (OSError, struct.error):
        return None
    if extent > length:
        return f"it ends after {length:,} of {extent:,} bytes"
    return None
