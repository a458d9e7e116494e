"""HEIC (pillow-heif) and AVIF (Pillow's own) photos open like any other: upright, with their
date, camera and place, under the same pixel limit and with the same kind of error words."""

from __future__ import annotations

import pytest
from PIL import Image, features

from clipsearch.ingest import formats
from clipsearch.ingest.decode import DecodeError, load_image, load_thumbnail
from clipsearch.records import Preprocess

from .formatfiles import LISBON, phone_exif, scene, stored_for, turn_found

SQUASH = Preprocess(size=48, resize_mode="squash")


@pytest.fixture
def photo() -> Image.Image:
    return scene()


def test_this_pillow_reads_and_writes_avif():
    assert features.check("avif")  # Pillow 11.2+ wheels; the AVIF tests below stand on it

KINDS = [
    pytest.param("heic", "HEIF", id="heic"),
    pytest.param("avif", "AVIF", id="avif"),
]


def save(img: Image.Image, path, fmt: str, **kwargs) -> None:
    formats.enable_heif()
    img.save(path, fmt, quality=90, **kwargs)


@pytest.mark.parametrize("ext,fmt", KINDS)
@pytest.mark.parametrize("orientation", [6, 3, 8])
def test_a_turned_phone_photo_comes_out_upright_with_its_date_camera_and_place(tmp_path, photo, ext, fmt,
                                                                                 orientation):
    path = tmp_path / f"IMG_0001.{ext}"
    save(stored_for(photo, orientation), path, fmt, exif=phone_exif(orientation).tobytes())

    pixels, meta = load_image(str(path), SQUASH, max_pixels=10**8)
    thumb = load_thumbnail(str(path), 64, max_pixels=10**8)

    assert turn_found(pixels, photo) is None
    assert turn_found(thumb, photo) is None
    assert thumb.size == (64, 43)
    assert (meta.width, meta.height) == photo.size
    assert meta.taken_at == "2023-07-14T18:30:05"
    assert (meta.camera_make, meta.camera_model) == ("Apple", "iPhone 15")
    assert meta.gps_lat == pytest.approx(LISBON[0], abs=1e-4)
    assert meta.gps_lon == pytest.approx(LISBON[1], abs=1e-4)


def test_heic_orientation_is_applied_by_libheif_and_reset_in_exif_so_it_is_not_turned_twice(tmp_path, photo):
    path = tmp_path / "IMG_0002.heic"
    save(stored_for(photo, 6), path, "HEIF", exif=phone_exif(6).tobytes())

    with Image.open(path) as img:
        assert img.size == photo.size  # already upright before decoding
        assert img.getexif()[274] == 1
        assert img.info["original_orientation"] == 6


def test_avif_orientation_is_left_to_exif_as_for_jpeg(tmp_path, photo):
    path = tmp_path / "IMG_0003.avif"
    save(stored_for(photo, 6), path, "AVIF", exif=phone_exif(6).tobytes())

    with Image.open(path) as img:
        assert img.size == (photo.height, photo.width)  # stored, not yet turned
        assert img.getexif()[274] == 6  # from the container's irot, as Pillow writes it


def test_a_burst_or_multi_image_heic_gives_its_primary_image(tmp_path):
    frames = [Image.new("RGB", (64, 48), colour) for colour in ((200, 30, 30), (30, 200, 30), (30, 30, 200))]
    path = tmp_path / "burst.heic"
    save(frames[0], path, "HEIF", save_all=True, append_images=frames[1:], primary_index=1)

    pixels, _ = load_image(str(path), SQUASH, max_pixels=10**8)

    assert [int(v) for v in pixels[24, 24]] == pytest.approx([30, 200, 30], abs=12)


def test_a_heic_over_the_pixel_limit_is_refused_before_decoding_in_the_usual_words(tmp_path, photo):
    path = tmp_path / "big.heic"
    save(photo, path, "HEIF")

    with pytest.raises(DecodeError, match=r"image is 96x64 \(0 MP\), over the 0 MP limit \(setting max_pixels\)"):
        load_image(str(path), SQUASH, max_pixels=5000)


@pytest.mark.parametrize("ext,fmt", KINDS)
@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_a_truncated_file_says_it_is_truncated(tmp_path, photo, ext, fmt, keep):
    whole = tmp_path / f"whole.{ext}"
    save(photo, whole, fmt)
    data = whole.read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: int(len(data) * keep)])
    kind = "HEIC" if ext == "heic" else "AVIF"

    with pytest.raises(DecodeError, match=rf"truncated {kind} file \(it ends after [\d,]+ of {len(data):,} bytes\)"):
        load_image(str(cut), SQUASH, max_pixels=10**8)
    with pytest.raises(DecodeError, match="truncated"):
        load_thumbnail(str(cut), 64, max_pixels=10**8)


def test_a_heic_thumbnail_that_covers_the_model_input_is_decoded_instead_of_the_image(tmp_path, photo):
    big = photo.resize((480, 320))
    path = tmp_path / "thumbs.heic"
    save(big, path, "HEIF", thumbnails=[120])

    with Image.open(path) as img:
        img.draft("RGB", (64, 64))
        assert img.size == (120, 80)
    pixels, meta = load_image(str(path), Preprocess(size=64), max_pixels=10**8)
    assert (meta.width, meta.height) == (480, 320)  # the photo's size, not the thumbnail's
    assert pixels.shape == (64, 64, 3)
    assert turn_found(pixels, big.crop((80, 0, 400, 320))) is None


def test_a_jpeg_saved_under_a_heic_name_still_opens(tmp_path, photo):
    path = tmp_path / "IMG_0004.HEIC"
    photo.save(path, "JPEG")

    pixels, meta = load_image(str(path), SQUASH, max_pixels=10**8)

    assert meta.format == "JPEG"
    assert turn_found(pixels, photo) is None


def test_an_avif_with_the_generic_mif1_brand_is_read_by_pillow_not_libheif(tmp_path, photo):
    path = tmp_path / "generic.avif"
    save(photo, path, "AVIF")
    data = bytearray(path.read_bytes())
    data[8:12] = b"mif1"  # major brand; "avif" stays among the compatible brands
    path.write_bytes(bytes(data))

    pixels, meta = load_image(str(path), SQUASH, max_pixels=10**8)

    assert meta.format == "AVIF"
    assert turn_found(pixels, photo) is None


def test_a_heic_that_is_not_one_says_what_libheif_found(tmp_path):
    path = tmp_path / "odd.heic"
    path.write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64)

    with pytest.raises(DecodeError, match=r"corrupt or unsupported HEIC image data \(libheif: .*\)"):
        load_image(str(path), SQUASH, max_pixels=10**8)


def test_where_only_some_formats_are_accepted_a_heic_is_refused_by_name(tmp_path, photo):
    import io

    buf = io.BytesIO()
    save(photo, buf, "HEIF")

    with pytest.raises(DecodeError, match=r"HEIC images are not accepted here \(only JPEG, PNG\)"):
        load_image(io.BytesIO(buf.getvalue()), SQUASH, max_pixels=10**8, formats=("JPEG", "PNG"))
