"""An exclusive, non-blocking lock on a file in the library home: one writer at a time.

The operating system releases it when the process dies, so a killed crawl never leaves
the library locked.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import LibraryBusy

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


DAEMON_PID_FILE = "watch.pid"  # written by the watch daemon (daemon/watcher.py), which holds the lock


def recorded_daemon_pid(home: Path) -> str | None:
    """The pid in the watch daemon's pid file, if there is one (it may be stale)."""
    try:
        return (Path(home) / DAEMON_PID_FILE).read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def is_held(home: Path) -> bool:
    """Whether some process holds the write lock now (taken and released at once if not)."""
    try:
        with WriteLock(home, quiet=True):
            return False
    except LibraryBusy:
        return True
    except OSError:  # a folder that cannot be written: no writer can be running there
        return False


class WriteLock:
    """`with WriteLock(home):` holds the library's write lock or raises LibraryBusy."""

    def __init__(self, home: Path, quiet: bool = False):
        self.path = Path(home) / "write.lock"
        self._fd: int | None = None
        self._quiet = quiet  # only to ask whether it is held: no pid written

    def __enter__(self) -> "WriteLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            try:
                holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
            except OSError:  # Windows: the locked byte cannot be read either
                holder = "?"
            os.close(fd)
            if self._quiet:
                raise LibraryBusy(holder)
            daemon = recorded_daemon_pid(self.path.parent)
            if daemon is not None and holder in (daemon, "?"):
                raise LibraryBusy(f"the watch daemon (process {daemon}) keeps the library at "
                                  f"{self.path.parent} current and is its one writer; stop it first with "
                                  "`clipsearch watch --stop` (searches work meanwhile)")
            raise LibraryBusy(f"the library at {self.path.parent} is busy: clipsearch process {holder} is "
                              "crawling or rebuilding it; wait for it to finish (searches still work meanwhile)")
        if not self._quiet:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            _unlock(self._fd)
            os.close(self._fd)
            self._fd = None
