"""Contact sheets, thumbnails and showing them: real photos on disk, real PNGs, a real opener process."""

from __future__ import annotations

import io
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image, JpegImagePlugin
from rich.console import Console

from clipsearch import viewer
from clipsearch.errors import ClipsearchError
from clipsearch.ingest.decode import DecodeError, load_thumbnail
from clipsearch.sheet import Sheet, _Layout, make_sheet

from .conftest import make_photo

YELLOW, BLUE = (255, 210, 0), (0, 160, 255)


@dataclass(frozen=True)
class Hit:
    """What a sheet needs of a search result."""

    rank: int
    score: float
    path: str


def rotated_jpeg(path: Path) -> Path:
    """Stored 300x150, yellow on the left; EXIF orientation 6 says: turn it 90 degrees clockwise to show it,
    so it shows 150x300 with yellow on top."""
    img = Image.new("RGB", (300, 150), BLUE)
    img.paste(YELLOW, (0, 0, 150, 150))
    exif = Image.Exif()
    exif[274] = 6
    img.save(path, exif=exif, quality=95)
    return path


def transparent_png(path: Path) -> Path:
    img = Image.new("RGBA", (120, 200), (255, 0, 0, 0))
    img.paste((0, 160, 0, 255), (20, 20, 100, 180))
    img.save(path)
    return path


def large_jpeg(path: Path) -> Path:
    """A 2000x1500 photo-like JPEG (drawn small and enlarged: make_photo at full size takes a second)."""
    small = make_photo(path.with_suffix(".small.png"), 1, size=(200, 150))
    with Image.open(small) as img:
        img.resize((2000, 1500), Image.Resampling.BILINEAR).save(path, quality=90)
    small.unlink()
    return path


def corrupt_jpeg(path: Path) -> Path:
    path.write_bytes(b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 20)
    return path


@pytest.fixture
def photos(tmp_path) -> dict[str, Path]:
    folder = tmp_path / "photos"
    folder.mkdir()
    return {
        "rotated": rotated_jpeg(folder / "rotated.jpg"),
        "alpha": transparent_png(folder / "alpha.png"),
        "corrupt": corrupt_jpeg(folder / "corrupt.jpg"),
        "large": large_jpeg(folder / "large.jpg"),
        "small": make_photo(folder / "small.png", 2, size=(96, 72)),
    }


def hits(*paths: Path) -> list[Hit]:
    return [Hit(rank=i + 1, score=0.3 - i / 100, path=str(p)) for i, p in enumerate(paths)]


def cell_box(sheet: Sheet, index: int) -> tuple[int, int, int, int]:
    """The square top part of a cell (its thumbnail and padding), without the caption."""
    width, height = sheet.width // sheet.columns, sheet.height // sheet.rows
    row, column = divmod(index, sheet.columns)
    return column * width, row * height, (column + 1) * width, row * height + width


def bright_box(img: Image.Image) -> tuple[int, int, int, int] | None:
    """Bounding box of the pixels far brighter than the sheet's dark background."""
    return img.convert("L").point(lambda v: 255 if v > 90 else 0).getbbox()


# make_sheet


def test_a_sheet_is_a_png_whose_size_is_its_columns_and_rows_of_cells(tmp_path, photos):
    items = hits(*photos.values(), photos["large"], photos["small"])  # 7 items
    sheet = make_sheet(items, tmp_path / "sheet.png")
    assert (sheet.columns, sheet.rows) == (3, 3)
    assert sheet.path == str(tmp_path / "sheet.png")
    with Image.open(sheet.path) as png:
        assert png.format == "PNG"
        assert png.size == (sheet.width, sheet.height)
    assert sheet.width % 3 == 0 and sheet.height % 3 == 0
    assert sheet.width // 3 >= 192 and sheet.height // 3 > sheet.width // 3  # a caption under each thumbnail


@pytest.mark.parametrize("count, grid", [(1, (1, 1)), (2, (2, 1)), (4, (2, 2)), (7, (3, 3)), (10, (4, 3)),
                                         (40, (6, 7))])
def test_default_columns_make_a_square_ish_grid_of_at_most_six(tmp_path, count, grid):
    photo = make_photo(tmp_path / "p.jpg", 3)
    sheet = make_sheet(hits(*[photo] * count), tmp_path / "sheet.png", cell=32)
    assert (sheet.columns, sheet.rows) == grid


def test_columns_can_be_chosen_and_cells_sized(tmp_path, photos):
    small = make_sheet(hits(*photos.values()), tmp_path / "small.png", cell=64, columns=5)
    large = make_sheet(hits(*photos.values()), tmp_path / "large.png", cell=256, columns=2)
    assert (small.columns, small.rows) == (5, 1)
    assert (large.columns, large.rows) == (2, 3)
    assert large.width // 2 > 256 > small.width // 5 >= 64


def test_a_cell_for_a_rotated_jpeg_is_taller_than_wide(tmp_path, photos):
    sheet = make_sheet(hits(photos["rotated"], photos["large"]), tmp_path / "sheet.png")
    with Image.open(sheet.path) as png:
        rotated = png.crop(cell_box(sheet, 0))
        box = bright_box(rotated)
        assert box is not None
        left, top, right, bottom = box
        assert bottom - top == 192 and right - left == 96  # fitted into the cell, aspect kept
        top_pixel = rotated.getpixel(((left + right) // 2, top + 10))
        bottom_pixel = rotated.getpixel(((left + right) // 2, bottom - 10))
    assert top_pixel[0] > 200 and top_pixel[1] > 150  # yellow on top: the orientation was applied
    assert bottom_pixel[0] < 50 and bottom_pixel[2] > 200


@pytest.mark.parametrize("damage", ["corrupt", "empty", "missing", "over the pixel limit"])
def test_an_unreadable_file_gets_a_placeholder_and_the_sheet_is_still_written(tmp_path, photos, damage):
    bad = {"corrupt": photos["corrupt"], "over the pixel limit": photos["large"],
           "missing": tmp_path / "gone.jpg", "empty": tmp_path / "empty.jpg"}[damage]
    if damage == "empty":
        bad.write_bytes(b"")
    sheet = make_sheet(hits(photos["small"], bad), tmp_path / "sheet.png", max_pixels=1_000_000)
    with Image.open(sheet.path) as png:
        placeholder = png.crop(cell_box(sheet, 1)).convert("RGB")
    reddish = [colour for count, colour in placeholder.getcolors(1 << 16) if colour[0] > colour[1] + 60]
    assert reddish, "the placeholder's outline and 'unreadable' are drawn in red"


def test_the_sheet_is_written_whole_into_a_new_folder_and_replaces_an_old_one(tmp_path, photos):
    target = tmp_path / "new" / "folder" / "sheet.png"
    first = make_sheet(hits(photos["small"]), target)
    second = make_sheet(hits(photos["small"], photos["rotated"]), target)
    assert os.listdir(target.parent) == ["sheet.png"]  # no temporary file left behind
    with Image.open(target) as png:
        assert png.size == (second.width, second.height) != (first.width, first.height)


def test_a_sheet_that_cannot_be_written_is_a_clipsearch_error(tmp_path, photos):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ClipsearchError, match="cannot write the contact sheet"):
        make_sheet(hits(photos["small"]), blocker / "sheet.png")


def test_no_items_is_a_value_error(tmp_path):
    with pytest.raises(ValueError):
        make_sheet([], tmp_path / "sheet.png")
    assert not (tmp_path / "sheet.png").exists()


def test_long_file_names_are_cut_in_the_middle_to_fit_the_cell():
    layout = _Layout(192)
    name = "IMG_20190714_162005_HDR_edited_by_someone_for_the_family_album_final_v2.jpg"
    short = layout._shorten(name, 192)
    assert "\u2026" in short and short.startswith("IMG_2019") and short.endswith("v2.jpg")
    assert layout.font.getlength(short) <= 192
    assert layout._shorten("beach.jpg", 192) == "beach.jpg"


# load_thumbnail


def test_a_thumbnail_fits_size_with_its_aspect_kept(photos):
    thumb = load_thumbnail(str(photos["large"]), 192, 10**9)
    assert thumb.mode == "RGB"
    assert thumb.size == (192, 144)


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_that_still_covers_size(photos, monkeypatch):
    decoded_sizes = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = draft(self, mode, size)
        decoded_sizes.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    load_thumbnail(str(photos["large"]), 192, 10**9)
    assert decoded_sizes == [(250, 188)]  # 1/8 of 2000x1500: libjpeg's smallest scale, still over 192


def test_a_thumbnail_is_turned_upright_by_its_exif_orientation(photos):
    thumb = load_thumbnail(str(photos["rotated"]), 100, 10**9)
    assert thumb.size == (50, 100)
    top, bottom = thumb.getpixel((25, 10)), thumb.getpixel((25, 90))
    assert top[0] > 200 and top[1] > 150 and bottom[2] > 200 and bottom[0] < 50


def test_a_transparent_png_becomes_rgb_on_white(photos):
    thumb = load_thumbnail(str(photos["alpha"]), 100, 10**9)
    assert thumb.mode == "RGB" and thumb.size == (60, 100)
    assert thumb.getpixel((2, 2)) == (255, 255, 255)
    assert thumb.getpixel((30, 50))[1] > 120


def test_a_photo_smaller_than_size_keeps_its_size(photos):
    assert load_thumbnail(str(photos["small"]), 192, 10**9).size == (96, 72)


def test_a_thumbnail_over_the_pixel_limit_is_refused_before_decoding(photos):
    with pytest.raises(DecodeError, match=r"2000x1500 \(3 MP\), over the 1 MP limit"):
        load_thumbnail(str(photos["large"]), 192, 1_000_000)


def test_thumbnail_failures_are_decode_errors_that_say_why(tmp_path, photos):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "cut.jpg").write_bytes(photos["large"].read_bytes()[:4000])
    reasons = {}
    for name, path in [("corrupt", photos["corrupt"]), ("empty", tmp_path / "empty.jpg"),
                       ("missing", tmp_path / "gone.jpg"), ("cut", tmp_path / "cut.jpg")]:
        with pytest.raises(DecodeError) as caught:
            load_thumbnail(str(path), 64, 10**9)
        reasons[name] = str(caught.value)
    assert "\n" not in "".join(reasons.values())
    assert reasons["empty"] == "empty file (0 bytes)"
    assert reasons["missing"] == "file vanished before it could be read"
    assert reasons["cut"].startswith("truncated or corrupt image data")
    assert "corrupt" in reasons["corrupt"] or "not an image" in reasons["corrupt"]


# open_path


@pytest.mark.parametrize("platform, program", [("linux", "xdg-open"), ("darwin", "open"),
                                               ("win32", "os.startfile")])
def test_open_path_hands_exactly_the_file_to_the_platform_opener(photos, monkeypatch, platform, program):
    launched = []
    monkeypatch.setattr(viewer, "_launch", launched.append)
    monkeypatch.setattr(sys, "platform", platform)
    viewer.open_path(photos["rotated"])
    assert launched == [[program, os.path.abspath(photos["rotated"])]]


@pytest.mark.parametrize("platform, expected", [
    ("linux", lambda f: ["xdg-open", os.path.dirname(f)]), ("darwin", lambda f: ["open", "-R", f]),
    ("win32", lambda f: ["explorer", f"/select,{f}"])])
def test_reveal_shows_the_file_in_its_folder_and_never_launches_the_folder(photos, monkeypatch, platform, expected):
    launched = []
    monkeypatch.setattr(viewer, "_launch", launched.append)
    monkeypatch.setattr(sys, "platform", platform)
    viewer.reveal(photos["rotated"])
    assert launched == [expected(os.path.abspath(photos["rotated"]))]


def test_open_path_makes_a_relative_path_absolute(photos, monkeypatch):
    launched = []
    monkeypatch.setattr(viewer, "_launch", launched.append)
    monkeypatch.chdir(photos["small"].parent)
    viewer.open_path("small.png")
    assert launched[0][-1] == str(photos["small"])


@pytest.mark.skipif(sys.platform == "win32", reason="Windows opens files through os.startfile")
def test_a_missing_opener_program_is_a_clipsearch_error_that_says_where_the_file_is(photos, monkeypatch, tmp_path):
    (tmp_path / "no-programs").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "no-programs"))
    with pytest.raises(ClipsearchError) as caught:
        viewer.open_path(photos["small"])
    assert str(photos["small"]) in str(caught.value) and "not installed" in str(caught.value)


def test_opening_a_missing_file_is_a_clipsearch_error(tmp_path, monkeypatch):
    monkeypatch.setattr(viewer, "_launch", lambda args: pytest.fail("nothing to open"))
    with pytest.raises(ClipsearchError, match="does not exist"):
        viewer.open_path(tmp_path / "gone.jpg")


@pytest.mark.skipif(sys.platform == "win32", reason="a shell script stands in for the opener")
def test_the_opener_runs_detached_and_open_path_does_not_wait_for_it(photos, monkeypatch, tmp_path):
    bin_dir, record = tmp_path / "bin", tmp_path / "opened.txt"
    bin_dir.mkdir()
    for name in ("xdg-open", "open"):
        script = bin_dir / name
        # Records its pid and argument, then stays open like a viewer window.
        script.write_text(f'#!/bin/sh\necho "$$ $1" > "{record}.tmp" && mv "{record}.tmp" "{record}"\nexec sleep 60\n')
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    viewer.open_path(photos["small"])
    deadline = time.monotonic() + 10
    while not record.exists():
        assert time.monotonic() < deadline, "the opener never ran"
        time.sleep(0.01)
    pid, opened = record.read_text().strip().split(" ", 1)
    try:
        assert opened == str(photos["small"])
        os.kill(int(pid), 0)  # still running after open_path returned
        assert os.getpgid(int(pid)) != os.getpgid(0)  # its own session: Ctrl-C at the prompt spares it
    finally:
        os.kill(int(pid), signal.SIGTERM)


# show_inline


KITTY = {"TERM": "xterm-kitty", "KITTY_WINDOW_ID": "1"}


def kitty_environment(monkeypatch):
    for name in ("TERM_PROGRAM", "WEZTERM_EXECUTABLE", "GHOSTTY_RESOURCES_DIR", "TMUX", "STY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in KITTY.items():
        monkeypatch.setenv(name, value)


def test_show_inline_draws_nothing_on_a_console_that_is_not_a_terminal(photos, monkeypatch):
    kitty_environment(monkeypatch)
    monkeypatch.setattr(viewer, "_draw", lambda path, console: pytest.fail("must not try to draw"))
    out = io.StringIO()
    assert viewer.show_inline(photos["small"], Console(file=out)) is False
    assert out.getvalue() == ""


def test_show_inline_is_off_when_clipsearch_inline_images_is_0(photos, monkeypatch):
    kitty_environment(monkeypatch)
    monkeypatch.setenv("CLIPSEARCH_INLINE_IMAGES", "0")
    monkeypatch.setattr(viewer, "_draw", lambda path, console: pytest.fail("must not try to draw"))
    out = io.StringIO()
    assert viewer.show_inline(photos["small"], Console(file=out, force_terminal=True)) is False
    assert out.getvalue() == ""


def test_show_inline_is_false_without_textual_image(photos, monkeypatch):
    kitty_environment(monkeypatch)
    for module in ("textual_image", "textual_image.renderable", "textual_image._terminal"):
        monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    out = io.StringIO()
    assert viewer.show_inline(photos["small"], Console(file=out, force_terminal=True)) is False
    assert out.getvalue() == ""


def test_show_inline_is_false_when_drawing_fails(photos, monkeypatch):
    kitty_environment(monkeypatch)

    def broken(path, console):
        raise RuntimeError("the terminal went away")

    monkeypatch.setattr(viewer, "_draw", broken)
    assert viewer.show_inline(photos["small"], Console(file=io.StringIO(), force_terminal=True)) is False


@pytest.mark.parametrize("environ, shows", [
    ({"TERM": "xterm-kitty"}, True),
    ({"TERM": "xterm-256color", "KITTY_WINDOW_ID": "3"}, True),
    ({"TERM": "xterm-256color", "TERM_PROGRAM": "iTerm.app"}, True),
    ({"TERM": "xterm-256color", "TERM_PROGRAM": "WezTerm"}, True),
    ({"TERM": "xterm-256color", "WEZTERM_EXECUTABLE": "/usr/bin/wezterm-gui"}, True),
    ({"TERM": "xterm-ghostty"}, True),
    ({"TERM": "foot"}, True),
    ({"TERM": "xterm-256color"}, False),
    ({"TERM": "xterm-256color", "TERM_PROGRAM": "Apple_Terminal"}, False),
    ({"TERM": "linux"}, False),
    ({}, False),
    ({"TERM": "tmux-256color", "TMUX": "/tmp/tmux-1000/default,1,0", "KITTY_WINDOW_ID": "1"}, False),
    ({"TERM": "xterm-kitty", "CLIPSEARCH_INLINE_IMAGES": "0"}, False),
    ({"TERM": "xterm-256color", "CLIPSEARCH_INLINE_IMAGES": "1"}, True),
])
def test_only_terminals_known_to_show_images_are_drawn_in(environ, shows):
    assert viewer.terminal_shows_images(environ) is shows
