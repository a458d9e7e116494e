"""One place turns storage failures into messages a user can act on.

SQLite and the operating system report a damaged catalog, a read-only library folder and a
full disk in many ways (error codes, errno values, and a handful of texts). `storage_error`
maps each to one ClipsearchError with a one-line message; the caller logs the detail.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from pathlib import Path

from ..errors import CatalogDamaged, ClipsearchError, DiskFull, LibraryReadOnly

# SQLite's primary result codes (sqlite3.h); Python 3.11+ exposes them on the exception.
_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = \
    8, 10, 11, 13, 14, 26





def damaged_message(catalog: Path) -> str:
    return (f"the catalog at {catalog} is damaged: run `clipsearch repair` to recover what it can "
            "(see the README's troubleshooting)")


def read_only_message(home: Path) -> str:
    return (f"the library folder {home} is read-only: searches work, but crawl, rebuild and repair "
            "need to write there (mount it read-write, or use another --home)")


def disk_full_message(home: Path) -> str:
    return (f"no space left on the disk of {home}; the photos indexed so far are kept: "
            "free some space and crawl again")


def is_writable(folder: Path) -> bool:
    """True if files can be created in folder (or in the nearest existing folder above it)."""
    folder = Path(folder)
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return os.access(folder, os.W_OK)


def no_space_left(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free == 0
    except OSError:
        return False


def storage_error(exc: BaseException, home: Path) -> ClipsearchError | None:
    """The message for a storage failure met while using the library at home, or None if exc
    is not one (it is then a bug, and is left to raise as it is)."""
    home = Path(home)
    catalog = home / "catalog.db"
    if isinstance(exc, sqlite3.DatabaseError):
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        text = str(exc).lower()
        if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or "malformed" in text or "not a database" in text:
            return CatalogDamaged(damaged_message(catalog))
        if code == _SQLITE_FULL or "disk is full" in text:
            return DiskFull(disk_full_message(home))
        if code in (_SQLITE_READONLY, _SQLITE_CANTOPEN) or "readonly" in text or "unable to open" in text:
            if not is_writable(home):
                return LibraryReadOnly(read_only_message(home))
        if no_space_left(home):
            return DiskFull(disk_full_message(home))
        return ClipsearchError(f"could not use the catalog at {catalog}: {exc} (details in {home / 'clipsearch.log'})")
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            return DiskFull(disk_full_message(home))
        inside = exc.filename is not None and _is_inside(exc.filename, home)
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) and (inside or not is_writable(home)):
            return LibraryReadOnly(read_only_message(home))
        if inside:
            return ClipsearchError(f"could not use {exc.filename}: {exc.strerror or exc}")
    return None


def _is_inside(path: str | os.PathLike, folder: Path) -> bool:
    try:
        Path(os.path.abspath(path)).relative_to(os.path.abspath(folder))
        return True
    except ValueError:
        return False
