"""The interactive prompt: scripted sessions on a real library (the trained colour/shape
model), a library that changes under an open prompt, bad input, and one session in a real
pseudo-terminal."""

from __future__ import annotations

import io
import os
import shutil
import sys
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

from clipsearch import prompt
from clipsearch.config import load_settings
from clipsearch.library import Library
from clipsearch.sheet import make_sheet

from .conftest import SHAPES_CHECKPOINT, SHAPES_CONFIG, TINY_MODEL, make_photo, make_photos, run_cli
from .shapes import label_of


class Scripted:
    """A prompt driven by a list of lines, its output captured as text."""

    def __init__(self, home: Path):
        self.library = Library(load_settings(home))
        self.out = io.StringIO()
        self.opened: list[str] = []
        self.session = prompt.Session(self.library, Console(file=self.out, width=200),
                                      opener=self.opened.append, inline=lambda path, console: False)

    def type(self, line: str) -> str:
        """What the prompt printed for line."""
        start = self.out.tell()
        self.last_alive = self.session.handle(line)
        return self.out.getvalue()[start:]

    def labels(self) -> list[tuple[str, str]]:
        return [label_of(r.path) for r in self.session.results]


@pytest.fixture
def shapes(shape_library) -> Scripted:
    scripted = Scripted(shape_library.home)
    banner_start = scripted.out.tell()
    scripted.session.banner()
    assert "200 photos in 1 folder" in scripted.out.getvalue()[banner_start:]
    return scripted


def test_a_text_query_then_k_then_similar_then_more(shapes):
    shown = shapes.type("a red circle")
    assert "red-circle-" in shown and "10 results" in shown
    assert all(label == ("red", "circle") for label in shapes.labels()[:5])
    assert "3 results a page" in shapes.type(":k 3")
    shapes.type("a blue star")
    third = shapes.session.results[2]
    shapes.type(":similar 3")
    similar = shapes.session.results
    assert len(similar) == 3 and similar[0].path == third.path and similar[0].score == pytest.approx(1.0, abs=1e-4)
    assert all(label[0] == "blue" for label in shapes.labels())
    shapes.type(":more")
    assert [r.rank for r in shapes.session.results] == [4, 5, 6]
    assert not {r.path for r in similar} & {r.path for r in shapes.session.results}


def test_adding_subtracting_and_weighting_ideas(shapes):
    shapes.type(":k 5")
    shapes.type("red + circle - square")
    assert shapes.labels().count(("red", "circle")) >= 4
    shapes.type("a green square + 2*a photo of a yellow star")
    assert all(label == ("yellow", "star") for label in shapes.labels())
    shapes.type("2*a green square + a photo of a yellow star")
    assert all(label == ("green", "square") for label in shapes.labels())


def test_filters_restrict_the_results_and_fill_the_page(shapes, shape_library):
    shapes.type(":k 8")
    shown = shapes.type("a red circle ext:png")
    results = shapes.session.results
    assert len(results) == 8 and all(r.path.endswith(".png") for r in results)
    assert "red-circle-" in shown
    assert "no photos match" in shapes.type("a red circle min:0.995")  # none scores that high here
    assert shapes.session.results == []
    folder = shape_library.folder
    shapes.type(f'a blue star in:"{folder}"')
    assert len(shapes.session.results) == 8


def test_an_image_path_in_the_query_finds_photos_like_it(shapes, shape_library):
    example = next(p.path for p in shape_library.photos if label_of(p.path) == ("purple", "triangle"))
    shapes.type(":k 5")
    shapes.type(f'"{example}"')
    assert shapes.session.results[0].path == str(example)
    assert shapes.labels().count(("purple", "triangle")) >= 4


def test_show_writes_a_contact_sheet_and_opens_it(shapes, tmp_path):
    shapes.type(":k 7")
    shapes.type("a yellow square")
    shown = shapes.type(":show")
    assert len(shapes.opened) == 1
    sheet = Path(shapes.opened[0])
    assert sheet.parent == shapes.library.settings.home / prompt.SHEETS and sheet.suffix == ".png"
    assert "contact sheet:" in shown and str(sheet) in shown.replace("\n", "")
    # 7 results: a grid of 3 columns and 3 rows.
    grid = make_sheet(shapes.session.results, tmp_path / "same.png")
    assert (grid.columns, grid.rows) == (3, 3)
    with Image.open(sheet) as image:
        assert image.format == "PNG" and image.size == (grid.width, grid.height)
    shapes.type(":open 2")
    assert shapes.opened[1] == shapes.session.results[1].path


def test_bad_input_gets_one_line_and_the_prompt_goes_on(shapes, tmp_path):
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("not a picture")
    for line, expected in [(":smilar 2", "did you mean :similar?"), (":frobnicate", ":help lists the commands"),
                           (":open 1", ":open: search for something first"), (":k lots", ":k needs a number"),
                           ("after:2021-02-30", "after:2021-02-30: not a date"),
                           ("2x*cat", "the weight '2x'"), (str(not_image), "notes.jpg: not an image"),
                           ("missing.png", "missing.png: no such image file")]:
        shown = shapes.type(line)
        assert expected in shown, (line, shown)
        assert shown.count("error:") == 1 and "Traceback" not in shown
        assert shapes.last_alive
    assert shapes.type("") == ""
    shapes.type("a red star")
    assert "17 results" not in shapes.type(":open 17")
    assert "there is no result 17" in shapes.type(":open 17")
    assert "dog on the beach" not in shapes.type(":history") and "a red star" in shapes.type(":history")
    assert ":similar N" in shapes.type(":help") and "after:DATE" in shapes.type(":help")
    assert shapes.type("exit") == "" and not shapes.last_alive


def test_photos_crawled_while_the_prompt_is_open_appear_in_the_next_query(tmp_path):
    home, photos = tmp_path / "home", tmp_path / "photos"
    make_photos(photos, 8)
    assert run_cli("--home", str(home), "crawl", str(photos), "--model", TINY_MODEL).returncode == 0
    scripted = Scripted(home)
    scripted.session.banner()
    newcomer = make_photo(photos / "newcomer.png", 99)
    scripted.type(f"{newcomer}")
    assert all(r.path != str(newcomer) for r in scripted.session.results)
    assert run_cli("--home", str(home), "crawl").returncode == 0  # a rebuilt forest, under the open prompt
    scripted.type(f"{newcomer}")
    assert scripted.session.results[0].path == str(newcomer)


def test_an_empty_library_says_how_to_crawl(tmp_path):
    scripted = Scripted(tmp_path / "home")
    scripted.session.banner()
    assert "run clipsearch crawl FOLDER" in scripted.out.getvalue()
    assert "is empty: run `clipsearch crawl FOLDER`" in scripted.type("a cat")
    assert ":similar N" in scripted.type(":help")


def test_a_model_that_cannot_load_gives_the_search_error_and_the_prompt_still_helps(tmp_path):
    config, checkpoint = tmp_path / "shapes.json", tmp_path / "shapes.pt"
    shutil.copy(SHAPES_CONFIG, config)
    shutil.copy(SHAPES_CHECKPOINT, checkpoint)
    make_photos(tmp_path / "photos", 4)
    home = tmp_path / "home"
    assert run_cli("--home", str(home), "crawl", str(tmp_path / "photos"), "--model",
                   f"{config}:{checkpoint}").returncode == 0
    checkpoint.unlink()
    search = run_cli("--home", str(home), "search", "a red circle")
    assert search.returncode == 1
    scripted = Scripted(home)
    scripted.session.banner()
    shown = scripted.type("a red circle")
    assert shown.strip() == search.stderr.strip() and shown.count("\n") == 1
    assert ":similar N" in scripted.type(":help")


@pytest.mark.skipif(sys.platform == "win32", reason="pexpect drives a POSIX pseudo-terminal")
def test_a_session_in_a_real_terminal(shape_library):
    import pexpect

    child = pexpect.spawn(sys.executable, ["-m", "clipsearch.cli", "--home", str(shape_library.home), "query"],
                          # pexpect is no terminal emulator: it never answers prompt_toolkit's
                          # cursor position requests, which would hold up the first keys.
                          env={**os.environ, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"},
                          encoding="utf-8", timeout=60, dimensions=(50, 160))
    try:
        child.expect("200 photos in 1 folder")
        # Keys go only to a prompt that is drawn: between prompts the terminal is not in raw mode.
        for keys, shown in [("a green triangle", "green-triangle-"), (":k 3", "3 results a page"),
                            (":similar 1", "3 results in")]:
            child.expect("›")
            child.sendline(keys)
            child.expect(shown)
        child.expect("›")
        child.send("half a line")
        child.expect("half a line")
        child.sendintr()  # Ctrl-C clears the line, the prompt stays
        child.expect("›")
        child.sendline(":history")
        child.expect(":similar 1")
        child.expect("›")
        child.sendcontrol("d")  # Ctrl-D leaves
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
    history = (shape_library.home / prompt.HISTORY_FILE).read_text()
    assert "a green triangle" in history and "half a line" not in history


def test_a_query_that_matches_nothing_in_particular_says_nothing_close(shapes):
    # The floor is measured on the library: unrelated photo-caption pairs of this model.
    floor = shapes.library.relevance_floor()
    assert floor is not None and -1 < floor < 1
    shown = shapes.type("a photo")  # every photo a little, none as a real match does
    assert "nothing close" in shown and "min:-1" in shown and "results in" not in shown
    assert "results in" in shapes.type("a photo min:-1")
    assert "nothing close" not in shapes.type("a red circle")
