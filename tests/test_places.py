"""Places from the GPS positions in photos' EXIF (the table shipped with clipsearch, no network):
place: by city, region, country and code, plain words naming a place of the library, near:,
and dates said in plain words; what the words were read as is told."""

from __future__ import annotations

import os

import pytest

from clipsearch.config import load_settings
from clipsearch.library import Library
from clipsearch.places import fold, places

from .conftest import TINY_MODEL, clean_environment, make_photo, run_cli
from .formatfiles import phone_exif

LISBON, PORTO, FARO, PARIS = (38.7075, -9.1364), (41.1496, -8.6110), (37.0194, -7.9304), (48.8566, 2.3522)
# name: (GPS position, date taken)
PHOTOS = {
    "lisbon-tram.jpg": (LISBON, "2019:07:14 18:30:05"),
    "lisbon-river.jpg": ((38.7060, -9.1450), "2021:01:03 10:00:00"),
    "porto.jpg": (PORTO, "2019:12:25 12:00:00"),
    "faro.jpg": (FARO, "2021:07:30 09:00:00"),
    "paris.jpg": (PARIS, "2020:04:12 16:00:00"),
    "atlantic.jpg": ((30.0, -40.0), "2020:08:01 12:00:00"),  # at sea: no place
    "nowhere.jpg": (None, "2018:05:05 05:05:05"),  # no GPS
}


@pytest.fixture(scope="module")
def places_library(tmp_path_factory):
    base = tmp_path_factory.mktemp("places")
    folder = base / "photos"
    for seed, (name, (gps, taken)) in enumerate(PHOTOS.items()):
        make_photo(folder / name, seed, size=(160, 120), exif=phone_exif(1, taken=taken, gps=gps).tobytes())
    with clean_environment(base / "model-cache"):
        library = Library(load_settings(base / "home", model=TINY_MODEL, device="cpu"))
        report = library.crawl([folder])
        yield library, report


def _names(results) -> set[str]:
    return {os.path.basename(r.path) for r in results}


def test_the_shipped_table_names_the_city_region_and_country_of_a_position():
    table = places()
    lisbon = table.nearest(*LISBON)
    assert (lisbon.city, lisbon.country, lisbon.country_code) == ("Lisbon", "Portugal", "PT")
    assert table.nearest(*PARIS).region == "Île-de-France"
    assert table.nearest(0.0, 0.0) is None  # a camera's empty GPS block
    assert table.nearest(30.0, -40.0) is None  # mid-Atlantic
    assert fold("São Paulo") == "sao paulo" and fold("Île-de-France") == "ile de france"


def test_the_crawl_places_photos_and_status_counts_them(places_library):
    library, report = places_library
    assert report.placed == 6  # the six with a position
    assert library.status().places == (5, 6)
    lisbon = library.search("place:lisbon", k=10)
    assert all(r.place == "Lisbon, Portugal" for r in lisbon)


@pytest.mark.parametrize("query,expected", [
    ("place:lisbon", {"lisbon-tram.jpg", "lisbon-river.jpg"}),
    ("place:Lisboa", set()),  # GeoNames' English name is what is stored
    ("place:portugal", {"lisbon-tram.jpg", "lisbon-river.jpg", "porto.jpg", "faro.jpg"}),
    ("place:PT", {"lisbon-tram.jpg", "lisbon-river.jpg", "porto.jpg", "faro.jpg"}),
    ("place:ile-de-france", {"paris.jpg"}),
    ("place:porto place:faro", {"porto.jpg", "faro.jpg"}),
    ("place:madrid", set()),
    ("near:38.707,-9.14,2", {"lisbon-tram.jpg", "lisbon-river.jpg"}),
    ("near:38.707,-9.14", {"lisbon-tram.jpg", "lisbon-river.jpg"}),
    ("near:41,-8.6,50", {"porto.jpg"}),
])
def test_place_and_near_filters(places_library, query, expected):
    library, _ = places_library
    assert _names(library.search(query, k=20)) == expected
    assert _names(library.search(f"a photo {query}", k=20)) == expected


def test_a_plain_word_naming_a_place_of_the_library_filters_by_it_and_says_so(places_library):
    library, _ = places_library
    library.take_notices()

    found = library.search("street portugal", k=20)

    assert _names(found) == {"lisbon-tram.jpg", "lisbon-river.jpg", "porto.jpg", "faro.jpg"}
    assert library.take_notices() == ["read as: street · place: Portugal, PT"]
    assert _names(library.search("Lisbon", k=20)) == {"lisbon-tram.jpg", "lisbon-river.jpg"}
    assert library.take_notices() == ["read as: (no words: the newest photos that match) · place: Lisbon, PT"]


def test_a_place_not_in_the_library_or_quoted_stays_text(places_library):
    library, _ = places_library
    library.take_notices()
    assert len(library.search("madrid", k=20)) == 7  # no photo taken there: a word for the model
    assert len(library.search('"portugal"', k=20)) == 7
    assert len(library.search('street "lisbon"', k=20)) == 7
    assert library.take_notices() == []


@pytest.mark.parametrize("query,expected,reading", [
    ("2019", {"lisbon-tram.jpg", "porto.jpg"}, "date: 2019"),
    ("tram july 2019", {"lisbon-tram.jpg"}, "date: July 2019"),
    ("christmas 2019", {"porto.jpg"}, "date: christmas 2019 (24 Dec 2019 - 26 Dec 2019)"),
    ("summer 2021", {"faro.jpg"}, "date: summer 2021 (1 Jun 2021 - 31 Aug 2021)"),
    ("2019-2020", {"lisbon-tram.jpg", "porto.jpg", "paris.jpg", "atlantic.jpg"}, "date: 2019 to 2020"),
    ("portugal 2021", {"lisbon-river.jpg", "faro.jpg"}, "date: 2021"),
])
def test_a_date_in_plain_words_filters_by_the_date_taken(places_library, query, expected, reading):
    library, _ = places_library
    library.take_notices()
    assert _names(library.search(query, k=20)) == expected
    assert any(reading in notice for notice in library.take_notices())


def test_a_quoted_year_and_lone_month_names_stay_words(places_library):
    library, _ = places_library
    library.take_notices()
    for query in ('"2019"', "may", "march", "fall", "spring flowers"):
        assert len(library.search(query, k=20)) == 7, query
    assert library.take_notices() == []


def test_the_reading_is_shown_by_the_command_line(places_library):
    library, _ = places_library
    result = run_cli("--home", str(library.settings.home), "search", "street portugal 2019")
    assert result.returncode == 0, result.stderr
    assert "read as: street · date: 2019 · place: Portugal, PT" in result.stderr
    assert {os.path.basename(line.split("\t")[2]) for line in result.stdout.splitlines()[1:]} == \
        {"lisbon-tram.jpg", "porto.jpg"}
    assert "Lisbon, Portugal" in result.stdout


@pytest.mark.parametrize("query,message", [
    ("near:abc", "near:abc: write near:LATITUDE,LONGITUDE"),
    ("near:95,10", "latitude -90..90"),
    ("near:10,10,0", "a distance above 0 km"),
    ("place:!!", "name a city, region or country"),
    ("text:...", "name a word"),
])
def test_bad_place_and_word_filters_get_one_line(places_library, query, message):
    library, _ = places_library
    result = run_cli("--home", str(library.settings.home), "search", query)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
