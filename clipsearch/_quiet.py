"""Image libraries' chatter goes to the log, not the terminal, while a crawl decodes.

Three kinds reach a user's terminal during a crawl of odd files: C libraries writing to
file descriptor 2 (libtiff's errors: "TIFFFetchNormalTag: ..."), Python warnings (Pillow's
"Corrupt EXIF data"), and Pillow's own loggers. `decoder_chatter_to_log` routes all three
to the clipsearch log and counts them, so the crawl can say "N decoder messages, in the
log" in one line. Python output (progress bars, messages) still reaches the terminal.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
import warnings
from contextlib import contextmanager
from typing import Iterator

log = logging.getLogger("clipsearch")
_lock = threading.Lock()
_active = 0  # nested or concurrent crawls in one process share one redirection


class Chatter:
    """How many messages the image libraries sent to the log."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def add(self, text: str) -> None:
        with self._lock:
            self.count += 1
        log.warning("decoder: %s", text)


class _ToChatter(logging.Handler):
    def __init__(self, chatter: Chatter):
        super().__init__(logging.DEBUG)
        self.chatter = chatter

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.chatter.add(f"{record.name}: {record.getMessage()}")
        except Exception:  # noqa: BLE001 - logging must never fail a crawl
            pass


@contextmanager
def decoder_chatter_to_log() -> Iterator[Chatter]:
    global _active
    chatter = Chatter()
    pil = logging.getLogger("PIL")
    handler = _ToChatter(chatter)
    saved_propagate = pil.propagate
    pil.addHandler(handler)
    pil.propagate = False
    with _lock:
        first = _active == 0
        _active += 1
    redirect = _Fd2Redirect(chatter) if first else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.simplefilter("ignore", DeprecationWarning)  # for developers, not about photos
            warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: \
                chatter.add(f"{category.__name__}: {message}")
            yield chatter
    finally:
        if redirect is not None:
            redirect.close()
        with _lock:
            _active -= 1
        pil.removeHandler(handler)
        pil.propagate = saved_propagate


class _Fd2Redirect:
    """Point file descriptor 2 at a pipe whose lines become log messages; Python's own
    sys.stderr (if it is descriptor 2) keeps writing to the terminal through a copy."""

    def __init__(self, chatter: Chatter):
        self.chatter = chatter
        self.saved_fd: int | None = None
        self.saved_stderr = None
        try:
            sys.stderr.flush()
            python_uses_fd2 = sys.stderr.fileno() == 2
        except (AttributeError, OSError, ValueError):
            python_uses_fd2 = False  # captured (tests, click's runner): it does not write to fd 2
        try:
            self.saved_fd = os.dup(2)
            read_end, write_end = os.pipe()
            os.dup2(write_end, 2)
            os.close(write_end)
        except OSError:
            self.saved_fd = None
            return
        if python_uses_fd2:
            self.saved_stderr = sys.stderr
            sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(self.saved_fd), "wb", buffering=0),
                                          encoding=self.saved_stderr.encoding, errors="replace",
                                          line_buffering=True, write_through=True)
        self.reader = threading.Thread(target=self._read, args=(read_end,), name="clipsearch-chatter", daemon=True)
        self.reader.start()

    def _read(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as pipe:
            for line in pipe:  # ends when the last writer (descriptor 2) is restored
                text = line.decode("utf-8", "replace").rstrip()
                if text:
                    self.chatter.add(text)

    def close(self) -> None:
        if self.saved_fd is None:
            return
        if self.saved_stderr is not None:
            replacement, sys.stderr = sys.stderr, self.saved_stderr
            replacement.close()
        os.dup2(self.saved_fd, 2)  # closes the pipe's write end: the reader sees its end
        os.close(self.saved_fd)
        self.reader.join(timeout=5)
