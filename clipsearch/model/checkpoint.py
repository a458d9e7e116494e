"""open_clip checkpoints as numpy arrays, without the safetensors or torch packages.

A hub repo of an open_clip model holds `open_clip_model.safetensors` (the state dict under
open_clip's own names: `visual.conv1.weight`, `text.token_embedding.weight` ...) and
`open_clip_config.json` (`model_cfg`: the architecture; `preprocess_cfg`: size, mean, std,
resize mode). This module reads both.

The safetensors format is small enough to read by hand: 8 bytes of little-endian header
length, a JSON header of name -> {dtype, shape, data_offsets} (offsets relative to the end
of the header), then the raw little-endian bytes. The file is memory-mapped: F32 and F16
tensors are read-only views of the mapping (nothing is read until it is used, and pages
are shared between processes); BF16 has no numpy type and is widened to float32 (a copy).

`write_safetensors` writes the same format (aligned, so every tensor maps as a view); the
text tower uses it for its own weight file, with the 256k-row token table of SigLIP 2 kept
in float16.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

# safetensors dtype name -> numpy dtype (little-endian). BF16 is handled apart.
_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}
_ALIGN = 64  # tensor start alignment in files we write (SIMD loads from the mapping stay aligned)
_MAX_HEADER = 100_000_000  # the reference implementation's own limit


class CheckpointError(ValueError):
    """A checkpoint or config file that cannot be read as one."""


class UnsupportedArchitecture(ValueError):
    """A checkpoint uses a part the tower builders do not know: keep the torch path for it."""


def read_safetensors(path: str | os.PathLike, names: set[str] | None = None,
                     prefix: str | None = None) -> dict[str, np.ndarray]:
    """The tensors of a .safetensors file, by name (all of them, or those in `names`, or
    those starting with `prefix`). F32/F16/integer tensors are read-only views of a memory
    map of the file (the map stays open while any of them is alive); BF16 tensors come back
    as float32 arrays."""
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise CheckpointError(f"{path}: too short to be a safetensors file")
        length = int.from_bytes(f.read(8), "little")
        if length > min(_MAX_HEADER, size - 8):
            raise CheckpointError(f"{path}: bad header length {length}")
        try:
            header = json.loads(f.read(length))
        except ValueError as exc:
            raise CheckpointError(f"{path}: header is not JSON ({exc})") from None
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size > 8 + length else b""
    data_start = 8 + length
    out: dict[str, np.ndarray] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if (names is not None and name not in names) or (prefix is not None and not name.startswith(prefix)):
            continue
        try:
            dtype_name, shape = entry["dtype"], [int(n) for n in entry["shape"]]
            begin, end = (int(n) for n in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: bad header entry for {name!r}") from None
        count = math.prod(shape)
        width = 2 if dtype_name == "BF16" else _DTYPES[dtype_name].itemsize if dtype_name in _DTYPES else None
        if width is None:
            raise CheckpointError(f"{path}: {name!r} has dtype {dtype_name}, which is not supported")
        if end - begin != count * width or data_start + end > size or begin < 0:
            raise CheckpointError(f"{path}: {name!r} does not fit its offsets")
        if dtype_name == "BF16":
            raw = np.frombuffer(mapped, dtype="<u2", count=count, offset=data_start + begin)
            # bfloat16 is the high half of a float32: widen by shifting into the top 16 bits.
            array = (raw.astype(np.uint32) << 16).view(np.float32).reshape(shape)
        else:
            array = np.frombuffer(mapped, dtype=_DTYPES[dtype_name], count=count,
                                  offset=data_start + begin).reshape(shape)
        out[name] = array
    return out


def release_pages(tensors: Mapping[str, np.ndarray]) -> None:
    """Let the system take back the memory pages of the files that tensors map (read by
    read_safetensors): the arrays stay valid and are read from the file again if touched.
    A first crawl builds both towers from a 1.5 GB checkpoint; without this, every page it
    read would count against the crawl until the end. A no-op where madvise is missing."""
    maps: dict[int, mmap.mmap] = {}
    for array in tensors.values():
        base: object = array
        while isinstance(base, np.ndarray):
            base = base.base
        if isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap):
            maps[id(base.obj)] = base.obj
    for mapped in maps.values():
        try:
            mapped.madvise(mmap.MADV_DONTNEED)
        except (AttributeError, OSError, ValueError):
            pass


def safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The free-form `__metadata__` of a .safetensors file ({} if it has none)."""
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(min(length, _MAX_HEADER)))
    return dict(header.get("__metadata__") or {})


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                      metadata: Mapping[str, str] | None = None,
                      dtypes: Mapping[str, np.dtype | type] | None = None) -> None:
    """Write tensors as a .safetensors file that the reference reader accepts (no gaps
    between tensors). The header is padded with spaces so the data starts at a multiple of
    64 bytes, and tensors are laid out widest dtype first, so every tensor starts at a
    multiple of its own item size and maps as an aligned view. `dtypes` converts tensors
    on the way (a float32 token table written as float16). Tensors go out in pieces of
    16 MB, and pages of files they map (read_safetensors) are let go after each piece: a
    1.5 GB checkpoint's text half is written without being held in memory."""
    arrays = {name: np.asarray(array) for name, array in tensors.items()}
    targets = {name: np.dtype((dtypes or {}).get(name, array.dtype)).newbyteorder("<")
               for name, array in arrays.items()}
    for name, dtype in targets.items():
        if dtype not in _NAMES:
            raise CheckpointError(f"{name!r}: dtype {dtype} cannot be written")
    order = sorted(arrays, key=lambda name: -targets[name].itemsize)
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name in order:
        size = arrays[name].size * targets[name].itemsize
        header[name] = {"dtype": _NAMES[targets[name]], "shape": list(arrays[name].shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-(8 + len(encoded)) % _ALIGN)
    with open(path, "wb") as f:
        f.write(len(encoded).to_bytes(8, "little"))
        f.write(encoded)
        for name in order:
            flat = arrays[name].reshape(-1)
            step = max(1, _PIECE // max(1, flat.itemsize))
            for start in range(0, flat.size, step):
                piece = np.ascontiguousarray(flat[start:start + step], dtype=targets[name])
                f.write(piece.data.cast("B"))
                release_pages({name: arrays[name]})


_PIECE = 16 << 20


@dataclass(frozen=True)
class OpenClipConfig:
    """open_clip_config.json: the architecture (`model_cfg`, open_clip's model config) and
    how images are prepared for it (`preprocess_cfg`: size, mean, std, interpolation,
    resize_mode; open_clip's defaults filled in where the file is silent)."""

    model_cfg: dict
    preprocess_cfg: dict = field(default_factory=dict)


# open_clip's PreprocessCfg defaults (open_clip/transform.py), used where a config is silent.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_PREPROCESS_DEFAULTS = {"size": 224, "mode": "RGB", "mean": OPENAI_MEAN, "std": OPENAI_STD,
                        "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0}


def read_config(path: str | os.PathLike) -> OpenClipConfig:
    """Read open_clip_config.json. The image size defaults to the model's own
    (vision_cfg.image_size), as open_clip does."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        model_cfg = dict(raw["model_cfg"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: not an open_clip config ({exc})") from None
    return OpenClipConfig(model_cfg, preprocess_defaults(model_cfg, raw.get("preprocess_cfg") or {}))


def preprocess_defaults(model_cfg: dict, given: Mapping) -> dict:
    """open_clip's preprocessing settings for a model: `given` over open_clip's defaults,
    the size taken from the model's image size when not given."""
    image_size = model_cfg.get("vision_cfg", {}).get("image_size", 224)
    out = {**_PREPROCESS_DEFAULTS, "size": image_size, **given}
    out["mean"], out["std"] = tuple(float(v) for v in out["mean"]), tuple(float(v) for v in out["std"])
    return out


def count_numbered(weights: Mapping[str, np.ndarray], prefix: str) -> int:
    """How many numbered children `prefix` has in a state dict (`prefix0.`, `prefix1.` ...)."""
    found = {int(m.group(1)) for name in weights if (m := re.match(re.escape(prefix) + r"(\d+)\.", name))}
    if found != set(range(len(found))):
        raise UnsupportedArchitecture(f"{prefix}N numbering has gaps")
    return len(found)
