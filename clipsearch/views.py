"""Read models: what the catalog, the index and the daemon say, shaped for the faces.

Status, the folders and their rules, photos as a page shows them, failed files, and groups
of duplicates. Everything here reads; nothing writes.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable, Sequence

from .config import Settings
from .filetypes import MISSING
from .index import ForestDamaged, read_manifest
from .ingest.scan import rules_for
from .keeper import ForestKeeper, index_info
from .records import DuplicateGroup, FileRow, LibraryStatus, MissingReader, Photo, RootInfo
from .search import camera_name, gps_of, near_pairs

if TYPE_CHECKING:
    from .catalog.store import Store


def status(settings: Settings, store: Store | None, keeper: ForestKeeper) -> LibraryStatus:
    """Folders, counts, model, the index and its state, the daemon."""
    from .daemon.client import daemon_state

    problem = None
    try:
        manifest = read_manifest(settings.index_dir)
    except ForestDamaged as exc:
        manifest, problem = None, str(exc)
    if store is None:
        return LibraryStatus(settings.home, None, None, [], {}, index_info(manifest), 0, 0, problem)
    if manifest and manifest.forest:
        problem = keeper.problem(store, manifest)
    dim = store.get_meta("dim")
    built = manifest.built_seq if manifest and not problem else 0
    size = sum(p.stat().st_size for p in settings.home.glob("catalog.db*"))
    return LibraryStatus(settings.home, store.get_meta("model"), int(dim) if dim else None,
                         root_infos(settings, store), store.counts_by_status(), index_info(manifest),
                         store.count_changed_since(built), size, problem, daemon_state(settings.home),
                         missing_readers(store), store.place_counts(), store.text_counts(), settings.read_text)


def missing_readers(store: Store) -> list[MissingReader]:
    """Formats whose package this install lacks, with the files that failed for it."""
    found = []
    for kind, why in MISSING.items():
        count = store.failed_count(why)
        if count:
            found.append(MissingReader(kind, why, count))
    return found


def root_infos(settings: Settings, store: Store) -> list[RootInfo]:
    """The library's folders: their rules, whether they are there, their photo counts."""
    counts = store.root_counts()
    infos = []
    for root in store.roots():
        rules = rules_for(root, settings)
        infos.append(RootInfo(root.path, root.offline_since is None and os.path.isdir(root.path), root.offline_since,
                              counts.get(root.id, {}).get("live", 0), counts.get(root.id, {}).get("offline", 0),
                              tuple(root.exclude), tuple(sorted(rules.extensions)), rules.include_hidden,
                              rules.follow_symlinks, root.crawled_at))
    return infos


def photo(row: FileRow, place: str | None = None, text: str | None = None) -> Photo:
    return Photo(row.id, row.path, row.size, row.width, row.height, row.format, row.taken_at, camera_name(row.extra),
                 gps_of(row.extra), row.hash, row.mtime_ns, row.remote, place, text)


def duplicates(store: Store, keeper: ForestKeeper, dim: int, threshold: float, near: bool,
               on_progress: Callable[[int, int], None] | None = None) -> list[DuplicateGroup]:
    """Groups of photos that are copies of one another, largest first: the same bytes (the
    content hash the crawl keeps) and, with `near`, vectors at least `threshold` alike
    (cosine), found through the index and joined transitively."""
    groups = _Groups()
    for ids in store.exact_duplicates():
        for other in ids[1:]:
            groups.join(ids[0], other, 1.0)
    if near:
        for a, b, score in near_pairs(store, keeper.current(store), dim, threshold, on_progress):
            groups.join(a, b, score)
    members = groups.groups()
    rows = store.rows([i for group in members for i in group])
    result = []
    for group in members:
        photos = [photo(rows[i]) for i in group if i in rows and rows[i].status == "live"]
        if len(photos) < 2:
            continue
        hashes = {p.hash for p in photos}
        exact = len(hashes) == 1 and None not in hashes
        result.append(DuplicateGroup(exact, 1.0 if exact else groups.weakest(group), photos))
    result.sort(key=lambda g: (-len(g.photos), not g.exact, g.photos[0].path))
    return result


class _Groups:
    """Union-find over photo ids: pairs joined become groups (transitively)."""

    def __init__(self) -> None:
        self._parent: dict[int, int] = {}
        self._weakest: dict[int, float] = {}  # by root: the lowest score that joined the group

    def _root(self, item: int) -> int:
        parent = self._parent.setdefault(item, item)
        while parent != self._parent[parent]:
            self._parent[parent] = self._parent[self._parent[parent]]
            parent = self._parent[parent]
        return parent

    def join(self, a: int, b: int, score: float) -> None:
        ra, rb = self._root(a), self._root(b)
        weakest = min(score, self._weakest.get(ra, 1.0), self._weakest.get(rb, 1.0))
        if ra != rb:
            self._parent[rb] = ra
            self._weakest.pop(rb, None)
        self._weakest[ra] = weakest

    def groups(self) -> list[list[int]]:
        found: dict[int, list[int]] = {}
        for item in self._parent:
            found.setdefault(self._root(item), []).append(item)
        return [sorted(g) for g in found.values() if len(g) > 1]

    def weakest(self, group: Sequence[int]) -> float:
        return self._weakest.get(self._root(group[0]), 1.0)
