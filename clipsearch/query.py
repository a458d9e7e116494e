"""The query language, parsed in one place for `search`, the prompt and (later) the web page.

    sunset + beach - people          ideas added and subtracted
    2*cat + ~/refs/my_cat.jpg        a weight (N*term); an image file as part of the query
    red car in:D:/photos/2021 after:2021-03-01 ext:jpg camera:canon min:0.2 sort:date

Terms are separated by a `+` or `-` that stands alone (spaces around it), so hyphenated
words and paths stay whole. A weight is a number and `*` at the start of a term; `*`
cannot occur in a Windows path and is rare in text. A filter is a known name, a colon and
a value (`in:`, `after:`, `before:`, `ext:`, `camera:`, `min:`, `sort:`); any other
colon (`C:/photos`, `note: blue`) is text. Quotes keep spaces together: `"~/my pics/a.jpg"`,
`in:"D:/my photos"`; a quoted token is never an operator, weight or filter.

parse() returns a Query or raises QueryError, a ClipsearchError that names the part that
is wrong. It touches the filesystem only to tell image paths from text.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

from .config import DEFAULT_EXTENSIONS
from .errors import QueryError
from .filetypes import same_kind

if TYPE_CHECKING:
    from .records import Filters

MAX_WEIGHT = 100.0
SORTS = ("score", "date", "newest")
FILTERS = ("in", "after", "before", "ext", "camera", "min", "sort", "text", "place", "near", "not")
# How a search ranks, on or off for one query (the library's settings otherwise): planner.py.
SWITCHES = ("tta", "qe", "rerank", "tuned")
NEAR_KM = 2.0  # near:LAT,LON without a distance

HELP = """\
Text finds photos by what is in them; an image file finds photos that look like it.
  dog on the beach              plain text
  ~/refs/cat.jpg                an image (quote a path with spaces: "~/my pics/cat.jpg")
  sunset + beach - people       add and subtract ideas (+ and - stand alone, spaces around)
  2*cat + 0.5*~/refs/cat.jpg    weights: a number and * before a term
Filters (any order, combined with AND; the same filter twice means either):
  in:FOLDER        under FOLDER (an absolute path), or in a folder of that name anywhere
  after:DATE       taken on or after DATE (YYYY, YYYY-MM or YYYY-MM-DD)
  before:DATE      taken before DATE       (after:2021-03 before:2021-04 is March 2021)
  ext:jpg,png      file extension (jpg also finds .jpeg, heic .heif; ext:raw every camera RAW)
  camera:TEXT      camera make or model contains TEXT
  min:SCORE        leave out results scoring below SCORE (e.g. min:0.2)
  sort:date        oldest first; sort:newest newest first; sort:score (default)
  text:WORD        words read in the photo hold WORD; text:"open 7am" those words in order
  place:NAME       taken in that city, region or country (place:lisbon, place:portugal)
  near:LAT,LON,KM  taken within KM (default 2) of a GPS position
  not:TERM         leave out photos that match TERM (- TERM only pushes away from it)
How results are ranked (on or off for this query; off unless config.toml says otherwise):
  rerank:on        re-rank the best 100 by how much their neighbourhoods overlap (k-reciprocal)
  qe:on            search again with the query averaged with its best results (query expansion)
  tuned:on         rank photos like an image query with the head `clipsearch tune` trained
  tta:on           an image query is also searched as its mirror image
Dates and places in plain words: "snow january 2021", "dog 2019", "beach summer 2021",
"2019-2021", "last year" filter by the date taken; a word naming a place where photos of
the library were taken ("beach portugal") filters by place. Quote a word to keep it text.
The date is the one the camera recorded, else the file's modification date. A query of
only filters lists the newest photos that match them."""



# x, y, width, height of the upright photo: whole numbers are pixels (--crop), fractions shares
# of its width and height (the web page's box).
Crop = tuple[float, float, float, float]


@dataclass(frozen=True)
class Term:
    """One idea of a query: a text or an image file, with its weight (negative: subtracted)."""

    weight: float
    text: str | None = None
    image: str | None = None  # an absolute path
    crop: Crop | None = None  # an image's region that is the query (--crop)
    # The text with the parts typed in quotes still in quotes: words outside them may name a
    # place of the library (the planner reads them); quoted ones stay text.
    marked: str | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return self.text if self.text is not None else str(self.image)


@dataclass(frozen=True)
class Query:
    terms: tuple[Term, ...] = ()
    filters: Filters = field(default_factory=lambda: _no_filters())
    min_score: float | None = None
    sort: str = "score"
    excluded: tuple[str, ...] = ()  # not:TERM texts: photos matching one are left out
    readings: tuple[str, ...] = ()  # what plain words were read as: "date: July 2019"
    # rerank:, qe:, tuned:, tta: as typed (None: the library's setting decides).
    tta: bool | None = None
    qe: bool | None = None
    rerank: bool | None = None
    tuned: bool | None = None

    @property
    def is_empty(self) -> bool:
        """Nothing typed that means anything (no terms, filters, min: or sort:)."""
        return (not self.terms and not self.filters and self.min_score is None and self.sort == "score"
                and not self.excluded)

    @property
    def has_image(self) -> bool:
        return any(term.image is not None for term in self.terms)

    def __str__(self) -> str:
        """The terms as the user could type them again (filters left out)."""
        parts: list[str] = []
        for term in self.terms:
            weight = abs(term.weight)
            text = f"{weight:g}*{term}" if weight != 1 else str(term)
            parts.append(("- " if term.weight < 0 else "+ " if parts else "") + text)
        return " ".join(parts)


def switched(query: Query, switches: Mapping[str, bool | None]) -> Query:
    """query with the switches given (tta, qe, rerank, tuned; None: left as it is)."""
    def value(name: str) -> bool | None:
        given = switches.get(name)
        return getattr(query, name) if given is None else given

    return dataclasses.replace(query, tta=value("tta"), qe=value("qe"), rerank=value("rerank"), tuned=value("tuned"))


@dataclass
class _Token:
    text: str
    quoted: bool  # began with a quote: literal text or a path, never syntax


def _tokens(line: str) -> list[_Token]:
    """Split on whitespace. A quote at the start of a token, or right after a filter's colon
    or a weight's `*`, keeps everything to the matching quote together; a quote inside a
    word (dog's) or one never closed is an ordinary character."""
    tokens: list[_Token] = []
    i, n = 0, len(line)
    while i < n:
        if line[i].isspace():
            i += 1
            continue
        start, quoted = i, False
        parts: list[str] = []
        while i < n and not line[i].isspace():
            char = line[i]
            opens = char in "\"'" and (i == start or line[i - 1] in ":*")
            end = line.find(char, i + 1) if opens else -1
            if end > i:
                quoted = quoted or i == start
                parts.append(line[i + 1:end])
                i = end + 1
            else:
                parts.append(char)
                i += 1
        tokens.append(_Token("".join(parts), quoted))
    return tokens


# A number-like start, then `*`: `2*cat`, `0.5*~/a.jpg`; `2x*cat` is a malformed weight.
_WEIGHT = re.compile(r"^([0-9.][^*/\\:]*)\*(.*)$", re.S)
_FILTER = re.compile(r"^([A-Za-z]+):(.*)$", re.S)


def parse(line: str, cwd: str | None = None, files: bool = True) -> Query:
    """The Query for a line of the query language; QueryError if a part of it is wrong.
    files=False: a word is never taken for an image file's path (the file system is not
    looked at: a web page's query must not reach the server's files)."""
    terms: list[tuple[float, list[_Token]]] = []
    sign, current = 1.0, list[_Token]()  # the term being collected
    values: dict[str, list[str]] = {}
    pending_operator: str | None = None
    for token in _tokens(line):
        if not token.quoted and token.text in ("+", "-"):
            if current:
                terms.append((sign, current))
            elif terms or pending_operator:
                raise QueryError(f"'{pending_operator or token.text}' is followed by '{token.text}': "
                                 "put a term between them")
            sign, current, pending_operator = (1.0 if token.text == "+" else -1.0), list[_Token](), token.text
            continue
        match = None if token.quoted else _FILTER.match(token.text)
        if match and match.group(1).lower() in FILTERS + SWITCHES:
            name, value = match.group(1).lower(), match.group(2)
            if not value:
                raise QueryError(f"'{token.text}' needs a value, e.g. {_EXAMPLES[name]}")
            values.setdefault(name, []).append(value)
            continue
        current.append(token)
        pending_operator = None
    if current:
        terms.append((sign, current))
    elif pending_operator:
        raise QueryError(f"'{pending_operator}' at the end has no term after it")
    built = [_term(sign, tokens, cwd, files) for sign, tokens in terms]
    built, interval, reading = _read_dates(built)
    filters, min_score, sort = _filters(values, cwd, interval)
    excluded = tuple(dict.fromkeys(" ".join(v.split()) for v in values.get("not", []) if v.strip()))
    switches = {name: _switch(name, values[name][-1]) for name in SWITCHES if name in values}
    return Query(tuple(built), filters, min_score, sort, excluded, (reading,) if reading else (), **switches)


def _switch(name: str, value: str) -> bool:
    if value.lower() in ("on", "yes", "true", "1"):
        return True
    if value.lower() in ("off", "no", "false", "0"):
        return False
    raise QueryError(f"{name}:{value}: write {name}:on or {name}:off")


def _read_dates(terms: list[Term]) -> tuple[list[Term], tuple | None, str]:
    """The first date said in plain words in a positive text term ("snow january 2021"), taken
    out of it: (terms left, the interval [after, before), the reading to show)."""
    from .dates import read_dates

    today = _dt.date.today()
    for number, term in enumerate(terms):
        if term.text is None or term.weight < 0 or term.marked is None:
            continue
        rest, interval, reading = read_dates(term.marked, today)
        if interval is None:
            continue
        text = " ".join(rest.replace('"', " ").split())
        left = terms[:number] + ([Term(term.weight, text=text, marked=rest)] if text else []) + terms[number + 1:]
        return left, interval, reading
    return terms, None, ""


_EXAMPLES = {"in": "in:~/Pictures/2021", "after": "after:2021-03-01", "before": "before:2022",
             "ext": "ext:jpg", "camera": "camera:canon", "min": "min:0.2", "sort": "sort:date",
             "text": 'text:bakery or text:"open 7am"', "place": "place:lisbon", "near": "near:38.71,-9.14,5",
             "not": "not:people", **{name: f"{name}:on" for name in SWITCHES}}


def _term(sign: float, tokens: list[_Token], cwd: str | None, files: bool = True) -> Term:
    weight = 1.0
    first = tokens[0]
    match = None if first.quoted else _WEIGHT.match(first.text)
    if match:
        weight = _weight(match.group(1), first.text)
        rest = match.group(2)
        tokens = ([_Token(rest, False)] if rest else []) + tokens[1:]
        if not tokens:
            raise QueryError(f"the weight in '{first.text}' has no term after it, e.g. 2*cat")
    if len(tokens) == 1 and files:
        image = _image_path(tokens[0].text, cwd)
        if image is not None:
            return Term(sign * weight, image=image)
    text = " ".join(token.text for token in tokens).strip()
    if not text:
        raise QueryError("an empty term: write some text or an image path")
    marked = " ".join(f'"{token.text}"' if token.quoted else token.text for token in tokens)
    return Term(sign * weight, text=text, marked=marked)


def _weight(text: str, token: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise QueryError(f"the weight '{text}' in '{token}' is not a number (write e.g. 2*cat or 0.5*cat)") from None
    if not 0 < value <= MAX_WEIGHT:
        raise QueryError(f"the weight '{text}' in '{token}' must be above 0 and at most {MAX_WEIGHT:g} "
                         "(subtract with ' - ')")
    return value


_IMAGE_SUFFIXES = tuple(f".{ext}" for ext in DEFAULT_EXTENSIONS)


def _image_path(text: str, cwd: str | None) -> str | None:
    """The absolute path if text names a file (an image query), else None (text). A word
    ending in an image extension must name a file: it is surely not a description."""
    if "\n" in text or "\x00" in text:
        return None
    path = os.path.expanduser(text)
    if not os.path.isabs(path):
        path = os.path.join(cwd or os.getcwd(), path)
    try:
        if os.path.isfile(path):
            return os.path.abspath(path)
    except (OSError, ValueError):
        return None
    if text.lower().endswith(_IMAGE_SUFFIXES):
        raise QueryError(f"{text}: no such image file (quote a path with spaces)")
    return None


def _no_filters() -> Filters:
    # records.py is imported when first needed: `clipsearch --help` reads HELP alone, and
    # records' thirty dataclasses take 14 ms to define.
    from .records import Filters

    return Filters()


def _filters(values: dict[str, list[str]], cwd: str | None,
             interval: tuple | None = None) -> tuple[Filters, float | None, str]:
    from .places import filter_name
    from .records import Filters

    folders, names = [], []
    for value in values.get("in", []):
        path = os.path.expanduser(value)
        if os.path.isabs(path):
            folders.append(os.path.normpath(path))
        else:
            name = value.strip("/\\")
            if not name or name in (".", ".."):
                raise QueryError(f"in:{value}: name a folder, e.g. {_EXAMPLES['in']}")
            names.append(os.path.normpath(name))
    after = _latest(_date(v, "after") for v in values.get("after", []))
    before = _earliest(_date(v, "before") for v in values.get("before", []))
    if after and before and after >= before:
        raise QueryError(f"after:{values['after'][-1]} is not before before:{values['before'][-1]}: "
                         "no date is in between")
    if interval is not None:  # a date said in words narrows after:/before:, never widens them
        said_after, said_before = (d.isoformat() if d else None for d in interval)
        after = _latest(d for d in (after, said_after) if d)
        before = _earliest(d for d in (before, said_before) if d)
        if after and before and after >= before:
            raise QueryError("the date in the words and after:/before: have no day in common")
    extensions: list[str] = []
    for value in values.get("ext", []):
        for ext in value.lower().split(","):
            ext = ext.strip().lstrip(".")
            if not ext or not ext.isalnum():
                raise QueryError(f"ext:{value}: write extensions like ext:jpg or ext:jpg,png")
            extensions.extend(same_kind(ext))
    cameras = tuple(v.lower() for v in values.get("camera", []))
    min_score = None
    for value in values.get("min", []):
        try:
            min_score = float(value)
        except ValueError:
            raise QueryError(f"min:{value}: the score must be a number, e.g. min:0.2") from None
        if not -1.0 <= min_score <= 1.0:
            raise QueryError(f"min:{value}: scores are between -1 and 1")
    sort = "score"
    for value in values.get("sort", []):
        if value.lower() not in SORTS:
            raise QueryError(f"sort:{value}: use one of " + ", ".join(f"sort:{s}" for s in SORTS))
        sort = value.lower()
    words = []
    for value in values.get("text", []):
        found = _words(value)
        if not found:
            raise QueryError(f"text:{value}: name a word, e.g. {_EXAMPLES['text']}")
        words.append(" ".join(found))
    places = []
    for value in values.get("place", []):
        if not filter_name(value):
            raise QueryError(f"place:{value}: name a city, region or country, e.g. {_EXAMPLES['place']}")
        places.append(filter_name(value))
    near = None
    for value in values.get("near", []):
        near = _near(value)
    filters = Filters(tuple(dict.fromkeys(folders)), tuple(dict.fromkeys(names)), after, before,
                      tuple(dict.fromkeys(extensions)), tuple(dict.fromkeys(cameras)),
                      words=tuple(dict.fromkeys(words)), places=tuple(dict.fromkeys(places)), near=near)
    return filters, min_score, sort


def _words(text: str) -> list[str]:
    """The words of a text as the catalog's text index splits them (letters and digits)."""
    return re.findall(r"\w+", text.casefold())


def _near(value: str) -> tuple[float, float, float]:
    try:
        numbers = [float(part) for part in value.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) not in (2, 3):
        raise QueryError(f"near:{value}: write near:LATITUDE,LONGITUDE or near:LAT,LON,KM, e.g. {_EXAMPLES['near']}")
    lat, lon, km = (*numbers, NEAR_KM)[:3]
    if not (-90 <= lat <= 90 and -180 <= lon <= 180) or not 0 < km <= 20_000:
        raise QueryError(f"near:{value}: latitude -90..90, longitude -180..180, a distance above 0 km")
    return lat, lon, km


def _date(value: str, name: str) -> str:
    """The first day of YYYY, YYYY-MM or YYYY-MM-DD, ISO; for before: the bound is exclusive."""
    match = re.fullmatch(r"(\d{4})(?:[-/.](\d{1,2})(?:[-/.](\d{1,2}))?)?", value)
    if not match:
        raise QueryError(f"{name}:{value}: write the date as YYYY, YYYY-MM or YYYY-MM-DD")
    year, month, day = int(match.group(1)), int(match.group(2) or 1), int(match.group(3) or 1)
    try:
        return _dt.date(year, month, day).isoformat()
    except ValueError as exc:
        raise QueryError(f"{name}:{value}: not a date ({exc})") from None


def _latest(dates) -> str | None:
    return max(dates, default=None)


def _earliest(dates) -> str | None:
    return min(dates, default=None)
