"""`clipsearch tune`: a head trained on the library's own vectors of photos the user has
sorted into class folders (head.py), saved with the library and keyed to its model.

The backbone stays frozen: only a linear map with batch norm learns, on the CPU, in seconds
(1,000 photos of 512 dimensions: 0.6 s; docs/benchmarks.md). A share of each class is held
out; the head keeps the weights that rank the held-out photos best, and image queries use
it by default only where it beat the plain vectors there (planner.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from .errors import BadArgument, ClipsearchError
from .filetypes import format_for
from .records import TuneReport

if TYPE_CHECKING:
    from .catalog.store import Store
    from .policy import ModelPolicy

MIN_PER_CLASS = 3  # one held out, two to learn from


def labelled_photos(folder: str | os.PathLike) -> list[tuple[str, str]]:
    """(path, class) of the photos in folder's class subfolders (any depth below each).
    BadArgument for fewer than two classes, or a class of fewer than MIN_PER_CLASS photos."""
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise BadArgument("folder", str(folder), "is not a folder")
    photos: list[tuple[str, str]] = []
    small = []
    for label_folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = [str(p) for p in sorted(label_folder.rglob("*")) if p.is_file() and format_for(p.name) is not None]
        if len(found) < MIN_PER_CLASS:
            small.append(f"{label_folder.name} ({len(found)})")
        photos.extend((path, label_folder.name) for path in found)
    classes = {label for _, label in photos}
    if len(classes) < 2:
        raise BadArgument("folder", str(folder), "needs photos in at least two class subfolders "
                          "(dogs/rex/1.jpg, dogs/fido/2.jpg)")
    if small:
        raise BadArgument("folder", str(folder), f"needs at least {MIN_PER_CLASS} photos in each class folder; "
                          f"too few in: {', '.join(small)}")
    return photos


def tune(store: Store, policy: ModelPolicy, photos: Sequence[tuple[str, str]], path: Path, *, dim: int,
         share: float = 0.2, on_step: Callable[[int, int, float], None] | None = None) -> TuneReport:
    """Train a head on the vectors of photos (path, class) the catalog holds, save it at path."""
    from .head import split, train

    ids, labels, missing = [], [], 0
    for photo, label in photos:
        file_id = store.file_id(photo)
        if file_id is None:
            missing += 1
        else:
            ids.append(file_id)
            labels.append(label)
    found, vectors = store.vectors(ids, dim)
    keep = {int(i) for i in found}
    labels = [label for file_id, label in zip(ids, labels) if file_id in keep]
    missing += len(ids) - len(labels)
    if len(set(labels)) < 2:
        raise ClipsearchError("fewer than two classes of these photos have vectors in the library "
                              "(`clipsearch errors` lists photos that could not be read)")
    started = time.monotonic()
    train_at, held_at = split(labels, share)
    try:
        head = train(vectors[train_at], [labels[i] for i in train_at],
                     holdout=(vectors[held_at], [labels[i] for i in held_at]) if len(held_at) else None,
                     model=policy.identity(store), on_step=on_step)
    except ValueError as exc:
        raise ClipsearchError(f"the head cannot be trained on these photos: {exc}") from None
    head.save(path)
    return TuneReport(len(labels), len(set(labels)), len(held_at), missing, head.plain_map, head.holdout_map,
                      head.steps, time.monotonic() - started, str(path))

