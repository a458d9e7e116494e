"""Tokenizers without torch, open_clip or transformers, for the text towers.

- `ClipTokenizer`: CLIP's byte-pair tokenizer, the same ids as open_clip's SimpleTokenizer
  (clean="lower", no reduction). Its merges (the 48,894 that CLIP's 49,408-token vocabulary
  uses) ship with clipsearch in data/clip-merges.txt.gz, cut from open_clip's
  bpe_simple_vocab_16e6.txt.gz (OpenAI's CLIP vocabulary, MIT licence).
- `HubTokenizer`: the tokenizers of models published with a tokenizer.json (SigLIP and
  SigLIP 2: Gemma's 256,000-token vocabulary) through the `tokenizers` package, with
  open_clip's text cleaning for the model; the same ids as open_clip's HFTokenizer.
- `CompiledTokenizer`: a HubTokenizer compiled into arrays (bpe.py) when the text tower is
  saved: the same ids, loaded in a millisecond instead of 0.6 s for Gemma's vocabulary.

A search for "a red car in the snow" must not wait for torch (seconds to import).
"""

from __future__ import annotations

import gzip
import html
import json
import os
import string
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import regex  # \p{L} and \p{N}, as in CLIP's own pattern; a dependency of open_clip

_MERGES = 49152 - 256 - 2  # merges used by CLIP: the vocabulary is 49,408 tokens
# Contractions, letter runs, single numerals, runs of anything else but spaces.
_WORDS = regex.compile(r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+",
                       regex.IGNORECASE)
_PLAIN = regex.compile(r"[ -%'-~\t\n\r]*")  # printable ASCII without "&": ftfy would leave it as it is


def merges_file() -> str:
    """CLIP's merges as clipsearch ships them."""
    return str(Path(__file__).parent / "data" / "clip-merges.txt.gz")


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


# --- tokenizers published as tokenizer.json (SigLIP, SigLIP 2) ----------------------------------
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def clean_text(text: str, mode: str = "whitespace") -> str:
    """open_clip's text cleaning (tokenizer.get_clean_fn): "canonicalize" (SigLIP's),
    "lower" or "whitespace"."""
    if not _PLAIN.fullmatch(text):
        import ftfy  # 30-60 ms to import; only text that it could change pays for it

        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    if mode == "whitespace":
        return " ".join(text.split()).strip()
    if mode == "lower":
        return " ".join(text.split()).strip().lower()
    if mode == "canonicalize":
        # big_vision's canonicalize_text, as open_clip copies it (underscores are spaces).
        text = text.replace("_", " ").translate(_PUNCTUATION).lower()
        return " ".join(text.split()).strip()
    raise ValueError(f"unknown clean mode {mode!r}")


class HubTokenizer:
    """Texts -> (N, context_length) int64 token ids, as open_clip's HFTokenizer gives them
    (transformers' tokenizer, padding="max_length", truncation=True, after open_clip's
    cleaning: "canonicalize" for SigLIP drops ASCII punctuation and lowers the case).

    What transformers (5.x) takes from tokenizer_config.json besides tokenizer.json, this
    takes too: the pad token, `padding_side` and `truncation_side`. The special tokens
    around a text come from tokenizer.json's post-processor alone (transformers 5 ignores
    the config's add_bos_token / add_eos_token when a tokenizer.json is there). Where the
    config names no padding side this pads on the right, as SigLIP 2 was trained (it pools
    the last position); transformers' Gemma class would pad on the left."""

    def __init__(self, tokenizer_file: str | os.PathLike, context_length: int, clean: str = "whitespace",
                 tokenizer_config: dict | None = None, strip_sep_token: bool = False):
        from tokenizers import Tokenizer

        self.file = Path(tokenizer_file)
        self.context_length = int(context_length)
        self.clean = clean
        config = dict(tokenizer_config or {})
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        pad_token = _content(config.get("pad_token"))
        padding = self._tokenizer.padding or {}
        if pad_token is None:
            pad_token = padding.get("pad_token")
        self.pad_id = self._id(pad_token) if pad_token is not None else int(padding.get("pad_id", 0))
        self._sep_id = self._tokenizer.token_to_id(_content(config.get("sep_token")) or "") if strip_sep_token \
            else None
        self.padding_side = config.get("padding_side", "right")
        self.truncation_side = config.get("truncation_side", "right")
        self._tokenizer.enable_truncation(max_length=self.context_length, direction=self.truncation_side)
        self._tokenizer.enable_padding(length=self.context_length, pad_id=self.pad_id,
                                       pad_token=pad_token or "", direction=self.padding_side)

    def compiled(self, source: dict | None = None) -> "CompiledTokenizer":
        """The same tokenizer as arrays (bpe.py): it loads in a millisecond where this one
        takes 0.6 s for Gemma's vocabulary. Raises bpe.Unsupported for a tokenizer.json it
        does not cover; callers check it against this one (`agrees_on`) before keeping it."""
        from clipsearch.model import bpe

        if source is None:  # tokenizer.json, parsed
            source = json.loads(self.file.read_text(encoding="utf-8"))
        description, arrays = bpe.compile_bpe(source)
        description.update(context_length=self.context_length, clean=self.clean, pad_id=self.pad_id,
                           sep_id=self._sep_id, padding_side=self.padding_side,
                           truncation_side=self.truncation_side)
        return CompiledTokenizer(description, arrays)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, model_cfg: dict) -> "HubTokenizer":
        """The tokenizer of a model from a folder holding tokenizer.json (and, if the repo has
        one, tokenizer_config.json), set up as open_clip's text_cfg says (context_length,
        tokenizer_kwargs)."""
        folder = Path(folder)
        text_cfg = model_cfg.get("text_cfg") or {}
        if text_cfg.get("tokenizer_mode"):
            raise ValueError(f"tokenizer_mode {text_cfg['tokenizer_mode']!r} is not covered")
        kwargs = dict(text_cfg.get("tokenizer_kwargs") or {})
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        return cls(folder / "tokenizer.json", int(text_cfg.get("context_length", 77)),
                   clean=kwargs.pop("clean", "whitespace"), tokenizer_config=config,
                   strip_sep_token=bool(kwargs.pop("strip_sep_token", False)))

    def __call__(self, texts: Sequence[str] | str) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        encodings = self._tokenizer.encode_batch([clean_text(t, self.clean) for t in texts])
        ids = np.array([e.ids for e in encodings], dtype=np.int64).reshape(len(texts), self.context_length)
        if self._sep_id is not None:
            ids[ids == self._sep_id] = 0
        return ids

    def _id(self, token: str) -> int:
        found = self._tokenizer.token_to_id(token)
        if found is None:
            raise ValueError(f"token {token!r} is not in the vocabulary")
        return int(found)


class CompiledTokenizer:
    """A HubTokenizer's byte-pair model read from arrays (bpe.py): the same ids, without
    loading `tokenizers`' 180 MB structures for one query."""

    def __init__(self, description: dict, arrays):
        from clipsearch.model.bpe import Bpe

        self.description = description
        self.arrays = arrays
        self.context_length = int(description["context_length"])
        self.clean = description["clean"]
        self.pad_id = int(description["pad_id"])
        self._sep_id = description.get("sep_id")
        self._bpe = Bpe(description, arrays)

    def __call__(self, texts: Sequence[str] | str) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        d, room = self.description, self.context_length - self._bpe.added_count
        rows = np.full((len(texts), self.context_length), self.pad_id, dtype=np.int64)
        for row, text in zip(rows, texts):
            ids = self._bpe.encode(clean_text(text, self.clean))
            if len(ids) > room:
                ids = ids[:max(room, 0)] if d["truncation_side"] == "right" else ids[len(ids) - max(room, 0):]
            full = [i for piece in self._bpe.template for i in (ids if piece == "A" else [piece])]
            if d["padding_side"] == "right":
                row[:len(full)] = full
            else:
                row[self.context_length - len(full):] = full
        if self._sep_id is not None:
            rows[rows == self._sep_id] = 0
        return rows

    def agrees_on(self, reference: Callable[[list[str]], np.ndarray], texts: Sequence[str]) -> bool:
        """Whether these ids are the reference tokenizer's for every one of texts."""
        texts = list(texts)
        return bool(np.array_equal(self(texts), reference(texts)))


def probe_texts(vocabulary_sample: Sequence[str] = (), added: Sequence[str] = ()) -> list[str]:
    """Texts to check a compiled tokenizer against its source on: queries in many scripts,
    punctuation, characters outside any vocabulary (byte fallback), empty and overlong
    texts, the added tokens inside words, and words made of vocabulary pieces."""
    texts = ["a dog on the beach", "A red CAR in the snow!", "chien sur la plage", "海辺の犬", "雪の中の赤い車",
             "собака на пляже", "ein Hund am Strand", "un perro en la playa", "كلب على الشاطئ", "समुद्र तट पर कुत्ता",
             "", "   ", "café crème naïve façade", "ﬁne Ｆｕｌｌwidth", "emoji 🐶🏖️ 👨‍👩‍👧", "snake_case_words",
             "the &amp; sign", "東京 2024年 ½ ⅔", "İstanbul ß ǅ", "\x00\x07 control \u200b zero width",
             "tab\tand\nnewline", "dog " * 60, "Ω≈ç√∫˜µ≤≥÷ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \U0010fffd"]
    texts.append(" ".join(added))
    texts.extend(f"x{token}y {token}" for token in list(added)[:300])
    sample = list(vocabulary_sample)
    for start in range(0, min(len(sample), 4000), 40):
        glued, spaced = "".join(sample[start:start + 20]), " ".join(sample[start + 20:start + 40])
        texts.append(glued.replace("▁", " ") + " " + spaced)
    return texts


def _content(token) -> str | None:
    """A special token as tokenizer_config.json gives it: a string or {"content": ...}."""
    if isinstance(token, dict):
        return token.get("content")
    return token
