"""JPEG decoding on the model's device: nvJPEG through torchvision when the model runs on CUDA.

On a GPU workstation the CPU, not the model, limits a crawl: an H100 embeds 24,000
images/s while 16 cores decode 272 12 MP JPEGs/s. nvJPEG decodes about 680/s using one
core (issue 12), so JPEGs go to the GPU in batches while the CPU workers decode everything
else (PNG, WebP, TIFF, CMYK and progressive JPEGs, files nvJPEG rejects) side by side.

The split of the work:
- `read_jpeg` (CPU, no decode): Pillow reads the header from the bytes already in memory
  for hashing; it gives the same metadata as the CPU path (decode.image_metadata) and the
  EXIF orientation, and says whether the file is one for the device at all.
- `decode_jpegs` (torch): decodes a batch on the device, reduces each image as libjpeg's
  draft mode does on the CPU path, turns it upright, and resizes and crops it as
  decode._to_model_input does, all on the device. It runs on CPU
  tensors as well (torchvision's libjpeg), which is how the tests compare it with the CPU
  path on the same photos; only the `device=` argument differs on a GPU.
torch is imported here and in embed.py only, and lazily in both.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..records import ImageMeta, Preprocess
from .decode import exif_orientation, image_metadata

# What one device batch may hold decoded (3 bytes a pixel on the device): 24 12 MP photos.
BATCH_PIXELS = 300_000_000
BATCH_FILES = 64
# JPEG files read into memory for the device and not yet decoded, at most (bytes).
DEVICE_BYTES = 512 << 20


@dataclass
class JpegInput:
    """A JPEG for the device, read and hashed by the crawl's readers."""

    data: bytearray
    meta: ImageMeta
    orientation: int
    pixels: int  # decoded size, width x height


def read_jpeg(data: bytearray, max_pixels: int) -> JpegInput | None:
    """The header of a JPEG fit for the device decoder, or None for a file that the CPU
    decoders should take (not a JPEG, CMYK or progressive, over the pixel limit, or a header
    Pillow cannot read: the CPU path gives those their proper errors)."""
    # The main image's entropy-coded data must end with an end-of-image marker: nvJPEG
    # decodes what libjpeg and Pillow refuse as truncated, and the two paths must agree.
    if data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        return None
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "JPEG" or img.mode not in ("RGB", "L") or img.info.get("progressive") \
                    or img.info.get("progression"):
                return None
            width, height = img.size
            if width * height > max_pixels or min(width, height) < 1:
                return None
            return JpegInput(data, image_metadata(img), exif_orientation(img) or 1, width * height)
    except Exception:  # noqa: BLE001 - whatever is wrong, the CPU path says it in words
        return None


def reduce_like_draft(image, side: int):
    """A stored (C, H, W) tensor reduced as the CPU path's `draft()` has libjpeg do it: by the
    largest of 8, 4 or 2 that keeps both sides at least `side`, each output pixel the mean of
    its block (libjpeg's scaled IDCT is close to that). Without it the two paths' model input
    differs by 1.4 levels on average, with it by 0.3 (docs/benchmarks.md)."""
    import torch
    import torch.nn.functional as F

    height, width = int(image.shape[-2]), int(image.shape[-1])
    scale = min(width // side, height // side)
    factor = next((f for f in (8, 4, 2) if scale >= f), 1)
    if factor == 1:
        return image
    pooled = F.avg_pool2d(image.unsqueeze(0).float(), factor, factor, ceil_mode=True).squeeze(0)
    return pooled.round_().clamp_(0, 255).to(torch.uint8)


def upright(image, orientation: int):
    """A (C, H, W) tensor turned as EXIF orientation 1-8 says (as PIL's exif_transpose)."""
    import torch

    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-1).flip(-2)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-2, -1)
    if orientation == 6:
        return torch.rot90(image, -1, dims=(-2, -1))
    if orientation == 7:
        return torch.rot90(image.transpose(-2, -1), 2, dims=(-2, -1))
    if orientation == 8:
        return torch.rot90(image, 1, dims=(-2, -1))
    return image


def to_model_input(image, prep: Preprocess):
    """A (3, H, W) uint8 tensor to model input (3, S, S) uint8, as decode._to_model_input
    does with Pillow: resize with antialiasing (torch's antialiased bicubic is Pillow's), then
    centre crop, squash or pad."""
    import torch
    import torch.nn.functional as F

    side = prep.size
    mode = {"bilinear": "bilinear", "nearest": "nearest"}.get(prep.interpolation, "bicubic")
    height, width = int(image.shape[-2]), int(image.shape[-1])

    def resized(new_height: int, new_width: int):
        if (new_height, new_width) == (height, width):
            return image
        pixels = image.unsqueeze(0).float()
        out = F.interpolate(pixels, size=(new_height, new_width), mode=mode,
                            antialias=mode != "nearest", align_corners=False if mode != "nearest" else None)
        return out.squeeze(0).round_().clamp_(0, 255).to(torch.uint8)

    if prep.resize_mode == "squash":
        return resized(side, side)
    if prep.resize_mode == "longest":
        scale = side / max(width, height)
        fit_w, fit_h = max(1, round(width * scale)), max(1, round(height * scale))
        canvas = torch.full((3, side, side), prep.fill_color, dtype=torch.uint8, device=image.device)
        left, top = (side - fit_w) // 2, (side - fit_h) // 2
        canvas[:, top:top + fit_h, left:left + fit_w] = resized(fit_h, fit_w)
        return canvas
    if width <= height:
        new_w, new_h = side, int(side * height / width)
    else:
        new_w, new_h = int(side * width / height), side
    out = resized(new_h, new_w)
    left, top = int(round((new_w - side) / 2.0)), int(round((new_h - side) / 2.0))
    return out[:, top:top + side, left:left + side]


def decode_jpegs(items: list[JpegInput], prep: Preprocess, device: str) -> list[np.ndarray | None]:
    """Model input (S x S x 3 uint8, on the host) for each JPEG, decoded on `device` in one
    batch; None where the device refused the file (the caller decodes it on the CPU).

    On CUDA the work runs on a stream of its own: torchvision's decoder must not share the
    default stream with the model running in another thread (it can free memory that the
    other's queued kernels still read: pytorch/vision#9606). Each full-size image is turned
    into model input and dropped before the next, so a batch holds one float copy at a time."""
    import torch

    if device.startswith("cuda"):
        stream = _streams.get(device)
        if stream is None:
            stream = _streams[device] = torch.cuda.Stream(device)
        with torch.cuda.stream(stream):
            return _decode_jpegs(items, prep, device)
    return _decode_jpegs(items, prep, device)


_streams: dict = {}  # one CUDA stream a device, for the crawl's one device thread


def _decode_jpegs(items: list[JpegInput], prep: Preprocess, device: str) -> list[np.ndarray | None]:
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    encoded = [torch.frombuffer(item.data, dtype=torch.uint8) for item in items]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 points to TorchCodec
        try:
            images: list = list(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:  # one bad file fails the batch: find it
            images = []
            for one in encoded:
                try:
                    images.append(decode_jpeg(one, mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    images.append(None)
    ready: list = []
    with torch.inference_mode():
        for at, item in enumerate(items):
            image, images[at] = images[at], None  # the full-size decode is freed as it is used
            if image is None:
                ready.append(None)
                continue
            try:
                ready.append(to_model_input(upright(reduce_like_draft(image, prep.size), item.orientation), prep))
            except RuntimeError:  # out of device memory for this one: the CPU takes it
                ready.append(None)
            del image
        done = [image for image in ready if image is not None]
        host = torch.stack(done).permute(0, 2, 3, 1).contiguous().cpu().numpy() if done else None
    out: list[np.ndarray | None] = []
    row = 0
    for image in ready:
        if image is None:
            out.append(None)
        else:
            assert host is not None
            out.append(host[row])
            row += 1
    return out


def available(device: str) -> bool:
    """Whether torchvision can decode JPEGs on this device here."""
    try:
        import torch
        from torchvision.io import decode_jpeg  # noqa: F401
    except ImportError:
        return False
    if device.startswith("cuda"):
        return bool(torch.cuda.is_available())
    return device == "cpu"
