"""The forest: recall against exact search, exactly k results, fresh and deleted rows, dead builds."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from clipsearch.catalog.store import Store
from clipsearch.index import Forest, build_forest, exact_top, read_manifest
from clipsearch.records import Embedded, FileRecord, ImageMeta

from .conftest import make_photos


def clustered_vectors(n: int, dim: int, clusters: int, spread: float, seed: int) -> np.ndarray:
    """Unit vectors in tight-ish clusters, like CLIP embeddings of a photo collection."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    points = centres[rng.integers(0, clusters, n)] + rng.standard_normal((n, dim)).astype(np.float32) * spread
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def _chunks(vectors: np.ndarray, size: int = 5000):
    for start in range(0, len(vectors), size):
        yield np.arange(start, min(start + size, len(vectors)), dtype=np.int64), vectors[start:start + size]


def test_forest_recall_at_10_against_exact_search_is_at_least_98_percent(tmp_path):
    dim = 512
    vectors = clustered_vectors(20_000, dim, clusters=200, spread=2.0, seed=1)
    queries = clustered_vectors(150, dim, clusters=200, spread=2.0, seed=1)  # same centres
    manifest = build_forest(tmp_path, "test", dim, built_seq=0, count=len(vectors), chunks=_chunks(vectors))
    forest = Forest(tmp_path, manifest)
    ids = np.arange(len(vectors))
    recall = []
    for query in queries:
        found, _ = forest.query(query, 10)
        truth, _ = exact_top(ids, vectors, query, 10)
        recall.append(len(set(found.tolist()) & set(truth.tolist())) / 10)
    assert np.mean(recall) >= 0.98


def test_forest_scores_are_cosine_similarities(tmp_path):
    vectors = clustered_vectors(500, 32, clusters=5, spread=1.0, seed=2)
    manifest = build_forest(tmp_path, "test", 32, 0, len(vectors), _chunks(vectors))
    ids, scores = Forest(tmp_path, manifest).query(vectors[7], 3)
    assert ids[0] == 7
    np.testing.assert_allclose(scores, vectors[ids] @ vectors[7], atol=1e-4)


def _fill_catalog(store: Store, vectors: np.ndarray, batch: str) -> None:
    store.add_root("/fake")
    root = store.roots()[0]
    items = [Embedded(FileRecord(f"/fake/{batch}/{i}.jpg", root.id, 1, 1), f"{batch}{i}", ImageMeta(1, 1, "JPEG"), v)
             for i, v in enumerate(vectors)]
    for start in range(0, len(items), 1000):
        store.write(items[start:start + 1000])


def test_search_returns_exactly_k_after_deletions_since_the_build(library, tmp_path):
    photos = make_photos(tmp_path / "photos", 30)
    library.crawl([tmp_path / "photos"])
    query = photos[0]
    nearest = [r.path for r in library.search(image=query, k=12)]
    # Delete the 10 nearest behind the forest's back: it still holds them.
    store = Store(library.settings.catalog_path)
    store.mark_deleted([store.file_id(p) for p in nearest[:10]])
    store.close()
    results = library.search(image=query, k=12)
    assert len(results) == 12
    assert not set(r.path for r in results) & set(nearest[:10])
    exact = library.search(image=query, k=12, exact=True)
    assert [r.path for r in results] == [r.path for r in exact]


def test_rows_written_after_the_build_are_found(library, tmp_path):
    make_photos(tmp_path / "photos", 10)
    library.crawl([tmp_path / "photos"])
    built = read_manifest(library.settings.index_dir)
    # A crawl writes new rows; make the forest stale by putting the old manifest back.
    shutil.copytree(library.settings.index_dir, tmp_path / "old-index")
    new = make_photos(tmp_path / "photos", 3, start_seed=100, suffix=".png")
    library.crawl()
    shutil.rmtree(library.settings.index_dir)
    shutil.copytree(tmp_path / "old-index", library.settings.index_dir)
    assert read_manifest(library.settings.index_dir) == built
    for photo in new:
        assert library.search(image=photo, k=1)[0].path == str(photo)
    assert library.status().pending > 0


def test_forest_and_exact_search_agree(library, tmp_path):
    photos = make_photos(tmp_path / "photos", 40)
    library.crawl([tmp_path / "photos"])
    for photo in photos[:5]:
        assert [r.path for r in library.search(image=photo, k=5)] == \
               [r.path for r in library.search(image=photo, k=5, exact=True)]


def test_an_index_build_that_dies_leaves_the_previous_forest_usable(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    dim = 512
    store = Store(home / "catalog.db")
    store.set_meta("model", "test-model")
    store.set_meta("dim", str(dim))
    _fill_catalog(store, clustered_vectors(2_000, dim, 20, 1.0, seed=3), "a")
    first = build_forest(home / "index", "test-model", dim, store.max_seq(), store.live_count(),
                         store.iter_live_vectors(dim))
    _fill_catalog(store, clustered_vectors(60_000, dim, 20, 1.0, seed=4), "b")
    store.close()
    code = ("import sys; from pathlib import Path; from clipsearch.config import load_settings; "
            "from clipsearch.library import Library; "
            "Library(load_settings(sys.argv[1])).rebuild_index()")
    child = subprocess.Popen([sys.executable, "-c", code, str(home)])
    deadline = time.monotonic() + 60
    while not list((home / "index").glob("*.tmp")):
        assert child.poll() is None, "the build finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert read_manifest(home / "index") == first
    forest = Forest(home / "index", first)
    reader = Store(home / "catalog.db", readonly=True)
    ids, vectors = next(reader.iter_live_vectors(dim))
    found, scores = forest.query(vectors[5], 1)
    assert found[0] == ids[5] and scores[0] == pytest.approx(1.0, abs=1e-4)
    reader.close()


def test_the_previous_forest_stays_openable_for_one_more_build(tmp_path):
    vectors = clustered_vectors(300, 16, clusters=3, spread=1.0, seed=5)
    first = build_forest(tmp_path, "m", 16, 0, len(vectors), _chunks(vectors))
    build_forest(tmp_path, "m", 16, 1, len(vectors), _chunks(vectors))
    # A reader that read the first manifest just before the second build replaced it:
    assert Forest(tmp_path, first).query(vectors[0], 1)[0][0] == 0
    build_forest(tmp_path, "m", 16, 2, len(vectors), _chunks(vectors))
    assert not (tmp_path / first.forest).exists()  # two builds later it is gone
