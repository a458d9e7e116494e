"""Words as the catalog's text index compares them, for every layer that marks or matches them
(the catalog's FTS5 index folds case and strips accents: unicode61 with remove_diacritics 2)."""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"\w+")


def fold_text(text: str) -> str:
    """text case folded, accents stripped ("Café" -> "cafe")."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def words_of(text: str) -> list[str]:
    """The folded words of text (letters and digits), in order."""
    return _WORD.findall(fold_text(text))


def marked_parts(text: str, query: str) -> list[tuple[str, bool]]:
    """text in parts, each with whether it is a word of the query (two letters or more):
    faces mark the words of a search in the words read in a photo."""
    wanted = {w for w in words_of(query) if len(w) > 1}
    parts, last = [], 0
    for match in _WORD.finditer(text):
        if fold_text(match.group()) in wanted:
            parts.extend([(text[last:match.start()], False), (match.group(), True)])
            last = match.end()
    parts.append((text[last:], False))
    return [part for part in parts if part[0]]
