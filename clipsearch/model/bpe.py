"""A tokenizer.json's byte-pair model, compiled once into arrays that load in a millisecond.

The `tokenizers` package needs 0.6 s and 180 MB to load SigLIP 2's Gemma tokenizer (256,000
tokens, as many merges), most of a cold text query's time. What a query needs of it is small:
the id of each character, the byte tokens for characters outside the vocabulary, and the rank
and result of each merge. `compile_bpe` reads tokenizer.json once (when the text tower is
saved) into those arrays; `Bpe` tokenizes with them, memory-mapped, as `tokenizers` does:

- added tokens are cut out first (those marked `normalized: false` from the raw text, the
  others from the normalised text), leftmost and longest first;
- the rest is normalised (Replace, Prepend, Lowercase, NFC/NFD/NFKC/NFKD, Strip, Sequence)
  and, with no pre-tokenizer, each piece is one word;
- a word starts as one symbol per character (bytes as <0xXX> tokens where a character is
  not in the vocabulary and byte_fallback is on; else <unk>, fused when fuse_unk is on), and
  the adjacent pair of lowest merge rank is merged, leftmost first, until none is left;
- the post-processor's template puts its special tokens around the text.

Anything else a tokenizer.json may hold (a pre-tokenizer, dropout, subword prefixes,
ignore_merges, added tokens that strip or match single words) is refused with
`Unsupported`: such tokenizers keep `tokenizers`. Callers also compare the two on probe
texts before trusting the compiled form (texttower.save).
"""

from __future__ import annotations

import heapq
import unicodedata
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np


class Unsupported(ValueError):
    """A tokenizer.json this compiler does not cover."""


_NORMALIZERS = {"Replace", "Prepend", "Lowercase", "NFC", "NFD", "NFKC", "NFKD", "Strip", "Sequence"}


def _normalizer_steps(spec: Mapping[str, Any] | None) -> list[dict]:
    if spec is None:
        return []
    kind = spec.get("type")
    if kind not in _NORMALIZERS:
        raise Unsupported(f"normalizer {kind!r}")
    if kind == "Sequence":
        return [step for inner in spec.get("normalizers") or [] for step in _normalizer_steps(inner)]
    if kind == "Replace":
        pattern = spec.get("pattern") or {}
        if "String" not in pattern:
            raise Unsupported("a Replace normalizer with a regex")
        return [{"type": "Replace", "old": pattern["String"], "new": spec.get("content", "")}]
    if kind == "Prepend":
        return [{"type": "Prepend", "prepend": spec.get("prepend", "")}]
    if kind == "Strip":
        return [{"type": "Strip", "left": bool(spec.get("strip_left")), "right": bool(spec.get("strip_right"))}]
    return [{"type": kind}]


def normalize(text: str, steps: list[dict]) -> str:
    for step in steps:
        kind = step["type"]
        if kind == "Replace":
            text = text.replace(step["old"], step["new"])
        elif kind == "Prepend":
            text = step["prepend"] + text if text else text  # tokenizers leaves an empty text empty
        elif kind == "Lowercase":
            text = text.lower()
        elif kind == "Strip":
            text = text.lstrip() if step["left"] else text
            text = text.rstrip() if step["right"] else text
        else:
            text = unicodedata.normalize(kind, text)
    return text


def compile_bpe(tokenizer_json: Mapping[str, Any]) -> tuple[dict, dict[str, np.ndarray]]:
    """(description, arrays) of a parsed tokenizer.json; Unsupported if it holds what Bpe
    does not do."""
    model = tokenizer_json.get("model") or {}
    if model.get("type") != "BPE":
        raise Unsupported(f"model {model.get('type')!r}")
    if model.get("dropout") not in (None, 0, 0.0):
        raise Unsupported("BPE dropout")
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise Unsupported("subword prefixes or suffixes")
    if model.get("ignore_merges"):
        raise Unsupported("ignore_merges")
    if tokenizer_json.get("pre_tokenizer") is not None:
        raise Unsupported(f"pre-tokenizer {tokenizer_json['pre_tokenizer'].get('type')!r}")
    steps = _normalizer_steps(tokenizer_json.get("normalizer"))
    vocab: dict[str, int] = model.get("vocab") or {}
    added = []
    for token in tokenizer_json.get("added_tokens") or []:
        if token.get("single_word") or token.get("lstrip") or token.get("rstrip"):
            raise Unsupported(f"added token {token.get('content')!r} strips or matches single words")
        added.append({"content": token["content"], "id": int(token["id"]), "normalized": bool(token.get("normalized"))})
    template = _template(tokenizer_json.get("post_processor"))
    size = max([*vocab.values(), *(t["id"] for t in added), 0]) + 1

    chars = sorted((ord(token), i) for token, i in vocab.items() if len(token) == 1)
    byte_ids = np.array([vocab.get(f"<0x{b:02X}>", -1) for b in range(256)], np.int32)
    ranks: dict[int, tuple[int, int]] = {}
    for rank, merge in enumerate(model.get("merges") or []):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        if left not in vocab or right not in vocab or left + right not in vocab:
            raise Unsupported(f"merge {left!r} {right!r} names a token outside the vocabulary")
        ranks[vocab[left] * size + vocab[right]] = (rank, vocab[left + right])  # a later duplicate wins
    keys = np.array(sorted(ranks), np.int64)
    unk = model.get("unk_token")
    description = {"normalizer": steps, "added": added, "template": template, "size": size,
                   "byte_fallback": bool(model.get("byte_fallback")), "fuse_unk": bool(model.get("fuse_unk")),
                   "unk_id": vocab.get(unk, -1) if unk is not None else None}
    if unk is not None and unk not in vocab:
        raise Unsupported(f"the unknown token {unk!r} is not in the vocabulary")
    arrays: dict[str, np.ndarray] = {"char_codes": np.array([c for c, _ in chars], np.int32),
              "char_ids": np.array([i for _, i in chars], np.int32), "byte_ids": byte_ids,
              "merge_keys": keys, "merge_ranks": np.array([ranks[k][0] for k in keys.tolist()], np.int32),
              "merge_ids": np.array([ranks[k][1] for k in keys.tolist()], np.int32)}
    return description, arrays


def _template(spec: Mapping[str, Any] | None) -> list:
    """The single-text template as ["A" | special token id, ...]."""
    if spec is None:
        return ["A"]
    if spec.get("type") != "TemplateProcessing":
        raise Unsupported(f"post-processor {spec.get('type')!r}")
    specials = spec.get("special_tokens") or {}
    out: list = []
    for piece in spec.get("single") or []:
        if "Sequence" in piece:
            if piece["Sequence"].get("id") != "A":
                raise Unsupported("a single-text template with sequence B")
            out.append("A")
        else:
            out.extend(int(i) for i in specials[piece["SpecialToken"]["id"]]["ids"])
    return out


@dataclass
class Bpe:
    """Text -> token ids (without the template's special tokens) from compiled arrays."""

    description: dict
    arrays: Mapping[str, np.ndarray]

    def __post_init__(self) -> None:
        d, a = self.description, self.arrays
        self._steps = d["normalizer"]
        self._size = int(d["size"])
        self._codes, self._char_ids, self._bytes = a["char_codes"], a["char_ids"], a["byte_ids"].tolist()
        self._keys, self._ranks, self._merged = a["merge_keys"], a["merge_ranks"], a["merge_ids"]
        self._raw = _matcher([t for t in d["added"] if not t["normalized"]], [])
        self._normal = _matcher([t for t in d["added"] if t["normalized"]], self._steps)
        self._pairs: dict[int, tuple[int, int] | None] = {}
        self.template: list = d["template"]
        self.added_count = sum(1 for piece in self.template if piece != "A")

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece, found in _split(text, self._raw):
            if found is not None:
                ids.append(found)
                continue
            for part, inner in _split(normalize(piece, self._steps), self._normal):
                if inner is not None:
                    ids.append(inner)
                elif part:
                    ids.extend(self._word(part))
        return ids

    def _char(self, char: str) -> int | None:
        at = int(np.searchsorted(self._codes, ord(char)))
        return int(self._char_ids[at]) if at < len(self._codes) and self._codes[at] == ord(char) else None

    def _pair(self, left: int, right: int) -> tuple[int, int] | None:
        key = left * self._size + right
        if key not in self._pairs:
            at = int(np.searchsorted(self._keys, key))
            self._pairs[key] = (int(self._ranks[at]), int(self._merged[at])) \
                if at < len(self._keys) and self._keys[at] == key else None
        return self._pairs[key]

    def _word(self, word: str) -> list[int]:
        d = self.description
        symbols: list[int] = []
        unk: int | None = None  # a pending <unk> (fused ones count once)
        for char in word:
            found = self._char(char)
            if found is None and d["byte_fallback"]:
                codes = [self._bytes[b] for b in char.encode("utf-8")]
                if all(c >= 0 for c in codes):
                    if unk is not None:
                        symbols.append(unk)
                        unk = None
                    symbols.extend(codes)
                    continue
            if found is not None:
                if unk is not None:
                    symbols.append(unk)
                    unk = None
                symbols.append(found)
            elif d["unk_id"] is not None:
                if unk is not None and not d["fuse_unk"]:
                    symbols.append(unk)
                unk = int(d["unk_id"])
        if unk is not None:
            symbols.append(unk)
        return self._merge(symbols)

    def _merge(self, symbols: list[int]) -> list[int]:
        """Merge the adjacent pair of lowest rank, leftmost first, until none is left (a heap
        of candidate merges; stale ones are skipped, as tokenizers' Word::merge_all does)."""
        count = len(symbols)
        nxt, prev, alive = list(range(1, count + 1)), list(range(-1, count - 1)), [True] * count
        heap = []
        for i in range(count - 1):
            found = self._pair(symbols[i], symbols[i + 1])
            if found is not None:
                heap.append((found[0], i, found[1]))
        heapq.heapify(heap)
        while heap:
            rank, at, merged = heapq.heappop(heap)
            right = nxt[at]
            if not alive[at] or right >= count:
                continue
            found = self._pair(symbols[at], symbols[right])
            if found is None or found[1] != merged:
                continue
            symbols[at] = merged
            alive[right] = False
            nxt[at] = nxt[right]
            if nxt[at] < count:
                prev[nxt[at]] = at
            if prev[at] >= 0:
                found = self._pair(symbols[prev[at]], merged)
                if found is not None:
                    heapq.heappush(heap, (found[0], prev[at], found[1]))
            if nxt[at] < count:
                found = self._pair(merged, symbols[nxt[at]])
                if found is not None:
                    heapq.heappush(heap, (found[0], at, found[1]))
        return [s for s, keep in zip(symbols, alive) if keep]


def _matcher(tokens: list[dict], steps: list[dict]) -> dict[str, list[tuple[str, int]]] | None:
    """The added tokens by first character, longest first (a dict builds in a millisecond
    where a regular expression of Gemma's hundreds of added tokens takes tens)."""
    by_first: dict[str, list[tuple[str, int]]] = {}
    seen: set[str] = set()
    for token in tokens:
        text = normalize(token["content"], steps) if steps else token["content"]
        if text and text not in seen:
            seen.add(text)
            by_first.setdefault(text[0], []).append((text, token["id"]))
    for candidates in by_first.values():
        candidates.sort(key=lambda c: -len(c[0]))
    return by_first or None


def _split(text: str, matcher) -> list[tuple[str, int | None]]:
    """text cut into (piece, None) and (added token, its id), matching leftmost-longest."""
    if matcher is None:
        return [(text, None)]
    out: list[tuple[str, int | None]] = []
    start = i = 0
    while i < len(text):
        for candidate, token_id in matcher.get(text[i], ()):
            if text.startswith(candidate, i):
                if i > start:
                    out.append((text[start:i], None))
                out.append((candidate, token_id))
                i = start = i + len(candidate)
                break
        else:
            i += 1
    if start < len(text):
        out.append((text[start:], None))
    return out
