"""Dates in plain words inside a query ("beach portugal summer 2019"): a small grammar of our own.

`read_dates(text, today)` finds one date phrase outside quotes, takes it out of the text the
model sees, and returns the interval [after, before) it means with a reading to show the
user ("date: summer 2019 (1 Jun 2019 - 31 Aug 2019)"). Our own grammar rather than
dateparser: it reads only what is listed below, so a word that happens to look like a date
to a general parser ("may", "march", "4k", "100", "sat") is never taken from the query.

What reads as a date (case does not matter; "in", "from", "during", "on" before it go too):
- a year, 1900 to next year: "2019", "in 2019". A year alone is a date: quote it to search
  for the number ("1984" in quotes stays text). Other numbers stay words.
- a month with its year: "july 2019", "jul 2019", "sept. 2019", "july of 2019", "2021-07";
  a day: "2021-07-14", "14 july 2019", "july 14, 2019". Months without a year stay words.
- a season or a holiday with its year. Seasons are meteorological, northern hemisphere:
  spring Mar-May, summer Jun-Aug, autumn/fall Sep-Nov, winter 2020 = Dec 2020 - Feb 2021 (the
  winter that starts in that year). christmas/xmas: 24-26 Dec; new year 2020 (also "new
  year's 2020", "new year's eve 2019"): 31 Dec 2019 - 1 Jan 2020, the night; easter: Good Friday
  to Easter Monday; halloween: 31 Oct. Alone ("spring", "fall", "christmas") they stay words.
- "early/mid/late 2019": Jan-Apr, May-Aug, Sep-Dec.
- a decade: "90s", "the 90s", "'90s", "1990s" (two digits under 30 are this century: "10s").
- relative to today: today, yesterday, this/last week (weeks start on Monday), this/last
  month, this/last year, this/last SEASON, "last 30 days", "past 2 weeks" (ending today).
- ranges of any two of these: "2019-2021", "2019 to 2021", "from jan 2019 until march 2020",
  "between 2019 and 2021"; open ones: "since 2019", "after 2019", "before 2019".
Only the first date phrase is read; another stays in the text.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

Interval = tuple[date | None, date | None]  # [after, before): None is open

MONTHS = {"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8, "sep": 9,
          "oct": 10, "nov": 11, "dec": 12}
_NAMES = ["", "January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
SEASONS = {"spring": 3, "summer": 6, "autumn": 9, "fall": 9, "winter": 12}  # first month; 3 months each

_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
          r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?")
_YEAR = r"(?:19|20)\d\d"
_SEASON = r"(?:spring|summer|autumn|fall|winter)"
_HOLIDAY = r"(?:christmas|xmas|new\s+year(?:'?s)?(?:\s+eve|\s+day)?|easter|halloween)"
_OF = r"(?:\s+of)?,?\s+"
_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?"
_UNIT = r"(?:days?|weeks?|months?|years?)"
_ATOM = "|".join([
    rf"{_YEAR}-(?:0[1-9]|1[0-2])-(?:[12]\d|3[01]|0[1-9])",
    rf"{_YEAR}-(?:0[1-9]|1[0-2])(?![\d])",
    rf"{_DAY}\s+{_MONTH}{_OF}{_YEAR}",
    rf"{_MONTH}\s+{_DAY},?\s+{_YEAR}",
    rf"{_MONTH}{_OF}{_YEAR}",
    rf"(?:early|mid|late)(?:\s+|-){_SEASON}{_OF}{_YEAR}",
    rf"{_SEASON}{_OF}{_YEAR}",
    rf"{_HOLIDAY}{_OF}{_YEAR}",
    rf"(?:early|mid|late)(?:\s+|-){_YEAR}",
    r"(?:the\s+)?(?:'?\d0|19\d0|20\d0)'?s",
    rf"(?:last|past)\s+\d{{1,3}}\s+{_UNIT}",
    rf"(?:this|last)\s+(?:week|month|year|{_SEASON})",
    r"today|yesterday",
    _YEAR,
])
_TO = r"\s*(?:-|–|—|\s+to\s+|\s+until\s+|\s+till\s+|\s+through\s+|\s+thru\s+)\s*"
_PHRASE = re.compile(
    rf"(?<![\w'\"-])(?:(?:in|from|during|on)\s+)?(?:"
    rf"(?P<between>between\s+(?P<b1>{_ATOM})\s+and\s+(?P<b2>{_ATOM}))"
    rf"|(?P<range>(?P<r1>{_ATOM}){_TO}(?P<r2>{_ATOM}))"
    rf"|(?P<open>(?P<op>since|after|before)\s+(?P<o1>{_ATOM}))"
    rf"|(?P<atom>{_ATOM}))(?![\w'-])", re.IGNORECASE)


class NotADate(ValueError):
    """A phrase shaped like a date that means none (a year out of range, 31 February)."""


def read_dates(text: str, today: date) -> tuple[str, Interval | None, str]:
    """(text without the date phrase, its interval [after, before) or None, a reading to show
    such as "date: July 2019"; "" when there is none)."""
    for start, end in _unquoted(text):
        for match in _PHRASE.finditer(text, start, end):
            try:
                interval, label = _phrase(match, today)
            except NotADate:
                continue
            rest = " ".join((text[:match.start()] + " " + text[match.end():]).split())
            return rest, interval, f"date: {label}{_span(interval, label)}"
    return text, None, ""


def _unquoted(text: str) -> list[tuple[int, int]]:
    """Spans of text outside double quotes (a quote never closed quotes nothing)."""
    spans, pos = [], 0
    for quoted in re.finditer(r'"[^"]*"', text):
        spans.append((pos, quoted.start()))
        pos = quoted.end()
    spans.append((pos, len(text)))
    return spans


def _phrase(m: re.Match, today: date) -> tuple[Interval, str]:
    if m["atom"]:
        return _atom(m["atom"], today)
    if m["open"]:
        (after, before), label = _atom(m["o1"], today)
        word = m["op"].lower()
        if word == "before":
            return (None, after), f"before {label}"
        return ((after, None) if word == "since" else (before, None)), f"{word} {label}"
    first, second = (m["b1"], m["b2"]) if m["between"] else (m["r1"], m["r2"])
    (after, _), label1 = _atom(first, today)
    (_, before), label2 = _atom(second, today)
    if after is None or before is None or before <= after:
        raise NotADate(m.group(0))
    return (after, before), f"{label1} to {label2}"


def _year(text: str, today: date) -> int:
    year = int(text)
    if not 1900 <= year <= today.year + 1:
        raise NotADate(text)
    return year


def _month(text: str) -> int:
    return MONTHS[text.lower().rstrip(".")[:3]]


def _months(year: int, month: int, count: int) -> tuple[date, date]:
    """count months from year-month: [first day, first day after)."""
    end = year * 12 + month - 1 + count
    return date(year, month, 1), date(end // 12, end % 12 + 1, 1)


def _easter(year: int) -> date:
    """Western Easter Sunday (the anonymous Gregorian computus)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    g = (8 * b + 13) // 25
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    l_ = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l_) // 451
    month, day = divmod(h + l_ - 7 * m + 114, 31)
    return date(year, month, day + 1)


def _atom(text: str, today: date) -> tuple[Interval, str]:
    t = " ".join(text.lower().replace(",", " ").replace(" of ", " ").split())
    if m := re.fullmatch(rf"({_YEAR})-(\d\d)(?:-(\d\d))?", t):
        year, month = _year(m[1], today), int(m[2])
        if m[3]:
            return _day(year, month, int(m[3]))
        return _months(year, month, 1), f"{_NAMES[month]} {year}"
    if m := (re.fullmatch(rf"(\d+)(?:st|nd|rd|th)? ({_MONTH}) ({_YEAR})", t)
             or re.fullmatch(rf"({_MONTH}) (\d+)(?:st|nd|rd|th)? ({_YEAR})", t)):
        day_text, month_text = (m[1], m[2]) if m[1][0].isdigit() else (m[2], m[1])
        return _day(_year(m[3], today), _month(month_text), int(day_text))
    if m := re.fullmatch(rf"({_MONTH}) ({_YEAR})", t):
        year, month = _year(m[2], today), _month(m[1])
        return _months(year, month, 1), f"{_NAMES[month]} {year}"
    if m := re.fullmatch(rf"(?:(early|mid|late)[ -])?({_SEASON}) ({_YEAR})", t):
        year, first = _year(m[3], today), SEASONS[m[2]]
        (after, before), label = _months(year, first, 3), f"{m[2]} {year}"
        if m[1]:
            after = after + timedelta(days=30 * ["early", "mid", "late"].index(m[1]))
            before = after + timedelta(days=31)
            label = f"{m[1]} {label}"
        return (after, before), label
    if m := re.fullmatch(rf"({_HOLIDAY}) ({_YEAR})", t):
        return _holiday(m[1], _year(m[2], today))
    if m := re.fullmatch(rf"(early|mid|late)[ -]({_YEAR})", t):
        year, part = _year(m[2], today), ["early", "mid", "late"].index(m[1])
        return _months(year, 1 + 4 * part, 4), f"{m[1]} {year}"
    if m := re.fullmatch(r"(?:the )?'?(\d\d)(\d0)'?s", t) or re.fullmatch(r"(?:the )?'?()(\d0)'?s", t):
        century = m[1] or ("20" if int(m[2]) < 30 else "19")
        start = int(century + m[2])
        if not 1900 <= start <= today.year:
            raise NotADate(text)
        return (date(start, 1, 1), date(start + 10, 1, 1)), f"the {start}s"
    if m := re.fullmatch(rf"(?:last|past) (\d+) ({_UNIT})", t):
        return _last(int(m[1]), m[2].rstrip("s"), today)
    if m := re.fullmatch(rf"(this|last) (week|month|year|{_SEASON})", t):
        return _relative(m[1], m[2], today)
    if t in ("today", "yesterday"):
        day = today - timedelta(days=t == "yesterday")
        return (day, day + timedelta(days=1)), t
    year = _year(t, today)
    return (date(year, 1, 1), date(year + 1, 1, 1)), str(year)


def _day(year: int, month: int, day: int) -> tuple[Interval, str]:
    try:
        first = date(year, month, day)
    except ValueError:
        raise NotADate(f"{year}-{month}-{day}") from None
    return (first, first + timedelta(days=1)), f"{day} {_NAMES[month]} {year}"


def _holiday(name: str, year: int) -> tuple[Interval, str]:
    if name.startswith("new"):
        # "new year 2020" is the night into 2020; "new year's eve 2019" the night out of 2019
        first = date(year, 12, 31) if "eve" in name else date(year - 1, 12, 31)
        label = f"new year's eve {first.year}" if "eve" in name else f"new year {year}"
        return (first, first + timedelta(days=2)), label
    if name == "easter":
        sunday = _easter(year)
        return (sunday - timedelta(days=2), sunday + timedelta(days=2)), f"easter {year}"
    if name == "halloween":
        return (date(year, 10, 31), date(year, 11, 1)), f"halloween {year}"
    return (date(year, 12, 24), date(year, 12, 27)), f"christmas {year}"


def _last(count: int, unit: str, today: date) -> tuple[Interval, str]:
    end = today + timedelta(days=1)
    if unit == "day":
        start = end - timedelta(days=count)
    elif unit == "week":
        start = end - timedelta(weeks=count)
    else:
        months = count * (12 if unit == "year" else 1)
        total = today.year * 12 + today.month - 1 - months
        start = date(total // 12, total % 12 + 1, min(today.day, 28))
    if count == 0 or start.year < 1900:
        raise NotADate(f"last {count} {unit}")
    return (start, end), f"last {count} {unit}{'s' if count != 1 else ''}"


def _relative(which: str, unit: str, today: date) -> tuple[Interval, str]:
    back = which == "last"
    if unit == "week":
        monday = today - timedelta(days=today.weekday()) - timedelta(weeks=back)
        return (monday, monday + timedelta(days=7)), f"{which} week"
    if unit == "month":
        total = today.year * 12 + today.month - 1 - back
        return _months(total // 12, total % 12 + 1, 1), f"{which} month"
    if unit == "year":
        year = today.year - back
        return (date(year, 1, 1), date(year + 1, 1, 1)), f"{which} year"
    # a season: "this" is the one of today's year (winter: the one that began last December,
    # unless today is in December); "last" the latest that has ended by today, so in March
    # both "this winter" and "last winter" are the winter just past
    first = SEASONS[unit]
    year = today.year - (first == 12 and today.month < 12)
    after, before = _months(year, first, 3)
    if back:
        while before > today:
            year -= 1
            after, before = _months(year, first, 3)
    return (after, before), f"{which} {unit}"


def _span(interval: Interval, label: str) -> str:
    """" (1 Jun 2019 - 31 Aug 2019)" where the label alone does not say the days; "" else."""
    after, before = interval
    if after is None or before is None:
        return ""
    last = before - timedelta(days=1)
    if re.fullmatch(r"\d{4}( to \d{4})?", label) or re.fullmatch(r"[A-Z][a-z]+ \d{4}", label) or after == last:
        return ""
    return f" ({after.day} {_NAMES[after.month][:3]} {after.year} - {last.day} {_NAMES[last.month][:3]} {last.year})"
