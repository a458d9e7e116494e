"""Which files a crawl reads, which it passes over in silence, and which RAWs have a JPEG or
HEIC of the same shot beside them."""

from __future__ import annotations

import os
import time

from clipsearch import filetypes
from clipsearch.filetypes import FORMATS, default_extensions, format_for, not_a_photo, raw_siblings, same_kind
from clipsearch.query import parse


def test_the_default_crawl_takes_every_photo_format_whether_or_not_its_reader_is_installed(monkeypatch):
    real = filetypes.importlib.util.find_spec
    monkeypatch.setattr(filetypes.importlib.util, "find_spec",
                        lambda name: None if name in ("rawpy", "pillow_heif", "pi_heif") else real(name))

    extensions = default_extensions()

    assert set("jpg jpeg png webp bmp tif tiff gif".split()) <= set(extensions)
    assert {"heic", "heif", "hif", "avif"} <= set(extensions)
    assert set(filetypes.RAW_EXTENSIONS) <= set(extensions)
    # ... and says which it cannot read here, for `status` and `errors` to name once
    assert not filetypes.available(format_for("x.heic"))
    assert not filetypes.available(format_for("x.nef"))
    assert filetypes.available(format_for("x.avif"))
    assert "pip install rawpy" in filetypes.MISSING["camera RAW"]


def test_every_extension_has_one_format_and_none_is_also_a_non_photo():
    seen = [ext for fmt in FORMATS for ext in fmt.extensions]

    assert len(seen) == len(set(seen))
    assert not set(seen) & set(filetypes.NOT_PHOTOS)
    assert format_for("/photos/IMG_0001.HEIC").name == "HEIC"
    assert format_for("/photos/DSC_0001.NEF").reader == "raw"
    assert format_for("/photos/clip.mov") is None


def test_videos_sidecars_and_documents_are_named_as_what_they_are():
    assert not_a_photo("IMG_0001.MOV").startswith("a video")
    assert not_a_photo("IMG_0001.AAE").startswith("a sidecar")
    assert not_a_photo("DSC_0001.NEF.xmp").startswith("a sidecar")
    assert not_a_photo("poster.psd").startswith("an editor's document")
    assert not_a_photo("IMG_0001.HEIC") is None


def test_a_raw_beside_a_jpeg_or_heic_of_the_same_name_is_found_whatever_the_case():
    names = ["IMG_0001.CR2", "IMG_0001.JPG", "IMG_0002.CR2", "dsc_0003.nef", "DSC_0003.jpg",
             "IMG_0004.DNG", "IMG_0004.HEIC", "IMG_0004.MOV", "IMG_0005.ARW", "IMG_0005.xmp",
             "PXL_20230714_183005123.RAW-02.ORIGINAL.dng", "PXL_20230714_183005123.RAW-01.COVER.jpg"]

    assert raw_siblings(names) == {
        "IMG_0001.CR2": "IMG_0001.JPG",
        "dsc_0003.nef": "DSC_0003.jpg",
        "IMG_0004.DNG": "IMG_0004.HEIC",
        "PXL_20230714_183005123.RAW-02.ORIGINAL.dng": "PXL_20230714_183005123.RAW-01.COVER.jpg",
    }


def test_pairing_a_large_folder_costs_milliseconds(tmp_path):
    for i in range(1000):
        (tmp_path / f"IMG_{i:04d}.CR2").touch()
        if i % 2:
            (tmp_path / f"IMG_{i:04d}.JPG").touch()
    with os.scandir(tmp_path) as listing:
        names = [entry.name for entry in listing]

    start = time.perf_counter()
    pairs = raw_siblings(names)
    elapsed = time.perf_counter() - start

    assert len(pairs) == 500
    assert elapsed < 0.5  # ~2 ms here for 1,500 names; the bound only catches a quadratic slip


def test_the_ext_filter_finds_a_format_under_each_of_its_extensions_and_raw_names_them_all():
    assert set(same_kind("HEIC")) == {"heic", "heif", "hif"}
    assert set(same_kind("tif")) == {"tif", "tiff"}
    assert same_kind("nef") == ("nef",)  # one camera's RAW, not every camera's
    assert same_kind("xyz") == ("xyz",)
    assert set(parse("ext:raw").filters.extensions) == set(filetypes.RAW_EXTENSIONS)
    assert set(parse("ext:jpg,heic").filters.extensions) == {"jpg", "jpeg", "heic", "heif", "hif"}
