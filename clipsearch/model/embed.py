"""The Embedder implementations: open_clip on torch (GPU, or the fall-back), and LazyEmbedder,
which loads a model on first use and hands texts and images to the saved numpy and ONNX
towers when it can.

This is the only module that imports torch or open_clip, and it does so lazily: commands
that need no model (status, errors, --help) never pay for the import. Model names are
spec.py's.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import sys
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .._memory import return_freed_memory
from ..errors import BadArgument, ClipsearchError
from . import _share
from .identity import fingerprint
from .spec import PRESETS, RANDOM, ModelSpec, canonical, parse_spec

if TYPE_CHECKING:
    from ..records import Preprocess
    from .imagetower import ImageTower
    from .texttower import TextTower

log = logging.getLogger("clipsearch")

def pick_device(requested: str = "auto") -> str:
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    kind = requested.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise BadArgument("device", requested, "no CUDA GPU is available to torch here; use the cpu")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise BadArgument("device", requested, "Apple MPS is not available here; use the cpu")
    if kind not in ("cpu", "cuda", "mps"):
        raise BadArgument("device", requested, "expected auto, cpu, cuda, cuda:N or mps")
    return requested


def default_batch_size(device: str) -> int:
    # CPU: 16 runs as fast as 32 or 48 per image and holds 50 MB less (docs/benchmarks.md).
    return {"cuda": 256, "mps": 64}.get(device.split(":")[0], 16)


class OpenClipEmbedder:
    """An open_clip model in inference mode on one device (fp16 on CUDA)."""

    def __init__(self, spec: str, device: str = "auto", batch_size: int | None = None,
                 cache_dir: str | os.PathLike | None = None):
        parsed = parse_spec(spec)
        self.spec = str(parsed)
        self.device = pick_device(device)
        self.batch_size = batch_size or default_batch_size(self.device)
        self._cache_dir = cache_dir
        # On a CPU torch keeps its default of one thread per physical core: the model is the
        # wall there (3/4 of the CPU time per image) and the decode pool fits in beside it;
        # fewer model threads or decode workers measured slower (docs/benchmarks.md).
        self._model, self._tokenizer = _load(parsed, self.device, cache_dir)
        import torch

        cfg = dict(getattr(self._model.visual, "preprocess_cfg", {}) or {})
        size = cfg.get("size", getattr(self._model.visual, "image_size", 224))
        if isinstance(size, (tuple, list)):
            size = int(size[0])
        from ..records import Preprocess

        self.preprocess = Preprocess(size=int(size), resize_mode=cfg.get("resize_mode", "shortest"),
                                     interpolation=cfg.get("interpolation", "bicubic"),
                                     fill_color=int(cfg.get("fill_color", 0)))
        self._dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        mean = cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))
        std = cfg.get("std", (0.26862954, 0.26130258, 0.27577711))
        # Fold /255 and the normalisation into one multiply-add on the device.
        self._scale = (1.0 / (255.0 * torch.tensor(std))).view(1, 3, 1, 1).to(self.device)
        self._shift = (-torch.tensor(mean) / torch.tensor(std)).view(1, 3, 1, 1).to(self.device)
        self._text: TextTower | None = None  # the numpy tower, once use_text_tower() swapped it in
        self.dim = int(self.embed_texts(["a photo"]).shape[1])

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            batch = torch.from_numpy(np.require(pixels, np.uint8, ["C", "W"])).to(self.device, non_blocking=True)
            batch = batch.permute(0, 3, 1, 2).float() * self._scale + self._shift
            features = self._model.encode_image(batch.to(self._dtype), normalize=True)
            return features.float().cpu().numpy()

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if self._text is not None:
            return self._text.embed_texts(texts)
        import torch

        with torch.inference_mode():
            tokens = self._tokenizer(list(texts)).to(self.device)
            features = self._model.encode_text(tokens, normalize=True)
            return features.float().cpu().numpy()

    def text_tower(self) -> TextTower | None:
        """This model's text tower as a numpy TextTower, checked against the torch one on
        probe texts; None (and the reason logged) if the model's text tower or tokenizer is
        of a kind texttower.py does not cover."""
        try:
            config, weights = _text_tower_parts(self._model, self._tokenizer)
        except _Unsupported as exc:
            log.info("no fast text path for %s: %s", self.spec, exc)
            return None
        from .texttower import TextTower

        tower = TextTower({**config, "spec": self.spec, "source": fingerprint(self.spec, self._cache_dir),
                           "dim": self.dim}, weights)
        wanted = self.embed_texts(_PROBES)
        got = tower.embed_texts(_PROBES)
        tokens_match = np.array_equal(tower.tokenize(_PROBES), self._tokenizer(_PROBES).numpy())
        import torch

        # fp16 weights on a GPU round to about 1e-3; the numpy tower computes in fp32.
        tolerance = 1e-4 if self._dtype == torch.float32 else 5e-3
        difference = float(np.abs(wanted - got).max())
        if not tokens_match or difference > tolerance:
            log.warning("no fast text path for %s: it differs from the torch model (tokens equal: %s, "
                        "largest difference %.2g)", self.spec, tokens_match, difference)
            return None
        return tower

    def use_text_tower(self, tower: TextTower) -> None:
        """Embed texts with `tower` from now on and free the torch text tower's memory."""
        import torch

        self._text = tower
        model = self._model
        if isinstance(getattr(model, "text", None), torch.nn.Module):
            model.text = None  # CustomTextCLIP keeps its text tower in one module
        else:
            for name in ("transformer", "token_embedding", "ln_final", "positional_embedding", "text_projection"):
                if getattr(model, name, None) is not None:
                    setattr(model, name, None)
        return_freed_memory()  # glibc would keep 150 MB of the 250 MB ViT-B-32's text tower held

    def export_image_tower(self, path: Path) -> None:
        """Write the image tower to path as ONNX: (N, H, W, 3) uint8 in, (N, dim) L2-normalised
        float32 out; the computation of embed_images (fp32 models only)."""
        import torch

        if self._dtype != torch.float32:
            raise _Unsupported("only fp32 models are exported")
        model, scale, shift = self._model, self._scale, self._shift

        class ImageInput(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, pixels):
                batch = pixels.permute(0, 3, 1, 2).float() * scale + shift
                return self.model.encode_image(batch, normalize=True)

        size = self.preprocess.size
        example = torch.zeros((2, size, size, 3), dtype=torch.uint8, device=self.device)
        # With gradients on, attention takes its plain path: the fused one (taken under
        # no_grad) has no ONNX form.
        with warnings.catch_warnings(), torch.inference_mode(False), torch.enable_grad():
            warnings.simplefilter("ignore")  # tracer warnings speak to torch developers
            torch.onnx.export(ImageInput().eval(), (example,), str(path), input_names=["pixels"],
                              output_names=["vectors"], opset_version=17, dynamo=False,
                              dynamic_axes={"pixels": {0: "batch"}, "vectors": {0: "batch"}})

    def drop_image_tower(self) -> None:
        """Free the torch image tower (images are embedded by an exported one from now on)."""
        if getattr(self._model, "visual", None) is not None:
            self._model.visual = None
        return_freed_memory()


class LazyEmbedder:
    """An Embedder that loads its model on first use: a crawl that finds nothing new, or a
    command that fails before embedding, never pays the seconds a model load costs."""

    def __init__(self, spec: str, text_tower_dir: str | os.PathLike | None = None,
                 image_tower_dir: str | os.PathLike | None = None, image_precision: str = "fp32", **options):
        self.spec = canonical(spec)
        self._options = options
        self._source = fingerprint(self.spec, options.get("cache_dir"))  # the saved towers must be of these weights
        # Images are embedded by the ONNX tower saved in this folder when the model runs on
        # the CPU and the tower is this model's: crawls and image queries then skip torch.
        self._image_dir = image_tower_dir
        self._precision = image_precision  # "int8": the tower's weights quantised (an option)
        self._image: ImageTower | None = None
        self._image_checked = False
        self._image_lock = threading.Lock()
        self._inner: OpenClipEmbedder | None = None
        self._failure: Exception | None = None
        self._lock = threading.Lock()
        # Texts are embedded by the numpy tower saved in this folder when it is this model's:
        # a text search then imports neither torch nor open_clip.
        self._tower_dir = text_tower_dir
        self._tower: TextTower | None = None
        if text_tower_dir is not None:
            from . import texttower

            self._tower = texttower.TextTower.load(text_tower_dir, self.spec, self._source)
            if self._tower is None and options.get("cache_dir") is not None:
                try:
                    self._tower = texttower.adopt(options["cache_dir"], text_tower_dir, self.spec, self._source)
                except OSError as exc:
                    log.warning("could not use the text tower in %s: %s", options["cache_dir"], exc)

    @property
    def loaded(self) -> bool:
        return self._inner is not None

    @property
    def failed(self) -> bool:
        return self._failure is not None

    def load(self) -> OpenClipEmbedder:
        with self._lock:
            if self._failure is not None:
                raise self._failure  # a failed load is not retried by every waiting thread
            if self._inner is None:
                try:
                    self._inner = OpenClipEmbedder(self.spec, **self._options)
                except Exception as exc:
                    self._failure = exc
                    raise
                self._swap_text_tower(self._inner)
                self._export_image_tower(self._inner)
            return self._inner

    def _image_tower(self) -> ImageTower | None:
        """The exported image tower, if images are embedded on the CPU and there is one (known
        without importing torch)."""
        with self._image_lock:
            if not self._image_checked:
                self._image_checked = True
                if _cpu_only(self._options.get("device") or "auto"):
                    self._image = self._saved_image_tower()
            return self._image

    def _saved_image_tower(self) -> ImageTower | None:
        """This model's tower in the library folder, or else in the model cache, or None."""
        if self._image_dir is None:
            return None
        from . import imagetower

        tower = imagetower.ImageTower.load(self._image_dir, self.spec, self._source, self._precision)
        cache = self._options.get("cache_dir")
        if tower is None and cache is not None:
            try:
                tower = imagetower.adopt(Path(cache), Path(self._image_dir), self.spec, self._source, self._precision)
            except OSError as exc:
                log.warning("could not use the image tower in %s: %s", cache, exc)
        return tower

    def _export_image_tower(self, inner: OpenClipEmbedder) -> None:
        """Export the image tower of a model loaded on the CPU, check it against torch, and embed
        images with it from now on (the torch image tower is freed)."""
        if self._image_dir is None or inner.device != "cpu" or self._image_tower() is not None:
            return
        from . import imagetower

        saved = self._saved_image_tower()
        if saved is not None:  # "auto" guessed a GPU that torch did not find: use the export anyway
            with self._image_lock:
                self._image = saved
            inner.drop_image_tower()
            return
        path = imagetower.new_file(self._image_dir)
        try:
            _share.check_room(path.parent, _parameter_bytes(inner._model.visual))
            exported, quantized = path.with_suffix(".raw"), path.with_suffix(".int8")
            try:
                inner.export_image_tower(exported)
                if self._precision == "int8":
                    imagetower.quantize(exported, quantized)
                    exported.unlink()
                    exported = quantized
                imagetower.optimize(exported, path)
            finally:
                exported.unlink(missing_ok=True)
                quantized.unlink(missing_ok=True)
            tower = imagetower.describe(path, self.spec, self._source, inner.dim, inner.preprocess, self._precision)
            probes = _probe_images(inner.preprocess.size)
            cosine = imagetower.agreement(tower, inner.embed_images(probes), probes)
            if not cosine >= imagetower.MIN_COSINE[self._precision]:
                raise _Unsupported(f"its vectors differ from torch's (cosine {cosine:.6f})")
            imagetower.publish(tower)
            if self._options.get("cache_dir") is not None:
                try:
                    imagetower.share(tower, Path(self._options["cache_dir"]))
                except OSError as exc:
                    log.warning("could not keep the image tower in %s: %s", self._options["cache_dir"], exc)
        except Exception as exc:  # noqa: BLE001 - an optimisation: never fail a crawl for it
            path.unlink(missing_ok=True)
            imagetower.weights_of(path).unlink(missing_ok=True)
            log.warning("images of %s are embedded with torch: no %s ONNX image tower (%s: %s)",
                        self.spec, self._precision, type(exc).__name__,
                        str(exc).strip().splitlines()[0][:300] if str(exc) else "")
            return
        log.info("ONNX image tower (%s) for %s saved in %s (cosine to torch >= %.6f)", self._precision, self.spec,
                 path, cosine)
        with self._image_lock:
            self._image = tower
        inner.drop_image_tower()

    def _swap_text_tower(self, inner: OpenClipEmbedder) -> None:
        """Save this model's numpy text tower if there is none yet, and let the loaded model use
        it: its torch text tower (a third of ViT-B-32's weights) is freed for the crawl."""
        if self._tower_dir is None:
            return
        if self._tower is None:
            try:
                tower = inner.text_tower()
            except Exception as exc:  # noqa: BLE001 - an optimisation: never fail a crawl for it
                log.warning("no fast text path for %s: %s: %s", self.spec, type(exc).__name__, exc)
                return
            if tower is None:
                return
            from . import texttower

            try:
                texttower.save(self._tower_dir, tower.config, tower.weights)
            except OSError as exc:
                log.warning("could not save the fast text path in %s: %s", self._tower_dir, exc)
                return
            if self._options.get("cache_dir") is not None:
                try:
                    texttower.share(self._tower_dir, self._options["cache_dir"])
                except OSError as exc:
                    log.warning("could not keep the text tower in %s: %s", self._options["cache_dir"], exc)
            # The saved copy, memory-mapped: `tower` holds views of the torch weights, which
            # would otherwise stay in memory after use_text_tower() drops them.
            del tower
            self._tower = texttower.TextTower.load(self._tower_dir)
            if self._tower is None:
                return
        inner.use_text_tower(self._tower)

    @property
    def dim(self) -> int:
        tower = self._image_tower()
        return tower.dim if tower is not None else self.load().dim

    @property
    def batch_size(self) -> int:
        if self._image_tower() is not None:
            return self._options.get("batch_size") or default_batch_size("cpu")
        return self.load().batch_size

    @property
    def preprocess(self) -> Preprocess:
        tower = self._image_tower()
        return tower.preprocess if tower is not None else self.load().preprocess

    @property
    def device(self) -> str:
        return "cpu" if self._image_tower() is not None else self.load().device

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        tower = self._image_tower()
        return tower.embed_images(pixels) if tower is not None else self.load().embed_images(pixels)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if self._tower is not None and self._inner is None:
            return self._tower.embed_texts(texts)
        return self.load().embed_texts(texts)


def _load(spec: ModelSpec, device: str, cache_dir):
    """Build the model and tokenizer; every failure becomes a ClipsearchError that says what to do."""
    import logging

    # open_clip and huggingface_hub log through the root logger and their own ("model
    # initialized randomly", a retry per attempt); our own error message carries the reason.
    loggers = [logging.getLogger(), logging.getLogger("huggingface_hub")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        if not _needs_download(spec):
            return _build(spec, device, cache_dir, offline=False)
        from huggingface_hub import constants

        if not constants.HF_HUB_OFFLINE:
            # Weights in the cache load without a single network request (huggingface_hub
            # would otherwise ask the hub whether they changed, on every search).
            constants.HF_HUB_OFFLINE = True
            try:
                return _build(spec, device, cache_dir, offline=True)
            except ClipsearchError as exc:
                cause = str(exc.__cause__)
                if "Failed to download" not in cause and "from HF Hub" not in cause:
                    raise  # not about missing weights: trying again online would not help
            finally:
                constants.HF_HUB_OFFLINE = False
        return _build(spec, device, cache_dir, offline=_go_offline_if_unreachable())
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _needs_download(spec: ModelSpec) -> bool:
    return spec.pretrained not in (None, RANDOM) and not os.path.isfile(spec.pretrained) \
        or spec.arch.startswith("hf-hub:")


def _go_offline_if_unreachable() -> bool:
    """True if the model hub cannot be reached; huggingface_hub then only looks in its cache
    instead of retrying for a minute and a half."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return True
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=5).close()
        return False
    except OSError:
        constants.HF_HUB_OFFLINE = True
        return True


def _build(spec: ModelSpec, device: str, cache_dir, offline: bool):
    import open_clip
    import torch

    precision = "fp16" if device.startswith("cuda") else "fp32"
    cache = str(cache_dir) if cache_dir else None
    arch = spec.arch
    if arch.lower().endswith(".json"):
        # open_clip registers configs by file stem; the stem becomes the model name.
        open_clip.add_model_config(arch)
        arch = Path(arch).stem
    try:
        if not arch:
            from open_clip.openai import load_openai_model

            model = load_openai_model(str(spec.pretrained), precision=precision, device=device)
            tokenizer = open_clip.get_tokenizer("ViT-B-32")
        elif spec.pretrained == RANDOM:
            # Seeded so that every process builds the same random model: vectors from a crawl
            # and from a later search must come from the same weights.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = open_clip.create_model(arch, pretrained=None, precision=precision, device=device,
                                               pretrained_text=False, cache_dir=cache)
            tokenizer = open_clip.get_tokenizer(arch, cache_dir=cache)
        else:
            _check_named_weights(open_clip, arch, spec.pretrained)
            local = spec.pretrained is not None and os.path.isfile(spec.pretrained)
            published = _published_preprocess(open_clip, arch) if local else None
            model = open_clip.create_model(arch, pretrained=spec.pretrained, precision=precision,
                                           device=device, cache_dir=cache, require_pretrained=True,
                                           force_preprocess_cfg=published)
            tokenizer = open_clip.get_tokenizer(arch, cache_dir=cache)
    except ClipsearchError:
        raise
    except Exception as exc:  # noqa: BLE001 - network, hub, file and format errors all end here
        raise ClipsearchError(_load_failure(spec, cache, exc, offline)) from exc
    model.eval()
    return model, tokenizer


def _check_named_weights(open_clip, arch: str, pretrained: str | None) -> None:
    """Refuse an unknown architecture, or weights that are missing or unknown for it, before
    anything is downloaded; open_clip's schemas and checkpoint files are its own to check."""
    if arch.startswith(("hf-hub:", "local-dir:")) or (pretrained and os.path.isfile(pretrained)):
        return
    if pretrained is not None and open_clip.get_pretrained_cfg(arch, pretrained) not in (None, {}):
        return
    if open_clip.get_model_config(arch) is None:
        raise ClipsearchError(_unknown_arch(arch))
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if pretrained is None:
        raise ClipsearchError(f"say which weights to use for {arch}, e.g. --model {arch}:"
                              f"{tags[0] if tags else 'random'} (known: {', '.join(tags) or 'none'})")
    raise ClipsearchError(f"model {arch} has no pretrained weights called {pretrained!r}; "
                          f"known: {', '.join(tags) or 'none'}")


def _published_preprocess(open_clip, arch: str) -> dict:
    """The preprocessing (mean, std, interpolation, resize) that all of arch's published
    weights share, or {} if they differ. open_clip applies it to weights named by their tag
    but not to a local file of the same weights: MobileCLIP-S2 would get OpenAI's mean and
    std instead of its own 0 and 1."""
    keys = ("mean", "std", "interpolation", "resize_mode")
    known = {tuple((key, open_clip.get_pretrained_cfg(arch, tag).get(key)) for key in keys)
             for tag in open_clip.list_pretrained_tags_by_model(arch)}
    return {key: value for key, value in known.pop() if value is not None} if len(known) == 1 else {}


def _unknown_arch(arch: str) -> str:
    return (f"unknown model architecture {arch!r}; presets are {', '.join(PRESETS)}, and "
            "`python -c \"import open_clip; print(open_clip.list_pretrained())\"` lists the rest")


def _load_failure(spec: ModelSpec, cache: str | None, exc: Exception, offline: bool) -> str:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    if spec.pretrained and os.path.isfile(spec.pretrained):
        return f"could not load the checkpoint {spec.pretrained} for model {spec}: {reason[:300]}"
    if offline:
        why = "there is no network connection and they are not in the cache"
    else:
        # The hub's own messages run long; the first sentence says enough.
        why = reason.split(". ")[0][:200]
    return (f"could not load the weights of model {spec}: {why}. Weights are downloaded once, on first use, "
            f"into {cache or 'the Hugging Face cache'}: connect and run the command again, or download the "
            f"checkpoint elsewhere and name the file, e.g. --model {spec.arch or 'ViT-B-32'}:"
            f"/path/to/open_clip_model.safetensors (OpenAI's own files: --model /path/to/ViT-B-32.pt)")


# Texts the numpy tower must embed like the torch one before it is used: plain, mixed case,
# punctuation, digits, non-Latin script, HTML entities, and one longer than the context.
_PROBES = ["a red car in the snow", "A PHOTO of my Dog, at the beach!", "2 cats & 1 dog &amp; more",
           "東京の夜景", "café crème brûlée", " ".join(["mountains"] * 90)]


class _Unsupported(Exception):
    pass


def _cpu_only(requested: str) -> bool:
    """True if a model asked for on `requested` runs on the CPU, known without importing torch:
    "cpu", or "auto" on a machine without an NVIDIA driver or an Apple GPU."""
    if requested == "cpu":
        return True
    if requested != "auto":
        return False
    if sys.platform == "darwin":
        return platform.machine() != "arm64"
    return not (os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi"))


def _parameter_bytes(module) -> int:
    return sum(p.numel() * 4 for p in module.parameters()) if module is not None else 0


def _probe_images(size: int, count: int = 8) -> np.ndarray:
    """Model inputs to compare an export with torch: noise, gradients and flat colours."""
    rng = np.random.default_rng(0)
    probes = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    probes[1] = np.stack([np.add.outer(ramp, ramp) / 2, np.add.outer(ramp, -ramp) / 2 + 128,
                          np.full((size, size), 200.0)], axis=-1).astype(np.uint8)
    probes[2] = 0
    probes[3] = 255
    return probes


def _text_tower_parts(model, tokenizer) -> tuple[dict, dict[str, np.ndarray]]:
    """The settings and fp32 weights texttower.TextTower needs; _Unsupported for text towers
    it does not cover (the check against the torch model in text_tower() catches the rest)."""
    import torch
    from open_clip.tokenizer import SimpleTokenizer
    from open_clip.transformer import LayerScale, QuickGELU, ResidualAttentionBlock

    if not isinstance(tokenizer, SimpleTokenizer) or tokenizer.reduction_fn is not None \
            or tokenizer.vocab_size != 49408 or tokenizer.clean_fn.__name__ != "_clean_lower":
        raise _Unsupported(f"tokenizer {type(tokenizer).__name__}")
    text = model.text if isinstance(getattr(model, "text", None), torch.nn.Module) else model
    if getattr(text, "cls_emb", None) is not None or getattr(text, "use_pad_mask", False):
        raise _Unsupported("class token or padding mask")
    pool = getattr(text, "text_pool_type", getattr(text, "pool_type", None))
    eos_id = getattr(text, "text_eos_id", getattr(text, "eos_id", None))
    blocks = list(getattr(getattr(text, "transformer", None), "resblocks", []))
    if pool not in ("argmax", "eos", "first", "last") or not blocks:
        raise _Unsupported(f"pooling {pool!r}")

    def array(tensor) -> np.ndarray:
        return tensor.detach().float().cpu().numpy()

    weights = {"token_embedding": array(text.token_embedding.weight),
               "positional_embedding": array(text.positional_embedding)}
    activations = set()
    for i, block in enumerate(blocks):
        if type(block) is not ResidualAttentionBlock or set(block._modules) != {"ln_1", "attn", "ls_1", "ln_2",
                                                                                 "mlp", "ls_2"} \
                or not isinstance(block.attn, torch.nn.MultiheadAttention) or block.attn.in_proj_weight is None:
            raise _Unsupported(f"block {type(block).__name__}")
        act = block.mlp.gelu
        if isinstance(act, QuickGELU):
            activations.add("quick_gelu")
        elif isinstance(act, torch.nn.GELU) and act.approximate == "none":
            activations.add("gelu")
        else:
            raise _Unsupported(f"activation {type(act).__name__}")
        p = f"block{i}."
        weights |= {p + "ln_1.weight": array(block.ln_1.weight), p + "ln_1.bias": array(block.ln_1.bias),
                    p + "in.weight": array(block.attn.in_proj_weight).T, p + "in.bias": array(block.attn.in_proj_bias),
                    p + "out.weight": array(block.attn.out_proj.weight).T,
                    p + "out.bias": array(block.attn.out_proj.bias),
                    p + "ln_2.weight": array(block.ln_2.weight), p + "ln_2.bias": array(block.ln_2.bias),
                    p + "fc.weight": array(block.mlp.c_fc.weight).T, p + "fc.bias": array(block.mlp.c_fc.bias),
                    p + "proj.weight": array(block.mlp.c_proj.weight).T, p + "proj.bias": array(block.mlp.c_proj.bias)}
        for name in ("ls_1", "ls_2"):
            scale = getattr(block, name)
            if isinstance(scale, LayerScale):
                weights[p + name] = array(scale.gamma)
            elif not isinstance(scale, torch.nn.Identity):
                raise _Unsupported(f"layer scale {type(scale).__name__}")
    weights |= {"ln_final.weight": array(text.ln_final.weight), "ln_final.bias": array(text.ln_final.bias)}
    projection = text.text_projection
    if isinstance(projection, torch.nn.Linear):
        weights["projection.weight"] = array(projection.weight).T
        if projection.bias is not None:
            weights["projection.bias"] = array(projection.bias)
    elif projection is not None:
        weights["projection.weight"] = array(projection)
    if len(activations) != 1:
        raise _Unsupported("mixed activations")
    config = {"layers": len(blocks), "heads": blocks[0].attn.num_heads, "eps": float(text.ln_final.eps),
              "context_length": int(tokenizer.context_length), "causal": getattr(text, "attn_mask", None) is not None,
              "pool": pool, "eos_id": eos_id, "activation": activations.pop()}
    return config, weights
