"""Camera RAW files (here DNGs written by the tests) open through LibRaw: from the camera's
preview when it is big enough, rendered from the sensor data when not, upright, with the
photo's date, camera and place, and a clear error when the file is cut short."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import rawpy
import tifffile
from PIL import Image

from clipsearch.ingest import raw
from clipsearch.ingest.decode import DecodeError, load_image, load_thumbnail
from clipsearch.records import ImageMeta, Preprocess

from .dngfile import dng_bytes
from .formatfiles import LISBON, TAKEN, scene, stored_for, turn_found

SQUASH = Preprocess(size=48, resize_mode="squash")


@pytest.fixture
def photo() -> Image.Image:
    return scene()


def write_dng(path, upright: Image.Image, orientation: int = 1, preview: Image.Image | None = None, **tags):
    stored = stored_for(upright, orientation)
    path.write_bytes(dng_bytes(np.asarray(stored), preview=preview, orientation=orientation, **tags))
    return path


@pytest.mark.parametrize("orientation", [1, 6, 8, 3])
def test_a_raw_without_preview_is_rendered_from_its_sensor_data_upright(tmp_path, photo, orientation):
    path = write_dng(tmp_path / "DSC_0001.dng", photo, orientation, taken=TAKEN, gps=LISBON)

    pixels, meta = load_image(str(path), SQUASH, max_pixels=10**8)
    thumb = load_thumbnail(str(path), 40, max_pixels=10**8)

    assert turn_found(pixels, photo) is None
    assert turn_found(thumb, photo) is None
    assert thumb.size == (40, 27)
    assert (meta.width, meta.height, meta.format) == (96, 64, "DNG")
    assert (meta.camera_make, meta.camera_model) == ("Testcam", "Testcam R1")
    assert meta.taken_at == "2023-07-14T18:30:05"
    assert meta.gps_lat == pytest.approx(LISBON[0], abs=1e-3)
    assert meta.gps_lon == pytest.approx(LISBON[1], abs=1e-3)


def test_the_rendered_colours_are_the_photos(tmp_path):
    upright = Image.new("RGB", (64, 48), (200, 40, 40))
    upright.paste((40, 40, 200), (32, 0, 64, 48))
    path = write_dng(tmp_path / "colours.dng", upright)

    pixels, _ = load_image(str(path), SQUASH, max_pixels=10**8)

    left, right = pixels[24, 8].astype(int), pixels[24, 40].astype(int)
    assert left[0] > 150 and left[2] < 80  # red stays red (LibRaw brightens, so no exact values)
    assert right[2] > 150 and right[0] < 80


@pytest.mark.parametrize("orientation", [1, 6, 8])
def test_a_raw_with_a_big_enough_preview_is_read_from_it_turned_by_libraws_flip(tmp_path, photo,
                                                                                           orientation):
    sensor = scene(96, 64, seed=5).transpose(Image.Transpose.FLIP_TOP_BOTTOM)  # a different picture
    stored_preview = stored_for(photo, orientation)
    path = tmp_path / "IMG_0001.dng"
    path.write_bytes(dng_bytes(np.asarray(stored_for(sensor, orientation)), preview=stored_preview,
                               orientation=orientation, taken=TAKEN, gps=LISBON))

    pixels, meta = load_image(str(path), SQUASH, max_pixels=10**8)
    thumb = load_thumbnail(str(path), 48, max_pixels=10**8)

    assert turn_found(pixels, photo) is None  # the preview's picture, not the sensor's
    assert turn_found(thumb, photo) is None
    assert max(thumb.size) == 48
    assert meta.taken_at == "2023-07-14T18:30:05"
    assert meta.gps_lat == pytest.approx(LISBON[0], abs=1e-3)


def test_a_preview_smaller_than_the_model_input_is_passed_over_for_the_sensor_data(tmp_path, photo):
    small = scene(48, 32, seed=5).transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    path = write_dng(tmp_path / "small_preview.dng", photo, preview=small)

    pixels, _ = load_image(str(path), Preprocess(size=48), max_pixels=10**8)

    assert turn_found(pixels, photo.crop((16, 0, 80, 64))) is None


def test_a_letterboxed_preview_is_passed_over(tmp_path, photo):
    boxed = Image.new("RGB", (96, 96))
    boxed.paste(scene(96, 64, seed=5), (0, 16))
    path = write_dng(tmp_path / "boxed.dng", photo, preview=boxed)

    pixels, _ = load_image(str(path), SQUASH, max_pixels=10**8)

    assert turn_found(pixels, photo) is None


def test_a_dng_written_by_tifffile_with_an_uncompressed_preview_uses_it(tmp_path, photo):
    from .dngfile import mosaic

    cfa = mosaic(np.asarray(scene(96, 64, seed=5)))
    path = tmp_path / "tifffile.dng"
    with tifffile.TiffWriter(path) as tif:
        tif.write(np.asarray(photo), photometric="rgb", subfiletype=1, subifds=1, metadata=None, software=False,
                  extratags=[(271, "s", 0, "Testcam", True), (272, "s", 0, "Testcam T1", True),
                             (306, "s", 0, TAKEN, True), (50706, "B", 4, (1, 4, 0, 0), True)])
        tif.write(cfa, photometric=32803, subfiletype=0, metadata=None, software=False,
                  extratags=[(33421, "H", 2, (2, 2), True), (33422, "B", 4, (0, 1, 1, 2), True),
                             (50717, "H", 1, 4095, True)])

    with rawpy.imread(str(path)) as raw:
        assert raw.extract_thumb().format == rawpy.ThumbFormat.BITMAP
    pixels, meta = load_image(str(path), SQUASH, max_pixels=10**8)

    assert turn_found(pixels, photo) is None
    assert (meta.camera_model, meta.taken_at) == ("Testcam T1", "2023-07-14T18:30:05")


def test_a_raw_over_the_pixel_limit_is_refused_before_decoding(tmp_path, photo):
    path = write_dng(tmp_path / "big.dng", photo)

    with pytest.raises(DecodeError, match=r"image is 96x64 \(0 MP\), over the 0 MP limit"):
        load_image(str(path), SQUASH, max_pixels=5000)


@pytest.mark.parametrize("with_preview", [False, True])
@pytest.mark.parametrize("keep", [0.97, 0.6])
def test_a_truncated_raw_says_it_is_truncated(tmp_path, photo, with_preview, keep):
    whole = write_dng(tmp_path / "whole.dng", photo, preview=photo if with_preview else None)
    data = whole.read_bytes()
    cut = tmp_path / "cut.dng"
    cut.write_bytes(data[: int(len(data) * keep)])

    with pytest.raises(DecodeError, match=r"truncated RAW file \(it ends after [\d,]+ of [\d,]+ bytes\)"):
        load_image(str(cut), SQUASH, max_pixels=10**8)


def test_a_raw_cut_inside_its_headers_gives_a_clear_error(tmp_path, photo):
    data = write_dng(tmp_path / "whole.dng", photo, preview=photo).read_bytes()
    cut = tmp_path / "cut.dng"
    cut.write_bytes(data[:300])

    with pytest.raises(DecodeError, match="RAW"):
        load_image(str(cut), SQUASH, max_pixels=10**8)


def test_a_file_that_is_no_raw_at_all_gives_a_clear_error(tmp_path):
    path = tmp_path / "notes.nef"
    path.write_bytes(b"this is not a photo" * 50)

    with pytest.raises(DecodeError, match="not a camera RAW file that LibRaw can read"):
        load_image(str(path), SQUASH, max_pixels=10**8)


@pytest.mark.parametrize("name, kind", [("export.dng", "JPEG"), ("scan.dng", "TIFF")])
def test_a_jpeg_or_plain_tiff_saved_under_a_raw_name_still_opens(tmp_path, photo, name, kind):
    path = tmp_path / name
    photo.save(path, kind)

    pixels, meta = load_image(str(path), SQUASH, max_pixels=10**8)

    assert meta.format == kind
    assert turn_found(pixels, photo) is None


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def test_canon_cr3_metadata_is_read_from_its_cmt_boxes(tmp_path):
    ifd0, exif, gps = Image.Exif(), Image.Exif(), Image.Exif()
    ifd0[271], ifd0[272] = "Canon", "Canon EOS R6"
    exif[36867] = TAKEN
    gps[1], gps[2], gps[3], gps[4] = "N", (38.0, 42.0, 27.0), "W", (9.0, 8.0, 11.04)
    canon = raw._CANON_UUID + b"".join(_box(name, e.tobytes()[6:]) for name, e in  # less "Exif\0\0"
                                           ((b"CMT1", ifd0), (b"CMT2", exif), (b"CMT4", gps)))
    path = tmp_path / "IMG_0001.CR3"
    path.write_bytes(_box(b"ftyp", b"crx \x00\x00\x00\x01crx isom") + _box(b"moov", _box(b"uuid", canon))
                     + _box(b"mdat", b"\0" * 64))

    with open(path, "rb") as fp:
        first, exif_tags, gps_tags = raw._cr3_tags(fp, path.stat().st_size)

    meta = ImageMeta(width=1, height=1, format="CR3")
    raw._fill_meta(meta, first, exif_tags, gps_tags)
    assert (meta.camera_make, meta.camera_model, meta.taken_at) == ("Canon", "Canon EOS R6", "2023-07-14T18:30:05")
    assert meta.gps_lat == pytest.approx(38.7075, abs=1e-4) and meta.gps_lon == pytest.approx(-9.1364, abs=1e-4)
    assert raw._raw_truncated(str(path)) is None
    whole = path.stat().st_size
    path.write_bytes(path.read_bytes()[:-10])
    assert raw._raw_truncated(str(path)) == f"it ends after {whole - 10:,} of {whole:,} bytes"


def test_orf_and_rw2_magic_are_read_as_tiff(tmp_path, photo):
    data = bytearray(dng_bytes(np.asarray(photo), taken=TAKEN))
    for magic in (b"IIRO", b"IIU\x00"):
        data[:4] = magic
        tags = raw._tiff_tags(io.BytesIO(bytes(data)))
        assert tags is not None and tags[0][272] == "Testcam R1" and tags[1][36867] == TAKEN
