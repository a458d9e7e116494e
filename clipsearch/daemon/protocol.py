"""The watch daemon's protocol: one dataclass per request and per answer, serialised here.

While the daemon runs it holds the write lock, so a command that writes (a crawl, an
import, `roots remove`) hands its work over: it writes a request to HOME/watch/requests/
and waits for the answer the daemon writes to HOME/watch/answers/ under the same name.
Both are JSON objects with a `kind` naming the dataclass; nothing else builds or reads them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Union

from ..errors import DaemonError
from ..records import CrawlSummary, ImportReport, WalkProblem


# --- requests ------------------------------------------------------------------------------
@dataclass(frozen=True)
class CrawlRequest:
    folders: tuple[str, ...] = ()  # absolute; none: every folder of the library
    model: str | None = None
    given: dict = field(default_factory=dict)  # scan flags given for the folders
    retry_failed: bool = False


@dataclass(frozen=True)
class ImportRequest:
    source: str
    paths: str | None = None
    model: str | None = None
    base: str | None = None
    overwrite: bool = False


@dataclass(frozen=True)
class RemoveRootRequest:
    folder: str


@dataclass(frozen=True)
class StopRequest:
    pass


Request = Union[CrawlRequest, ImportRequest, RemoveRootRequest, StopRequest]


# --- answers -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Crawled:
    stats: CrawlSummary
    rebuilt: bool


@dataclass(frozen=True)
class Imported:
    report: ImportReport  # its index is left out: the asker reads the manifest itself


@dataclass(frozen=True)
class RootRemoved:
    folder: str
    count: int


@dataclass(frozen=True)
class Refused:
    error: str  # why the daemon could not do it, in words for the user


Answer = Union[Crawled, Imported, RootRemoved, Refused]

_KINDS: dict[str, type] = {cls.__name__: cls for cls in (
    CrawlRequest, ImportRequest, RemoveRootRequest, StopRequest, Crawled, Imported, RootRemoved, Refused)}


def encode(message: Request | Answer) -> dict[str, Any]:
    """The JSON object of a request or an answer."""
    if type(message).__name__ not in _KINDS:
        raise TypeError(f"not a message of the daemon's protocol: {message!r}")
    if isinstance(message, Crawled):
        stats = dataclasses.asdict(message.stats)
        stats["problems"] = [[p.path, p.error] for p in message.stats.problems]
        return {"kind": "Crawled", "stats": stats, "rebuilt": message.rebuilt}
    if isinstance(message, Imported):
        report = dataclasses.asdict(message.report)
        report.pop("index", None)
        return {"kind": "Imported", "report": report}
    return {"kind": type(message).__name__, **dataclasses.asdict(message)}


def decode(data: Any) -> Request | Answer:
    """The request or answer a JSON object holds; DaemonError if it holds none."""
    try:
        kind = _KINDS[data["kind"]]
        fields = {k: v for k, v in data.items() if k != "kind"}
        if kind is Crawled:
            stats = dict(fields["stats"])
            stats["problems"] = tuple(WalkProblem(path, error) for path, error in stats["problems"])
            stats["offline"] = tuple(stats["offline"])
            return Crawled(CrawlSummary(**stats), bool(fields["rebuilt"]))
        if kind is Imported:
            return Imported(ImportReport(**fields["report"]))
        if kind is CrawlRequest:
            fields["folders"] = tuple(fields.get("folders") or ())
        return kind(**fields)
    except (KeyError, TypeError, ValueError) as exc:
        raise DaemonError(f"a message the watch daemon's protocol does not know ({type(exc).__name__}: {exc})") \
            from None


def decode_request(data: Any) -> Request:
    """The request a JSON object holds; DaemonError if it holds none."""
    message = decode(data)
    if not isinstance(message, (CrawlRequest, ImportRequest, RemoveRootRequest, StopRequest)):
        raise DaemonError(f"not a request: {data.get('kind')!r}")
    return message


def decode_answer(data: Any) -> Answer:
    """The answer a JSON object holds; DaemonError if it holds none."""
    message = decode(data)
    if not isinstance(message, (Crawled, Imported, RootRemoved, Refused)):
        raise DaemonError(f"not an answer: {data.get('kind')!r}")
    return message
