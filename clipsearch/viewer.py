"""Showing a picture to the user: in the system's image viewer, or inline in the terminal.

`open_path` hands a file to the platform's opener and returns at once. `show_inline` draws
a PNG in terminals known to show images (kitty, Ghostty, WezTerm, iTerm2, foot, mlterm) with
textual-image, an optional dependency imported only when it is needed. Whether a terminal can
show images is decided from environment variables alone: asking the terminal with escape
sequences would wait for answers that an unknown terminal never sends, and garble a prompt.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .errors import ClipsearchError

if TYPE_CHECKING:
    from rich.console import Console

# "0" never draws inline, "1" draws in any terminal (for one that shows images but is not
# recognised below); unset or anything else: only in the terminals recognised below.
INLINE_IMAGES_ENV = "CLIPSEARCH_INLINE_IMAGES"
_IMAGE_TERM_PROGRAMS = {"iTerm.app", "WezTerm", "ghostty", "mlterm"}
_IMAGE_TERMS = ("kitty", "ghostty", "foot", "mlterm", "wezterm")
# On Windows the program associated with the file's type is started by os.startfile, not a command.
_STARTFILE = "os.startfile"


def open_path(path: str | os.PathLike[str]) -> None:
    """Open path in the system's viewer for its type and return without waiting for it.
    Raises ClipsearchError, saying where the file is, when it is missing or there is no viewer."""
    target = os.path.abspath(os.fspath(path))
    if not os.path.exists(target):
        raise ClipsearchError(f"cannot open {target}: the file does not exist")
    args = _opener(target)
    try:
        _launch(args)
    except FileNotFoundError:
        raise ClipsearchError(f"cannot open {target}: `{args[0]}` is not installed; "
                              "open the file with a viewer of your choice") from None
    except OSError as exc:
        raise ClipsearchError(f"cannot open {target} with `{args[0]}` ({exc.strerror or exc}); "
                              "open the file with a viewer of your choice") from None


def reveal(path: str | os.PathLike[str]) -> None:
    """Show the file in the desktop's file manager (its folder open, the file picked where
    the platform can: Finder, Explorer) and return without waiting. Raises ClipsearchError
    as open_path does. On macOS `open FOLDER` would launch a folder that is an app bundle."""
    target = os.path.abspath(os.fspath(path))
    if not os.path.exists(target):
        raise ClipsearchError(f"cannot show {target}: the file does not exist")
    if sys.platform == "darwin":
        args = ["open", "-R", target]
    elif sys.platform == "win32":
        args = ["explorer", f"/select,{target}"]
    else:
        args = ["xdg-open", os.path.dirname(target)]
    try:
        _launch(args)
    except FileNotFoundError:
        raise ClipsearchError(f"cannot show {target}: `{args[0]}` is not installed") from None
    except OSError as exc:
        raise ClipsearchError(f"cannot show {target} with `{args[0]}` ({exc.strerror or exc})") from None


def _opener(path: str) -> list[str]:
    if sys.platform == "win32":
        return [_STARTFILE, path]
    if sys.platform == "darwin":
        return ["open", path]
    return ["xdg-open", path]


def _launch(args: list[str]) -> None:
    """Start args[0] on args[1:] detached from the prompt: no shared output, no waiting."""
    if args[0] == _STARTFILE:
        os.startfile(args[1])  # type: ignore[attr-defined]  # Windows only
        return
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, close_fds=True,
                               start_new_session=True)  # Ctrl-C at the prompt must not close the viewer
    # Reap it when it ends (xdg-open and open return quickly), so no zombie is left behind.
    threading.Thread(target=process.wait, name="viewer-reaper", daemon=True).start()


def show_inline(path: str | os.PathLike[str], console: Console) -> bool:
    """Draw the image at path in the terminal, fitted to its width and height. Returns False,
    having drawn nothing, when the console is not a terminal, the terminal is not known to show
    images, CLIPSEARCH_INLINE_IMAGES is 0, or textual-image is missing or fails; the caller
    then falls back to open_path."""
    if not console.is_terminal or not terminal_shows_images(os.environ):
        return False
    try:
        return _draw(os.fspath(path), console)
    except Exception:  # noqa: BLE001 - a picture that cannot be drawn is never worth an error
        return False


def terminal_shows_images(environ: Mapping[str, str]) -> bool:
    """Whether the environment says that this terminal can show images (and the user allows it)."""
    setting = environ.get(INLINE_IMAGES_ENV, "").strip()
    if setting == "0":
        return False
    if setting == "1":
        return True
    if environ.get("TMUX") or environ.get("STY"):
        return False  # multiplexers pass image protocols through only when configured to
    term = environ.get("TERM", "").lower()
    return (environ.get("TERM_PROGRAM") in _IMAGE_TERM_PROGRAMS
            or any(name in term for name in _IMAGE_TERMS)
            or bool(environ.get("KITTY_WINDOW_ID") or environ.get("WEZTERM_EXECUTABLE")
                    or environ.get("GHOSTTY_RESOURCES_DIR")))


def _draw(path: str, console: Console) -> bool:
    # textual-image asks the terminal which protocol it speaks when first imported (once a
    # process, 0.1 s at most a question): only reached for terminals that answer.
    try:
        from PIL import Image as PILImage
        from textual_image import renderable
        from textual_image._terminal import get_cell_size
    except ImportError:
        return False
    if renderable.Image not in (renderable.SixelImage, renderable.TGPImage):
        return False  # its other renderers draw with coloured characters: the system viewer does better
    with PILImage.open(path) as img:
        width, height = img.size
    cell = get_cell_size()
    # Native size, unless that is wider or taller than the terminal: then fitted, aspect kept.
    columns = max(1, min(console.width - 1, math.ceil(width / cell.width)))
    rows = max(1, round(columns * cell.width * height / width / cell.height))
    max_rows = max(8, console.height - 2)
    if rows > max_rows:
        rows = max_rows
        columns = max(1, round(rows * cell.height * width / height / cell.width))
    image = renderable.Image(path, width=columns, height=rows)
    # Rendered in full before anything is printed, so a failure half-way prints nothing.
    from rich.segment import Segments

    segments = list(console.render(image, console.options.update(width=columns, height=rows)))
    console.print(Segments(segments))
    return True
