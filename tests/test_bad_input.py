"""Bad files are recorded with their error and skipped; the crawl goes on."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from .conftest import make_photo, make_photos, run_cli


@pytest.fixture
def bad_folder(tmp_path):
    folder = tmp_path / "photos"
    make_photos(folder, 4)
    good = make_photo(tmp_path / "good.jpg", 77, size=(320, 240))
    data = good.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is a text file with a .jpg name\n")
    corrupt = bytearray(data)
    corrupt[200:4000] = os.urandom(3800)  # scrambled entropy-coded data after the headers
    (folder / "corrupt.jpg").write_bytes(bytes(corrupt[:600]) + b"\x00" * 50)
    Image.new("RGB", (4000, 3000), "white").save(folder / "huge.png")  # 12 MP, over a 5 MP limit
    unreadable = folder / "unreadable.jpg"
    if os.geteuid() == 0:
        # root reads any file whatever its mode; a read that fails with EIO is just as real
        # (through a link: the crawls below follow links, as a folder's rules may say).
        os.symlink("/proc/self/mem", unreadable)
    else:
        unreadable.write_bytes(data)
        unreadable.chmod(0)
    return folder


BAD = {"truncated.jpg", "zero.jpg", "notes.jpg", "corrupt.jpg", "huge.png", "unreadable.jpg"}


def test_bad_files_are_recorded_as_failed_and_the_crawl_goes_on(make_library, bad_folder):
    library = make_library(max_pixels=5_000_000, follow_symlinks=True)
    report = library.crawl([bad_folder])
    assert report.stats.embedded == 4
    assert report.stats.failed == len(BAD)
    failed = {os.path.basename(row.path): row.error for row in library.errors()}
    assert set(failed) == BAD
    assert "not an image" in failed["notes.jpg"]
    assert "empty file" in failed["zero.jpg"]
    assert "truncated" in failed["truncated.jpg"]
    assert "MP limit" in failed["huge.png"] and "max_pixels" in failed["huge.png"]
    assert failed["unreadable.jpg"]
    assert all(len(error.splitlines()) == 1 for error in failed.values())
    assert len(library.search(image=bad_folder / "photo_0000.jpg", k=10)) == 4


def test_failed_files_are_not_retried_until_they_change(make_library, embedder, bad_folder):
    library = make_library(max_pixels=5_000_000, follow_symlinks=True)
    library.crawl([bad_folder])
    report = library.crawl()
    assert report.stats.failed == 0
    assert report.stats.unchanged == 4 + len(BAD)
    make_photo(bad_folder / "notes.jpg", seed=333)  # fixed: now a real, new photo
    report = library.crawl()
    assert report.stats.embedded == 1
    assert "notes.jpg" not in {os.path.basename(r.path) for r in library.errors()}


def test_the_cli_crawl_exits_0_and_counts_failures(bad_folder, home):
    from .conftest import TINY_MODEL

    result = run_cli("--home", str(home), "crawl", str(bad_folder), "--model", TINY_MODEL, "--max-pixels", "5000000",
                     "--follow-symlinks")
    assert result.returncode == 0, result.stderr
    assert f"{len(BAD)} files could not be indexed" in result.stdout
    assert "Traceback" not in result.stderr
    errors = run_cli("--home", str(home), "errors", "--json")
    assert errors.returncode == 0
    assert len(errors.stdout.strip().splitlines()) == len(BAD)


def test_a_png_named_jpg_is_indexed_by_its_content(library, tmp_path):
    path = make_photo(tmp_path / "photos" / "actually_png.jpg", 3, fmt="PNG")
    report = library.crawl([tmp_path / "photos"])
    assert report.stats.embedded == 1
    assert library.search(image=path, k=1)[0].format == "PNG"


def _save(img: Image.Image, path, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)
    return path


def test_every_common_mode_is_indexed(library, tmp_path):
    base = Image.open(make_photo(tmp_path / "base.png", 1, size=(64, 48)))
    folder = tmp_path / "photos"
    _save(base.convert("P"), folder / "palette.png")
    rgba = base.convert("RGBA")
    rgba.putalpha(128)
    _save(rgba, folder / "alpha.png")
    _save(base.convert("CMYK"), folder / "cmyk.jpg")
    _save(base.convert("L"), folder / "grey.jpg")
    _save(base.convert("1"), folder / "bilevel.tif")
    sixteen = Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 257))
    assert sixteen.mode.startswith("I;16")
    _save(sixteen, folder / "sixteen.png")
    frames = [base, base.rotate(90), base.rotate(180)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    _save(base, folder / "photo.webp", quality=80)
    _save(base, folder / "photo.bmp")
    report = library.crawl([folder])
    assert report.stats.failed == 0, [(r.path, r.error) for r in library.errors()]
    assert report.stats.embedded == 9
