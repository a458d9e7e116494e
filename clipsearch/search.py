"""Retrieval: from a query vector to the k best live photos (the planner's candidates).

The forest answers for the rows it was built over; rows written since (new, changed,
restored, deleted) are known by their write sequence: the searchable ones are scored
exactly, the rest are dropped from the forest's answer. If that leaves fewer than k while
the catalog has k live photos, the whole catalog is scored exactly, so a search always
returns min(k, live photos) results.

A filtered search returns k results whenever k photos pass the filter, however rare
they are. The catalog lists them first (an index holds every filtered column): up to
EXACT_ROWS of them are scored exactly, which is cheaper than any forest walk at that
size; more are found by asking the forest for enough candidates that k pass (k divided
by the share that passes, twice over), widening until k do.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .catalog.store import Store
from .index import Forest, exact_top
from .records import SearchResult

if TYPE_CHECKING:
    from .records import Filters

EXACT_ROWS = 20_000  # filtered searches score up to this many matching photos exactly


def candidates(store: Store, forest: Forest | None, query: np.ndarray, want: int, dim: int,
               exact: bool = False, filters: Filters | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The `want` best live photos for an L2-normalised query vector among those that pass
    filters, best first: (ids, cosine similarities)."""
    if want <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    query = np.asarray(query, dtype=np.float32).reshape(-1)
    if filters:
        return _filtered(store, None if exact else forest, query, want, dim, filters)
    if exact or forest is None:
        return _exact(store.iter_live_vectors(dim), query, want)
    ids, scores = _forest_and_fresh(store, forest, query, want, dim)
    if len(ids) < want and store.live_count() > len(ids):
        ids, scores = _exact(store.iter_live_vectors(dim), query, want)
    return ids, scores


def camera_name(extra: dict) -> str | None:
    """"Canon EOS 5D" from EXIF make and model (the make once, where the model repeats it)."""
    make, model = extra.get("camera_make"), extra.get("camera_model")
    if make and model and model.lower().startswith(make.split()[0].lower()):
        return model
    return " ".join(p for p in (make, model) if p) or None


def gps_of(extra: dict) -> tuple[float, float] | None:
    lat, lon = extra.get("gps_lat"), extra.get("gps_lon")
    return (lat, lon) if lat is not None and lon is not None else None


def results_for(store: Store, ids, scores, first_rank: int = 1) -> list[SearchResult]:
    """SearchResults for file ids and their scores (None: no score), in the order given."""
    ids = [int(i) for i in ids]
    rows = store.rows(ids)
    texts, places = store.texts(ids), store.places_of(ids)
    results: list[SearchResult] = []
    for file_id, score in zip(ids, scores):
        row = rows.get(file_id)
        if row is None or row.status != "live":
            continue  # changed between the two reads (a crawl is writing)
        results.append(SearchResult(first_rank + len(results), round(float(score), 6) if score is not None else None,
                                    file_id, row.path, row.size, row.mtime_ns, row.taken_at, row.width, row.height,
                                    row.format, camera_name(row.extra), gps_of(row.extra), row.remote,
                                    places.get(file_id), texts.get(file_id)))
    return results


def _filtered(store: Store, forest: Forest | None, query: np.ndarray, want: int, dim: int, filters: Filters):
    matching_ids = store.matching_ids(filters)
    matching = len(matching_ids)
    if matching == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    if forest is None or matching <= EXACT_ROWS:
        return _exact(store.iter_vectors(matching_ids, dim), query, want)
    changed, fresh_ids, fresh_vectors = store.changed_since(forest.manifest.built_seq, dim)
    if len(fresh_ids):
        passing = store.passing(fresh_ids.tolist(), filters)
        keep = np.fromiter((i in passing for i in fresh_ids.tolist()), dtype=bool, count=len(fresh_ids))
        fresh_ids, fresh_vectors = fresh_ids[keep], fresh_vectors[keep]
    fresh_top_ids, fresh_top_scores = exact_top(fresh_ids, fresh_vectors, query, want)
    share = matching / max(store.live_count(), 1)
    ask = math.ceil(2 * want / share) + len(changed)
    while True:
        forest_ids, forest_scores = forest.query(query, ask)
        passing = store.passing(forest_ids.tolist(), filters)
        keep = np.fromiter((i in passing and i not in changed for i in forest_ids.tolist()), dtype=bool,
                           count=len(forest_ids))
        ids = np.concatenate([forest_ids[keep], fresh_top_ids])
        scores = np.concatenate([forest_scores[keep], fresh_top_scores])
        if len(ids) >= want or len(forest_ids) < ask:
            break
        ask *= 4
    if len(ids) < min(want, matching):  # the forest missed some: score every match
        return _exact(store.iter_vectors(matching_ids, dim), query, want)
    order = np.argsort(-scores, kind="stable")[:want]
    return ids[order], scores[order]


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


def exact_many(chunks, queries: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The k best (ids, scores) for each row of queries (L2-normalised), scoring every vector
    of the (ids, vectors) chunks once for all of them: one pass over the catalog per batch."""
    queries = np.asarray(queries, dtype=np.float32)
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    best_scores = np.zeros((len(queries), 0), dtype=np.float32)
    for ids, vectors in chunks:
        if not len(ids):
            continue
        scores = queries @ vectors.T  # queries x chunk
        top = min(k, scores.shape[1])
        part = np.argpartition(-scores, top - 1, axis=1)[:, :top]
        best_ids, best_scores = _keep_best(best_ids, best_scores, ids[part],
                                           np.take_along_axis(scores, part, axis=1), k)
    return list(zip(best_ids, best_scores))


def _keep_best(best_ids: np.ndarray, best_scores: np.ndarray, ids: np.ndarray, scores: np.ndarray,
               k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of what was kept and a chunk's candidates, best first (along the last
    axis: one query's 1-D arrays, or one row per query); earlier ones win ties."""
    ids = np.concatenate([best_ids, ids], axis=-1)
    scores = np.concatenate([best_scores, scores], axis=-1)
    order = np.argsort(-scores, axis=-1, kind="stable")[..., :k]
    return np.take_along_axis(ids, order, axis=-1), np.take_along_axis(scores, order, axis=-1)


EXACT_PAIRS = 50_000  # without a usable index, near duplicates are looked for by scoring every pair up to this


def near_pairs(store: Store, forest: Forest | None, dim: int, threshold: float,
               on_progress=None) -> list[tuple[int, int, float]]:
    """(file id, file id, cosine) of the searchable photos at least `threshold` alike, each
    pair once: the forest's items through the forest, rows written since its build (all rows,
    without a forest) scored exactly against every searchable photo."""
    from .errors import ClipsearchError

    pairs: dict[tuple[int, int], float] = {}
    if forest is not None:
        changed, fresh_ids, fresh_vectors = store.changed_since(forest.manifest.built_seq, dim)
        for a, b, score in forest.near_pairs(threshold, on_progress=on_progress):
            if a not in changed and b not in changed:
                pairs[(a, b)] = score
    else:
        if store.live_count() > EXACT_PAIRS:
            raise ClipsearchError("looking for near duplicates needs the search index: run `clipsearch rebuild`")
        chunks = list(store.iter_live_vectors(dim))
        fresh_ids = np.concatenate([c[0] for c in chunks]) if chunks else np.zeros(0, dtype=np.int64)
        fresh_vectors = np.concatenate([c[1] for c in chunks]) if chunks else np.zeros((0, dim), dtype=np.float32)
    if len(fresh_ids):
        # One pass over the catalog, each chunk scored against the fresh rows 1,000 at a time.
        for ids, vectors in store.iter_live_vectors(dim):
            for start in range(0, len(fresh_ids), 1000):
                some_ids = fresh_ids[start:start + 1000]
                scores = fresh_vectors[start:start + 1000] @ vectors.T
                for row, column in zip(*(part.tolist() for part in np.nonzero(scores >= threshold))):
                    a, b = int(some_ids[row]), int(ids[column])
                    if a != b:
                        pairs[(min(a, b), max(a, b))] = float(scores[row, column])
    return [(a, b, score) for (a, b), score in pairs.items()]


def _exact(chunks, query: np.ndarray, k: int):
    """The k best of (ids, vectors) chunks, scored exactly."""
    best_ids = np.zeros(0, dtype=np.int64)
    best_scores = np.zeros(0, dtype=np.float32)
    for ids, vectors in chunks:
        best_ids, best_scores = _keep_best(best_ids, best_scores, *exact_top(ids, vectors, query, k), k)
    return best_ids, best_scores
