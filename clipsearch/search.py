"""Ranking: from a query vector to the k best live photos.

The forest answers for the rows it was built over; rows written since (new, changed,
restored, deleted) are known by their write sequence: the searchable ones are scored
exactly, the rest are dropped from the forest's answer. If that leaves fewer than k while
the catalog has k live photos, the whole catalog is scored exactly, so a search always
returns min(k, live photos) results.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .catalog.store import Store
from .index import Forest, exact_top


@dataclass(frozen=True)
class SearchResult:
    rank: int
    score: float
    file_id: int
    path: str
    size: int | None
    mtime_ns: int | None
    taken_at: str | None
    width: int | None
    height: int | None
    format: str | None


def rank(store: Store, forest: Forest | None, query: np.ndarray, k: int, dim: int,
         exact: bool = False) -> list[SearchResult]:
    """The k best live photos for an L2-normalised query vector, best first."""
    if k <= 0:
        return []
    query = np.asarray(query, dtype=np.float32).reshape(-1)
    if exact or forest is None:
        ids, scores = _exact_all(store, query, k, dim)
    else:
        ids, scores = _forest_and_fresh(store, forest, query, k, dim)
        if len(ids) < k and store.live_count() > len(ids):
            ids, scores = _exact_all(store, query, k, dim)
    rows = store.rows(ids.tolist())
    results: list[SearchResult] = []
    for file_id, score in zip(ids.tolist(), scores.tolist()):
        row = rows.get(file_id)
        if row is None or row.status != "live":
            continue  # changed between the two reads (a crawl is writing)
        results.append(SearchResult(len(results) + 1, round(float(score), 6), file_id, row.path, row.size,
                                    row.mtime_ns, row.taken_at, row.width, row.height, row.format))
    return results


def _forest_and_fresh(store: Store, forest: Forest, query: np.ndarray, k: int, dim: int):
    changed, fresh_ids, fresh_vectors = store.changed_since(forest.manifest.built_seq, dim)
    # Ask the forest for k more than the rows it may hold that are now stale.
    forest_ids, forest_scores = forest.query(query, k + len(changed))
    keep = np.fromiter((i not in changed for i in forest_ids.tolist()), dtype=bool, count=len(forest_ids))
    fresh_top_ids, fresh_top_scores = exact_top(fresh_ids, fresh_vectors, query, k)
    ids = np.concatenate([forest_ids[keep], fresh_top_ids])
    scores = np.concatenate([forest_scores[keep], fresh_top_scores])
    order = np.argsort(-scores, kind="stable")[:k]
    return ids[order], scores[order]


def _exact_all(store: Store, query: np.ndarray, k: int, dim: int):
    best_ids = np.zeros(0, dtype=np.int64)
    best_scores = np.zeros(0, dtype=np.float32)
    for ids, vectors in store.iter_live_vectors(dim):
        top_ids, top_scores = exact_top(ids, vectors, query, k)
        best_ids = np.concatenate([best_ids, top_ids])
        best_scores = np.concatenate([best_scores, top_scores])
        order = np.argsort(-best_scores, kind="stable")[:k]
        best_ids, best_scores = best_ids[order], best_scores[order]
    return best_ids, best_scores
