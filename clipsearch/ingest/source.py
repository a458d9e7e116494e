"""Crawl sources: which files a crawl looks at, and what they vouch for.

    Walk    a full walk of a root's folder (or of a folder inside it): the files found are
            checked, and catalogued files under that folder that it did not see are marked
            deleted (except under folders it could not list). Only a walk may do that.
    Listed  just these files of a root (the watch daemon's changes, an import's): each is
            checked; nothing else is looked at, and nothing is marked deleted.

The Writer chooses the sources (`clipsearch crawl`, the daemon's batches, a catch-up after
an outage) and hands them, with a decoding plan, to whatever runs decode and embed: the
local Pipeline today, a cluster's executor tomorrow. The change check, the catalog and the
forest stay with the Writer either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Union

from ..paths import PathRule
from ..records import FileRecord, KnownFile, WalkProblem
from .scan import ScanRules, walk

if TYPE_CHECKING:
    from ..catalog.store import Store


@dataclass(frozen=True)
class Walk:
    root_id: int
    folder: str
    rules: ScanRules
    whole_root: bool = True  # the root's own folder: the crawl then vouches for all of the root

    vouches = True  # unseen files under `folder` are gone

    def files(self) -> Iterator[FileRecord | WalkProblem]:
        return walk(self.folder, self.root_id, self.rules)

    def known(self, store: Store, rule: PathRule) -> dict[str, KnownFile]:
        """What the catalog knows of the files this walk may find, by path key."""
        return store.known_files(self.root_id, None if self.whole_root else self.folder, rule)

    def key(self, rule: PathRule) -> Callable[[str], str]:
        return rule.key  # a file renamed only in case is the same file where case is ignored


@dataclass(frozen=True)
class Listed:
    root_id: int
    folder: str
    rules: ScanRules
    records: tuple[FileRecord, ...] = ()

    whole_root = False
    vouches = False  # a list of changes says nothing of the files it does not name

    def files(self) -> Iterator[FileRecord | WalkProblem]:
        return iter(self.records)

    def known(self, store: Store, rule: PathRule) -> dict[str, KnownFile]:
        return store.known_paths([record.path for record in self.records])

    def key(self, rule: PathRule) -> Callable[[str], str]:
        return _exact  # the paths as the events named them


def _exact(path: str) -> str:
    return path


Source = Union[Walk, Listed]
