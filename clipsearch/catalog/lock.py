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


class WriteLock:
    """`with WriteLock(home):` holds the library's write lock or raises LibraryBusy."""

    def __init__(self, home: Path):
        self.path = Path(home) / "write.lock"
        self._fd: int | None = None

    def __enter__(self) -> "WriteLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            try:
                holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
            except OSError:  # Windows: the locked byte cannot be read either
                holder = "?"
            os.close(fd)
            raise LibraryBusy(f"the library at {self.path.parent} is busy: clipsearch process {holder} is "
                              "crawling or rebuilding it; wait for it to finish (searches still work meanwhile)")
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            _unlock(self._fd)
            os.close(self._fd)
            self._fd = None
