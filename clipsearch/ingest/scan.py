"""Walking photo folders: which files count as images, which folders are skipped.

A walk yields FileRecords for candidate image files (nothing is opened, only stat'ed) and
WalkProblems for folders that could not be listed, so that the caller never mistakes an
unreadable folder for one whose files were deleted.

Symbolic links, folders and files alike, are followed only where the folder's rules say so
(`follow_symlinks`): a link that leads out of the folder is then part of it, and the web
gallery serves what it leads to. A camera RAW file with a JPEG or HEIC of the same shot
beside it is left out unless `raw = "all"` (filetypes.raw_siblings).
"""

from __future__ import annotations

import fnmatch
import os
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

from ..filetypes import is_raw_name, raw_siblings
from ..records import FileRecord, Root, WalkProblem

if TYPE_CHECKING:
    from ..config import Settings


@dataclass(frozen=True)
class ScanRules:
    extensions: frozenset[str]
    exclude: tuple[str, ...] = ()
    include_hidden: bool = False
    follow_symlinks: bool = False
    raw: str = "unpaired"  # camera RAW files: "unpaired" (no JPEG/HEIC sibling) or "all"

    @classmethod
    def make(cls, extensions, exclude=(), include_hidden=False, follow_symlinks=False,
             raw: str = "unpaired") -> "ScanRules":
        return cls(frozenset(e.lower().lstrip(".") for e in extensions), tuple(exclude),
                   include_hidden, follow_symlinks, raw)

    def admits(self, path: str, root: str) -> bool:
        """True if a walk of root would index the file at path, judged by its path alone (the
        watch daemon asks this of every event): extension, temporary names, hidden parts,
        exclude patterns of the file and of every folder between it and root."""
        name = os.path.basename(path)
        if os.path.splitext(name)[1][1:].lower() not in self.extensions or is_temporary(name):
            return False
        if self.excluded(path):
            return False
        if not self.follow_symlinks and os.path.islink(path):
            return False
        if self.raw == "unpaired" and is_raw_name(name) and self.has_sibling(path):
            return False
        folder = os.path.dirname(path)
        parts = [name]
        while len(folder) > len(root.rstrip("/\\")) and folder != os.path.dirname(folder):
            if self.excluded(folder, is_dir=True):
                return False
            parts.append(os.path.basename(folder))
            folder = os.path.dirname(folder)
        return self.include_hidden or not any(part.startswith(".") for part in parts)

    @staticmethod
    def has_sibling(path: str) -> bool:
        """True if a JPEG or HEIC of the same shot as the RAW file at path is beside it."""
        folder, name = os.path.split(path)
        try:
            names = os.listdir(folder or ".")
        except OSError:
            return False
        return name in raw_siblings(names)

    def excluded(self, path: str, is_dir: bool = False) -> bool:
        """True if a glob pattern matches the path (with / separators; folders also with a trailing /)."""
        posix = path.replace(os.sep, "/")
        candidates = (posix, posix + "/") if is_dir else (posix,)
        return any(fnmatch.fnmatch(c, pattern) for pattern in self.exclude for c in candidates)


def rules_for(root: Root, settings: Settings, given: dict | None = None) -> ScanRules:
    """Scan rules for a root: a crawl's flags (`given`), else the root's remembered ones, else
    the settings."""
    given = given or {}

    def pick(name):
        return given.get(name, root.options.get(name, getattr(settings, name)))

    exclude = given.get("exclude", root.exclude)
    return ScanRules.make(pick("extensions"), (*settings.exclude, *exclude), pick("include_hidden"),
                          pick("follow_symlinks"), settings.raw)


# Files still being written by a download or a copy, and Office's lock files: never indexed.
_TEMPORARY_SUFFIXES = (".part", ".partial", ".crdownload", ".download", ".tmp", ".temp", ".!qb")


def is_temporary(name: str) -> bool:
    lower = name.lower()
    return lower.startswith("~$") or lower.endswith(_TEMPORARY_SUFFIXES)


def _is_hidden(entry: os.DirEntry) -> bool:
    if entry.name.startswith("."):
        return True
    attributes = getattr(entry.stat(follow_symlinks=False), "st_file_attributes", 0)
    return bool(attributes & getattr(stat, "FILE_ATTRIBUTE_HIDDEN", 0))


def valid_name(path: str) -> bool:
    # On POSIX, names that are not valid UTF-8 come back with surrogate escapes; SQLite
    # cannot store them as text, so such files are reported rather than silently dropped.
    try:
        path.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def walk(root: str, root_id: int, rules: ScanRules) -> Iterator[FileRecord | WalkProblem]:
    """Yield image files under root, depth first; never follows a folder symlink loop."""
    stack = [root]
    seen_dirs: set[tuple[int, int]] = set()
    try:
        st = os.stat(root)
        seen_dirs.add((st.st_dev, st.st_ino))
    except OSError as exc:
        yield WalkProblem(root, exc.strerror or str(exc))
        return
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except OSError as exc:
            yield WalkProblem(folder, exc.strerror or str(exc))
            continue
        subfolders = []
        paired = raw_siblings(e.name for e in entries) if rules.raw == "unpaired" else {}
        for entry in entries:
            try:
                if not rules.include_hidden and _is_hidden(entry):
                    continue
                if entry.is_dir(follow_symlinks=rules.follow_symlinks):
                    if rules.excluded(entry.path, is_dir=True):
                        continue
                    if entry.is_symlink():
                        target = os.stat(entry.path)
                        key = (target.st_dev, target.st_ino)
                    else:
                        info = entry.stat(follow_symlinks=False)
                        key = (info.st_dev, info.st_ino)
                    if key in seen_dirs:
                        continue
                    seen_dirs.add(key)
                    subfolders.append(entry.path)
                    continue
                extension = os.path.splitext(entry.name)[1][1:].lower()
                if extension not in rules.extensions or is_temporary(entry.name) or entry.name in paired:
                    continue
                if not entry.is_file() or (entry.is_symlink() and not rules.follow_symlinks):
                    continue
                if rules.excluded(entry.path):
                    continue
                if not valid_name(entry.path):
                    yield WalkProblem(entry.path.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                                      "file name is not valid UTF-8; rename it to index it")
                    continue
                info = entry.stat()
                yield FileRecord(entry.path, root_id, info.st_size, info.st_mtime_ns)
            except FileNotFoundError:
                continue  # vanished between listing and looking: it is simply not there
            except OSError as exc:
                yield WalkProblem(entry.path, exc.strerror or str(exc))
        # Reverse so that the walk visits folders in listing order.
        stack.extend(reversed(subfolders))
