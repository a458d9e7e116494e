"""Writing a file whole or not at all: a temporary file beside it, renamed over it at the end."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from .errors import ClipsearchError


@contextmanager
def replaced(path: str | os.PathLike, mode: str = "wb", **open_args) -> Iterator[IO]:
    """Open a temporary file in path's folder; on a clean exit it is flushed to disk and renamed
    to path (replacing what was there), on any error or Ctrl-C it is removed: a reader never
    sees half a file, and an old file is kept until the new one is whole. A failure to write
    (a folder that cannot be written, a full disk, a file held open by another program)
    becomes a ClipsearchError naming path."""
    path = Path(path)
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise ClipsearchError(f"{path} cannot be written: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, mode, **open_args) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, 0o666 & ~umask())  # mkstemp's 0600 is for secrets, not for results
        os.replace(temp, path)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise ClipsearchError(f"{path} could not be written: {exc.strerror or exc}; nothing was changed") from None
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
