"""Thumbnails for the gallery: made on demand, cached on disk by content hash.

A thumbnail is the photo decoded as the crawl decodes it (JPEG draft, EXIF orientation, the
pixel limit: decode.load_thumbnail), fitted into a square of one of a few sizes and saved as
JPEG under HOME/thumbs/<2 hex>/<hash>-<size>.jpg. The same bytes under two names share one
thumbnail; a changed file has a new hash and so a new thumbnail. The folder is kept under a
size cap: when a write takes it over, the least recently used files go first (a hit touches
its file).
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

from .._files import write_whole
from ..ingest.decode import DecodeError, MemoryBudget, load_thumbnail

SIZES = (256, 1024)  # the grid's, the large view's
CAP_BYTES = 256 << 20
_BUDGET = MemoryBudget(256 << 20)  # decodes side by side in the server's threads


class Thumbnails:
    def __init__(self, folder: Path, max_pixels: int, cap_bytes: int = CAP_BYTES):
        self.folder = folder
        self.max_pixels = max_pixels
        self.cap_bytes = cap_bytes
        self._lock = threading.Lock()
        self._bytes: int | None = None  # the folder's size, counted on the first write
        self.made = 0

    def path_for(self, content_hash: str | None, path: str, size: int) -> Path:
        key = content_hash or hashlib.blake2b(os.fsencode(path), digest_size=16).hexdigest()
        return self.folder / key[:2] / f"{key}-{size}.jpg"

    def jpeg(self, content_hash: str | None, path: str, size: int) -> bytes:
        """The thumbnail's bytes: from the cache, else made now and cached if the cache can be
        written (a read-only or full library folder still gets thumbnails). Raises DecodeError."""
        if size not in SIZES:
            raise DecodeError(f"no thumbnails of {size} px (only {', '.join(map(str, SIZES))})")
        target = self.path_for(content_hash, path, size)
        try:
            data = target.read_bytes()
            os.utime(target)
            return data
        except OSError:
            pass
        data = self._make(path, size)
        try:
            self._save(data, target)
        except OSError:
            pass
        return data

    def _make(self, path: str, size: int) -> bytes:
        image = load_thumbnail(path, size, self.max_pixels, _BUDGET)
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85, optimize=True)
        self.made += 1
        return out.getvalue()

    def _save(self, data: bytes, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_whole(target, data, durable=False)  # a cache: one lost to a power cut is made again
        self._account(len(data), keep=target)

    def _account(self, added: int, keep: Path) -> None:
        with self._lock:
            if self._bytes is None:
                self._bytes = sum(p.stat().st_size for p in self.folder.glob("*/*.jpg"))
            else:
                self._bytes += added
            if self._bytes <= self.cap_bytes:
                return
            files = []
            for path in self.folder.glob("*/*.jpg"):
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                files.append((stat.st_mtime, stat.st_size, path))
            files.sort()
            total = sum(size for _, size, _ in files)
            for _, size, path in files:
                if total <= self.cap_bytes * 0.9:
                    break
                if path == keep:  # the one just asked for
                    continue
                path.unlink(missing_ok=True)
                total -= size
            self._bytes = total
