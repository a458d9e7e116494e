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

import datetime as _dt
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .config import DEFAULT_EXTENSIONS
from .errors import QueryError
from .filetypes import same_kind

if TYPE_CHECKING:
    from .records import Filters

MAX_WEIGHT = 100.0
SORTS = ("score", "date", "newest")
FILTERS = ("in", "after", "before", "ext", "camera", "min", "sort")

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
The date is the one the camera recorded, else the file's modification date. A query of
only filters lists the newest photos that match them."""



@dataclass(frozen=True)
class Term:
    """One idea of a query: a text or an image file, with its weight (negative: subtracted)."""

    weight: float
    text: str | None = None
    image: str | None = None  # an absolute path

    def __str__(self) -> str:
        return self.text if self.text is not None else str(self.image)


@dataclass(frozen=True)
class Query:
    terms: tuple[Term, ...] = ()
    filters: Filters = field(default_factory=lambda: _no_filters())
    min_score: float | None = None
    sort: str = "score"

    @property
    def is_empty(self) -> bool:
        """Nothing typed that means anything (no terms, filters, min: or sort:)."""
        return not self.terms and not self.filters and self.min_score is None and self.sort == "score"

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
        if match and match.group(1).lower() in FILTERS:
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
    return Query(tuple(_term(sign, tokens, cwd, files) for sign, tokens in terms), *_filters(values, cwd))


_EXAMPLES = {"in": "in:~/Pictures/2021", "after": "after:2021-03-01", "before": "before:2022",
             "ext": "ext:jpg", "camera": "camera:canon", "min": "min:0.2", "sort": "sort:date"}


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
    return Term(sign * weight, text=text)


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


def _filters(values: dict[str, list[str]], cwd: str | None) -> tuple[Filters, float | None, str]:
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
    filters = Filters(tuple(dict.fromkeys(folders)), tuple(dict.fromkeys(names)), after, before,
                      tuple(dict.fromkeys(extensions)), tuple(dict.fromkeys(cameras)))
    return filters, min_score, sort


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
