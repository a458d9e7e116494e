"""Vectors out and in (`clipsearch export`, `clipsearch import`) and `clipsearch dupes`.

Round trips go through real files and a fresh library, which must then answer exactly as
the library they came from; bad files must be refused in one line with nothing written.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from clipsearch.catalog.store import Store
from clipsearch.cli import cli
from clipsearch.config import load_settings
from clipsearch.errors import ClipsearchError
from clipsearch.library import Library
from clipsearch.records import FileRecord

from .conftest import TINY_MODEL, make_photo, make_photos

QUERIES = ("a photo", "blue sky + water", "2*red - green", "a dog in:photos ext:jpg")


@pytest.fixture
def source(make_library, tmp_path) -> Library:
    library = make_library()
    make_photos(tmp_path / "photos", 10)
    make_photos(tmp_path / "photos" / "more", 4, start_seed=50, suffix=".png")
    library.crawl([tmp_path / "photos"])
    return library


def _other(tmp_path: Path, embedder, name: str = "other") -> Library:
    return Library(load_settings(tmp_path / name), embedder=embedder)


def _answers(library: Library, exact: bool) -> list[list[tuple[str, float]]]:
    return [[(r.path, round(r.score, 5)) for r in library.search(q, k=6, exact=exact)] for q in QUERIES]


@pytest.mark.parametrize("fmt", ["npz", "npy"])
def test_export_then_import_into_a_fresh_library_answers_identically(source, embedder, tmp_path, fmt):
    target = tmp_path / ("library.npz" if fmt == "npz" else "vectors")
    report = source.export_vectors(target, fmt)
    assert report.count == 14 and report.dim == embedder.dim
    other = _other(tmp_path, embedder)
    imported = other.import_vectors(target / "embeddings.npy" if fmt == "npy" else target,
                                    model=None if fmt == "npz" else embedder.spec)
    assert (imported.added, imported.refused, imported.remote, imported.model) == (14, 0, 0, embedder.spec)
    assert embedder.images == 14  # only the source's crawl embedded anything
    for exact in (True, False):
        assert _answers(other, exact) == _answers(source, exact)
    assert other.status().index.count == 14


def test_the_npz_holds_what_the_issue_lists(source, embedder, tmp_path):
    source.export_vectors(tmp_path / "library.npz")
    data = np.load(tmp_path / "library.npz", allow_pickle=False)
    assert sorted(data.files) == ["hashes", "height", "model", "paths", "taken_at", "vectors", "width"]
    assert data["vectors"].dtype == np.float32 and data["vectors"].shape == (14, embedder.dim)
    assert np.allclose(np.linalg.norm(data["vectors"], axis=1), 1, atol=1e-5)
    store = Store(source.settings.catalog_path)
    rows = {r.path: r for r in store.rows(range(1, 100)).values()}
    store.close()
    for i, path in enumerate(data["paths"].tolist()):
        row = rows[path]
        assert (data["hashes"][i], data["width"][i], data["height"][i]) == (row.hash, row.width, row.height)
    assert str(data["model"]) == embedder.spec


def test_a_crawl_after_an_import_of_local_photos_embeds_nothing(source, embedder, tmp_path):
    source.export_vectors(tmp_path / "library.npz")
    other = _other(tmp_path, embedder)
    other.import_vectors(tmp_path / "library.npz")
    before = embedder.images
    report = other.crawl([tmp_path / "photos"])
    assert embedder.images == before and report.stats.embedded == 0
    assert _answers(other, True) == _answers(source, True)


def test_paths_not_on_this_computer_become_remote_rows(source, embedder, tmp_path):
    vectors = np.random.default_rng(0).normal(size=(3, embedder.dim)).astype(np.float32)
    np.save(tmp_path / "emb.npy", vectors)
    np.save(tmp_path / "names.npy", np.array(["/elsewhere/a.jpg", "https://example.org/b.jpg", "c.jpg"]))
    report = source.import_vectors(tmp_path / "emb.npy", paths=tmp_path / "names.npy", base="/mnt/nas")
    assert (report.added, report.remote) == (3, 3)
    by_path = {r.path: r for r in source.search("a photo", k=50, exact=True)}
    assert {"/elsewhere/a.jpg", "https://example.org/b.jpg", "/mnt/nas/c.jpg"} <= set(by_path)
    assert by_path["/elsewhere/a.jpg"].remote and not by_path[str(tmp_path / "photos" / "photo_0000.jpg")].remote
    assert source.status().counts["remote"] == 3
    result = CliRunner().invoke(cli, ["--home", str(source.settings.home), "search", "a photo", "-k", "50"],
                                env={"COLUMNS": "250"})
    assert "/elsewhere/a.jpg (remote)" in result.stdout


def test_nan_rows_and_repeated_paths_are_refused_and_counted(source, embedder, tmp_path):
    vectors = np.random.default_rng(1).normal(size=(6, embedder.dim)).astype(np.float32)
    vectors[1, 3] = np.nan
    vectors[2, 0] = np.inf
    vectors[3] = 0
    paths = np.array(["/x/a.jpg", "/x/b.jpg", "/x/c.jpg", "/x/d.jpg", "/x/a.jpg", ""])
    np.savez(tmp_path / "v.npz", vectors=vectors, paths=paths)
    report = source.import_vectors(tmp_path / "v.npz", model=embedder.spec)
    assert (report.added, report.not_finite, report.duplicates, report.no_path) == (1, 3, 1, 1)
    result = CliRunner().invoke(cli, ["--home", str(source.settings.home), "import", str(tmp_path / "v.npz"),
                                      "--model", embedder.spec], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "refused: NaN, infinite or zero vectors" in result.stdout and "already embedded" in result.stdout


def test_vectors_of_embedded_photos_are_kept_unless_asked(source, embedder, tmp_path):
    photo = str(tmp_path / "photos" / "photo_0003.jpg")
    before = source.search(image=photo, k=1, exact=True)[0]
    np.savez(tmp_path / "v.npz", vectors=-np.ones((1, embedder.dim), np.float32), paths=np.array([photo]))
    report = source.import_vectors(tmp_path / "v.npz", model=embedder.spec)
    assert (report.added, report.kept) == (0, 1)
    assert source.search(image=photo, k=1, exact=True)[0].path == before.path
    report = source.import_vectors(tmp_path / "v.npz", model=embedder.spec, overwrite=True)
    assert report.replaced == 1
    store = Store(source.settings.catalog_path)
    ids, vectors = store.vectors([store.file_id(photo)], embedder.dim)
    store.close()
    assert np.allclose(vectors[0], -1 / np.sqrt(embedder.dim))


def _bad(tmp_path: Path, name: str, **arrays) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(("make", "message"), [
    (lambda t, d: _bad(t, "dim.npz", vectors=np.ones((2, d + 1), np.float32), paths=np.array(["/a", "/b"])),
     "holds vectors of {d1} numbers, but model"),
    (lambda t, d: _bad(t, "int.npz", vectors=np.ones((2, d), np.int64), paths=np.array(["/a", "/b"])),
     "holds int64, not floating-point vectors"),
    (lambda t, d: _bad(t, "len.npz", vectors=np.ones((2, d), np.float32), paths=np.array(["/a", "/b", "/c"])),
     "has 3 entries for 2 vectors"),
    (lambda t, d: _bad(t, "obj.npz", vectors=np.ones((2, d), np.float32), paths=np.array(["/a", None], dtype=object)),
     "holds Python objects"),
    (lambda t, d: _bad(t, "flat.npz", vectors=np.ones(d, np.float32), paths=np.array(["/a"])),
     "one vector per row"),
    (lambda t, d: _bad(t, "nopaths.npz", vectors=np.ones((2, d), np.float32)),
     "has no paths array"),
    (lambda t, d: _bad(t, "model.npz", vectors=np.ones((2, d), np.float32), paths=np.array(["/a", "/b"]),
                       model=np.array("ViT-B-32:openai")),
     "says its vectors were made with ViT-B-32:openai"),
    (lambda t, d: (t / "junk.npz").write_bytes(b"PK\x03\x04 not really") and t / "junk.npz",
     "is not a readable .npz"),
])
def test_a_bad_file_is_refused_in_one_line_and_nothing_is_written(source, embedder, tmp_path, make, message):
    path = make(tmp_path, embedder.dim)
    before = source.status()
    result = CliRunner().invoke(cli, ["--home", str(source.settings.home), "import", str(path),
                                      "--model", embedder.spec])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and message.format(d1=embedder.dim + 1) in result.stderr, result.stderr
    after = source.status()
    assert (after.counts, after.index) == (before.counts, before.index)


def test_a_truncated_npy_is_refused_before_anything_is_written(source, embedder, tmp_path):
    np.save(tmp_path / "emb.npy", np.ones((100, embedder.dim), np.float32))
    np.save(tmp_path / "paths.npy", np.array([f"/r/{i}.jpg" for i in range(100)]))
    data = (tmp_path / "emb.npy").read_bytes()
    (tmp_path / "emb.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(ClipsearchError, match="ends early: the file is truncated"):
        source.import_vectors(tmp_path / "emb.npy", model=embedder.spec)
    assert source.status().counts.get("remote") == 0


def test_a_damaged_npz_member_is_refused_before_anything_is_written(source, embedder, tmp_path):
    np.savez(tmp_path / "v.npz", vectors=np.ones((50_000, embedder.dim), np.float32),
             paths=np.array([f"/r/{i}.jpg" for i in range(50_000)]))
    data = bytearray((tmp_path / "v.npz").read_bytes())
    data[len(data) // 3: len(data) // 3 + 64] = b"\xff" * 64  # inside the vectors: the CRC fails at the end
    (tmp_path / "v.npz").write_bytes(bytes(data))
    with pytest.raises(ClipsearchError, match="damaged|truncated|cannot be read"):
        source.import_vectors(tmp_path / "v.npz", model=embedder.spec)


def test_windows_paths_and_undecodable_names_are_kept_apart(source, embedder, tmp_path):
    vectors = np.random.default_rng(3).normal(size=(3, embedder.dim)).astype(np.float32)
    np.savez(tmp_path / "v.npz", vectors=vectors,
             paths=np.array([b"C:\\Users\\me\\a.jpg", b"\\\\nas\\photos\\b.jpg", b"/r/\xff.jpg"]))
    report = source.import_vectors(tmp_path / "v.npz", model=embedder.spec, base="/somewhere")
    assert (report.added, report.remote, report.no_path) == (2, 2, 1)
    found = {r.path for r in source.search("a photo", k=30, exact=True)}
    assert {"C:\\Users\\me\\a.jpg", "\\\\nas\\photos\\b.jpg"} <= found


def test_a_new_library_needs_to_know_the_model(embedder, tmp_path):
    np.save(tmp_path / "emb.npy", np.ones((1, embedder.dim), np.float32))
    np.save(tmp_path / "paths.npy", np.array(["/r/1.jpg"]))
    library = Library(load_settings(tmp_path / "new"))
    with pytest.raises(ClipsearchError, match="does not say which model"):
        library.import_vectors(tmp_path / "emb.npy")
    report = library.import_vectors(tmp_path / "emb.npy", model=TINY_MODEL)
    assert report.added == 1 and library.status().model == embedder.spec


def test_another_models_vectors_are_refused(source, embedder, tmp_path):
    np.savez(tmp_path / "v.npz", vectors=np.ones((1, 512), np.float32), paths=np.array(["/a.jpg"]),
             model=np.array("ViT-B-32:openai"))
    with pytest.raises(ClipsearchError, match="cannot be searched together"):
        source.import_vectors(tmp_path / "v.npz")


def test_clip_retrieval_output_is_read_with_pyarrow(source, embedder, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "clip_out"
    (folder / "img_emb").mkdir(parents=True)
    (folder / "metadata").mkdir()
    rng = np.random.default_rng(2)
    for part, names in enumerate((["/r/a.jpg", "/r/b.jpg"], ["/r/c.jpg"])):
        vectors = rng.normal(size=(len(names), embedder.dim)).astype(np.float16)
        np.save(folder / "img_emb" / f"img_emb_{part}.npy", vectors)
        pq.write_table(pa.table({"image_path": names, "caption": ["x"] * len(names)}),
                       folder / "metadata" / f"metadata_{part}.parquet")
    report = source.import_vectors(folder, model=embedder.spec)
    assert (report.rows, report.added, report.remote) == (3, 3, 3)
    assert {"/r/a.jpg", "/r/b.jpg", "/r/c.jpg"} <= {r.path for r in source.search("a photo", k=20, exact=True)}


def test_an_export_that_fails_leaves_the_old_file_whole(source, tmp_path, monkeypatch):
    target = tmp_path / "library.npz"
    source.export_vectors(target)
    old = target.read_bytes()
    from clipsearch.interop import vectors as vectors_mod

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(vectors_mod, "write_npy", broken)
    with pytest.raises((OSError, ClipsearchError)):
        source.export_vectors(target)
    assert target.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_export_writes_only_live_photos_unless_all(source, tmp_path):
    (tmp_path / "photos" / "photo_0000.jpg").unlink()
    source.crawl([tmp_path / "photos"])
    assert source.export_vectors(tmp_path / "live.npz").count == 13
    assert source.export_vectors(tmp_path / "all.npz", live_only=False).count == 14
    with zipfile.ZipFile(tmp_path / "all.npz") as archive:
        assert archive.getinfo("vectors.npy").compress_type == zipfile.ZIP_STORED


def test_an_import_while_the_watch_daemon_runs_is_handed_to_it(source, embedder, tmp_path):
    import threading
    import time

    from clipsearch.daemon.client import daemon_pid

    np.savez(tmp_path / "v.npz", vectors=np.ones((2, embedder.dim), np.float32),
             paths=np.array(["/far/a.jpg", "/far/b.jpg"]), model=np.array(embedder.spec))
    stop = threading.Event()
    daemon = threading.Thread(target=source.watch, args=(stop,), daemon=True)
    daemon.start()
    try:
        other = Library(source.settings, embedder=embedder)
        deadline = time.monotonic() + 30
        while daemon_pid(source.settings.home) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        report = other.import_vectors(tmp_path / "v.npz")
        assert (report.added, report.remote) == (2, 2)
    finally:
        stop.set()
        daemon.join(30)
    assert "/far/a.jpg" in {r.path for r in source.search("a photo", k=30, exact=True)}


def _planted(folder: Path) -> dict[str, Path]:
    """Distinct photos, plus an exact copy of one and a smaller re-saved copy of another."""
    photos = make_photos(folder, 8)
    copy = folder / "copies" / "photo_0001 (copy).jpg"
    copy.parent.mkdir()
    copy.write_bytes(photos[1].read_bytes())
    small = folder / "copies" / "photo_0004-small.jpg"
    with Image.open(photos[4]) as img:
        img.resize((img.width // 2, img.height // 2)).save(small, quality=80)
    return {"original": photos[1], "copy": copy, "resized_from": photos[4], "small": small}


def test_dupes_finds_planted_exact_and_resized_copies(make_library, tmp_path):
    planted = _planted(tmp_path / "photos")
    make_photo(tmp_path / "photos" / "unrelated.png", 99, size=(120, 90))
    library = make_library()
    library.crawl([tmp_path / "photos"])
    groups = library.duplicates(threshold=0.995)
    found = [(g.exact, sorted(p.path for p in g.photos)) for g in groups]
    assert (True, sorted([str(planted["original"]), str(planted["copy"])])) in found
    assert (False, sorted([str(planted["resized_from"]), str(planted["small"])])) in found
    assert len(found) == 2
    exact_only = library.duplicates(threshold=0.995, near=False)
    assert [(g.exact, len(g.photos)) for g in exact_only] == [(True, 2)]
    result = CliRunner().invoke(cli, ["--home", str(library.settings.home), "dupes", "--threshold", "0.995", "--json"])
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(line["kind"] for line in lines) == ["exact", "near"]
    small = next(p for line in lines for p in line["photos"] if p["path"] == str(planted["small"]))
    assert small["width"] == 48 and small["size"] == planted["small"].stat().st_size
    assert all(p.exists() for p in planted.values())  # nothing deleted or moved


def test_dupes_sees_photos_crawled_after_the_index_was_built(make_library, tmp_path):
    photos = make_photos(tmp_path / "photos", 6)
    library = make_library()
    library.crawl([tmp_path / "photos"])
    manifest = library.status().index
    twin = tmp_path / "photos" / "late.jpg"
    with Image.open(photos[2]) as img:
        img.resize((img.width * 2, img.height * 2)).save(twin, quality=90)
    with library.writer() as writer:  # a write the forest has not seen (the daemon's, before its rebuild)
        root = writer.roots()[0]
        stat = twin.stat()
        writer.update([FileRecord(str(twin), root.id, stat.st_size, stat.st_mtime_ns)])
    assert library.status().index == manifest and library.status().pending == 1
    groups = library.duplicates(threshold=0.995)
    assert [sorted(p.path for p in g.photos) for g in groups] == [sorted([str(photos[2]), str(twin)])]


def test_dupes_refuses_a_threshold_out_of_range(make_library):
    with pytest.raises(ClipsearchError, match="threshold"):
        make_library().duplicates(threshold=1.5)
