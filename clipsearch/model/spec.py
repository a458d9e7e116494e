"""Model names and what every embedder offers: cheap to import (no torch, no onnxruntime).

A model is named by a spec string:
  default | accurate | datacomp | openai | mobileclip   presets (see PRESETS)
  ARCH:PRETRAINED                        an open_clip architecture and a pretrained tag,
                                         e.g. ViT-B-32-256:datacomp_s34b_b86k
  ARCH:/path/to/weights.pt               an architecture with a local checkpoint file
  /path/to/config.json:PRETRAINED        an architecture from a config file of your own
  ViT-B/32, ViT-L/14, RN50 ...           OpenAI's names (their published weights)
  /path/to/ViT-B-32.pt                   an OpenAI checkpoint file (architecture inferred)
  hf-hub:org/repo, local-dir:/path       open_clip's own schemas
PRETRAINED may also be `random`: seeded random weights of the real architecture, for
benchmarks and tests (same cost as real weights, meaningless results).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np

from ..errors import ClipsearchError

if TYPE_CHECKING:
    from ..records import Preprocess

PRESETS = {
    # SigLIP 2 B/32 at 256 px: COCO text-to-image R@1 47.2 against 39.9 for the DataComp
    # ViT-B-32-256 that was the default before, at the same image-tower cost (60 against 58 ms
    # an image here), under Apache-2.0; its sigmoid head makes a score a match probability.
    "default": "ViT-B-32-SigLIP2-256:webli",
    # SigLIP 2 B/16 at 256 px: R@1 53.2, about 4x the cost of the default.
    "accurate": "ViT-B-16-SigLIP2-256:webli",
    "datacomp": "ViT-B-32-256:datacomp_s34b_b86k",
    "openai": "ViT-B-32:openai",
    # MobileCLIP-S2 (R@1 45.4): its image tower (FastViT) runs on torch only (the gpu extra).
    "mobileclip": "MobileCLIP-S2:datacompdr",
}
RANDOM = "random"
_OPENAI_NAME = re.compile(r"^(RN\d+(x\d+)?|ViT-[BL]/\d+(@336px)?)$")
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")


class Embedder(Protocol):
    """What the pipeline and search need from a model."""

    spec: str  # canonical model spec, recorded in the catalog

    @property
    def dim(self) -> int: ...

    @property
    def batch_size(self) -> int: ...

    @property
    def preprocess(self) -> Preprocess: ...

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 model input -> (N, dim) float32, rows L2-normalised."""

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> (N, dim) float32, rows L2-normalised."""


@dataclass(frozen=True)
class ModelSpec:
    arch: str  # open_clip model name, a config .json path, or "" for an OpenAI checkpoint file
    pretrained: str | None  # tag, checkpoint path, "random", or None (schemas)

    def __str__(self) -> str:
        if not self.arch:
            return str(self.pretrained)
        return self.arch if self.pretrained is None else f"{self.arch}:{self.pretrained}"


def parse_spec(text: str) -> ModelSpec:
    """Turn what a user typed into a canonical ModelSpec; cheap, imports no torch."""
    text = text.strip()
    if not text:
        raise ClipsearchError("empty model name; try --model default")
    text = PRESETS.get(text, text)
    if text.startswith(("hf-hub:", "local-dir:")):
        schema, rest = text.split(":", 1)
        return ModelSpec(f"{schema}:{os.path.abspath(rest) if schema == 'local-dir' else rest}", None)
    if _OPENAI_NAME.match(text):
        return ModelSpec(text.replace("/", "-").replace("@336px", "-336"), "openai")
    if Path(text).suffix.lower() in _CHECKPOINT_SUFFIXES and Path(text).is_file():
        return ModelSpec("", os.path.abspath(text))
    # Split at the first colon whose left side is a config file or a plain model name; Windows
    # paths ("D:/models/x.json:D:/ckpt.pt") contain colons of their own.
    for match in re.finditer(":", text):
        arch, pretrained = text[: match.start()], text[match.end():]
        if arch.lower().endswith(".json"):
            if not Path(arch).is_file():
                raise ClipsearchError(f"model config file not found: {arch}")
            arch = os.path.abspath(arch)
        elif not re.fullmatch(r"[\w.\-]+", arch):
            continue
        if pretrained and pretrained != RANDOM and (os.sep in pretrained or "/" in pretrained
                                                    or Path(pretrained).suffix.lower() in _CHECKPOINT_SUFFIXES):
            if not Path(pretrained).is_file():
                raise ClipsearchError(f"checkpoint file not found: {pretrained}")
            pretrained = os.path.abspath(pretrained)
        return ModelSpec(arch, pretrained or None)
    if re.fullmatch(r"[\w.\-]+", text):
        return ModelSpec(text, None)
    raise ClipsearchError(
        f"cannot understand model {text!r}: use a preset ({', '.join(PRESETS)}), ARCH:PRETRAINED "
        "such as ViT-B-32:openai, ARCH:/path/to/checkpoint, or an OpenAI name such as ViT-B/32")


def canonical(text: str) -> str:
    return str(parse_spec(text))


@dataclass(frozen=True)
class ModelFacts:
    """What a user should know of a named model: published COCO 5k text-to-image R@1, the
    weights' licence and download size (hub.MODELS; unknown for others)."""

    spec: str
    coco_r1: float | None = None
    licence: str = ""
    weights_mb: int = 0


def model_facts(name: str) -> ModelFacts:
    from .hub import MODELS

    spec = canonical(name)
    known = MODELS.get(spec)
    return ModelFacts(spec, known.coco_r1, known.licence, known.weights_mb) if known else ModelFacts(spec)


def expected_dim(spec: str) -> int | None:
    """The vector length the model makes, from its config file (read without importing
    open_clip or torch, and without weights), or None where no config tells (an OpenAI
    checkpoint file, a hub schema)."""
    import importlib.util
    import json

    from .hub import MODELS

    arch = parse_spec(spec).arch
    for model in MODELS.values():
        if model.arch == arch:
            return int(model.model_cfg["embed_dim"])
    try:
        if arch.lower().endswith(".json"):
            raw = json.loads(Path(arch).read_text(encoding="utf-8"))
            return int(raw.get("model_cfg", raw)["embed_dim"])
        elif not arch or ":" in arch:
            return None
        else:
            package = importlib.util.find_spec("open_clip")
            if package is None or package.origin is None:
                return None
            config = Path(package.origin).parent / "model_configs" / f"{arch}.json"
        return int(json.loads(config.read_text(encoding="utf-8"))["embed_dim"])
    except (OSError, ValueError, KeyError, TypeError, ImportError):
        return None
