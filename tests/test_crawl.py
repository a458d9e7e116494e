"""Crawling: what gets embedded, what is skipped, moves, copies, deletions and roots."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from clipsearch.catalog.store import Store
from clipsearch.errors import ClipsearchError

from .conftest import make_photo, make_photos


def _catalog(home) -> Store:
    return Store(home / "catalog.db", readonly=True)


def _vector(home, path) -> np.ndarray:
    store = _catalog(home)
    row = store.db.execute("SELECT vector FROM files WHERE path = ?", [str(path)]).fetchone()
    store.close()
    return np.frombuffer(row[0], dtype=np.float32)


def _statuses(home) -> dict[str, str]:
    store = _catalog(home)
    rows = dict(store.db.execute("SELECT path, status FROM files").fetchall())
    store.close()
    return rows


def test_a_crawl_embeds_every_photo_and_builds_the_index(library, embedder, home, tmp_path):
    make_photos(tmp_path / "photos", 20)
    report = library.crawl([tmp_path / "photos"])
    assert report.stats.found == 20
    assert report.stats.embedded == 20
    assert embedder.images == 20
    assert report.index.count == 20
    assert all(status == "live" for status in _statuses(home).values())


def test_vectors_are_l2_normalised(library, home, tmp_path):
    photo = make_photos(tmp_path / "photos", 1)[0]
    library.crawl([tmp_path / "photos"])
    assert np.linalg.norm(_vector(home, photo)) == pytest.approx(1.0, abs=1e-5)


def test_a_recrawl_of_an_unchanged_tree_embeds_nothing(library, embedder, tmp_path):
    make_photos(tmp_path / "photos", 15)
    library.crawl([tmp_path / "photos"])
    batches = embedder.batches
    report = library.crawl()
    assert embedder.batches == batches
    assert report.stats.unchanged == 15
    assert report.stats.embedded == 0
    assert not report.rebuilt


def test_a_recrawl_with_nothing_new_does_not_even_load_the_model(home, tmp_path):
    from clipsearch.config import load_settings
    from clipsearch.library import Library

    from .conftest import TINY_MODEL

    make_photos(tmp_path / "photos", 3)
    first = Library(load_settings(home, model=TINY_MODEL))
    first.crawl([tmp_path / "photos"])
    assert first.model_loaded
    again = Library(load_settings(home))
    report = again.crawl()
    assert report.stats.unchanged == 3
    assert not again.model_loaded


def test_a_changed_photo_is_embedded_again(library, embedder, home, tmp_path):
    photos = make_photos(tmp_path / "photos", 5)
    library.crawl([tmp_path / "photos"])
    before = _vector(home, photos[0])
    make_photo(photos[0], seed=999)
    report = library.crawl()
    assert report.stats.changed == 1
    assert report.stats.embedded == 1
    assert not np.allclose(before, _vector(home, photos[0]))


def test_a_moved_and_renamed_photo_keeps_its_vector_without_embedding(library, embedder, home, tmp_path):
    photos = make_photos(tmp_path / "photos", 6)
    library.crawl([tmp_path / "photos"])
    vector = _vector(home, photos[2])
    images = embedder.images
    target = tmp_path / "photos" / "sub folder" / "renamed.jpg"
    target.parent.mkdir()
    shutil.move(photos[2], target)
    report = library.crawl()
    assert embedder.images == images
    assert report.stats.moved == 1
    assert report.stats.deleted == 1
    np.testing.assert_array_equal(_vector(home, target), vector)
    statuses = _statuses(home)
    assert statuses[str(target)] == "live"
    assert statuses[str(photos[2])] == "deleted"


def test_byte_identical_copies_are_embedded_once(library, embedder, home, tmp_path):
    original = make_photo(tmp_path / "photos" / "a.jpg", seed=5)
    for name in ("b.jpg", "c.jpg", "d.jpg"):
        shutil.copy(original, tmp_path / "photos" / name)
    report = library.crawl([tmp_path / "photos"])
    assert embedder.images == 1
    assert report.stats.embedded == 1
    assert report.stats.moved == 3
    vectors = [_vector(home, tmp_path / "photos" / n) for n in ("a.jpg", "b.jpg", "c.jpg", "d.jpg")]
    for vector in vectors[1:]:
        np.testing.assert_array_equal(vector, vectors[0])


def test_a_vanished_photo_leaves_the_results_and_comes_back_without_embedding(library, embedder, tmp_path):
    photos = make_photos(tmp_path / "photos", 8)
    library.crawl([tmp_path / "photos"])
    aside = tmp_path / "aside.jpg"
    shutil.move(photos[3], aside)
    report = library.crawl()
    assert report.stats.deleted == 1
    paths = [r.path for r in library.search(image=aside, k=8)]
    assert str(photos[3]) not in paths
    assert len(paths) == 7
    images = embedder.images
    shutil.move(aside, photos[3])
    report = library.crawl()
    assert report.stats.restored == 1
    assert embedder.images == images
    assert library.search(image=photos[3], k=1)[0].path == str(photos[3])


def test_a_subfolder_crawl_only_checks_that_subfolder(library, home, tmp_path):
    make_photos(tmp_path / "photos" / "2020", 3)
    make_photos(tmp_path / "photos" / "2021", 3, start_seed=10)
    library.crawl([tmp_path / "photos"])
    shutil.rmtree(tmp_path / "photos" / "2021")
    report = library.crawl([tmp_path / "photos" / "2020"])
    assert report.stats.found == 3
    assert report.stats.deleted == 0  # 2021 was not looked at
    assert len(library.status().roots) == 1


def test_a_root_that_contains_known_roots_takes_them_over(library, tmp_path):
    make_photos(tmp_path / "photos" / "a", 2)
    make_photos(tmp_path / "photos" / "b", 2, start_seed=10)
    library.crawl([tmp_path / "photos" / "a"])
    library.crawl([tmp_path / "photos" / "b"])
    assert len(library.status().roots) == 2
    report = library.crawl([tmp_path / "photos"])
    assert report.stats.unchanged == 4
    roots = library.status().roots
    assert [(r.path, r.photos) for r in roots] == [(str(tmp_path / "photos"), 4)]


def test_several_roots_are_crawled_together(library, tmp_path):
    make_photos(tmp_path / "d", 4)
    make_photos(tmp_path / "e", 5, start_seed=50)
    report = library.crawl([tmp_path / "d", tmp_path / "e"])
    assert report.stats.embedded == 9
    assert sorted(r.photos for r in library.status().roots) == [4, 5]


def test_exclude_patterns_are_applied_and_remembered(library, home, tmp_path):
    make_photos(tmp_path / "photos", 3)
    make_photos(tmp_path / "photos" / "thumbnails", 4, start_seed=20)
    report = library.crawl([tmp_path / "photos"], exclude=["*/thumbnails/*"])
    assert report.stats.found == 3
    report = library.crawl()
    assert report.stats.found == 3
    assert not any("thumbnails" in p for p in _statuses(home))


def test_extensions_are_case_insensitive_and_configurable(make_library, tmp_path):
    make_photo(tmp_path / "photos" / "UPPER.JPG", 1)
    make_photo(tmp_path / "photos" / "mixed.Png", 2)
    make_photo(tmp_path / "photos" / "other.jpg", 3)
    (tmp_path / "photos" / "notes.txt").write_text("not a photo")
    assert make_library().crawl([tmp_path / "photos"]).stats.found == 3
    assert make_library(extensions=["png"]).crawl([tmp_path / "photos"]).stats.found == 1


def test_hidden_files_and_folders_are_skipped_unless_asked(make_library, tmp_path):
    make_photo(tmp_path / "photos" / "seen.jpg", 1)
    make_photo(tmp_path / "photos" / ".hidden.jpg", 2)
    make_photo(tmp_path / "photos" / ".cache" / "inside.jpg", 3)
    assert make_library().crawl([tmp_path / "photos"]).stats.found == 1
    assert make_library(include_hidden=True).crawl([tmp_path / "photos"]).stats.found == 3


def test_folder_symlinks_are_not_followed_by_default_and_loops_never(make_library, tmp_path):
    make_photo(tmp_path / "photos" / "a.jpg", 1)
    make_photo(tmp_path / "elsewhere" / "b.jpg", 2)
    os.symlink(tmp_path / "elsewhere", tmp_path / "photos" / "link")
    os.symlink(tmp_path / "photos", tmp_path / "photos" / "loop")
    assert make_library().crawl([tmp_path / "photos"]).stats.found == 1
    report = make_library(follow_symlinks=True).crawl([tmp_path / "photos"])
    assert report.stats.found == 2  # b.jpg once; the loop back to photos/ is not walked


def test_unicode_spaces_and_long_names_work(library, tmp_path):
    names = ["fête à la plage.jpg", "日本の夏 写真.jpg", "emoji 📷 shot.png", ("very long name " * 14).strip() + ".jpg"]
    folder = tmp_path / "Фото архив" / "2024 summer"
    for seed, name in enumerate(names):
        make_photo(folder / name, seed)
    report = library.crawl([tmp_path / "Фото архив"])
    assert report.stats.embedded == 4
    for name in names:
        assert library.search(image=folder / name, k=1)[0].path == str(folder / name)


def test_a_missing_root_is_a_one_line_error_and_writes_nothing(library, home, tmp_path):
    with pytest.raises(ClipsearchError, match="no such folder"):
        library.crawl([tmp_path / "nope"])
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(ClipsearchError, match="not a folder"):
        library.crawl([tmp_path / "file.jpg"])
    assert not (home / "catalog.db").exists()


def test_a_root_that_disappears_does_not_delete_its_photos(library, tmp_path):
    make_photos(tmp_path / "drive", 3)
    library.crawl([tmp_path / "drive"])
    shutil.move(tmp_path / "drive", tmp_path / "unplugged")
    report = library.crawl()
    assert report.stats.deleted == 0
    assert report.stats.offline == (str(tmp_path / "drive"),)
    counts = library.status().counts
    assert counts["offline"] == 3 and counts["live"] == 0 and counts["deleted"] == 0


def test_two_photos_swapping_names_both_stay_searchable(library, embedder, home, tmp_path):
    photos = make_photos(tmp_path / "photos", 4)
    library.crawl([tmp_path / "photos"])
    a, b = photos[0], photos[1]
    vector_a, vector_b = _vector(home, a), _vector(home, b)
    os.rename(a, tmp_path / "swap")
    os.rename(b, a)
    os.rename(tmp_path / "swap", b)
    images = embedder.images
    report = library.crawl()
    assert report.stats.failed == 0
    assert embedder.images - images <= 1  # at most one re-embedded, when its twin row was overwritten first
    np.testing.assert_allclose(_vector(home, a), vector_b, atol=1e-6)
    np.testing.assert_allclose(_vector(home, b), vector_a, atol=1e-6)
    for photo in photos:
        assert library.search(image=photo, k=1)[0].path == str(photo)


def test_a_folder_and_its_parent_in_one_crawl_are_walked_once_under_one_root(library, home, tmp_path):
    make_photos(tmp_path / "p" / "q", 2)
    make_photos(tmp_path / "p", 2, start_seed=10)
    library.crawl([tmp_path / "p" / "q"])
    report = library.crawl([tmp_path / "p" / "q", tmp_path / "p", tmp_path / "p"])
    assert report.stats.found == 4
    store = _catalog(home)
    root_ids = {r.id for r in store.roots()}
    file_roots = {row[0] for row in store.db.execute("SELECT root_id FROM files")}
    store.close()
    assert len(root_ids) == 1 and file_roots == root_ids
    os.remove(tmp_path / "p" / "q" / "photo_0000.jpg")
    assert library.crawl().stats.deleted == 1


def test_scan_flags_given_for_a_folder_are_remembered(library, tmp_path):
    make_photo(tmp_path / "photos" / "seen.jpg", 1)
    make_photo(tmp_path / "photos" / ".hidden" / "inside.jpg", 2)
    make_photo(tmp_path / "photos" / "scan.tiff", 3)
    assert library.crawl([tmp_path / "photos"], include_hidden=True, extensions=["jpg"]).stats.found == 2
    report = library.crawl()
    assert report.stats.found == 2
    assert report.stats.deleted == 0
    assert library.crawl(extensions=["jpg", "tiff"]).stats.found == 3


def test_a_subfolder_crawl_does_not_mark_the_whole_root_crawled(library, tmp_path):
    make_photos(tmp_path / "photos" / "2020", 2)
    library.crawl([tmp_path / "photos"])
    crawled = library.status().roots[0].crawled_at
    library.crawl([tmp_path / "photos" / "2020"])
    assert library.status().roots[0].crawled_at == crawled


def test_scan_flags_for_a_subfolder_are_refused_and_its_root_rules_apply(library, tmp_path):
    make_photos(tmp_path / "tree" / "inner", 2)
    make_photos(tmp_path / "tree" / "inner" / "skip", 2, start_seed=20)
    library.crawl([tmp_path / "tree"], exclude=["*/skip/*"])
    with pytest.raises(ClipsearchError, match="belong to the whole folder"):
        library.crawl([tmp_path / "tree" / "inner"], exclude=["*.gif"])
    with pytest.raises(ClipsearchError, match="skipped by the rules"):
        library.crawl([tmp_path / "tree" / "inner" / "skip"])
    report = library.crawl([tmp_path / "tree" / "inner"])
    assert report.stats.found == 2 and report.stats.deleted == 0


def test_a_new_parent_folder_keeps_the_rules_of_the_folders_it_takes_over(library, tmp_path):
    make_photos(tmp_path / "tree" / "inner", 2)
    make_photos(tmp_path / "tree" / "inner" / "skip", 2, start_seed=20)
    library.crawl([tmp_path / "tree" / "inner"], exclude=["*/skip/*"])
    report = library.crawl([tmp_path / "tree"])
    assert report.stats.found == 2
    assert library.status().roots[0].exclude == ("*/skip/*",)


def test_a_model_that_failed_to_load_does_not_bind_the_library(make_library, home, tmp_path):
    from clipsearch.config import load_settings
    from clipsearch.library import Library

    make_photos(tmp_path / "photos", 2)
    with pytest.raises(ClipsearchError, match="no pretrained weights called 'opnai'"):
        Library(load_settings(home)).crawl([tmp_path / "photos"], model="ViT-B-32:opnai")
    report = make_library().crawl()  # the tiny model, as if the user corrected the typo
    assert report.stats.embedded == 2
