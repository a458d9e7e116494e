"""The Store, the Planner and the Writer on their own, without a Library: real SQLite, real
Annoy, real files, the tiny model."""

from __future__ import annotations

import numpy as np
import pytest

from clipsearch.catalog.store import Store
from clipsearch.config import load_settings
from clipsearch.errors import LibraryBusy, NothingToSearch
from clipsearch.keeper import ForestKeeper
from clipsearch.notices import Notices
from clipsearch.planner import ExcludePaths, Floor, Planner
from clipsearch.policy import ModelPolicy
from clipsearch.query import parse
from clipsearch.records import Embedded, FileRecord, ImageMeta, Restored
from clipsearch.search import candidates
from clipsearch.writer import Writer

from .conftest import make_photo, make_photos

DIM = 16


def _vectors(count: int, seed: int = 3) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture
def catalog(tmp_path):
    """(settings, store, vectors): 300 photos under /lib, every 10th in /lib/odd and taken in
    2019, the rest in 2023; the model recorded as "test"; no forest yet."""
    settings = load_settings(tmp_path / "home")
    store = Store(settings.catalog_path)
    store.add_root("/lib")
    root = store.roots()[0].id
    vectors = _vectors(300)
    items = []
    for i, vector in enumerate(vectors):
        odd = i % 10 == 0
        meta = ImageMeta(10, 10, "JPEG", taken_at=f"{2019 if odd else 2023}-01-{1 + i % 28:02d}T12:00:00")
        items.append(Embedded(FileRecord(f"/lib/{'odd' if odd else 'even'}/{i:03d}.jpg", root, 100 + i, i),
                              f"h{i}", meta, vector))
    store.write(items)
    store.set_meta("model", "test")
    yield settings, store, vectors
    store.close()


# --- the Store -----------------------------------------------------------------------------
def test_the_store_stamps_each_write_with_a_sequence_and_a_token(catalog):
    _, store, vectors = catalog
    catalog_id, seq, token = store.identity()
    assert catalog_id and seq == 1 and token
    ids, found = store.vectors([1, 2, 3], DIM)
    assert ids.tolist() == [1, 2, 3] and np.allclose(found, vectors[:3])
    store.mark_deleted([2])
    assert store.count_changed_since(1) == 1 and store.write_token(2) not in (None, token)
    changed, fresh_ids, _ = store.changed_since(1, DIM)
    assert changed == {2} and not len(fresh_ids)  # deleted: stale in a forest, not searchable
    store.write([Restored(2)])
    assert store.rows([2])[2].status == "live" and store.max_seq() == 3


def test_the_store_moves_a_folder_keeping_ids_and_vectors(catalog):
    _, store, vectors = catalog
    before = {r.path: r.id for r in store.rows(list(range(1, 301))).values()}
    root = store.roots()[0].id
    assert store.move("/lib/odd", "/lib/archive/odd", root, is_dir=True) == 30
    rows = store.rows(list(range(1, 301)))
    moved = {r.path: r.id for r in rows.values() if r.path.startswith("/lib/archive/odd/")}
    assert len(moved) == 30
    assert all(moved[path.replace("/lib/odd/", "/lib/archive/odd/")] == i
               for path, i in before.items() if path.startswith("/lib/odd/"))
    ids, found = store.vectors(list(moved.values()), DIM)
    assert np.allclose(found, vectors[ids - 1])


def test_the_store_turns_filters_into_sql(catalog):
    _, store, _ = catalog
    assert len(store.matching_ids(parse("in:odd").filters)) == 30
    assert len(store.matching_ids(parse("before:2020").filters)) == 30
    assert store.matching_ids(parse("in:odd after:2020").filters) == []
    newest = store.newest(parse("in:even").filters, 3)
    assert [store.rows([i])[i].taken_at[:10] for i in newest] == ["2023-01-28"] * 3


# --- the Planner ----------------------------------------------------------------------------
@pytest.fixture
def planner(catalog):
    settings, store, vectors = catalog
    notices = Notices()
    keeper = ForestKeeper(settings, notices)
    store.set_meta("dim", str(DIM))
    keeper.build(store)
    return Planner(settings, ModelPolicy(settings, notices), keeper, notices), store, vectors


def _ids(results) -> list[int]:
    return [r.file_id for r in results]


def test_the_planner_pages_through_the_forest_as_exact_scoring_would(planner):
    planner, store, vectors = planner
    query = parse("in:even")
    first = planner.search(store, planner.plan(query, 10, vector=vectors[7]))
    second = planner.search(store, planner.plan(query, 10, offset=10, vector=vectors[7]))
    exact = planner.search(store, planner.plan(query, 20, vector=vectors[7], exact=True))
    assert [r.rank for r in second] == list(range(11, 21))
    assert _ids(first + second) == _ids(exact)
    assert all("/even/" in r.path for r in exact)


def test_stages_ask_for_what_they_remove_so_the_page_stays_full(planner):
    planner, store, vectors = planner
    plan = planner.plan(parse(""), 5, vector=vectors[0])
    top = planner.search(store, plan)
    own = store.rows([top[0].file_id])[top[0].file_id].path
    from dataclasses import replace

    from clipsearch.paths import EXACT_CASE

    without = planner.search(store, replace(plan, stages=(ExcludePaths(frozenset([own]), EXACT_CASE),)))
    assert len(without) == 5 and own not in [r.path for r in without]
    assert _ids(without) == _ids(planner.search(store, replace(plan, k=6)))[1:]
    floor = top[2].score
    kept = planner.search(store, replace(plan, stages=(Floor(floor),)))
    assert [r.score for r in kept] == [r.score for r in top[:3]]


def test_min_and_sort_come_from_the_query(planner):
    planner, store, vectors = planner
    scored = planner.search(store, planner.plan(parse("sort:date"), 8, vector=vectors[3]))
    dates = [r.taken_at for r in scored]
    assert dates == sorted(dates) and len(scored) == 8
    best = planner.search(store, planner.plan(parse(""), 1, vector=vectors[3]))[0]
    assert best.file_id == 4 and best.score == pytest.approx(1.0, abs=1e-5)
    assert len(planner.search(store, planner.plan(parse("min:0.99"), 8, vector=vectors[3]))) == 1


def test_a_query_of_filters_alone_lists_the_newest_and_nothing_at_all_is_refused(planner):
    planner, store, _ = planner
    listed = planner.search(store, planner.plan(parse("in:odd"), 4))
    assert all(r.score is None and "/odd/" in r.path for r in listed) and len(listed) == 4
    with pytest.raises(NothingToSearch):
        planner.plan(parse(""), 4)


def test_rows_written_after_the_build_are_found_and_deleted_ones_are_not(planner):
    planner, store, vectors = planner
    root = store.roots()[0].id
    newcomer = -vectors[9]
    store.write([Embedded(FileRecord("/lib/even/new.jpg", root, 1, 1), "hnew", ImageMeta(10, 10, "JPEG"), newcomer)])
    store.mark_deleted([12])
    results = planner.search(store, planner.plan(parse(""), 3, vector=newcomer))
    assert results[0].path == "/lib/even/new.jpg"
    near_twelve = planner.search(store, planner.plan(parse(""), 3, vector=vectors[11]))
    assert 12 not in _ids(near_twelve)
    ids, _ = candidates(store, None, vectors[11], 3, DIM)
    assert _ids(near_twelve) == ids.tolist()


# --- the Writer -----------------------------------------------------------------------------
@pytest.fixture
def parts(tmp_path, embedder):
    settings = load_settings(tmp_path / "home")
    notices = Notices()
    return settings, ModelPolicy(settings, notices, embedder), ForestKeeper(settings, notices)


def test_the_writer_holds_the_one_lock_and_crawls_checks_and_moves(parts, tmp_path, embedder):
    settings, policy, keeper = parts
    photos = make_photos(tmp_path / "photos", 5)
    with Writer(settings, policy, keeper) as writer:
        with pytest.raises(LibraryBusy):
            Writer(settings, policy, keeper)
        report = writer.crawl([tmp_path / "photos"])
        assert report.stats.embedded == 5 and report.index is not None and report.index.count == 5
        root = writer.roots()[0]
        changed = make_photo(photos[0], 77)
        st = changed.stat()
        stats = writer.update([FileRecord(str(changed), root.id, st.st_size, st.st_mtime_ns)])
        assert (stats.changed, stats.embedded, stats.found) == (1, 1, 1)  # only what it was told of
        (tmp_path / "photos" / "sub").mkdir()
        moved = writer.move(str(photos[1]), str(tmp_path / "photos" / "sub" / "one.jpg"), is_dir=False)
        assert moved == 1
        assert writer.rebuild_index().count == 5
    assert embedder.images == 6  # the move embedded nothing
    with Writer(settings, policy, keeper) as writer:  # released on close
        assert writer.remove_root(tmp_path / "photos")[1] == 5
