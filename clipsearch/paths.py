"""Paths as they enter the library, and the file system's case rule.

On Windows and (by default) macOS, `D:/Photos` and `d:/photos` name one folder, and a file
renamed only in case is the same file. The library stores each path as the file system
spells it, and compares paths through a PathRule: a key that folds case where the file
system does. Tests inject the rule (the `path_case` setting) to check the logic on Linux.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

CASES = ("auto", "sensitive", "insensitive")


@dataclass(frozen=True)
class PathRule:
    case_sensitive: bool = True

    @classmethod
    def for_setting(cls, value: str = "auto") -> "PathRule":
        """The rule of `path_case`: auto is the platform's default (Windows and macOS fold case)."""
        if value == "auto":
            return cls(not (sys.platform == "win32" or sys.platform == "darwin"))
        return cls(value == "sensitive")

    def key(self, path: str) -> str:
        """What two spellings of one path have in common under this rule."""
        return path if self.case_sensitive else path.casefold()

    def same(self, a: str, b: str) -> bool:
        return self.key(a) == self.key(b)

    def under(self, path: str, folder: str) -> bool:
        """True if path is folder itself or inside it."""
        return is_under(self.key(path), self.key(folder))

    def rebase(self, path: str, old: str, new: str) -> str:
        """path, which is under old, moved under new (the rest keeps its spelling)."""
        return new.rstrip("/\\") + path[len(old.rstrip("/\\")):]


EXACT_CASE = PathRule(case_sensitive=True)


def is_under(path: str, folder: str) -> bool:
    """True if path is folder itself or inside it (plain string test, both absolute)."""
    folder = folder.rstrip("/\\")
    return path == folder or (path.startswith(folder) and path[len(folder)] in "/\\")


def absolute(path: str | os.PathLike) -> str:
    """An absolute, normalised path with ~ expanded: the form every path enters the library in."""
    return os.path.abspath(os.path.expanduser(os.fspath(path)))
