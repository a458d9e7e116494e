"""The vector index: an Annoy forest over the live vectors, and exact numpy scoring.

This is the only module that imports annoy. Annoy cannot add or remove items after a
build, so the forest is a rebuildable file beside the catalog (which holds the truth).
A build writes `forest-<generation>.ann` and `ids-<generation>.npy` under temporary names,
renames them into place, and then replaces `manifest.json`, which names the generation in
use. A build that dies part-way leaves the previous manifest, and so the previous forest,
in charge.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Manifest:
    generation: int
    model: str
    dim: int
    count: int
    built_seq: int  # catalog write sequence at build time: later rows are scored exactly
    trees: int
    forest: str | None  # file names inside the index folder; None for an empty library
    ids: str | None
    built_at: float


def trees_for(count: int) -> int:
    """Enough trees for recall@10 >= 0.98 with search_k below; fewer for tiny libraries."""
    return 8 if count < 1000 else 50


def search_k_for(n: int, trees: int) -> int:
    """Candidates Annoy collects per query (more: better recall, slower). 15,000 gives
    recall@10 of 1.00 at 100k and 0.99 at 1M clustered vectors (docs/benchmarks.md); the
    time per query is about 0.3 us per candidate, so it stays near 5 ms at a million."""
    return max(n * trees * 4, 15_000)


def read_manifest(index_dir: Path) -> Manifest | None:
    try:
        data = json.loads((index_dir / MANIFEST).read_text(encoding="utf-8"))
        return Manifest(**data)
    except (OSError, ValueError, TypeError):
        return None


def build_forest(index_dir: Path, model: str, dim: int, built_seq: int, count: int,
                 chunks: Iterable[tuple[np.ndarray, np.ndarray]],
                 progress: Callable[[int, int], None] | None = None) -> Manifest:
    """Build a forest over `chunks` of (ids, vectors) holding `count` rows and make it current."""
    from annoy import AnnoyIndex

    index_dir.mkdir(parents=True, exist_ok=True)
    previous = read_manifest(index_dir)
    generation = (previous.generation if previous else 0) + 1
    trees = trees_for(count)
    forest_name, ids_name = f"forest-{generation}.ann", f"ids-{generation}.npy"
    tmp_forest = index_dir / f"{forest_name}.tmp"
    ids: list[np.ndarray] = []
    added = 0
    if count:
        forest = AnnoyIndex(dim, "angular")
        # Build on disk: memory stays flat however large the library, and a dead build leaves
        # only a .tmp file behind.
        forest.on_disk_build(str(tmp_forest))
        for chunk_ids, vectors in chunks:
            # Plain lists cross into Annoy much faster than numpy rows.
            for row, vector in enumerate(vectors.tolist()):
                forest.add_item(added + row, vector)
            added += len(chunk_ids)
            ids.append(chunk_ids)
            if progress:
                progress(added, count)
        forest.build(trees, n_jobs=-1)
        forest.unload()
        os.replace(tmp_forest, index_dir / forest_name)
        id_array = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
        tmp_ids = index_dir / f"{ids_name}.tmp"
        with open(tmp_ids, "wb") as handle:
            np.save(handle, id_array)
        os.replace(tmp_ids, index_dir / ids_name)
    manifest = Manifest(generation, model, dim, added, built_seq, trees,
                        forest_name if added else None, ids_name if added else None, time.time())
    tmp_manifest = index_dir / f"{MANIFEST}.tmp"
    tmp_manifest.write_text(json.dumps(asdict(manifest), indent=2), encoding="utf-8")
    os.replace(tmp_manifest, index_dir / MANIFEST)
    # The previous generation stays one more build: a search that read the old manifest an
    # instant ago can still open its files.
    keep = {MANIFEST, forest_name, ids_name}
    if previous and previous.forest:
        keep |= {previous.forest, previous.ids}
    _remove_stale_files(index_dir, keep)
    return manifest


def _remove_stale_files(index_dir: Path, keep: set[str]) -> None:
    for path in index_dir.iterdir():
        if path.name not in keep and (path.name.startswith(("forest-", "ids-")) or path.suffix == ".tmp"):
            try:
                path.unlink()
            except OSError:
                pass  # still mapped by a reader (Windows): the next build removes it


class Forest:
    """A loaded (memory-mapped) forest; maps Annoy items back to catalog file ids."""

    def __init__(self, index_dir: Path, manifest: Manifest):
        from annoy import AnnoyIndex

        self.manifest = manifest
        self._index = AnnoyIndex(manifest.dim, "angular")
        self._index.load(str(index_dir / manifest.forest))
        self._ids = np.load(index_dir / manifest.ids)

    @classmethod
    def open(cls, index_dir: Path) -> "Forest | None":
        """The current forest, or None if there is none (the caller then scores exactly)."""
        for _attempt in range(2):
            manifest = read_manifest(index_dir)
            if manifest is None or manifest.forest is None:
                return None
            try:
                return cls(index_dir, manifest)
            except OSError:
                continue  # replaced under our feet by a build: read the manifest again
        return None

    def query(self, vector: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The n nearest (file ids, cosine similarities), best first."""
        n = min(n, len(self._ids))
        items, distances = self._index.get_nns_by_vector(
            vector.tolist(), n, search_k=search_k_for(n, self.manifest.trees), include_distances=True)
        # Annoy's angular distance is sqrt(2 - 2 cos) on normalised vectors.
        similarity = 1.0 - np.square(np.asarray(distances, dtype=np.float32)) / 2.0
        return self._ids[np.asarray(items, dtype=np.int64)], similarity


def exact_top(ids: np.ndarray, vectors: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (ids, cosine similarities) among vectors, best first."""
    if len(ids) == 0 or k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    scores = vectors @ query.astype(np.float32)
    k = min(k, len(ids))
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    return ids[top], scores[top]
