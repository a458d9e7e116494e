"""A CLIP-family image tower on ONNX Runtime: crawls and image queries on a CPU without torch.

The first time a library's model is used on a CPU, `build` writes its image encoder to
HOME/image-tower/ as an ONNX graph made from the checkpoint's tensors (imagegraph.py: uint8
pixels in; the model's normalisation, projection and L2 norm inside), with onnxruntime's
portable optimisations applied and the weights in a file of their own (memory-mapped: a
session starts in 0.3-0.6 s), quantised to int8 per output channel where asked. Where the
weights came through torch it is checked against torch on probe images (embed.py). The
description names the model spec and the fingerprint of its weights, so a retrained
checkpoint never uses an old tower; towers exported by clipsearch before (through torch)
have the same form and still load.

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

from ..records import Preprocess
from . import _share
from .checkpoint import release_pages

FORMAT = 2  # 2: weights in a file of their own
DESCRIPTION = "image-tower.json"
# The smallest cosine to torch's vectors on probe images a tower must reach, per precision.
# int8 (dynamic quantisation of the weights) measured 0.987-0.998 (docs/benchmarks.md).
MIN_COSINE = {"fp32": 0.9999, "int8": 0.98}
PRECISIONS = tuple(MIN_COSINE)


class ImageTower:
    """An exported image tower, ready to run (its onnxruntime session is made on first use)."""

    def __init__(self, folder: Path, description: dict, model: bytes | None = None):
        """`model`: the serialised graph, for a tower that lives in memory only (not saved)."""
        self.folder = Path(folder)
        self._model = model
        self.description = description
        self.spec: str = description["spec"]
        self.source: str = description["source"]
        self.dim: int = int(description["dim"])
        self.precision: str = description.get("precision", "fp32")
        self.preprocess = Preprocess(**description["preprocess"])
        self._session: Any = None
        self._lock = threading.Lock()

    @classmethod
    def load(cls, folder: str | os.PathLike, spec: str, source: str, precision: str = "fp32") -> ImageTower | None:
        """The tower saved in folder if it is the one of this model, weights and precision, else None."""
        try:
            description = json.loads((Path(folder) / DESCRIPTION).read_text(encoding="utf-8"))
            model = Path(folder) / description["file"]
            if (description.get("format") != FORMAT or description.get("spec") != spec
                    or description.get("source") != source or description.get("precision", "fp32") != precision
                    or not model.is_file()
                    or not weights_of(model).is_file()):
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
                self._session = onnxruntime.InferenceSession(self._model or str(self.path), options,
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


def weights_of(path: Path) -> Path:
    return path.with_suffix(".weights")


def optimize(exported: Path, path: Path) -> None:
    """Save onnxruntime's graph optimisations of `exported` to path (the portable level, not
    the ones for this very CPU), with the weights in a file of their own beside it: a new
    process then starts a session in 0.6 s instead of 1.2 s for ViT-B-32 (the weights are
    memory-mapped, not parsed), which every image query pays."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(path)
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                     weights_of(path).name)
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    onnxruntime.InferenceSession(str(exported), options, providers=["CPUExecutionProvider"])


def quantize(exported: Path, path: Path) -> None:
    """Write the int8 form of the fp32 tower to path: weights quantised once, one scale per
    output channel, activations per batch (onnxruntime's dynamic quantisation). It must start
    from the plain graph: the optimised graph's fused operators are left unquantised. One
    scale per matrix gave cosines of 0.973-0.979 to fp32 on SigLIP towers (random weights),
    under the 0.98 floor; per channel, 0.9993 (docs/benchmarks.md)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(exported), str(path), weight_type=QuantType.QInt8, per_channel=True)


def build(folder: str | os.PathLike, spec: str, source: str, checkpoint, precision: str = "fp32") -> ImageTower:
    """The image tower of a checkpoint (build.Checkpoint), written into folder and ready to
    run but not yet published (check it, then `publish`). UnsupportedArchitecture if the
    graph builder does not know the model's image tower."""
    from . import imagegraph

    path = new_file(folder)
    tower_bytes = sum(a.size * 4 for n, a in checkpoint.weights.items() if n.startswith("visual."))
    _share.check_room(path.parent, 2 * tower_bytes)  # the plain graph's weights and the optimised ones
    raw, quantized = path.with_name(path.stem + "-raw.onnx"), path.with_name(path.stem + "-int8.onnx")
    try:
        # The weights go to disk as the graph is built; the checkpoint's pages are let go
        # before onnxruntime reads them back (a first crawl's peak memory).
        imagegraph.save_model(imagegraph.build_image_tower(checkpoint.weights, checkpoint.model_cfg,
                                                           checkpoint.preprocess, external=weights_of(raw)), raw)
        release_pages(checkpoint.weights)
        if precision == "int8":
            quantize(raw, quantized)
            optimize(quantized, path)
        else:
            optimize(raw, path)
    except BaseException:
        path.unlink(missing_ok=True)
        weights_of(path).unlink(missing_ok=True)
        raise
    finally:
        for leftover in (raw, weights_of(raw), quantized, weights_of(quantized)):
            leftover.unlink(missing_ok=True)
    prep = checkpoint.preprocess
    size = prep["size"][0] if isinstance(prep["size"], (list, tuple)) else prep["size"]
    return describe(path, spec, source, int(checkpoint.model_cfg["embed_dim"]),
                    Preprocess(int(size), prep.get("resize_mode", "shortest"), prep.get("interpolation", "bicubic"),
                               int(prep.get("fill_color", 0))), precision)


def in_memory(spec: str, source: str, checkpoint) -> ImageTower:
    """The fp32 image tower of a checkpoint, held in memory and not saved (where it cannot be
    written: a full disk). UnsupportedArchitecture as `build`."""
    from . import imagegraph

    graph = imagegraph.build_image_tower(checkpoint.weights, checkpoint.model_cfg, checkpoint.preprocess)
    prep = checkpoint.preprocess
    size = prep["size"][0] if isinstance(prep["size"], (list, tuple)) else prep["size"]
    tower = describe(Path("-") / "in-memory.onnx", spec, source, int(checkpoint.model_cfg["embed_dim"]),
                     Preprocess(int(size), prep.get("resize_mode", "shortest"), prep.get("interpolation", "bicubic"),
                                int(prep.get("fill_color", 0))))
    return ImageTower(tower.folder, tower.description, graph.SerializeToString())


def discard(tower: ImageTower) -> None:
    """Remove a tower that was built but not published."""
    tower.path.unlink(missing_ok=True)
    weights_of(tower.path).unlink(missing_ok=True)


def describe(path: Path, spec: str, source: str, dim: int, preprocess: Preprocess,
             precision: str = "fp32") -> ImageTower:
    """The tower exported to path, not yet published (check it, then `publish`)."""
    description = {"format": FORMAT, "spec": spec, "source": source, "precision": precision, "dim": dim,
                   "file": path.name,
                   "preprocess": {"size": preprocess.size, "resize_mode": preprocess.resize_mode,
                                  "interpolation": preprocess.interpolation,
                                  "fill_color": preprocess.fill_color}}
    return ImageTower(path.parent, description)


def publish(tower: ImageTower, folder: Path | None = None) -> None:
    """Make tower the current one of folder (default: its own); older towers' files go."""
    _share.place([tower.path, weights_of(tower.path)], tower.description, DESCRIPTION, folder or tower.folder,
                 "image-tower-")


def share(tower: ImageTower, cache: Path) -> None:
    """Keep a copy of tower in the machine's model cache, so the next library of this model
    on this machine needs no export (nor torch)."""
    publish(tower, _cached(cache, tower.spec, tower.source, tower.precision))


def adopt(cache: Path, folder: Path, spec: str, source: str, precision: str = "fp32") -> ImageTower | None:
    """The tower another library on this machine exported for this model, weights and
    precision, placed in folder; None if there is none."""
    shared = ImageTower.load(_cached(cache, spec, source, precision), spec, source, precision)
    if shared is None:
        return None
    publish(shared, Path(folder))
    return ImageTower.load(folder, spec, source, precision)


def _cached(cache: Path, spec: str, source: str, precision: str) -> Path:
    return _share.cache_folder(cache, "image-towers" if precision == "fp32" else f"image-towers-{precision}",
                               spec, source)


def agreement(tower: ImageTower, reference: np.ndarray, probes: np.ndarray) -> float:
    """The smallest cosine between tower's vectors for probes and the reference vectors."""
    vectors = tower.embed_images(probes)
    return float(np.min(np.sum(vectors * reference, axis=1)))
