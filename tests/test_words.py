"""Words in photos, read by the real OCR models (rapidocr's PP-OCR on ONNX Runtime): found by a
plain query and by text:, never matched in photos without words, read after the crawl as a
second pass that resumes after a kill, and by the watch daemon for new photos."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from clipsearch.config import load_settings
from clipsearch.library import Library

from .conftest import TINY_MODEL, clean_environment, run_cli
from .test_watch import wait_for, watching
from .wordphotos import draw_words, photo_like, receipt, save, screenshot

# name: (what is written, letter height at 1280 px, colour, turn in degrees)
SIGNS = {
    "bakery.jpg": ("BAKERY OPEN 7AM", 40, (255, 255, 255), 0.0),
    "harbour.jpg": ("Harbour Master", 24, (250, 220, 40), 2.5),
    "station.jpg": ("STATION 28", 60, (200, 30, 30), -3.0),
    "quiet.jpg": ("Lighthouse", 20, (255, 255, 255), 0.0),
}
PLAIN = ("field.jpg", "meadow.jpg", "evening.jpg")


def _words_folder(folder: Path) -> Path:
    for seed, (name, (text, letters, colour, angle)) in enumerate(SIGNS.items()):
        img = photo_like(960, 640, seed)
        save(draw_words(img, text, letters, (120, 140 + 40 * seed), colour, angle), folder / name)
    for seed, name in enumerate(PLAIN, start=10):
        save(photo_like(960, 640, seed), folder / name)
    save(screenshot(), folder / "screenshot.png")
    save(receipt(), folder / "receipt.jpg")
    return folder


@pytest.fixture(scope="module")
def words_library(tmp_path_factory):
    """The folder crawled once with the settings as users have them (words read)."""
    base = tmp_path_factory.mktemp("words")
    folder = _words_folder(base / "photos")
    home = base / "home"
    with clean_environment(base / "model-cache"):
        os.environ.pop("CLIPSEARCH_READ_TEXT")  # the default: on
        library = Library(load_settings(home, model=TINY_MODEL, device="cpu"))
        report = library.crawl([folder])
        yield library, folder, report


def _texts(home: Path) -> dict[str, str]:
    db = sqlite3.connect(home / "catalog.db")
    try:
        return {os.path.basename(path): text for path, text in db.execute(
            "SELECT f.path, t.text FROM texts t JOIN files f ON f.id = t.file_id")}
    finally:
        db.close()


def _names(results) -> list[str]:
    return [os.path.basename(r.path) for r in results]


def test_the_crawl_reads_the_words_of_every_photo_after_embedding(words_library):
    library, folder, report = words_library
    texts = _texts(library.settings.home)

    assert report.texts is not None and report.texts.read == report.texts.total == len(texts) == 9
    assert report.texts.with_words == 6
    for name, (text, *_rest) in SIGNS.items():
        assert text.lower() in " ".join(texts[name].split()).lower(), (name, texts[name])
    for name in PLAIN:
        assert texts[name] == "", (name, texts[name])  # no words made up from leaves and grain
    assert "Network Settings" in texts["screenshot.png"] and "Harbour Cafe" in texts["screenshot.png"]
    assert "CAFE CENTRAL" in texts["receipt.jpg"] and "TOTAL 5.70" in texts["receipt.jpg"]
    status = library.status()
    assert status.texts == (9, 6, 0)


def test_a_word_in_a_photo_is_found_by_a_plain_query_first(words_library):
    library, _, _ = words_library
    for query, name in [("bakery", "bakery.jpg"), ("a lighthouse", "quiet.jpg"), ("the harbour master", "harbour.jpg"),
                        ("receipt from cafe central", "receipt.jpg"), ("firewall", "screenshot.png")]:
        results = library.search(query, k=3)
        assert _names(results)[0] == name, (query, _names(results))
        assert results[0].text and any(w in results[0].text.lower() for w in query.split()[-1:])


def test_text_keeps_only_photos_holding_the_words_and_in_order_for_a_phrase(words_library):
    library, _, _ = words_library
    assert _names(library.search("text:bakery", k=10)) == ["bakery.jpg"]
    assert _names(library.search('text:"open 7am"', k=10)) == ["bakery.jpg"]
    assert _names(library.search('text:"7am open"', k=10)) == []
    assert set(_names(library.search("text:cafe", k=10))) == {"receipt.jpg", "screenshot.png"}
    assert _names(library.search("photo text:espresso", k=10)) == ["receipt.jpg"]
    for word in ("field", "meadow", "evening", "photo", "leaves", "tree"):
        assert not set(_names(library.search(f"text:{word}", k=10))) & set(PLAIN), word


def test_not_a_word_leaves_out_the_photos_that_hold_it(words_library):
    library, _, _ = words_library
    everything = _names(library.search("a photo", k=20))
    without = _names(library.search("a photo not:cafe", k=20))
    assert "receipt.jpg" in everything and "screenshot.png" in everything
    assert set(without) == set(everything) - {"receipt.jpg", "screenshot.png"}


def test_results_show_the_words_found_with_the_query_words_marked(words_library):
    library, _, _ = words_library
    home = library.settings.home
    piped = run_cli("--home", str(home), "search", "text:bakery", env={"CLIPSEARCH_READ_TEXT": "true"})
    assert piped.returncode == 0, piped.stderr
    header, line = piped.stdout.splitlines()
    assert header.split("\t")[-2:] == ["place", "words"]
    assert line.split("\t")[-1].lower().startswith("bakery open 7am")
    shown = run_cli("--home", str(home), "search", "bakery", "-k", "1", "--json")
    assert "BAKERY" in json.loads(shown.stdout.splitlines()[0])["text"]

    from starlette.testclient import TestClient

    from clipsearch.web.app import create_app

    with TestClient(create_app(library), base_url="http://127.0.0.1:8765") as client:
        file_id = library.search("text:bakery", k=1)[0].file_id
        page = client.get(f"/photo/{file_id}", params={"q": "bakery open"}).text
        assert "<mark>BAKERY</mark> <mark>OPEN</mark> 7AM" in page
        assert "with words read" in client.get("/").text


def test_the_words_pass_resumes_after_a_kill_and_reads_each_photo_once(tmp_path):
    folder = tmp_path / "photos"
    for i in range(24):
        save(draw_words(photo_like(960, 640, 40 + i), f"GATE {i + 1}", 40, (100, 100)), folder / f"gate{i:02d}.jpg")
    home = tmp_path / "home"
    env = {**os.environ, "CLIPSEARCH_READ_TEXT": "true"}
    crawl = subprocess.Popen([sys.executable, "-m", "clipsearch.cli", "--home", str(home), "crawl", str(folder),
                              "--model", TINY_MODEL], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (home / "catalog.db").exists() and 0 < _count(home) < 24, "some photos read", timeout=120)
        crawl.send_signal(signal.SIGKILL)
    finally:
        crawl.wait(30)
    first = _read_at(home)
    assert 0 < len(first) < 24

    again = run_cli("--home", str(home), "crawl", "--model", TINY_MODEL, env={"CLIPSEARCH_READ_TEXT": "true"},
                    timeout=300)

    assert again.returncode == 0, again.stderr
    after = _read_at(home)
    assert len(after) == 24
    assert {k: v for k, v in after.items() if k in first} == first  # those read before were not read again
    texts = _texts(home)
    assert all(f"GATE{int(name[4:6]) + 1}" in texts[name].replace(" ", "") for name in texts), texts


def _count(home: Path) -> int:
    try:
        db = sqlite3.connect(f"file:{home / 'catalog.db'}?mode=ro", uri=True, timeout=1)
        try:
            return db.execute("SELECT count(*) FROM texts").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def _read_at(home: Path) -> dict[int, float]:
    db = sqlite3.connect(home / "catalog.db")
    try:
        return dict(db.execute("SELECT file_id, read_at FROM texts").fetchall())
    finally:
        db.close()


def test_the_daemon_reads_the_words_of_a_new_photo(make_library, tmp_path, monkeypatch):
    monkeypatch.delenv("CLIPSEARCH_READ_TEXT")
    folder = tmp_path / "photos"
    save(photo_like(640, 480, 1), folder / "plain.jpg")
    library = make_library()
    library.crawl([folder])
    made = save(draw_words(photo_like(960, 640, 2), "PHARMACY", 48, (150, 200)), tmp_path / "new.jpg")
    with watching(library):
        shutil.copy(made, folder / "pharmacy.jpg")
        wait_for(lambda: "PHARMACY" in _texts(library.settings.home).get("pharmacy.jpg", ""), "the words read",
                 timeout=60)
        assert _names(library.search("text:pharmacy", k=5)) == ["pharmacy.jpg"]


def test_read_text_off_reads_nothing_and_status_says_so(make_library, tmp_path):
    save(draw_words(photo_like(640, 480, 3), "BAKERY", 48, (50, 50)), tmp_path / "photos" / "sign.jpg")
    library = make_library(read_text=False)

    report = library.crawl([tmp_path / "photos"])

    assert report.texts is None
    assert _texts(library.settings.home) == {}
    status = run_cli("--home", str(library.settings.home), "status", env={"CLIPSEARCH_READ_TEXT": "false"})
    assert "not read (setting read_text = false)" in status.stdout
    assert library.search("text:bakery", k=5) == []


def test_the_pass_detects_on_the_crawls_own_small_copy_and_decodes_again_only_to_read_what_it_found(
        make_library, tmp_path, monkeypatch):
    from clipsearch.ingest import decode

    monkeypatch.delenv("CLIPSEARCH_READ_TEXT")
    folder = tmp_path / "photos"
    save(draw_words(photo_like(960, 640, 5), "MUSEUM", 48, (100, 120)), folder / "museum.jpg")
    for seed in range(3):
        save(photo_like(960, 640, 20 + seed), folder / f"plain{seed}.jpg")
    decoded: list[tuple[str, int]] = []
    real = decode.load_thumbnail
    monkeypatch.setattr(decode, "load_thumbnail",
                        lambda path, size, *args, **kwargs: decoded.append((os.path.basename(path), size))
                        or real(path, size, *args, **kwargs))
    library = make_library(decode_in="threads")

    library.crawl([folder])

    # The detector saw the crawl's copies (no decode at its size); photos are decoded again at
    # 1280 only to read what it found (leaves can look like letters to it: read, then dropped).
    assert ("museum.jpg", 1280) in decoded and all(size == 1280 for _, size in decoded)
    assert "MUSEUM" in _texts(library.settings.home)["museum.jpg"]
    assert not (library.settings.home / "spool").exists()  # the copies are gone once read


def test_without_rapidocr_the_crawl_indexes_and_says_once_why_no_words_are_read(tmp_path):
    save(draw_words(photo_like(640, 480, 6), "BAKERY", 48, (50, 50)), tmp_path / "photos" / "sign.jpg")
    home = tmp_path / "home"
    hide = ("import sys; sys.modules['rapidocr'] = None; "
            "from clipsearch.cli import main; sys.argv[0] = 'clipsearch'; main()")
    env = {**os.environ, "COLUMNS": "250", "CLIPSEARCH_READ_TEXT": "true"}

    crawl = subprocess.run([sys.executable, "-c", hide, "--home", str(home), "crawl", str(tmp_path / "photos"),
                            "--model", TINY_MODEL], capture_output=True, text=True, env=env, timeout=120)

    assert crawl.returncode == 0, crawl.stderr
    assert crawl.stdout.count("rapidocr cannot be imported") == 1 and "pip install rapidocr" in crawl.stdout
    assert "Traceback" not in crawl.stderr
    found = run_cli("--home", str(home), "search", "anything", "--paths-only")
    assert found.stdout.split() == [str(tmp_path / "photos" / "sign.jpg")]
