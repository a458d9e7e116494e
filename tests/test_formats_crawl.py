"""A folder as a phone or a camera leaves it, crawled: HEIC, AVIF and RAW indexed with their
dates and places, a RAW beside its JPEG taken once, videos and sidecars passed over in
silence, files cut short recorded and the crawl going on; the rule for symbolic links kept
alike by the crawl, the daemon and the gallery; what a missing package does; and the gallery
showing these formats as JPEG."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from clipsearch.catalog.store import Store
from clipsearch.config import load_settings
from clipsearch.ingest import formats
from clipsearch.ingest.scan import ScanRules
from clipsearch.library import Library
from clipsearch.web.app import create_app

from .conftest import SHAPES_MODEL, TINY_MODEL, clean_environment, make_photo, run_cli
from .dngfile import dng_bytes
from .formatfiles import LISBON, TAKEN, phone_exif, scene, stored_for, turn_found
from .shapes import COLOURS, SHAPES, caption, combos, shape_photo
from .test_watch import status_of, wait_for, watching

BASE = "http://127.0.0.1:8765"


def write_heic(path: Path, img: Image.Image, **kwargs) -> Path:
    formats.enable_heif()
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "HEIF", quality=90, **kwargs)
    return path


def write_dng(path: Path, img: Image.Image, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(dng_bytes(np.asarray(img), **kwargs))
    return path


def phone_folder(folder: Path) -> dict[str, str]:
    """What a phone and a camera leave in a folder; {name: what the crawl should make of it}."""
    photo = scene(192, 128)
    write_heic(folder / "IMG_0001.HEIC", stored_for(photo, 6), exif=phone_exif(6).tobytes())
    (folder / "IMG_0001.MOV").write_bytes(b"\x00\x00\x00\x14ftypqt  " + b"\x00" * 200)  # its Live Photo half
    (folder / "IMG_0001.AAE").write_text("<plist>edits</plist>")
    stored_for(scene(192, 128, seed=1), 1).save(folder / "PXL_0002.avif", "AVIF", quality=80,
                                                exif=phone_exif(1, make="Google", model="Pixel 8").tobytes())
    write_dng(folder / "DSC_0003.dng", scene(96, 64, seed=2), preview=scene(96, 64, seed=2), taken=TAKEN, gps=LISBON)
    write_dng(folder / "IMG_0004.CR2", scene(96, 64, seed=3))  # LibRaw reads by content, not name
    make_photo(folder / "IMG_0004.JPG", 4, size=(96, 64))
    (folder / "poster.psd").write_bytes(b"8BPS" + b"\x00" * 100)
    whole = write_heic(folder / "whole.heic", scene(192, 128, seed=5)).read_bytes()
    (folder / "whole.heic").unlink()
    (folder / "cut.heic").write_bytes(whole[: len(whole) // 2])
    raw = dng_bytes(np.asarray(scene(96, 64, seed=6)))
    (folder / "cutraw.dng").write_bytes(raw[: len(raw) // 2])
    return {"IMG_0001.HEIC": "live", "PXL_0002.avif": "live", "DSC_0003.dng": "live", "IMG_0004.JPG": "live",
            "cut.heic": "failed", "cutraw.dng": "failed"}


def _rows(home: Path) -> dict[str, tuple[int, str, str | None, str | None]]:
    store = Store(home / "catalog.db", readonly=True)
    try:
        return {os.path.basename(r[0]): (r[1], r[2], r[3], r[4])
                for r in store.db.execute("SELECT path, id, status, error, taken_at FROM files")}
    finally:
        store.close()


def test_a_phone_and_camera_folder_is_indexed_whole_and_nothing_else_is_reported(library, tmp_path):
    expected = phone_folder(tmp_path / "photos")

    report = library.crawl([tmp_path / "photos"])

    rows = _rows(library.settings.home)
    assert {name: row[1] for name, row in rows.items()} == expected  # no .MOV, .AAE, .psd, nor the paired CR2
    assert report.stats.embedded == 4 and report.stats.failed == 2
    assert "truncated HEIC file" in rows["cut.heic"][2]
    assert "truncated" in rows["cutraw.dng"][2]
    photos = library.photos([rows["IMG_0001.HEIC"][0], rows["DSC_0003.dng"][0], rows["PXL_0002.avif"][0]])
    heic, dng, avif = (photos[rows[name][0]] for name in ("IMG_0001.HEIC", "DSC_0003.dng", "PXL_0002.avif"))
    assert heic.taken_at.startswith("2023-07-14T18:30:05") and dng.taken_at.startswith("2023-07-14T18:30:05")
    assert heic.gps == pytest.approx(LISBON, abs=1e-4) and dng.gps == pytest.approx(LISBON, abs=1e-4)
    assert (heic.width, heic.height) == (192, 128)  # upright
    assert avif.camera and "Pixel 8" in avif.camera
    assert {os.path.basename(r.path) for r in library.errors()} == {"cut.heic", "cutraw.dng"}
    assert library.missing_readers() == []  # every reader is installed here


def test_raw_all_indexes_a_raw_beside_its_jpeg_too(make_library, tmp_path):
    phone_folder(tmp_path / "photos")
    library = make_library(raw="all")

    library.crawl([tmp_path / "photos"])

    assert _rows(library.settings.home)["IMG_0004.CR2"][1] == "live"


def test_asking_to_crawl_videos_is_refused_in_one_line(tmp_path, home):
    (tmp_path / "photos").mkdir()
    result = run_cli("--home", str(home), "crawl", str(tmp_path / "photos"), "--model", TINY_MODEL, "--ext", "jpg,mov")

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "mov is a video" in result.stderr and "--ext" in result.stderr

    (home).mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text('extensions = ["jpg", "psd"]\n')
    result = run_cli("--home", str(home), "status")
    assert result.returncode != 0 and "psd is an editor's document" in result.stderr
    assert "Traceback" not in result.stderr


def test_without_the_packages_heic_and_raw_are_named_once_with_the_pip_command(tmp_path, home):
    folder = tmp_path / "photos"
    for i in range(3):
        write_heic(folder / f"IMG_{i:04d}.HEIC", scene(96, 64, seed=i))
    write_dng(folder / "DSC_0009.dng", scene(96, 64, seed=9))
    make_photo(folder / "ordinary.jpg", 1)
    # This process's Python, with the HEIF and RAW packages hidden from it.
    hide = ("import sys; sys.modules.update(dict.fromkeys(['pillow_heif', 'pi_heif', 'rawpy'])); "
            "from clipsearch.cli import main; sys.argv[0] = 'clipsearch'; main()")
    env = {**os.environ, "COLUMNS": "250", "CLIPSEARCH_DECODE_IN": "threads"}

    crawl = subprocess.run([sys.executable, "-c", hide, "--home", str(home), "crawl", str(folder),
                            "--model", TINY_MODEL], capture_output=True, text=True, env=env, timeout=120)
    status = run_cli("--home", str(home), "status")
    errors = run_cli("--home", str(home), "errors", env={"FORCE_COLOR": "1", "NO_COLOR": "1"})

    assert crawl.returncode == 0, crawl.stderr
    assert "Traceback" not in crawl.stderr
    for output in (status.stdout, re.sub(r"\x1b\[[0-9;]*m", "", errors.stdout)):
        assert output.count("3 HEIC files not read: pi-heif is not installed (pip install pi-heif)") == 1, output
        assert output.count("1 camera RAW file not read: rawpy is not installed (pip install rawpy)") == 1, output
    assert _rows(home)["ordinary.jpg"][1] == "live"


def test_heic_is_read_through_pi_heif_where_pillow_heif_is_absent(tmp_path):
    path = write_heic(tmp_path / "IMG_0001.heic", stored_for(scene(), 6), exif=phone_exif(6).tobytes())
    script = f"""
import sys
sys.modules["pillow_heif"] = None
from clipsearch.ingest.decode import load_image
from clipsearch.ingest.formats import heif_module
from clipsearch.records import Preprocess
pixels, meta = load_image({str(path)!r}, Preprocess(size=48, resize_mode="squash"), max_pixels=10**8)
print(heif_module().__name__, meta.width, meta.height, meta.taken_at)
import numpy; numpy.save({str(tmp_path / 'pixels.npy')!r}, pixels)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["pi_heif", "96", "64", "2023-07-14T18:30:05"]
    assert turn_found(np.load(tmp_path / "pixels.npy"), scene()) is None


# --- symbolic links: followed where the folder's rules say so, by all three alike -------------

@pytest.fixture
def linked(tmp_path) -> Path:
    """photos/ with a photo of its own and a link to a photo outside it."""
    outside = make_photo(tmp_path / "outside" / "secret.jpg", 5)
    make_photo(tmp_path / "photos" / "own.jpg", 6)
    (tmp_path / "photos" / "link.jpg").symlink_to(outside)
    return tmp_path / "photos"


@pytest.mark.parametrize("follow", [False, True])
def test_a_link_out_of_the_folder_is_indexed_served_and_watched_only_where_links_are_followed(
        make_library, linked, tmp_path, follow):
    library = make_library(follow_symlinks=follow)
    library.crawl([linked])
    home = library.settings.home

    assert status_of(home, linked / "own.jpg") == "live"
    assert status_of(home, linked / "link.jpg") == ("live" if follow else None)
    with TestClient(create_app(library), base_url=BASE) as client:
        page = client.get("/api/search", params={"q": "anything", "k": 10}).json()
        served = {os.path.basename(r["path"]) for r in page["results"]}
        assert served == ({"own.jpg", "link.jpg"} if follow else {"own.jpg"})
        for result in page["results"]:
            assert client.get(f"/original/{result['file_id']}").status_code == 200
            assert client.get(f"/thumb/{result['file_id']}/256").status_code == 200
    with watching(library):
        make_photo(tmp_path / "outside" / "later.jpg", 7)
        (linked / "later.jpg").symlink_to(tmp_path / "outside" / "later.jpg")
        shutil.copy(make_photo(tmp_path / "new.jpg", 8), linked / "new.jpg")
        wait_for(lambda: status_of(home, linked / "new.jpg") == "live", "the copied photo indexed")
        if follow:
            wait_for(lambda: status_of(home, linked / "later.jpg") == "live", "the new link indexed")
    assert status_of(home, linked / "later.jpg") == ("live" if follow else None)


def test_the_daemon_leaves_a_raw_out_when_its_jpeg_is_beside_it(tmp_path):
    folder = tmp_path / "photos"
    write_dng(folder / "IMG_0001.CR2", scene(96, 64))
    write_dng(folder / "IMG_0002.NEF", scene(96, 64))
    make_photo(folder / "img_0001.jpg", 1)
    unpaired, every = ScanRules.make(("jpg", "cr2", "nef")), ScanRules.make(("jpg", "cr2", "nef"), raw="all")

    assert not unpaired.admits(str(folder / "IMG_0001.CR2"), str(folder))
    assert unpaired.admits(str(folder / "IMG_0002.NEF"), str(folder))
    assert every.admits(str(folder / "IMG_0001.CR2"), str(folder))


# --- the gallery: JPEG renditions in the page, the original as a download ---------------------

def test_the_gallery_shows_heic_and_raw_as_jpeg_and_offers_their_originals_to_download(library, tmp_path):
    phone_folder(tmp_path / "photos")
    library.crawl([tmp_path / "photos"])
    rows = _rows(library.settings.home)

    with TestClient(create_app(library), base_url=BASE) as client:
        for name, upright in (("IMG_0001.HEIC", scene(192, 128)), ("DSC_0003.dng", scene(96, 64, seed=2))):
            file_id = rows[name][0]
            for size in (256, 1024):
                thumb = client.get(f"/thumb/{file_id}/{size}")
                assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
                assert turn_found(Image.open(io.BytesIO(thumb.content)), upright) is None
            original = client.get(f"/original/{file_id}")
            assert original.status_code == 200
            assert original.headers["content-type"] == "application/octet-stream"
            assert original.headers["content-disposition"].startswith("attachment")
            assert original.content == (tmp_path / "photos" / name).read_bytes()
            page = client.get(f"/photo/{file_id}").text
            assert f"Download original ({os.path.splitext(name)[1][1:].upper()})" in page
            assert f'src="/thumb/{file_id}/1024"' in page
        jpeg = client.get(f"/original/{rows['IMG_0004.JPG'][0]}")
        assert jpeg.headers["content-type"] == "image/jpeg" and jpeg.headers["content-disposition"].startswith("inline")
        zipped = client.post("/download", data={"ids": f"{rows['IMG_0001.HEIC'][0]},{rows['DSC_0003.dng'][0]}"},
                             headers={"origin": BASE})
        assert zipped.status_code == 200
        with zipfile.ZipFile(io.BytesIO(zipped.content)) as archive:
            names = archive.namelist()
            assert archive.read(next(n for n in names if n.endswith(".HEIC"))) == \
                (tmp_path / "photos" / "IMG_0001.HEIC").read_bytes()


# --- search: a HEIC or AVIF is found as its JPEG twin is ---------------------------------------

@pytest.fixture(scope="module")
def twin_library(tmp_path_factory):
    """Shape photos, each saved as JPEG, HEIC and AVIF, crawled with the trained shapes model."""
    folder = tmp_path_factory.mktemp("twins")
    formats.enable_heif()
    for ci, colour in enumerate(COLOURS):
        for si, shape in enumerate(SHAPES):
            for i in range(2):
                img = shape_photo(colour, shape, (31337, ci, si, i))
                stem = folder / f"{colour}-{shape}-{i}"
                img.save(f"{stem}.jpg", "JPEG", quality=90)
                img.save(f"{stem}.heic", "HEIF", quality=90)
                img.save(f"{stem}.avif", "AVIF", quality=90)
    home = tmp_path_factory.mktemp("twins-home")
    with clean_environment(home / "model-cache"):
        result = run_cli("--home", str(home), "crawl", str(folder), "--model", SHAPES_MODEL, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    return home


def test_colour_and_shape_queries_find_heic_and_avif_photos_as_their_jpeg_twins(twin_library):
    library = Library(load_settings(twin_library, device="cpu"))
    for colour, shape in combos():
        query = caption(colour, shape)
        found = library.search(query, k=6)
        names = [os.path.basename(r.path) for r in found]
        assert all(name.startswith(f"{colour}-") for name in names), (query, names)
        assert sum(name.startswith(f"{colour}-{shape}-") for name in names) >= 5, (query, names)
        assert {os.path.splitext(name)[1] for name in names} == {".jpg", ".heic", ".avif"}, (query, names)
        # each photo scores as its twins in the other formats do
        everything = {os.path.basename(r.path): r.score for r in library.search(query, k=200)}
        for i in range(2):
            twins = [everything[f"{colour}-{shape}-{i}.{ext}"] for ext in ("jpg", "heic", "avif")]
            assert max(twins) - min(twins) < 0.03, (query, i, twins)
