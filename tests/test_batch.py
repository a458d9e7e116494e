"""`clipsearch batch`: a CSV of queries in, the top k of each out; UTM from file names; presets.

Quality is checked with the shapes model (tests/shapes.py): a CSV of all 40 training
phrasings must find their colour and shape. Plumbing (one model call per batch, bad CSVs,
nothing half-written) uses the tiny random model.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from clipsearch.cli import cli
from clipsearch.config import PRESETS, load_settings
from clipsearch.errors import ClipsearchError
from clipsearch.interop.batch import header, read_queries, run, utm_of
from clipsearch.library import Library
from clipsearch.records import BatchQuery

from .conftest import make_photos
from .shapes import COLOURS, SHAPES, TEMPLATES, label_of


def _cli(home: Path, *args: str):
    return CliRunner().invoke(cli, ["--home", str(home), *args], catch_exceptions=False)


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


@pytest.mark.parametrize(("name", "expected"), [
    ("@0543256.96@4178906.70@image001.jpg", (543256.96, 4178906.7)),
    ("/data/pitts/@0584290.87@4477235.36@17@T@040.jpg", (584290.87, 4477235.36)),
    ("C:\\vpr\\@0000001@0000002@x.png", (1.0, 2.0)),
    ("@-12.5@+7.@x.jpg", (-12.5, 7.0)),
    ("@.5@3@x.jpg", (0.5, 3.0)),
])
def test_utm_coordinates_come_from_the_file_name(name, expected):
    assert utm_of(name) == expected


@pytest.mark.parametrize("name", [
    "image001.jpg", "", None, "@543256.96@image.jpg", "@543256.96@4178906.70", "x@1@2@y.jpg", "@nan@1@x.jpg",
    "@inf@1@x.jpg", "@1e5@2@x.jpg", "@1,5@2@x.jpg", "@@@x.jpg", "@1@2@/in/a/folder.jpg",
    "/data/@0543256.96@4178906.70@/image.jpg",
])
def test_anything_else_gives_nan(name):
    east, north = utm_of(name)
    assert math.isnan(east) and math.isnan(north)


def test_the_csv_has_the_exact_header_and_a_row_checked_by_hand(shape_library, tmp_path):
    queries = _write(tmp_path / "q.csv", "image_path,description,note\n"
                                         "@0543256.96@4178906.70@image001.jpg,a red circle,first\n")
    result = _cli(shape_library.home, "batch", str(queries), "-o", str(tmp_path / "out.csv"), "-k", "3")
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "out.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == ("query_image_path,utm_east,utm_north,"
                        "reference_1_path,reference_1_distance,reference_1_utm_east,reference_1_utm_north,"
                        "reference_2_path,reference_2_distance,reference_2_utm_east,reference_2_utm_north,"
                        "reference_3_path,reference_3_distance,reference_3_utm_east,reference_3_utm_north,"
                        "description,note")
    # By hand: the same query through `search`, distance = 1 - score to 4 places.
    found = _cli(shape_library.home, "search", "a red circle", "-k", "3", "--json")
    expected = [json.loads(line) for line in found.stdout.splitlines()]
    cells = next(csv.reader(lines[1:2]))
    assert cells[:3] == ["@0543256.96@4178906.70@image001.jpg", "543256.96", "4178906.7"]
    for n, hit in enumerate(expected):
        path, distance, east, north = cells[3 + 4 * n: 7 + 4 * n]
        assert path == hit["path"]
        assert distance == repr(round(1 - hit["score"], 4))
        assert (east, north) == ("nan", "nan")
    assert cells[-2:] == ["a red circle", "first"]


def test_the_shapes_model_answers_a_csv_of_40_phrases(shape_library, tmp_path):
    phrases = [t.format(colour=c, shape=s) for c in COLOURS for s in SHAPES for t in TEMPLATES]
    assert len(phrases) == 40
    queries = tmp_path / "q.csv"
    with open(queries, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["image_path", "description", "colour", "shape"])
        for c in COLOURS:
            for s in SHAPES:
                for t in TEMPLATES:
                    writer.writerow(["", t.format(colour=c, shape=s), c, s])
    result = _cli(shape_library.home, "batch", str(queries), "-o", str(tmp_path / "out.csv"), "-k", "5")
    assert result.exit_code == 0, result.output
    rows = _rows(tmp_path / "out.csv")
    assert [r["description"] for r in rows] == phrases
    for row in rows:
        labels = [label_of(row[f"reference_{n}_path"]) for n in range(1, 6)]
        # The bar of the search tests: all five the colour, at least four the shape.
        assert all(c == row["colour"] for c, _ in labels), (row["description"], labels)
        assert sum(s == row["shape"] for _, s in labels) >= 4, (row["description"], labels)
        distances = [float(row[f"reference_{n}_distance"]) for n in range(1, 6)]
        assert distances == sorted(distances) and all(0 <= d <= 2 for d in distances)


def test_an_image_query_finds_its_kind_and_never_itself(shape_library, tmp_path):
    photo = next(p for p in shape_library.photos if p.colour == "blue" and p.shape == "star")
    queries = _write(tmp_path / "q.csv", f"image_path,description\n{photo.path},\n")
    result = _cli(shape_library.home, "batch", str(queries), "-o", str(tmp_path / "out.jsonl"), "-k", "4")
    assert result.exit_code == 0, result.output
    answer = json.loads((tmp_path / "out.jsonl").read_text(encoding="utf-8"))
    paths = [r["path"] for r in answer["references"]]
    assert len(paths) == 4 and str(photo.path) not in paths
    assert all(label_of(p) == ("blue", "star") for p in paths[:3]), paths
    assert answer["error"] is None and answer["utm_east"] is None


def test_filters_and_weights_work_in_descriptions(shape_library, tmp_path):
    queries = _write(tmp_path / "q.csv", "image_path,description\n,a red circle ext:png\n,a red circle - a red star\n")
    result = _cli(shape_library.home, "batch", str(queries), "-o", str(tmp_path / "out.csv"), "-k", "3")
    assert result.exit_code == 0, result.output
    first, second = _rows(tmp_path / "out.csv")
    assert all(first[f"reference_{n}_path"].endswith(".png") for n in range(1, 4))
    alone = _cli(shape_library.home, "search", "a red circle - a red star", "-k", "3", "--json")
    expected = [json.loads(line)["path"] for line in alone.stdout.splitlines()]
    assert [second[f"reference_{n}_path"] for n in range(1, 4)] == expected


def test_a_failed_query_is_written_with_nan_and_named_on_stderr(shape_library, tmp_path):
    queries = _write(tmp_path / "q.csv", "image_path,description\nmissing.jpg,\n,a green square\n,in:nowhere\n")
    result = _cli(shape_library.home, "batch", str(queries), "-o", str(tmp_path / "out.csv"), "-k", "2")
    assert result.exit_code == 0, result.output
    missing, good, only_filter = _rows(tmp_path / "out.csv")
    assert missing["reference_1_path"] == "" and missing["reference_1_distance"] == "nan"
    assert good["reference_2_path"] and label_of(good["reference_1_path"]) == ("green", "square")
    assert only_filter["reference_1_distance"] == "nan"
    assert "line 2:" in result.stderr and "no such file" in result.stderr
    assert "line 4:" in result.stderr
    assert "3 queries answered" in result.stderr and "2 failed" in result.stderr


def test_min_score_drops_weak_references_as_nan(shape_library, tmp_path):
    queries = _write(tmp_path / "q.csv", "image_path,description\n,a red circle\n")
    out = tmp_path / "out.csv"
    assert _cli(shape_library.home, "batch", str(queries), "-o", str(out), "-k", "30").exit_code == 0
    scores = [1 - float(_rows(out)[0][f"reference_{n}_distance"]) for n in range(1, 31)]
    floor = (scores[2] + scores[3]) / 2  # between the 3rd and the 4th
    assert _cli(shape_library.home, "batch", str(queries), "-o", str(out), "-k", "30",
                "--min-score", str(floor)).exit_code == 0
    row = _rows(out)[0]
    assert all(row[f"reference_{n}_path"] for n in range(1, 4))
    assert row["reference_4_path"] == "" and row["reference_4_distance"] == "nan"


@pytest.fixture
def tiny_library(make_library, tmp_path) -> Library:
    library = make_library()
    make_photos(tmp_path / "photos", 12)
    library.crawl([tmp_path / "photos"])
    return library


def test_texts_go_to_the_model_once_per_batch_not_per_row(tiny_library, embedder, tmp_path, monkeypatch):
    calls = []
    inner = embedder.embed_texts
    monkeypatch.setattr(embedder, "embed_texts", lambda texts: calls.append(len(texts)) or inner(texts))
    queries = tmp_path / "q.csv"
    queries.write_text("image_path,description\n" + "".join(f",photo number {i}\n" for i in range(300)),
                       encoding="utf-8")
    summary = run(tiny_library.search_many, queries, tmp_path / "out.csv", k=2)
    assert summary.queries == 300 and summary.failed == 0
    assert calls == [256, 44]
    assert len(_rows(tmp_path / "out.csv")) == 300


def test_exact_batches_score_every_photo_like_a_single_search(make_library, tiny_library, tmp_path):
    exact = make_library(exact_search=True)
    answers = exact.search_many([BatchQuery(text="a photo"), BatchQuery(text="blue sky + water")], k=5)
    for query, answer in zip(("a photo", "blue sky + water"), answers):
        single = tiny_library.search(query, k=5, exact=True)
        assert [r.path for r in answer.results] == [r.path for r in single]
        assert [r.score for r in answer.results] == pytest.approx([r.score for r in single], abs=1e-5)


def test_a_bom_and_quoted_newlines_are_read_and_extra_columns_pass_through(tiny_library, tmp_path):
    queries = _write(tmp_path / "q.csv", '\ufeffimage_path,Description,id\n,"two\nlines",7\n,"a, b",8\n')
    extras, rows = read_queries(queries)
    assert extras == ["id"]
    assert [(r.description, r.extra, r.line) for r in rows] == [("two lines", {"id": "7"}, 2), ("a, b", {"id": "8"}, 4)]
    run(tiny_library.search_many, queries, tmp_path / "out.csv", k=1)
    assert [(r["description"], r["id"]) for r in _rows(tmp_path / "out.csv")] == [("two lines", "7"), ("a, b", "8")]
    assert header(1, extras)[-2:] == ["description", "id"]


def test_input_columns_named_like_output_columns_pass_through_renamed(tiny_library, tmp_path):
    queries = _write(tmp_path / "q.csv", "image_path,description,utm_east,note,note,reference_1_path\n"
                                         ",a photo,12.5,first,second,gt.jpg\n")
    run(tiny_library.search_many, queries, tmp_path / "out.csv", k=1)
    row = _rows(tmp_path / "out.csv")[0]
    assert (row["utm_east"], row["input_utm_east"]) == ("nan", "12.5")
    assert (row["note"], row["note_2"], row["input_reference_1_path"]) == ("first", "second", "gt.jpg")
    run(tiny_library.search_many, queries, tmp_path / "out.jsonl", k=1)
    answer = json.loads((tmp_path / "out.jsonl").read_text(encoding="utf-8"))
    assert answer["utm_east"] is None and answer["input_utm_east"] == "12.5"


def test_an_output_that_cannot_be_written_is_one_line(tiny_library, tmp_path):
    queries = _write(tmp_path / "q.csv", "image_path,description\n,a photo\n")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").touch()  # a folder in the way: the rename over it fails
    with pytest.raises(ClipsearchError, match="taken could not be written: .*; nothing was changed"):
        run(tiny_library.search_many, queries, tmp_path / "taken", k=1)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_utf16_with_a_bom_is_read(tmp_path):
    queries = _write(tmp_path / "q.csv", "\ufeffimage_path,description\n,café\n", "utf-16-le")
    assert [r.description for r in read_queries(queries)[1]] == ["café"]


@pytest.mark.parametrize(("content", "message"), [
    (b"", "is empty"),
    (b"\n  \n", "is empty"),
    (b"path,text\n,a dog\n", "no 'image_path' and no 'description' column"),
    (b"image_path\nx.jpg\n", "no 'description' column"),
    ("image_path,description\n,caf\u00e9\n".encode("latin-1"), "line 2: not UTF-8"),
    (b'image_path,description\n,"never closed\n', "not valid CSV"),
    (b"image_path,description\n", "no queries"),
])
def test_a_bad_csv_is_one_line_and_nothing_is_written(tiny_library, tmp_path, content, message):
    queries = tmp_path / "q.csv"
    queries.write_bytes(content)
    out = tmp_path / "out.csv"
    out.write_text("the results of yesterday\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["--home", str(tiny_library.settings.home), "batch", str(queries), "-o", str(out)])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert out.read_text(encoding="utf-8") == "the results of yesterday\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_an_interrupted_batch_leaves_no_file_behind(tiny_library, tmp_path, monkeypatch):
    queries = tmp_path / "q.csv"
    queries.write_text("image_path,description\n" + ",a photo\n" * 300, encoding="utf-8")
    calls = []

    def interrupted(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return Library.search_many(tiny_library, *args, **kwargs)

    monkeypatch.setattr(tiny_library, "search_many", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_library.search_many, queries, tmp_path / "out.csv", k=1)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["q.csv"]


def test_presets_bundle_settings_that_settings_beside_them_override(tmp_path, monkeypatch):
    home = tmp_path / "home"
    settings = load_settings(home, preset="high_accuracy")
    assert (settings.model, settings.search_k, settings.tta) == ("accurate", 60_000, "flip")
    assert settings.preset_from == "--preset"
    home.mkdir()
    (home / "config.toml").write_text('preset = "vpr"\nsearch_k = 123\n', encoding="utf-8")
    settings = load_settings(home)
    assert (settings.exact_search, settings.search_k, settings.tta, settings.preset) == (True, 123, "flip", "vpr")
    monkeypatch.setenv("CLIPSEARCH_MODEL", "openai")
    assert load_settings(home).model == "openai"  # the environment is above config.toml's preset
    settings = load_settings(home, preset="fast", model="accurate")
    assert (settings.model, settings.image_precision, settings.search_k) == ("accurate", "int8", 5000)
    assert load_settings(home, preset="High-Accuracy").preset == "high_accuracy"
    with pytest.raises(ClipsearchError, match="no preset 'quick'.*fast, default, high_accuracy, vpr"):
        load_settings(home, preset="quick")


def test_presets_are_listed(tmp_path):
    result = CliRunner().invoke(cli, ["presets", "--json"])
    listed = [json.loads(line) for line in result.stdout.splitlines()]
    assert [p["name"] for p in listed] == list(PRESETS) == ["fast", "default", "high_accuracy", "vpr"]
    assert listed[1]["model_spec"] == "ViT-B-32-SigLIP2-256:webli" and listed[1]["coco_r1"] == 47.2
    assert listed[2]["model_spec"] == "ViT-B-16-SigLIP2-256:webli" and listed[2]["licence"] == "Apache-2.0"
    table = CliRunner().invoke(cli, ["presets"], terminal_width=120).stdout
    assert "ViT-B-16-SigLIP2-256:webli" in table and "COCO R@1 53.2" in table and "every photo scored exactly" in table


def test_a_preset_naming_another_model_is_refused_by_crawl_and_noted_by_search(shape_library, tmp_path):
    result = CliRunner().invoke(cli, ["--home", str(shape_library.home), "crawl", "--preset", "fast"])
    assert result.exit_code == 1 and "embedded with model" in result.stderr
    assert "ViT-B-32-SigLIP2-256:webli" in result.stderr
    result = CliRunner().invoke(cli, ["--home", str(shape_library.home), "search", "a red circle", "--preset", "vpr"])
    assert result.exit_code == 0
    assert "preset vpr names model ViT-B-16-SigLIP2-256" in result.stderr and "which answers" in result.stderr


def test_the_search_k_setting_reaches_the_forest(tiny_library, make_library):
    from clipsearch.catalog.store import Store
    from clipsearch.keeper import ForestKeeper
    from clipsearch.notices import Notices

    library = make_library(search_k=10)
    store = Store.open_existing(library.settings.catalog_path)
    try:
        forest = ForestKeeper(library.settings, Notices()).current(store)
        assert forest is not None and forest.search_k == 10
        wide = make_library(search_k=200_000)
        assert ForestKeeper(wide.settings, Notices()).current(store).search_k == 200_000
    finally:
        store.close()
    assert [r.path for r in wide.search("a photo", k=5)] == [r.path for r in library.search("a photo", k=5, exact=True)]


def test_mirrored_image_queries_average_both_views(make_library, tiny_library, tmp_path):
    import numpy as np

    photo = sorted((tmp_path / "photos").iterdir())[0]
    plain = tiny_library.search(image=photo, k=12, exact=True)
    mirrored = make_library(tta="flip").search(image=photo, k=12, exact=True)
    assert {r.path for r in plain} == {r.path for r in mirrored}
    assert not np.allclose([r.score for r in plain], [r.score for r in mirrored])
