"""Photos out as a ZIP: `images/` with the originals and `annotations/annotations.json`.

The ZIP is written as it is sent (no seeking: each entry's sizes follow it in a data
descriptor), one megabyte at a time, so a selection of gigabytes never sits in memory.
Photos are stored, not deflated: JPEG and friends are compressed already. The annotations
follow COCO's layout (info, images, annotations, categories, licenses), so a search
becomes a small data set: each image carries its original path, score, camera and place.
"""

from __future__ import annotations

import datetime
import json
import os
import posixpath
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from .. import __version__

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Exported:
    """A photo to export: what the catalog knows of it and its score in the search."""

    id: int
    path: str
    width: int | None
    height: int | None
    taken_at: str | None
    camera: str | None
    gps: tuple[float, float] | None
    score: float | None = None
    shown: str | None = None  # the path as the catalog has it, where `path` is its real path


class _Sink:
    """The ZIP's output: what zipfile writes is kept until taken (no seek: a stream)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._offset = 0

    def write(self, data) -> int:
        self._parts.append(bytes(data))
        self._offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self._offset

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


def unique_names(paths: Sequence[str]) -> list[str]:
    """File names for paths, made unique by a -2, -3 ... before the extension."""
    seen: set[str] = set()
    counters: dict[str, int] = {}
    names = []
    for path in paths:
        base = os.path.basename(path) or "photo"
        stem, ext = os.path.splitext(base)
        name, n = base, counters.get(base.lower(), 1)
        while name.lower() in seen:
            n += 1
            name = f"{stem}-{n}{ext}"
        counters[base.lower()] = n
        seen.add(name.lower())
        names.append(name)
    return names


def coco_annotations(photos: Sequence[Exported], names: Sequence[str], query: str | None, model: str | None,
                skipped: Sequence[str] = ()) -> dict:
    now = datetime.datetime.now().astimezone()
    images = []
    for number, (photo, name) in enumerate(zip(photos, names), start=1):
        entry: dict = {"id": number, "file_name": posixpath.join("images", name), "width": photo.width,
                       "height": photo.height, "date_captured": photo.taken_at, "path": photo.shown or photo.path,
                       "score": photo.score, "camera": photo.camera, "clipsearch_id": photo.id}
        if photo.gps is not None:
            entry["gps"] = {"latitude": photo.gps[0], "longitude": photo.gps[1]}
        images.append(entry)
    info: dict[str, object] = {"description": f"clipsearch: {query}" if query else "clipsearch export", "query": query,
            "model": model, "date_created": now.isoformat(timespec="seconds"), "year": now.year,
            "version": f"clipsearch {__version__}"}
    if skipped:
        info["skipped"] = list(skipped)
    return {"info": info, "licenses": [], "images": images, "annotations": [], "categories": []}


def zip_stream(photos: Sequence[Exported], query: str | None, model: str | None,
               opener: Callable[[str], BinaryIO | None] | None = None) -> Iterator[bytes]:
    """The ZIP's bytes, a piece at a time. A photo that cannot be read now (moved, deleted
    since the search; `opener` returning None) is left out and named in info.skipped."""
    sink = _Sink()
    kept: list[Exported] = []
    names: list[str] = []
    skipped: list[str] = []
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:  # type: ignore[call-overload]
        for photo, name in zip(photos, unique_names([p.shown or p.path for p in photos])):
            source = _open(photo.path) if opener is None else opener(photo.path)
            if source is None:
                skipped.append(photo.shown or photo.path)
                continue
            with source:
                stat = os.fstat(source.fileno())
                stamp = min(max(stat.st_mtime, _ZIP_FIRST), _ZIP_LAST)  # what a ZIP's dates can say
                entry = zipfile.ZipInfo(posixpath.join("images", name),
                                        date_time=datetime.datetime.fromtimestamp(stamp).timetuple()[:6])
                entry.file_size = stat.st_size  # zip64 headers where a photo needs them
                with archive.open(entry, "w") as target:
                    while chunk := source.read(_CHUNK):
                        target.write(chunk)
                        yield sink.take()
            kept.append(photo)
            names.append(name)
            yield sink.take()
        document = coco_annotations(kept, names, query, model, skipped)
        archive.writestr("annotations/annotations.json", json.dumps(document, indent=1, ensure_ascii=False))
    yield sink.take()


_ZIP_FIRST = datetime.datetime(1980, 1, 2).timestamp()
_ZIP_LAST = datetime.datetime(2107, 12, 30).timestamp()


def _open(path: str) -> BinaryIO | None:
    try:
        return open(path, "rb")
    except OSError:
        return None
