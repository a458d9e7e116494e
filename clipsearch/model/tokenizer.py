"""CLIP's byte-pair tokenizer without torch or open_clip, for the fast text path.

It gives the same token ids as open_clip's SimpleTokenizer (clean="lower", no reduction)
and reads the same merges file, which ships inside the open_clip package; finding that
file does not import open_clip. Importing open_clip costs seconds (it imports torch), and a
search for "a red car in the snow" must not wait for that.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import os
from functools import lru_cache

import numpy as np
import regex  # \p{L} and \p{N}, as in CLIP's own pattern; a dependency of open_clip

_MERGES = 49152 - 256 - 2  # merges used by CLIP: the vocabulary is 49,408 tokens
# Contractions, letter runs, single numerals, runs of anything else but spaces.
_WORDS = regex.compile(r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+",
                       regex.IGNORECASE)
_PLAIN = regex.compile(r"[ -%'-~\t\n\r]*")  # printable ASCII without "&": ftfy would leave it as it is


def merges_file() -> str:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("open_clip is not installed; its BPE merges file is needed")
    return os.path.join(spec.submodule_search_locations[0], "bpe_simple_vocab_16e6.txt.gz")


def _byte_symbols() -> tuple[list[str], list[str]]:
    """One printable character per byte value, in vocabulary order, as CLIP's BPE spells
    bytes: printable Latin-1 bytes stand for themselves and come first; the others follow,
    mapped to code points from 256 up."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in kept]
    by_byte = {b: chr(b) for b in kept} | {b: chr(256 + i) for i, b in enumerate(others)}
    return [by_byte[b] for b in range(256)], [by_byte[b] for b in kept + others]


def _read_merges(path: str) -> list[str]:
    """The first _MERGES merge lines ("left right"); only the start of the file is read."""
    with gzip.open(path) as f:
        head = f.read(600_000)
        while head.count(b"\n") <= _MERGES:
            more = f.read(1 << 16)
            if not more:
                break
            head += more
    return head.decode("utf-8").split("\n", _MERGES + 1)[1:_MERGES + 1]


class ClipTokenizer:
    """Text -> fixed-length rows of token ids, exactly as open_clip's default tokenizer."""

    def __init__(self, context_length: int = 77, path: str | None = None):
        self.context_length = context_length
        # Merge number r makes token 512 + r; "left right" -> r is all the BPE needs.
        self._ranks = dict(zip(_read_merges(path or merges_file()), range(_MERGES)))
        self._byte, ordered = _byte_symbols()
        self._ids = {symbol: i for i, symbol in enumerate(ordered)}
        self._ids.update({symbol + "</w>": 256 + i for i, symbol in enumerate(ordered)})
        self.sot, self.eot = 512 + _MERGES, 513 + _MERGES
        self._cache: dict[str, list[int]] = {"<start_of_text>": [self.sot], "<end_of_text>": [self.eot]}

    def __call__(self, texts: list[str]) -> np.ndarray:
        rows = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in zip(rows, texts):
            ids = [self.sot, *self.encode(text), self.eot]
            if len(ids) > self.context_length:
                ids = ids[:self.context_length - 1] + [self.eot]
            row[:len(ids)] = ids
        return rows

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for word in _WORDS.findall(_clean(text)):
            cached = self._cache.get(word)
            if cached is None:
                cached = self._cache[word] = self._bpe(word)
            ids += cached
        return ids

    def _bpe(self, word: str) -> list[int]:
        """Merge adjacent symbols, the pair with the lowest rank first, until none is left."""
        symbols = [self._byte[b] for b in word.encode("utf-8")]
        symbols[-1] += "</w>"
        ids = [self._ids[s] for s in symbols]
        ranks = self._ranks
        while len(symbols) > 1:
            pairs = [f"{a} {b}" for a, b in zip(symbols, symbols[1:])]
            rank = min(ranks.get(pair, _MERGES) for pair in pairs)
            if rank == _MERGES:
                break
            at = [i for i, pair in enumerate(pairs) if ranks.get(pair) == rank]
            merged_symbols, merged_ids, i = [], [], 0
            while i < len(symbols):
                if at and i == at[0]:
                    merged_symbols.append(symbols[i] + symbols[i + 1])
                    merged_ids.append(512 + rank)
                    at = [j for j in at if j > i + 1]  # "a a a" merges the first two only
                    i += 2
                else:
                    merged_symbols.append(symbols[i])
                    merged_ids.append(ids[i])
                    i += 1
            symbols, ids = merged_symbols, merged_ids
        return ids


def _clean(text: str) -> str:
    if not _PLAIN.fullmatch(text):
        import ftfy  # 60 ms to import; only text that it could change pays for it

        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    return " ".join(text.split()).lower()


@lru_cache(maxsize=4)
def clip_tokenizer(context_length: int = 77) -> ClipTokenizer:
    return ClipTokenizer(context_length)
