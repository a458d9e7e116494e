"""Writing a file whole or not at all: a temporary file beside it, renamed over it at the end.

One helper for every file clipsearch writes that someone may read while it is written: a
user's output (batch results, exports, contact sheets) and the library's own files (the
index manifest and its ids, the towers' descriptions, the daemon's state, thumbnails). Two
error policies: a user's file fails as one ClipsearchError naming it ("nothing was
changed"); the library's own files let the OSError through, so that catalog/faults.py words
it like every other storage failure (a full disk, a read-only folder).
"""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from .errors import ClipsearchError

USER, OWN = "user", "own"  # whose file it is: how its failures are reported


@contextmanager
def replaced(path: str | os.PathLike, mode: str = "wb", *, policy: str = USER, durable: bool = True,
             **open_args) -> Iterator[IO]:
    """Open a temporary file in path's folder; on a clean exit it is flushed (to disk, if
    `durable`) and renamed to path, replacing what was there; on any error or Ctrl-C it is
    removed. A reader never sees half a file, and an old file is kept until the new one is
    whole. The file gets the permissions the umask gives (not mkstemp's private 0600)."""
    path = Path(path)
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        if policy == OWN:
            raise
        raise ClipsearchError(f"{path} cannot be written: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, mode, **open_args) as file:
            yield file
            file.flush()
            if durable:
                os.fsync(file.fileno())
        os.chmod(temp, 0o666 & ~umask())
        os.replace(temp, path)
        if durable:
            _sync_folder(path.parent)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        if policy == OWN:
            raise
        raise ClipsearchError(f"{path} could not be written: {exc.strerror or exc}; nothing was changed") from None
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_whole(path: str | os.PathLike, data: bytes | str, *, policy: str = OWN, durable: bool = True) -> None:
    """Write data (text as UTF-8) to path through `replaced`."""
    with replaced(path, "wb", policy=policy, durable=durable) as file:
        file.write(data.encode("utf-8") if isinstance(data, str) else data)


def _sync_folder(folder: Path) -> None:
    """Make a rename in folder survive a power cut (POSIX; Windows has no folder handles)."""
    if sys.platform == "win32":  # pragma: no cover - Windows only
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse to sync a folder; the rename stands regardless
    finally:
        os.close(fd)


def umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
