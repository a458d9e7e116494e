"""The date grammar, as a table: what each phrase leaves for the model, the interval it reads."""

from __future__ import annotations

from datetime import date

import pytest

from clipsearch.dates import read_dates

TODAY = date(2026, 3, 15)  # a Sunday
D = date

# (query, text left for the model, after, before); after/before None with rest == query: no date
TABLE = [
    ("2019", "", D(2019, 1, 1), D(2020, 1, 1)),
    ("beach 2019", "beach", D(2019, 1, 1), D(2020, 1, 1)),
    ("in 2019", "", D(2019, 1, 1), D(2020, 1, 1)),
    ("photos from 2019 at the lake", "photos at the lake", D(2019, 1, 1), D(2020, 1, 1)),
    ("july 2019", "", D(2019, 7, 1), D(2019, 8, 1)),
    ("jul 2019", "", D(2019, 7, 1), D(2019, 8, 1)),
    ("July 2019 fireworks", "fireworks", D(2019, 7, 1), D(2019, 8, 1)),
    ("sept. 2019", "", D(2019, 9, 1), D(2019, 10, 1)),
    ("july of 2019", "", D(2019, 7, 1), D(2019, 8, 1)),
    ("january 2021", "", D(2021, 1, 1), D(2021, 2, 1)),
    ("dec 2020", "", D(2020, 12, 1), D(2021, 1, 1)),
    ("may 2019", "", D(2019, 5, 1), D(2019, 6, 1)),
    ("march 2020 snow", "snow", D(2020, 3, 1), D(2020, 4, 1)),
    ("2021-07", "", D(2021, 7, 1), D(2021, 8, 1)),
    ("2021-07-14", "", D(2021, 7, 14), D(2021, 7, 15)),
    ("14 july 2019", "", D(2019, 7, 14), D(2019, 7, 15)),
    ("july 14, 2019", "", D(2019, 7, 14), D(2019, 7, 15)),
    ("on 3rd may 2020", "", D(2020, 5, 3), D(2020, 5, 4)),
    ("summer 2021", "", D(2021, 6, 1), D(2021, 9, 1)),
    ("spring 2020", "", D(2020, 3, 1), D(2020, 6, 1)),
    ("autumn 2018", "", D(2018, 9, 1), D(2018, 12, 1)),
    ("fall 2018 leaves", "leaves", D(2018, 9, 1), D(2018, 12, 1)),
    ("winter 2020", "", D(2020, 12, 1), D(2021, 3, 1)),
    ("winter 2023", "", D(2023, 12, 1), D(2024, 3, 1)),
    ("summer of 2021", "", D(2021, 6, 1), D(2021, 9, 1)),
    ("christmas 2020", "", D(2020, 12, 24), D(2020, 12, 27)),
    ("xmas 2019 tree", "tree", D(2019, 12, 24), D(2019, 12, 27)),
    ("new year 2020", "", D(2019, 12, 31), D(2020, 1, 2)),
    ("new year's eve 2019", "", D(2019, 12, 31), D(2020, 1, 2)),
    ("easter 2024", "", D(2024, 3, 29), D(2024, 4, 2)),
    ("easter 2019", "", D(2019, 4, 19), D(2019, 4, 23)),
    ("halloween 2022 costume", "costume", D(2022, 10, 31), D(2022, 11, 1)),
    ("early 2019", "", D(2019, 1, 1), D(2019, 5, 1)),
    ("late 2019", "", D(2019, 9, 1), D(2020, 1, 1)),
    ("2019-2021", "", D(2019, 1, 1), D(2022, 1, 1)),
    ("2019 - 2021", "", D(2019, 1, 1), D(2022, 1, 1)),
    ("2019–2021", "", D(2019, 1, 1), D(2022, 1, 1)),
    ("2019 to 2021", "", D(2019, 1, 1), D(2022, 1, 1)),
    ("from 2019 to 2021 dogs", "dogs", D(2019, 1, 1), D(2022, 1, 1)),
    ("between 2019 and 2021", "", D(2019, 1, 1), D(2022, 1, 1)),
    ("jan 2019 until march 2020", "", D(2019, 1, 1), D(2020, 4, 1)),
    ("summer 2019 to summer 2020", "", D(2019, 6, 1), D(2020, 9, 1)),
    ("since 2019", "", D(2019, 1, 1), None),
    ("after 2019", "", D(2020, 1, 1), None),
    ("before july 2019", "", None, D(2019, 7, 1)),
    ("last year", "", D(2025, 1, 1), D(2026, 1, 1)),
    ("this year", "", D(2026, 1, 1), D(2027, 1, 1)),
    ("this month", "", D(2026, 3, 1), D(2026, 4, 1)),
    ("last month", "", D(2026, 2, 1), D(2026, 3, 1)),
    ("this week", "", D(2026, 3, 9), D(2026, 3, 16)),
    ("last week", "", D(2026, 3, 2), D(2026, 3, 9)),
    ("today", "", D(2026, 3, 15), D(2026, 3, 16)),
    ("yesterday", "", D(2026, 3, 14), D(2026, 3, 15)),
    ("last 30 days", "", D(2026, 2, 14), D(2026, 3, 16)),
    ("past 2 weeks", "", D(2026, 3, 2), D(2026, 3, 16)),
    ("last summer", "", D(2025, 6, 1), D(2025, 9, 1)),
    ("this winter", "", D(2025, 12, 1), D(2026, 3, 1)),
    ("last winter", "", D(2025, 12, 1), D(2026, 3, 1)),  # in March: the one just past, as "this winter"
    ("90s", "", D(1990, 1, 1), D(2000, 1, 1)),
    ("the 90s cars", "cars", D(1990, 1, 1), D(2000, 1, 1)),
    ("'80s", "", D(1980, 1, 1), D(1990, 1, 1)),
    ("1970s", "", D(1970, 1, 1), D(1980, 1, 1)),
    ("2010s", "", D(2010, 1, 1), D(2020, 1, 1)),
    ("1984", "", D(1984, 1, 1), D(1985, 1, 1)),
    ("2027", "", D(2027, 1, 1), D(2028, 1, 1)),  # next year: cameras with a wrong clock, plans
    ("SUMMER 2021", "", D(2021, 6, 1), D(2021, 9, 1)),
    ("christmas 2020 christmas 2021", "christmas 2021", D(2020, 12, 24), D(2020, 12, 27)),  # the first only
    ('"1984" poster 2019', '"1984" poster', D(2019, 1, 1), D(2020, 1, 1)),
]

KEPT = [  # no date in these: the text goes to the model untouched
    "may", "march", "fall", "spring", "winter", "summer", "christmas", "july", "may flowers",
    "spring in paris", "4k", "100", "100 balloons", "4k wallpaper", "1080p", "1850", "2030", "3000",
    '"1984"', '"summer 2021" sign', "flat 2b", "route 66", "2019x", "ipv4", "sat", "the 20th",
    "year", "last", "in may", "new year", "easter bunny", "2021-13", "2019-02-30", "march of the penguins",
    "31 february 2020", "pages 12-14",
]


@pytest.mark.parametrize("query,rest,after,before", TABLE)
def test_a_date_phrase_reads_as_its_interval(query, rest, after, before):
    left, interval, shown = read_dates(query, TODAY)
    assert (left, interval) == (rest, (after, before))
    assert shown.startswith("date: ")


@pytest.mark.parametrize("query", KEPT)
def test_words_that_are_no_date_stay_words(query):
    assert read_dates(query, TODAY) == (query, None, "")


@pytest.mark.parametrize("query,shown", [
    ("july 2019", "date: July 2019"),
    ("2019", "date: 2019"),
    ("2019-2021", "date: 2019 to 2021"),
    ("winter 2020", "date: winter 2020 (1 Dec 2020 - 28 Feb 2021)"),
    ("since 2019", "date: since 2019"),
    ("2021-07-14", "date: 14 July 2021"),
    ("last year", "date: last year (1 Jan 2025 - 31 Dec 2025)"),
])
def test_the_reading_shown_says_what_was_understood(query, shown):
    assert read_dates(query, TODAY)[2] == shown
