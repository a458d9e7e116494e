"""The errors the library raises: typed, so that each face (the command line, the prompt, the
web page) can say them in its own words.

Every one is a ClipsearchError, whose message (str) is plain and fit to show as it is; the
fields say what went wrong for a face that words it otherwise (cli.py, prompt.py and
web/app.py each have a `phrase`). Anything else that escapes is a bug.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class ClipsearchError(Exception):
    """A problem the user can act on; its message is shown as it is, without a traceback."""


class LibraryBusy(ClipsearchError):
    """Another process holds the library's write lock."""


class NotIndexed(ClipsearchError):
    """The library has nothing to work with yet: no catalog (`what` "empty"), no vectors
    ("vectors"), or no folders ("folders"). The faces add how to crawl."""

    def __init__(self, home: Path | None, what: str = "empty"):
        self.home, self.what = home, what
        where = f"the library at {home}" if home else "this library"
        super().__init__({"empty": f"{where} is empty", "vectors": "nothing indexed yet",
                          "folders": "no folders in this library yet"}[what])


class NothingToSearch(ClipsearchError):
    """A search with neither words nor an image."""

    def __init__(self) -> None:
        super().__init__("nothing to search for: give words or an image")


class BadArgument(ClipsearchError):
    """An argument out of its range or of the wrong kind: `name` as the library's methods
    call it (k, threshold, format ...), `value` as given, `rule` what it must be."""

    def __init__(self, name: str, value: Any, rule: str):
        self.name, self.value, self.rule = name, value, rule
        super().__init__(f"{name} {rule}" if value is None else f"{name} {value!r}: {rule}")


class NotFound(ClipsearchError):
    """A file or photo named by the user is not there (any more)."""


class ModelMismatch(ClipsearchError):
    """A model asked for is not the one the library's photos were embedded with."""

    def __init__(self, current: str, wanted: str, asked: str):
        self.current, self.wanted = current, wanted
        super().__init__(
            f"this library's photos were embedded with model {current}, not {wanted}. "
            f"Keep one library per model: use another home (--home DIR or CLIPSEARCH_HOME) for {wanted}, "
            f"or switch this one with `clipsearch reembed --model {asked}` (embeds every photo again)")


class ModelChanged(ClipsearchError):
    """The weights behind the library's model name are not the ones its vectors were made with."""

    def __init__(self, spec: str, recorded: str, now: str, what: str):
        self.spec, self.recorded, self.now = spec, recorded, now
        super().__init__(
            f"this library's photos were embedded with model {spec}, but {what} has changed since "
            f"(weights {recorded[:12]} then, {now[:12]} now): vectors of the two cannot be searched together. "
            f"Run `clipsearch reembed --model {spec}` to embed every photo again with the new weights, "
            "or put the old file back")


class StorageFault(ClipsearchError):
    """The library's storage failed: the catalog is damaged, the folder read-only, the disk full."""


class CatalogDamaged(StorageFault):
    """catalog.db cannot be read as a database: `clipsearch repair` recovers what it can."""


class LibraryReadOnly(StorageFault):
    """The library folder cannot be written: searches work, crawls and rebuilds do not."""


class DiskFull(StorageFault):
    """No space left where the library lives."""


class DaemonError(ClipsearchError):
    """The watch daemon could not take or finish a request handed to it."""


class QueryError(ClipsearchError):
    """A query that cannot be parsed; the message names the part that is wrong."""
