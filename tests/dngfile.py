"""Small DNG files that LibRaw reads, written from scratch for the tests.

tifffile writes a CFA DNG's mosaic, an uncompressed preview and plain tags (one test in
tests/test_raw.py makes its DNG so), but not an EXIF or GPS IFD, and it will not store a
ready-made JPEG strip without the imagecodecs package (79 MB). So this module writes the TIFF structure itself:
a DNG as cameras and converters make them, IFD0 a JPEG preview (NewSubFileType 1) with
the camera's tags, EXIF and GPS IFDs, and the sensor's Bayer mosaic in a SubIFD.

What LibRaw 0.22 needs (found by leaving tags out one at a time): a TIFF strip of 16-bit
samples (BitsPerSample 16) with PhotometricInterpretation 32803 (CFA); without 32803, or with
1 (BlackIsZero), it says "Unsupported file format". Once DNGVersion is there, CFAPattern must
be too: without it LibRaw takes the file for a CMYG camera's and renders one channel.
CFARepeatPatternDim, NewSubFileType, Make/Model, UniqueCameraModel, BlackLevel and
WhiteLevel may all go (LibRaw then assumes RGGB 2x2 and black 0). This writer also sets
ColorMatrix1 (XYZ -> camera) to XYZ -> linear sRGB and AsShotNeutral to 1,1,1, so that the
"camera" is linear sRGB and a rendering has the photo's colours.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

BYTE, ASCII, SHORT, LONG, RATIONAL, UNDEFINED, SRATIONAL = 1, 2, 3, 4, 5, 7, 10
_FORMAT = {BYTE: "B", ASCII: "B", SHORT: "H", LONG: "I", UNDEFINED: "B"}

# XYZ (D65) -> linear sRGB: as ColorMatrix1 it makes LibRaw's camera-to-sRGB matrix the identity.
XYZ_TO_SRGB = ((3.2404542, -1.5371385, -0.4985314),
               (-0.9692660, 1.8760108, 0.0415560),
               (0.0556434, -0.2040259, 1.0572252))


@dataclass
class Ifd:
    """One IFD: tags (tag -> (type, value)), its image data (one strip) and child IFDs by
    pointer tag (34665 EXIF, 34853 GPS, 330 SubIFDs)."""

    tags: dict[int, tuple[int, object]] = field(default_factory=dict)
    data: bytes | None = None
    children: dict[int, list[Ifd]] = field(default_factory=dict)


def _values(typ: int, value) -> bytes:
    if typ == ASCII:
        return value.encode("ascii") + b"\0"
    if typ in (BYTE, UNDEFINED) and isinstance(value, (bytes, bytearray)):
        return bytes(value)
    values = value if isinstance(value, (tuple, list)) else (value,)
    if typ in (RATIONAL, SRATIONAL):
        code = "I" if typ == RATIONAL else "i"
        return b"".join(struct.pack("<" + code * 2, *pair) for pair in values)
    return struct.pack("<" + _FORMAT[typ] * len(values), *values)


def _count(typ: int, payload: bytes) -> int:
    return len(payload) // {BYTE: 1, ASCII: 1, UNDEFINED: 1, SHORT: 2, LONG: 4, RATIONAL: 8, SRATIONAL: 8}[typ]


def tiff_bytes(ifd0: Ifd) -> bytes:
    """A little-endian TIFF file of ifd0 and everything below it."""
    buf = bytearray(b"II*\x00\x00\x00\x00\x00")

    def place(ifd: Ifd) -> int:
        tags = dict(ifd.tags)
        for tag, kids in ifd.children.items():
            tags[tag] = (LONG, [place(kid) for kid in kids])
        if ifd.data is not None:
            buf.extend(b"\0" * (len(buf) % 2))
            tags[273] = (LONG, [len(buf)])
            tags[279] = (LONG, [len(ifd.data)])
            buf.extend(ifd.data)
        buf.extend(b"\0" * (len(buf) % 2))
        at = len(buf)
        area = at + 2 + 12 * len(tags) + 4
        entries, extra = [], bytearray()
        for tag in sorted(tags):
            typ, value = tags[tag]
            payload = _values(typ, value)
            if len(payload) <= 4:
                inline = payload.ljust(4, b"\0")
            else:
                inline = struct.pack("<I", area + len(extra))
                extra.extend(payload + b"\0" * (len(payload) % 2))
            entries.append(struct.pack("<HHI", tag, typ, _count(typ, payload)) + inline)
        buf.extend(struct.pack("<H", len(tags)) + b"".join(entries) + b"\0\0\0\0" + extra)
        return at

    buf[4:8] = struct.pack("<I", place(ifd0))
    return bytes(buf)


def mosaic(rgb: np.ndarray, white: int = 4095) -> np.ndarray:
    """An RGGB Bayer mosaic (uint16) of an sRGB photo, as a sensor whose colours are linear sRGB."""
    linear = (rgb.astype(np.float64) / 255.0) ** 2.2 * white
    cfa = np.empty(rgb.shape[:2], np.float64)
    cfa[0::2, 0::2] = linear[0::2, 0::2, 0]
    cfa[0::2, 1::2] = linear[0::2, 1::2, 1]
    cfa[1::2, 0::2] = linear[1::2, 0::2, 1]
    cfa[1::2, 1::2] = linear[1::2, 1::2, 2]
    return np.round(cfa).astype(np.uint16)


def _rationals(values, denominator: int = 10000):
    return [(round(v * denominator), denominator) for v in values]


def _gps(lat: float, lon: float) -> Ifd:
    def dms(value: float):
        value = abs(value)
        degrees, minutes = int(value), int(abs(value) * 60) % 60
        seconds = (value * 3600) - degrees * 3600 - minutes * 60
        return [(degrees, 1), (minutes, 1), (round(seconds * 100), 100)]
    return Ifd({0: (BYTE, bytes((2, 3, 0, 0))), 1: (ASCII, "N" if lat >= 0 else "S"), 2: (RATIONAL, dms(lat)),
                3: (ASCII, "E" if lon >= 0 else "W"), 4: (RATIONAL, dms(lon))})


def dng_bytes(photo: np.ndarray, *, preview: Image.Image | None = None, orientation: int = 1,
              make: str = "Testcam", model: str = "Testcam R1", taken: str | None = None,
              gps: tuple[float, float] | None = None, white: int = 4095, ljpeg=None) -> bytes:
    """A DNG of an sRGB photo (H x W x 3 uint8, H and W even) as its sensor mosaic; with a
    JPEG preview in IFD0 and the mosaic in a SubIFD when `preview` is given. `ljpeg`: a
    lossless-JPEG encoder (imagecodecs.ljpeg_encode) to compress the mosaic as cameras do."""
    height, width = photo.shape[:2]
    raw = Ifd({254: (LONG, 0), 256: (LONG, width), 257: (LONG, height), 258: (SHORT, 16), 259: (SHORT, 1),
               262: (SHORT, 32803), 277: (SHORT, 1), 278: (LONG, height), 284: (SHORT, 1),
               33421: (SHORT, (2, 2)), 33422: (BYTE, bytes((0, 1, 1, 2))),
               50714: (SHORT, 0), 50717: (SHORT, white)},
              data=mosaic(photo, white).astype("<u2").tobytes())
    if ljpeg is not None:
        raw.tags[259] = (SHORT, 7)
        raw.data = ljpeg(mosaic(photo, white), bitspersample=max(white.bit_length(), 2))
    camera = {271: (ASCII, make), 272: (ASCII, model), 274: (SHORT, orientation),
              50706: (BYTE, bytes((1, 4, 0, 0))), 50707: (BYTE, bytes((1, 1, 0, 0))),
              50708: (ASCII, f"{make} {model}"),
              50721: (SRATIONAL, _rationals(v for row in XYZ_TO_SRGB for v in row)),
              50728: (RATIONAL, [(1, 1)] * 3), 50778: (SHORT, 21)}
    if taken:
        camera[306] = (ASCII, taken)
    children: dict[int, list[Ifd]] = {}
    if taken:
        children[34665] = [Ifd({36864: (UNDEFINED, b"0231"), 36867: (ASCII, taken)})]
    if gps:
        children[34853] = [_gps(*gps)]
    if preview is None:
        raw.tags.update(camera)
        raw.children.update(children)
        return tiff_bytes(raw)
    buf = io.BytesIO()
    preview.convert("RGB").save(buf, "JPEG", quality=90)
    first = Ifd({254: (LONG, 1), 256: (LONG, preview.width), 257: (LONG, preview.height),
                 258: (SHORT, (8, 8, 8)), 259: (SHORT, 7), 262: (SHORT, 6), 277: (SHORT, 3),
                 278: (LONG, preview.height), 284: (SHORT, 1), **camera},
                data=buf.getvalue(), children={**children, 330: [raw]})
    return tiff_bytes(first)
