"""Retrieval metrics for `eval`: average precision, recall@k (hit rate), and their means over queries.

A ranking is judged as a list of booleans, best first: is the photo at this rank relevant to
the query? `evaluate()` builds those lists from labels (a photo is relevant when its label is
the query's) and returns a `Scores`. The query photo itself must not be in its own ranking;
leaving it out is the caller's part, as is leaving it out of the gallery counts.

Definitions, as in the image-retrieval literature:
- AP divides by every relevant photo in the gallery, not by the relevant ones retrieved, so
  a ranking cut at 100 that misses relevant photos pays for them (each counts as precision 0).
- R@k is the hit rate used by CLIP and the image-text retrieval papers: 1 if any relevant
  photo is in the first k, else 0, averaged over queries. It is not the share of relevant
  photos found in the first k (that would be "recall" in the IR sense).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

KS = (1, 5, 10)


@dataclass(frozen=True)
class Scores:
    """Means over the queries, and each query's AP (to compare two runs query by query)."""

    mean_ap: float
    recall: dict[int, float]  # k -> R@k, the hit rate at k
    ap: list[float]


def average_precision(relevant: npt.ArrayLike, n_relevant: int) -> float:
    """AP of one ranking: the mean, over the gallery's n_relevant relevant photos, of precision at each one's rank.

    Relevant photos never retrieved contribute 0. Raises ValueError when n_relevant is under 1
    (AP is undefined) or under the relevant photos the ranking holds (the counts are wrong).
    """
    hits = np.asarray(relevant, dtype=bool).reshape(-1)
    found = int(hits.sum())
    if n_relevant < 1:
        raise ValueError(f"n_relevant must be at least 1, got {n_relevant}")
    if found > n_relevant:
        raise ValueError(f"the ranking holds {found} relevant photos but n_relevant is {n_relevant}")
    ranks = np.flatnonzero(hits) + 1  # 1-based ranks of the relevant photos
    precisions = np.arange(1, found + 1) / ranks  # the j-th relevant photo at rank r: precision j / r
    return float(precisions.sum() / n_relevant)


def recall_at_k(relevant: npt.ArrayLike, k: int) -> float:
    """1.0 if any of the first k photos is relevant, else 0.0 (the hit-rate R@k of CLIP papers)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    hits = np.asarray(relevant, dtype=bool).reshape(-1)
    return float(hits[:k].any())


def evaluate(
    rankings: Sequence[Sequence[Hashable]],
    query_labels: Sequence[Hashable],
    gallery_counts: Mapping[Hashable, int],
    ks: Sequence[int] = KS,
) -> Scores:
    """mAP and R@k over queries: rankings[i] is query i's ranked gallery labels, best first.

    gallery_counts[label] is how many gallery photos carry that label (the denominator of AP).
    Raises ValueError for no queries, mismatched lengths, or a query whose label no gallery
    photo carries (its AP is undefined: a broken eval set, not a score of 0).
    """
    if len(rankings) != len(query_labels):
        raise ValueError(f"{len(rankings)} rankings for {len(query_labels)} queries")
    if not rankings:
        raise ValueError("no queries to evaluate")
    aps: list[float] = []
    hits = {k: 0.0 for k in ks}
    for i, (ranking, label) in enumerate(zip(rankings, query_labels)):
        n_relevant = gallery_counts.get(label, 0)
        if n_relevant < 1:
            raise ValueError(f"query {i} ({label!r}) has no relevant photo in the gallery")
        relevant = np.fromiter((item == label for item in ranking), dtype=bool, count=len(ranking))
        aps.append(average_precision(relevant, n_relevant))
        for k in ks:
            hits[k] += recall_at_k(relevant, k)
    n = len(aps)
    return Scores(mean_ap=float(np.mean(aps)), recall={k: hits[k] / n for k in ks}, ap=aps)
