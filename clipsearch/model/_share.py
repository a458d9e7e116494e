"""Model files made once per computer, not once per library.

A library exports its model's towers (the numpy text tower, the ONNX image tower) into
its own folder. A copy goes to the model cache, in a folder named by the model spec and
its weights' fingerprint, and the next library of the same model takes the towers from
there (hard links where the disk allows, else copies) instead of loading torch to make
them again.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from .._files import write_whole


def cache_folder(cache: str | os.PathLike, kind: str, spec: str, source: str) -> Path:
    key = hashlib.sha256(f"{spec}\n{source}".encode()).hexdigest()[:16]
    return Path(cache) / kind / key


def check_room(folder: Path, nbytes: int) -> None:
    """Raise OSError (no space) unless folder's disk has twice nbytes free: a tower is an
    optimisation and must not take the space the catalog needs."""
    free = shutil.disk_usage(folder).free
    if free < 2 * nbytes:
        raise OSError(errno.ENOSPC, f"{nbytes >> 20} MB needed and only {free >> 20} MB free, kept for the catalog",
                      str(folder))


def place(files: Sequence[Path], description: dict, description_name: str, folder: Path, prefix: str) -> None:
    """Put a tower into folder: its data files first, the description (what loaders read)
    last, then data files of older towers (named prefix*) are removed."""
    folder.mkdir(parents=True, exist_ok=True)
    names = {path.name for path in files}
    for path in files:
        target = folder / path.name
        if target.exists():
            continue
        temporary = folder / f"{path.name}.tmp"
        temporary.unlink(missing_ok=True)
        try:
            os.link(path, temporary)
        except OSError:
            shutil.copyfile(path, temporary)
        os.replace(temporary, target)
    write_whole(folder / description_name, json.dumps(description, indent=1))
    for old in folder.glob(f"{prefix}*"):
        if old.name not in names and old.name != description_name and not old.name.endswith((".tmp", ".part")):
            try:
                old.unlink()
            except OSError:
                pass  # open elsewhere (Windows): the next one removes it
