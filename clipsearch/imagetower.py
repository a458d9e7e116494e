"""A CLIP image tower on ONNX Runtime: crawls and image queries on a CPU without torch.

The first time a library's model is loaded on a CPU, embed.py exports its image encoder
to HOME/image-tower/ (uint8 pixels in; the model's normalisation, projection and L2 norm
inside) and checks it against torch on probe images (cosine >= 0.9999). From then on any
process on a CPU embeds images with onnxruntime, at about half the CPU time of torch and
without torch's import and model build. The description names the model spec and the
fingerprint of its weight files, so a retrained checkpoint never uses an old export.

Files are written like the text tower's: the model under a new name first, the
description (what `load` reads) replaced last.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from .decode import Preprocess

FORMAT = 1
DESCRIPTION = "image-tower.json"
MIN_COSINE = 0.9999  # against torch in fp32 on probe images


class ImageTower:
    """An exported image tower, ready to run (its onnxruntime session is made on first use)."""

    def __init__(self, folder: Path, description: dict):
        self.folder = Path(folder)
        self.description = description
        self.spec: str = description["spec"]
        self.source: str = description["source"]
        self.dim: int = int(description["dim"])
        self.preprocess = Preprocess(**description["preprocess"])
        self._session: Any = None
        self._lock = threading.Lock()

    @classmethod
    def load(cls, folder: str | os.PathLike, spec: str, source: str) -> ImageTower | None:
        """The tower saved in folder if it is the one of this model and weights, else None."""
        try:
            description = json.loads((Path(folder) / DESCRIPTION).read_text(encoding="utf-8"))
            if (description.get("format") != FORMAT or description.get("spec") != spec
                    or description.get("source") != source or not (Path(folder) / description["file"]).is_file()):
                return None
            return cls(Path(folder), description)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @property
    def path(self) -> Path:
        return self.folder / self.description["file"]

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        with self._lock:
            if self._session is None:
                import onnxruntime

                options = onnxruntime.SessionOptions()
                options.log_severity_level = 3  # warnings about unused initialisers are not the user's
                self._session = onnxruntime.InferenceSession(str(self.path), options,
                                                             providers=["CPUExecutionProvider"])
        return self._session.run(None, {"pixels": pixels})[0]

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 model input -> (N, dim) float32, rows L2-normalised."""
        vectors = self._run(np.require(pixels, np.uint8, ["C"]))
        return np.asarray(vectors, dtype=np.float32)


def new_file(folder: str | os.PathLike) -> Path:
    """Where to export a new tower (a fresh name: processes may still run the old one)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Path(folder) / f"image-tower-{uuid.uuid4().hex[:12]}.onnx"


def describe(path: Path, spec: str, source: str, dim: int, preprocess: Preprocess) -> ImageTower:
    """The tower exported to path, not yet published (check it, then `publish`)."""
    description = {"format": FORMAT, "spec": spec, "source": source, "dim": dim, "file": path.name,
                   "preprocess": {"size": preprocess.size, "resize_mode": preprocess.resize_mode,
                                  "interpolation": preprocess.interpolation,
                                  "fill_color": preprocess.fill_color}}
    return ImageTower(path.parent, description)


def publish(tower: ImageTower) -> None:
    """Make tower the folder's current one; files of older towers are removed."""
    temporary = tower.folder / f"{DESCRIPTION}.{tower.path.stem}.tmp"
    temporary.write_text(json.dumps(tower.description, indent=1), encoding="utf-8")
    os.replace(temporary, tower.folder / DESCRIPTION)
    for old in tower.folder.glob("image-tower-*.onnx"):
        if old != tower.path:
            try:
                old.unlink()
            except OSError:
                pass  # open elsewhere (Windows): the next export removes it


def agreement(tower: ImageTower, reference: np.ndarray, probes: np.ndarray) -> float:
    """The smallest cosine between tower's vectors for probes and the reference vectors."""
    vectors = tower.embed_images(probes)
    return float(np.min(np.sum(vectors * reference, axis=1)))
