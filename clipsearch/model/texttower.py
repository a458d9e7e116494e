"""A CLIP text tower in numpy: text search without importing torch.

Importing torch and open_clip and building a model takes seconds; a search for
"a red car in the snow" needs only the text tower. When a library's model is first
loaded, embed.py copies the text tower's weights into HOME/text-tower/ (one flat
float32 file and a JSON description) and checks that this module gives the same vectors
as the torch model; later searches memory-map the file and run the tower here.

Covered: open_clip's standard text transformer (pre-norm residual blocks, multi-head
attention, GELU or QuickGELU MLP, optional layer scale, causal or bidirectional
attention, argmax/eos/first/last pooling, a projection matrix or linear layer). Any other
text tower fails the check at export and keeps the torch path.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import Sequence

import numpy as np

from . import _share
from .tokenizer import clip_tokenizer

FORMAT = 1
DESCRIPTION = "text-tower.json"


_TOGETHER = 64  # texts through the tower at once (a few MB of activations)


class TextTower:
    """The numpy text tower of one model; see `export` for where its weights come from."""

    def __init__(self, config: dict, weights: dict[str, np.ndarray]):
        self.config = config
        self.spec: str = config["spec"]
        self.dim: int = int(config["dim"])
        self._w = weights
        self._heads = int(config["heads"])
        self._layers = int(config["layers"])
        self._eps = float(config["eps"])
        self._tokenizer = clip_tokenizer(int(config["context_length"]))

    @classmethod
    def load(cls, folder: str | os.PathLike, spec: str | None = None,
             source: str | None = None) -> "TextTower | None":
        """The tower saved in `folder`, or None if there is none (or it is incomplete, or,
        when they are given, of another model spec or weights fingerprint)."""
        folder = Path(folder)
        try:
            config = json.loads((folder / DESCRIPTION).read_text(encoding="utf-8"))
            if config.get("format") != FORMAT or (spec is not None and config.get("spec") != spec) \
                    or (source is not None and config.get("source") != source):
                return None
            blob = np.memmap(folder / config["file"], dtype=np.float32, mode="r")
        except (OSError, ValueError, KeyError):
            return None
        if blob.size != config["floats"]:
            return None
        weights = {name: blob[start:start + math.prod(shape)].reshape(shape)
                   for name, (start, shape) in config["tensors"].items()}
        return cls(config, weights)

    @property
    def weights(self) -> dict[str, np.ndarray]:
        return self._w

    def tokenize(self, texts: Sequence[str]) -> np.ndarray:
        return self._tokenizer(list(texts))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> (N, dim) float32, rows L2-normalised; the same as the torch tower. Texts
        go through together (64 at a time): every layer's weights are read once for all of
        their tokens (one text alone: ~25 ms on the build machine; in a batch: ~12 ms each)."""
        tokens = self._tokenizer(list(texts))
        if not len(tokens):
            return np.zeros((0, self.dim), np.float32)
        out = np.concatenate([self._together(tokens[i:i + _TOGETHER]) for i in range(0, len(tokens), _TOGETHER)])
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def _together(self, rows: np.ndarray) -> np.ndarray:
        """The tower over several token rows at once: their tokens stacked into one matrix
        for the projections and MLPs, attention within each text."""
        w, cfg = self._w, self.config
        spans: list[tuple[int, int, int]] = []  # (first row in the stack, length, pooled position)
        pieces = []
        first = 0
        for tokens in rows:
            pool = cfg["pool"]
            if pool in ("argmax", "eos"):
                at = int(tokens.argmax()) if pool == "argmax" else int(np.flatnonzero(tokens == cfg["eos_id"])[0])
            else:
                at = 0 if pool == "first" else len(tokens) - 1
            # With causal attention nothing after the pooled position can reach it: skip it.
            length = at + 1 if cfg["causal"] else len(tokens)
            spans.append((first, length, at))
            pieces.append(w["token_embedding"][tokens[:length]] + w["positional_embedding"][:length])
            first += length
        x = np.concatenate(pieces)
        masks = {length: np.triu(np.full((length, length), -np.inf, np.float32), 1) if cfg["causal"] else None
                 for _, length, _ in spans}
        for i in range(self._layers):
            p = f"block{i}."
            h = _layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], self._eps)
            qkv = h @ w[p + "in.weight"] + w[p + "in.bias"]
            attended = np.concatenate([self._attention(qkv[start:start + length], masks[length])
                                       for start, length, _ in spans])
            x = x + self._scaled(p + "ls_1", attended @ w[p + "out.weight"] + w[p + "out.bias"])
            h = _layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], self._eps)
            h = h @ w[p + "fc.weight"] + w[p + "fc.bias"]
            h = _quick_gelu(h) if cfg["activation"] == "quick_gelu" else _gelu(h)
            x = x + self._scaled(p + "ls_2", h @ w[p + "proj.weight"] + w[p + "proj.bias"])
        x = _layer_norm(x[[start + at for start, _, at in spans]], w["ln_final.weight"], w["ln_final.bias"],
                        self._eps)
        if "projection.weight" in w:
            x = x @ w["projection.weight"]
            if "projection.bias" in w:
                x = x + w["projection.bias"]
        return x.astype(np.float32)

    def _attention(self, qkv: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """Multi-head attention of one text, from its rows of the q, k, v projection."""
        length = qkv.shape[0]
        width = qkv.shape[1] // 3
        head = width // self._heads
        qkv = qkv.reshape(length, 3, self._heads, head).transpose(1, 2, 0, 3)
        q, k, v = qkv[0] / math.sqrt(head), qkv[1], qkv[2]
        scores = q @ k.transpose(0, 2, 1)  # heads x length x length
        if mask is not None:
            scores = scores + mask
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        return (scores @ v).transpose(1, 0, 2).reshape(length, width)

    def _scaled(self, name: str, x: np.ndarray) -> np.ndarray:
        gamma = self._w.get(name)
        return x if gamma is None else x * gamma


def save(folder: str | os.PathLike, config: dict, weights: dict[str, np.ndarray]) -> None:
    """Write a tower: the float file under a new name first, the description last (it is
    what `load` reads), then the files of any older tower are removed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _share.check_room(folder, sum(np.asarray(array).size * 4 for array in weights.values()))
    name = f"text-tower-{uuid.uuid4().hex[:12]}.f32"
    tensors, start = {}, 0
    try:
        with open(folder / name, "wb") as f:
            for key, array in weights.items():
                array = np.ascontiguousarray(array, dtype=np.float32)
                f.write(array.data.cast("B"))  # no copy: the token embedding alone is 100 MB
                tensors[key] = (start, list(array.shape))
                start += array.size
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        (folder / name).unlink(missing_ok=True)
        raise
    description = {**config, "format": FORMAT, "file": name, "floats": start, "tensors": tensors}
    _share.place([folder / name], description, DESCRIPTION, folder, "text-tower-")


def share(folder: str | os.PathLike, cache: str | os.PathLike) -> None:
    """Keep a copy of the tower in folder in the machine's model cache (see _share)."""
    config = json.loads((Path(folder) / DESCRIPTION).read_text(encoding="utf-8"))
    target = _share.cache_folder(cache, "text-towers", config["spec"], config.get("source", ""))
    _share.place([Path(folder) / config["file"]], config, DESCRIPTION, target, "text-tower-")


def adopt(cache: str | os.PathLike, folder: str | os.PathLike, spec: str, source: str) -> TextTower | None:
    """The tower another library on this machine saved for this model and weights, placed
    in folder; None if there is none."""
    shared = _share.cache_folder(cache, "text-towers", spec, source)
    tower = TextTower.load(shared, spec, source)
    if tower is None:
        return None
    _share.place([shared / tower.config["file"]], tower.config, DESCRIPTION, Path(folder), "text-tower-")
    return TextTower.load(folder, spec, source)


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def _quick_gelu(x: np.ndarray) -> np.ndarray:
    return x / (1 + np.exp(-1.702 * x))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def _erf(x: np.ndarray) -> np.ndarray:
    """erf to within 4e-7 in float32 (Numerical Recipes' erfc by Chebyshev fitting); numpy has none."""
    z = np.abs(x)
    t = 1 / (1 + 0.5 * z)
    poly = t * 0.17087277 - 0.82215223
    for c in (1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418, 0.37409196, 1.00002368):
        poly *= t
        poly += c
    poly *= t
    poly -= z * z + 1.26551223
    erfc = t * np.exp(poly)
    return np.copysign(1 - erfc, x)
