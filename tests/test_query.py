"""The query language: what parses to what, what is refused and how, and filtered searches
that fill the page however rare the match."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipsearch import search as search_mod
from clipsearch.catalog.store import Store
from clipsearch.errors import NothingToSearch
from clipsearch.index import Forest, build_forest, exact_top
from clipsearch.query import QueryError, Term, parse
from clipsearch.records import Embedded, FileRecord, Filters, ImageMeta

from .conftest import make_photo


def test_plain_text_is_one_term():
    query = parse("  dog on   the beach ")
    assert query.terms == (Term(1.0, text="dog on the beach"),) and not query.filters


def test_standalone_plus_and_minus_separate_terms_and_hyphens_stay_in_words():
    query = parse("sunset + black-and-white beach - people")
    assert query.terms == (Term(1.0, text="sunset"), Term(1.0, text="black-and-white beach"),
                           Term(-1.0, text="people"))
    assert str(query) == "sunset + black-and-white beach - people"


def test_weights_are_a_number_and_a_star_before_a_term(tmp_path):
    image = make_photo(tmp_path / "my cat.jpg", 1)
    query = parse(f'2*cat + 0.5*"{image}" - 1.5*dog')
    assert query.terms == (Term(2.0, text="cat"), Term(0.5, image=str(image)), Term(-1.5, text="dog"))


def test_an_existing_image_path_is_an_image_query_and_a_missing_one_is_refused(tmp_path, monkeypatch):
    image = make_photo(tmp_path / "ref.png", 2)
    monkeypatch.chdir(tmp_path)
    assert parse("ref.png").terms == (Term(1.0, image=str(image)),)
    assert parse(str(image)).terms == (Term(1.0, image=str(image)),)
    with pytest.raises(QueryError, match="nope.jpg: no such image file"):
        parse("nope.jpg")


def test_filters_are_parsed_and_colons_elsewhere_are_text(tmp_path):
    query = parse(f"red car in:{tmp_path} in:2021 after:2021-03 before:2022 ext:jpg,PNG camera:Canon "
                  "min:0.2 sort:date C:/photos note:blue")
    assert query.terms == (Term(1.0, text="red car C:/photos note:blue"),)
    assert query.filters == Filters(folders=(str(tmp_path),), folder_names=("2021",), after="2021-03-01",
                                    before="2022-01-01", extensions=("jpg", "jpeg", "png"), cameras=("canon",))
    assert query.min_score == 0.2 and query.sort == "date"


def test_quotes_keep_spaces_together_and_a_quoted_token_is_never_syntax(tmp_path):
    folder = tmp_path / "my photos"
    folder.mkdir()
    query = parse(f'sea in:"{folder}" "in:the mood" "+" a dog\'s toy')
    assert query.filters.folders == (str(folder),)
    assert query.terms == (Term(1.0, text="sea in:the mood + a dog's toy"),)


@pytest.mark.parametrize(("line", "message"), [
    ("cat + + dog", r"'\+' is followed by '\+'"),
    ("cat -", "'-' at the end has no term"),
    ("2x*cat", "the weight '2x' in '2x\\*cat' is not a number"),
    ("0*cat", "must be above 0"),
    ("2*", "has no term after it"),
    ("after:2021-13", "after:2021-13: not a date"),
    ("before:21-3-1", "write the date as YYYY, YYYY-MM or YYYY-MM-DD"),
    ("after:2022 before:2021", "no date is in between"),
    ("in:", "'in:' needs a value"),
    ("min:high", "min:high: the score must be a number"),
    ("min:3", "between -1 and 1"),
    ("sort:size", "sort:size: use one of"),
    ("ext:*", "write extensions like"),
    ("text:!!", "text:!!: name a word"),
    ("near:1,2,3,4", "write near:LATITUDE,LONGITUDE"),
    ("near:100,0", "latitude -90..90"),
    ("place:--", "name a city, region or country"),
    ("summer 2021 after:2022", "have no day in common"),
])
def test_a_malformed_part_is_named(line, message):
    with pytest.raises(QueryError, match=message):
        parse(line)


def test_words_places_positions_exclusions_and_dates_said_in_words():
    query = parse('harbour text:bakery text:"open 7AM" place:Lisbon place:USA near:38.7,-9.1,5 not:"a crowd" '
                  "summer 2021 after:2021-07")
    assert query.terms == (Term(1.0, text="harbour"),)
    assert query.filters.words == ("bakery", "open 7am")
    assert query.filters.places == ("lisbon", "united states")
    assert query.filters.near == (38.7, -9.1, 5.0)
    assert query.excluded == ("a crowd",)
    assert (query.filters.after, query.filters.before) == ("2021-07-01", "2021-09-01")  # narrowed, not widened
    assert query.readings == ("date: summer 2021 (1 Jun 2021 - 31 Aug 2021)",)
    assert parse('"summer 2021"').terms == (Term(1.0, text="summer 2021"),)  # quoted: words
    assert parse("cat - 2019").filters.after is None  # a date only in what is looked for
    assert parse("not:people").excluded == ("people",) and not parse("not:people").is_empty


def test_a_query_of_only_filters_has_no_terms():
    query = parse("in:2021 sort:newest")
    assert not query.terms and query.filters and not query.is_empty
    assert parse("   ").is_empty


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab :*+-\"'./~0129\\x\t")) | st.characters(), max_size=40))
def test_any_text_parses_or_raises_the_projects_own_error(line):
    try:
        query = parse(line)
    except QueryError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    for term in query.terms:
        assert term.weight != 0 and (term.text or term.image)


# --- filtered searches -------------------------------------------------------------------
DIM = 32


def _library_of(tmp_path, count: int, rare_every: int):
    """A catalog of `count` random vectors; every `rare_every`-th photo lies in a folder named
    rare, was taken in 2019 with a Canon, and is a PNG; a forest over all of them."""
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(count, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = Store(tmp_path / "catalog.db")
    store.add_root("/lib")
    root = store.roots()[0].id
    items = []
    for i, vector in enumerate(vectors):
        rare = i % rare_every == 0
        path = f"/lib/rare/{i}.png" if rare else f"/lib/common/{i // 100}/{i}.jpg"
        meta = ImageMeta(10, 10, "PNG" if rare else "JPEG", taken_at="2019-06-01T12:00:00" if rare else
                         "2023-01-02T08:00:00", camera_make="Canon" if rare else "Nikon")
        items.append(Embedded(FileRecord(path, root, 1, i), f"h{i}", meta, vector))
    for start in range(0, len(items), 1000):
        store.write(items[start:start + 1000])
    store.set_meta("dim", str(DIM))

    def chunks():
        yield from store.iter_live_vectors(DIM)

    manifest = build_forest(tmp_path / "index", "test", DIM, store.max_seq(), count, chunks())
    return store, Forest(tmp_path / "index", manifest), vectors


def _rank(store, forest, query, k, filters, offset=0):
    """The retrieval engine's candidates for a page, as results (what the planner pages)."""
    ids, scores = search_mod.candidates(store, forest, query, k + offset, DIM, filters=filters)
    return search_mod.results_for(store, ids[offset:], scores[offset:], first_rank=offset + 1)


def _expected(store, filters, query, k):
    ids, scores = search_mod._exact(store.iter_vectors(store.matching_ids(filters), DIM), query, k)
    return ids.tolist()


@pytest.mark.parametrize("exact_rows", [search_mod.EXACT_ROWS, 5], ids=["scored exactly", "forest oversampled"])
@pytest.mark.parametrize("line", ["in:rare", "ext:png", "camera:canon", "before:2020", "in:/lib/rare"])
def test_a_filter_matching_one_percent_still_fills_the_page(tmp_path, monkeypatch, exact_rows, line):
    monkeypatch.setattr(search_mod, "EXACT_ROWS", exact_rows)
    store, forest, vectors = _library_of(tmp_path, 5000, rare_every=100)
    filters = parse(line).filters
    assert len(store.matching_ids(filters)) == 50
    for probe in (vectors[1], vectors[200], -vectors[7]):
        results = _rank(store, forest, probe, 20, filters)
        assert len(results) == 20
        assert all("/rare/" in r.path for r in results)
        assert [r.file_id for r in results] == _expected(store, filters, probe, 20)
    store.close()


def test_a_filtered_search_pages_on_without_repeating(tmp_path):
    store, forest, vectors = _library_of(tmp_path, 3000, rare_every=10)
    filters = parse("in:rare").filters
    first = _rank(store, forest, vectors[3], 10, filters)
    second = _rank(store, forest, vectors[3], 10, filters, offset=10)
    assert [r.rank for r in second] == list(range(11, 21))
    assert not {r.file_id for r in first} & {r.file_id for r in second}
    assert [r.file_id for r in first + second] == _expected(store, filters, vectors[3], 20)
    store.close()


def test_rows_written_after_the_forest_are_filtered_too(tmp_path):
    store, forest, vectors = _library_of(tmp_path, 2000, rare_every=50)
    root = store.roots()[0].id
    newcomer = vectors[11] * -1.0
    store.write([Embedded(FileRecord("/lib/rare/new.png", root, 1, 1), "hnew", ImageMeta(10, 10, "PNG"), newcomer),
                 Embedded(FileRecord("/lib/common/new.jpg", root, 1, 1), "hnew2", ImageMeta(10, 10, "JPEG"),
                          newcomer)])
    results = _rank(store, forest, newcomer, 5, parse("in:rare").filters)
    assert results[0].path == "/lib/rare/new.png" and results[0].score == pytest.approx(1.0, abs=1e-5)
    assert all("/rare/" in r.path for r in results)
    store.close()


def test_a_library_search_of_only_filters_lists_the_newest_matches(tmp_path, library):
    folder = tmp_path / "photos"
    for i in range(6):
        make_photo(folder / ("old" if i < 3 else "new") / f"p{i}.png", i)
    library.crawl([folder])
    newest = library.search("in:old", k=10)
    assert sorted(r.path for r in newest) == sorted(str(p) for p in (folder / "old").iterdir())
    assert all(r.score is None for r in newest)
    texts = library.search("a photo in:new min:-1 sort:date", k=10)
    assert len(texts) == 3 and all("/new/" in r.path for r in texts)
    with pytest.raises(NothingToSearch):
        library.search("   ")


def test_exact_top_and_the_filtered_exact_scoring_agree(tmp_path):
    store, forest, vectors = _library_of(tmp_path, 1000, rare_every=4)
    filters = parse("ext:png").filters
    ids, scores = store.vectors(list(range(1, 1001)), DIM)
    passing = store.passing(ids.tolist(), filters)
    mask = np.array([i in passing for i in ids.tolist()])
    top_ids, _ = exact_top(ids[mask], scores[mask], vectors[0], 7)
    assert top_ids.tolist() == _expected(store, filters, vectors[0], 7)
    store.close()
