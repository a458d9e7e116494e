"""The vector index: an Annoy forest over the live vectors, and exact numpy scoring.

This is the only module that imports annoy. Annoy cannot add or remove items after a
build, so the forest is a rebuildable file beside the catalog (which holds the truth).
A build writes `forest-<generation>.ann` and `ids-<generation>.npy` under temporary names,
renames them into place, and then replaces `manifest.json`, which names the generation in
use. A build that dies part-way leaves the previous manifest, and so the previous forest,
in charge.

Annoy trusts its file: garbage in it aborts or crashes the process. So the manifest records
each file's size and SHA-256, and the size, mtime, inode and ctime it had when the build
finished. A file whose stat still matches has not been written since (any write or
replacement changes its ctime) and is loaded at once; any other is hashed first, and one
that does not match is never loaded (ForestDamaged).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ._files import OWN, replaced, umask, write_whole
from .errors import ClipsearchError

MANIFEST = "manifest.json"


class ForestDamaged(ClipsearchError):
    """The index folder's files cannot be trusted; searches score exactly until a rebuild."""


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
    # What the forest is tied to: the catalog's id and the token of its write `built_seq`
    # (None in manifests written before they were recorded: such a forest is rebuilt).
    catalog_id: str | None = None
    built_token: str | None = None
    # file name -> {"size", "sha256", "stat": [mtime_ns, inode, ctime_ns]} when the build ended
    files: dict = field(default_factory=dict)


def trees_for(count: int) -> int:
    """Enough trees for recall@10 >= 0.98 with search_k below; fewer for tiny libraries."""
    return 8 if count < 1000 else 50


def search_k_for(n: int, trees: int) -> int:
    """Candidates Annoy collects per query (more: better recall, slower). 15,000 gives
    recall@10 of 1.00 at 100k and 0.99 at 1M clustered vectors (docs/benchmarks.md); the
    time per query is about 0.3 us per candidate, so it stays near 5 ms at a million."""
    return max(n * trees * 4, 15_000)


def read_manifest(index_dir: Path) -> Manifest | None:
    """The manifest, or None if there is none; ForestDamaged if it cannot be read."""
    path = index_dir / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Manifest(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise ForestDamaged(f"{path} cannot be read ({type(exc).__name__})") from None


def forest_bytes(count: int, dim: int, trees: int) -> int:
    """About what a build of count vectors needs on disk at its peak (Annoy grows its file by
    1.3x steps; a node is 12 + 4*dim bytes; trees add about 4/(dim+2) nodes per item each)."""
    nodes = count * (1 + 4 * trees / (dim + 2)) + 2 * trees
    return int(1.3 * nodes * (12 + 4 * dim)) + 8 * count + (1 << 20)


def build_forest(index_dir: Path, model: str, dim: int, built_seq: int, count: int,
                 chunks: Iterable[tuple[np.ndarray, np.ndarray]],
                 progress: Callable[[int, int], None] | None = None,
                 catalog_id: str | None = None, built_token: str | None = None) -> Manifest:
    """Build a forest over `chunks` of (ids, vectors) holding `count` rows and make it current.
    `catalog_id` and `built_token` tie it to the catalog state it is built from."""
    from annoy import AnnoyIndex

    index_dir.mkdir(parents=True, exist_ok=True)
    try:
        previous = read_manifest(index_dir)
    except ForestDamaged:
        previous = None
    trees = trees_for(count)
    needed, free = forest_bytes(count, dim, trees), shutil.disk_usage(index_dir).free
    if needed > free:
        # Annoy writes its file through a memory map: running out of space there kills the
        # process with SIGBUS instead of raising. Refuse up front.
        raise OSError(28, f"the index needs about {needed >> 20} MB and {free >> 20} MB are free",
                      str(index_dir))
    generation = (previous.generation if previous else 0) + 1
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
        os.chmod(tmp_forest, 0o666 & ~umask())  # Annoy creates it 0600 whatever the umask
        os.replace(tmp_forest, index_dir / forest_name)
        id_array = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
        with replaced(index_dir / ids_name, policy=OWN) as handle:
            np.save(handle, id_array)
    files = {name: _describe(index_dir / name) for name in (forest_name, ids_name) if added}
    manifest = Manifest(generation, model, dim, added, built_seq, trees,
                        forest_name if added else None, ids_name if added else None, time.time(),
                        catalog_id, built_token, files)
    write_whole(index_dir / MANIFEST, json.dumps(asdict(manifest), indent=2))
    # The previous generation stays one more build: a search that read the old manifest an
    # instant ago can still open its files.
    keep = {MANIFEST, forest_name, ids_name}
    if previous and previous.forest and previous.ids:
        keep |= {previous.forest, previous.ids}
    _remove_stale_files(index_dir, keep)
    return manifest


def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _describe(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "sha256": _sha256(path), "stat": _stat_key(st)}


def verify_files(index_dir: Path, manifest: Manifest, may_hash: bool = True) -> None:
    """Raise ForestDamaged unless the manifest's files are those its build wrote: same stat
    (cheap), or else, if may_hash, the same size and SHA-256 (a copied or restored index)."""
    for name in (manifest.forest, manifest.ids):
        expected = manifest.files.get(name) if name else None
        if name is None or not expected:
            raise ForestDamaged("the manifest does not describe its files")
        path = index_dir / name
        try:
            st = path.stat()
        except OSError as exc:
            raise ForestDamaged(f"{name} is {'missing' if isinstance(exc, FileNotFoundError) else 'unreadable'}") \
                from None
        if st.st_size != expected["size"]:
            raise ForestDamaged(f"{name} has {st.st_size} bytes, not {expected['size']}")
        if _stat_key(st) == expected["stat"]:
            continue
        if not may_hash:
            raise ForestDamaged(f"{name} was changed after its build")
        try:
            matches = _sha256(path) == expected["sha256"]
        except OSError:
            matches = False
        if not matches:
            raise ForestDamaged(f"{name} does not match its checksum")


def _remove_stale_files(index_dir: Path, keep: set[str]) -> None:
    for path in index_dir.iterdir():
        if path.name not in keep and (path.name.startswith(("forest-", "ids-")) or path.suffix in (".tmp", ".part")):
            try:
                path.unlink()
            except OSError:
                pass  # still mapped by a reader (Windows): the next build removes it


class Forest:
    """A loaded (memory-mapped) forest; maps Annoy items back to catalog file ids."""

    def __init__(self, index_dir: Path, manifest: Manifest):
        """Load the files `manifest` names, checked first (verify_files); ForestDamaged if they
        are not what the build wrote, OSError if they vanish meanwhile."""
        from annoy import AnnoyIndex

        verify_files(index_dir, manifest)
        assert manifest.forest and manifest.ids  # verify_files refuses a manifest without them
        self.manifest = manifest
        try:
            ids = np.load(index_dir / manifest.ids, allow_pickle=False)
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 - bad bytes raise ValueError, EOFError, ...
            raise ForestDamaged(f"{manifest.ids} is not an id array ({type(exc).__name__})") from None
        if ids.dtype != np.int64 or ids.shape != (manifest.count,):
            raise ForestDamaged(f"{manifest.ids} holds {ids.dtype} {ids.shape}, not {manifest.count} ids")
        self._ids = ids
        self.search_k: int | None = None  # candidates per query; None: search_k_for()
        self._index = AnnoyIndex(manifest.dim, "angular")
        self._index.load(str(index_dir / manifest.forest))
        if self._index.get_n_items() != manifest.count:
            raise ForestDamaged(f"{manifest.forest} holds {self._index.get_n_items()} items, "
                                f"not {manifest.count}")

    def query(self, vector: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The n nearest (file ids, cosine similarities), best first."""
        n = min(n, len(self._ids))
        search_k = search_k_for(n, self.manifest.trees) if self.search_k is None else max(self.search_k, n)
        items, distances = self._index.get_nns_by_vector(vector.tolist(), n, search_k=search_k,
                                                         include_distances=True)
        # Annoy's angular distance is sqrt(2 - 2 cos) on normalised vectors.
        similarity = 1.0 - np.square(np.asarray(distances, dtype=np.float32)) / 2.0
        return self._ids[np.asarray(items, dtype=np.int64)], similarity

    def near_pairs(self, threshold: float, neighbours: int = 10,
                   on_progress: Callable[[int, int], None] | None = None) -> Iterable[tuple[int, int, float]]:
        """(file id, file id, cosine) of every pair of items that are among each other's
        `neighbours` nearest and at least `threshold` alike, each pair once."""
        count = len(self._ids)
        search_k = neighbours * self.manifest.trees * 4
        seen: set[tuple[int, int]] = set()
        for item in range(count):
            items, distances = self._index.get_nns_by_item(item, neighbours + 1, search_k=search_k,
                                                           include_distances=True)
            for other, distance in zip(items, distances):
                similarity = 1.0 - distance * distance / 2.0
                if other == item or similarity < threshold:
                    continue
                pair = (min(item, other), max(item, other))
                if pair not in seen:
                    seen.add(pair)
                    yield int(self._ids[pair[0]]), int(self._ids[pair[1]]), similarity
            if on_progress and (item % 2000 == 1999 or item == count - 1):
                on_progress(item + 1, count)


def exact_top(ids: np.ndarray, vectors: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (ids, cosine similarities) among vectors, best first."""
    if len(ids) == 0 or k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    scores = vectors @ query.astype(np.float32)
    k = min(k, len(ids))
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    return ids[top], scores[top]
