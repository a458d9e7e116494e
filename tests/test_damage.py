"""A damaged, replaced, read-only or full library: one-line messages, never a wrong result.

Searches that might meet a damaged forest run in a fresh `clipsearch` process, so that a
native abort fails the test instead of killing pytest.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from clipsearch.index import read_manifest

from .conftest import TINY_MODEL, clean_environment, make_photo, make_photos, run_cli

QUERY = "a photo of something"


@pytest.fixture(scope="module")
def crawled(tmp_path_factory) -> tuple[Path, Path]:
    """(home, photos): 60 photos crawled through the CLI with the tiny model, so the library
    has a saved text tower and text searches in fresh processes are quick. Copy the home
    before changing it (`own_home`)."""
    root = tmp_path_factory.mktemp("crawled")
    photos = root / "photos"
    make_photos(photos, 60)
    with clean_environment(root / "model-cache"):
        result = run_cli("--home", str(root / "home"), "crawl", str(photos), "--model", TINY_MODEL)
    assert result.returncode == 0, result.stderr
    assert (root / "home" / "text-tower").is_dir()
    return root / "home", photos


@pytest.fixture
def own_home(crawled, tmp_path) -> Path:
    home = tmp_path / "home"
    shutil.copytree(crawled[0], home)
    return home


def _search(home: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_cli("--home", str(home), "search", QUERY, "-k", "10", "--json", *extra)


def _hits(result: subprocess.CompletedProcess) -> list[tuple[str, float]]:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    return [(row["path"], round(row["score"], 4)) for row in map(json.loads, result.stdout.splitlines())]


def _assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 1, f"exit {result.returncode}: {result.stderr[-2000:]}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def _forest_file(home: Path) -> Path:
    return home / "index" / read_manifest(home / "index").forest


# --- the forest -------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["random bytes", "head overwritten", "truncated", "deleted", "ids garbage",
                                    "manifest garbage"])
def test_a_damaged_index_is_never_loaded_and_searches_stay_right(own_home, damage):
    right = _hits(_search(own_home, "--exact"))
    index = own_home / "index"
    forest = _forest_file(own_home)
    if damage == "random bytes":
        forest.write_bytes(np.random.default_rng(1).bytes(forest.stat().st_size))
    elif damage == "head overwritten":  # the roots at the end intact: Annoy loads it happily
        data = bytearray(forest.read_bytes())
        data[: len(data) // 2] = np.random.default_rng(3).bytes(len(data) // 2)
        forest.write_bytes(bytes(data))
    elif damage == "truncated":
        forest.write_bytes(forest.read_bytes()[: forest.stat().st_size // 2])
    elif damage == "deleted":
        forest.unlink()
    elif damage == "ids garbage":
        ids = index / read_manifest(index).ids
        ids.write_bytes(np.random.default_rng(2).bytes(ids.stat().st_size))
    else:
        (index / "manifest.json").write_text('{"generation": 3, "forest": ', encoding="utf-8")

    result = _search(own_home)
    assert _hits(result) == right
    assert "the search index is not used" in result.stderr and "Traceback" not in result.stderr
    status = run_cli("--home", str(own_home), "status")
    assert status.returncode == 0 and "not used" in status.stdout

    crawl = run_cli("--home", str(own_home), "crawl")
    assert crawl.returncode == 0, crawl.stderr
    assert "rebuilt" in crawl.stdout
    again = _search(own_home)
    assert _hits(again) == right
    assert again.stderr == ""


def test_an_index_copied_elsewhere_is_checked_by_its_checksum_and_served(own_home):
    # own_home is a copy: every file has a new inode and ctime, so only the hash vouches for it.
    manifest = read_manifest(own_home / "index")
    assert os.stat(_forest_file(own_home)).st_ino != manifest.files[manifest.forest]["stat"][1]
    result = _search(own_home)
    assert result.stderr == ""
    assert _hits(result) == _hits(_search(own_home, "--exact"))


def test_a_catalog_made_anew_under_an_old_index_is_not_served_by_it(tmp_path, make_library):
    home = tmp_path / "home"
    first, second = make_photos(tmp_path / "a", 40), make_photos(tmp_path / "b", 40, start_seed=500)
    library = make_library()
    library.crawl([tmp_path / "a"])
    old = read_manifest(home / "index")
    for path in home.glob("catalog.db*"):
        path.unlink()
    report = make_library().crawl([tmp_path / "b"])
    new = read_manifest(home / "index")
    # The same number of writes: the old forest's sequence number is the new catalog's too.
    assert new.built_seq == old.built_seq
    assert report.rebuilt and new.catalog_id != old.catalog_id
    searcher = make_library()
    for photo in second[:8]:
        hits = searcher.search(image=photo, k=3)
        assert hits[0].path == str(photo) and hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert [h.path for h in hits] == [h.path for h in searcher.search(image=photo, k=3, exact=True)]
    assert not {h.path for h in searcher.search(image=first[0], k=40)} & {str(p) for p in first}


def test_a_catalog_swapped_in_before_any_crawl_is_searched_exactly(tmp_path, make_library, embedder):
    mine, other = tmp_path / "home", tmp_path / "other"
    photos = make_photos(tmp_path / "a", 30)
    make_library().crawl([tmp_path / "a"])
    # Another library of other photos, crawled in the same number of writes.
    from clipsearch.config import load_settings
    from clipsearch.library import Library

    others = make_photos(tmp_path / "b", 30, start_seed=900)
    Library(load_settings(other), embedder=embedder).crawl([tmp_path / "b"])
    for path in mine.glob("catalog.db*"):
        path.unlink()
    shutil.copy(other / "catalog.db", mine / "catalog.db")
    library = make_library()
    hits = library.search(image=others[3], k=5)
    assert hits[0].path == str(others[3])
    assert [h.path for h in hits] == [h.path for h in library.search(image=others[3], k=5, exact=True)]
    assert any("another catalog" in notice for notice in library.take_notices())
    assert not {h.path for h in hits} & {str(p) for p in photos}


def test_a_restored_backup_of_the_catalog_is_not_served_by_a_newer_index(tmp_path, make_library):
    home = tmp_path / "home"
    make_photos(tmp_path / "a", 16)
    make_library().crawl([tmp_path / "a"])
    backup = tmp_path / "backup.db"
    shutil.copy(home / "catalog.db", backup)
    make_photos(tmp_path / "a", 16, start_seed=300)  # the same names, new pictures
    make_library().crawl()  # the index knows them, under the ids of the old ones, at a later sequence
    shutil.copy(backup, home / "catalog.db")
    for extra in home.glob("catalog.db-*"):
        extra.unlink()
    second = make_photos(tmp_path / "b", 16, start_seed=600)
    report = make_library().crawl([tmp_path / "b"])  # ids 17-32 now name these
    assert report.rebuilt
    library = make_library()
    for photo in second[:4]:
        hits = library.search(image=photo, k=5)
        assert hits[0].path == str(photo)
        assert [h.path for h in hits] == [h.path for h in library.search(image=photo, k=5, exact=True)]


def test_index_files_honour_the_umask(tmp_path, library):
    make_photos(tmp_path / "photos", 5)
    previous = os.umask(0o027)
    try:
        library.crawl([tmp_path / "photos"])
    finally:
        os.umask(previous)
    index = library.settings.index_dir
    for path in (index / read_manifest(index).forest, index / read_manifest(index).ids):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path


# --- the catalog ------------------------------------------------------------------------

def _truncate_catalog(home: Path) -> None:
    catalog = home / "catalog.db"
    assert not Path(f"{catalog}-wal").exists() or Path(f"{catalog}-wal").stat().st_size == 0
    with open(catalog, "r+b") as handle:
        handle.truncate(catalog.stat().st_size // 2)


@pytest.mark.parametrize("command", [["status"], ["errors"], ["search", QUERY], ["crawl"], ["rebuild"]])
def test_a_damaged_catalog_gets_one_line_naming_repair(own_home, command):
    _truncate_catalog(own_home)
    result = run_cli("--home", str(own_home), *command)
    _assert_one_line_error(result, "damaged", "clipsearch repair")


def test_repair_recovers_what_it_can_and_the_next_crawl_embeds_only_the_rest(tmp_path, make_library, embedder):
    photos = [make_photo(tmp_path / "photos" / f"p{i:04d}.png", i, size=(40, 32)) for i in range(300)]
    library = make_library()
    library.crawl([tmp_path / "photos"])
    home = library.settings.home
    _truncate_catalog(home)
    embedder.images = 0

    report = make_library().repair()
    assert report.problems and report.kept.is_file()
    recovered = report.recovery.with_vector
    assert 0 < recovered < 300
    assert report.recovery.roots == 1 and report.recovery.model == library.status().model
    assert report.photos_before == 300 and report.index.count == recovered
    assert embedder.images == 0  # nothing was embedded to repair

    crawl = make_library().crawl()
    assert embedder.images == 300 - recovered
    assert crawl.index.count == 300
    searcher = make_library()
    for photo in photos[::50]:
        assert searcher.search(image=photo, k=1)[0].path == str(photo)


def test_repair_through_the_cli_reports_counts_and_the_damaged_copy(own_home):
    _truncate_catalog(own_home)
    result = run_cli("--home", str(own_home), "repair")
    assert result.returncode == 0, result.stderr
    assert "damaged" in result.stdout and "catalog.damaged-" in result.stdout
    assert list(own_home.glob("catalog.damaged-*.db"))
    status = run_cli("--home", str(own_home), "status")
    assert status.returncode == 0, status.stderr


def test_repair_of_a_sound_catalog_keeps_it_and_rebuilds_a_damaged_index(own_home):
    before = (own_home / "catalog.db").read_bytes()
    _forest_file(own_home).unlink()
    result = run_cli("--home", str(own_home), "repair")
    assert result.returncode == 0, result.stderr
    assert "sound" in result.stdout and "rebuilt" in result.stdout
    assert not list(own_home.glob("catalog.damaged-*"))
    with sqlite3.connect(own_home / "catalog.db") as conn:
        assert conn.execute("SELECT count(*) FROM files").fetchone()[0] == 60
    assert len((own_home / "catalog.db").read_bytes()) == len(before)


# --- read-only and full -------------------------------------------------------------------

@contextmanager
def read_only(folder: Path):
    """folder as a read-only view: a read-only bind mount as root (chmod does not stop root),
    a chmod otherwise."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for path in modes:
            path.chmod(modes[path] & ~0o222)
        try:
            yield folder
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    view = folder.with_name(folder.name + "-ro")
    view.mkdir()
    bind = subprocess.run(["mount", "--bind", str(folder), str(view)], capture_output=True, text=True)
    if bind.returncode != 0:
        pytest.skip(f"root without mount rights (a container without CAP_SYS_ADMIN): {bind.stderr.strip()}")
    try:
        remount = subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], capture_output=True, text=True)
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only: {remount.stderr.strip()}")
        yield view
    finally:
        subprocess.run(["umount", "--lazy", str(view)], check=True)


def test_a_read_only_library_answers_searches_and_refuses_writes_in_one_line(own_home):
    right = _hits(_search(own_home))
    # The last writable connection to close removes the -wal and -shm files: a reader in a
    # read-only folder cannot make them.
    conn = sqlite3.connect(own_home / "catalog.db")
    conn.execute("SELECT count(*) FROM files").fetchone()
    conn.close()
    assert not list(own_home.glob("catalog.db-*"))
    with read_only(own_home) as view:
        assert _hits(_search(view)) == right
        for command in (["status"], ["errors"]):
            result = run_cli("--home", str(view), *command)
            assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        for command in (["crawl"], ["rebuild"], ["repair"]):
            _assert_one_line_error(run_cli("--home", str(view), *command), "read-only")


@contextmanager
def small_disk(tmp_path: Path, size: str):
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a full disk is made with a small tmpfs, which needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)  # a child may still be closing files


def _fill(folder: Path, leave: int) -> Path:
    """A file that leaves `leave` bytes free on folder's disk (0: until a write fails)."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            handle.write(b"\0" * max(0, shutil.disk_usage(folder).free - leave))
            while not leave:
                handle.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def test_a_full_disk_keeps_what_was_committed_and_the_next_crawl_finishes(tmp_path):
    photos = tmp_path / "photos"
    for i in range(400):
        make_photo(photos / f"p{i:04d}.png", i, size=(40, 32))
    # 6 MB: after the filler goes, the catalog, its WAL, the image tower and the index fit.
    with small_disk(tmp_path, "6m") as disk:
        home = disk / "home"
        filler = _fill(disk, leave=480_000)
        crawl = run_cli("--home", str(home), "crawl", str(photos), "--model", TINY_MODEL)
        _assert_one_line_error(crawl, "no space left", "kept")
        filler.unlink()
        filler = _fill(disk, leave=0)
        assert shutil.disk_usage(disk).free == 0
        status = run_cli("--home", str(home), "status")
        assert status.returncode == 0 and "Traceback" not in status.stderr, status.stderr
        kept = int(status.stdout.split(" live")[0].split()[-1])
        assert 0 < kept < 400, status.stdout
        errors = run_cli("--home", str(home), "errors")
        assert errors.returncode == 0, errors.stderr
        filler.unlink()
        again = run_cli("--home", str(home), "crawl", "--model", TINY_MODEL)
        assert again.returncode == 0, again.stderr
        with sqlite3.connect(home / "catalog.db") as conn:
            live = conn.execute("SELECT count(*) FROM files WHERE status = 'live' AND vector IS NOT NULL")
            assert live.fetchone()[0] == 400
        assert read_manifest(home / "index").count == 400


# --- noise ----------------------------------------------------------------------------

def _tiff_with_tag(path: Path, tag: int, value: int, seed: int = 0, **save) -> None:
    """A small TIFF whose SHORT tag `tag` is patched to `value` (an odd file of the kind
    cameras and scanners leave behind)."""
    import io
    import struct

    from PIL import Image

    buffer = io.BytesIO()
    pixels = (np.random.default_rng(seed).random((32, 40, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(buffer, "TIFF", **save)
    data = bytearray(buffer.getvalue())
    ifd = struct.unpack_from("<I", data, 4)[0]
    for i in range(struct.unpack_from("<H", data, ifd)[0]):
        at = ifd + 2 + 12 * i
        if struct.unpack_from("<H", data, at)[0] == tag:
            struct.pack_into("<H", data, at + 8, value)
    path.write_bytes(bytes(data))


def test_image_library_chatter_goes_to_the_log_not_the_terminal(tmp_path):
    from PIL import Image, TiffImagePlugin

    odd = tmp_path / "odd"
    odd.mkdir()
    for i in range(3):
        # libtiff writes errors to descriptor 2; Pillow calls this "decoder error -2"
        _tiff_with_tag(odd / f"webp-{i}.tif", 259, 50001, seed=i, compression="tiff_lzw")
        _tiff_with_tag(odd / f"samples-{i}.tif", 277, 65535, seed=10 + i)  # Pillow's logger: an ERROR line
        info = TiffImagePlugin.ImageFileDirectory_v2()
        info[270] = "a description"
        _tiff_with_tag(odd / f"long-tag-{i}.tif", 0, 0, seed=20 + i, tiffinfo=info)  # patched below: a UserWarning
        data = bytearray((odd / f"long-tag-{i}.tif").read_bytes())
        at = data.find(bytes([14, 1, 2, 0]))  # tag 270, type ASCII: claim more bytes than the file has
        data[at + 4:at + 8] = (100_000 + i).to_bytes(4, "little")
        (odd / f"long-tag-{i}.tif").write_bytes(bytes(data))
        Image.new("RGB", (8, 8), (i, 0, 0)).save(odd / f"plain-{i}.bmp")
    (odd / "broken.bmp").write_bytes(b"BM" + bytes(60))
    home = tmp_path / "home"
    result = run_cli("--home", str(home), "crawl", str(odd), "--model", TINY_MODEL)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
    assert "image decoder warnings" in result.stdout
    log = (home / "clipsearch.log").read_text(encoding="utf-8")
    for expected in ("WEBP compression", "samples per pixel", "Tag data larger than file"):
        assert expected in log
    errors = run_cli("--home", str(home), "errors", "--json")
    reasons = [json.loads(line)["error"] for line in errors.stdout.splitlines()]
    assert any(r.startswith("corrupt or unsupported image data") for r in reasons), reasons
    assert not any(r.startswith("could not decode") for r in reasons)
