"""The embedders: LazyEmbedder, what a library uses, and OpenClipEmbedder, open_clip on torch.

A library's model runs on its towers: the image tower on ONNX Runtime
(model/imagetower.py) and the text tower in numpy (model/texttower.py), both built from the
checkpoint's tensors (model/build.py, model/imagegraph.py) the first time the model is used
on a computer, and kept in the library folder and the model cache. No torch is needed for
that on a CPU, nor imported: `pip install clipsearch` does not install it.

PyTorch and open_clip (the `gpu` extra) are used where they are needed and installed: to
embed images on a GPU (CUDA, Apple MPS), to read a checkpoint only torch can read (a .pt
file, random weights of an architecture), and for a tower the builders do not know (that
half of the model then runs on torch, with one log line). This is the only module that
imports torch or open_clip, and it does so inside functions.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from .._memory import return_freed_memory
from ..errors import BadArgument, ClipsearchError
from .checkpoint import UnsupportedArchitecture, release_pages
from .identity import fingerprint
from .spec import PRESETS, RANDOM, ModelSpec, canonical, parse_spec

if TYPE_CHECKING:
    from ..records import Preprocess
    from .build import Checkpoint
    from .imagetower import ImageTower
    from .texttower import Scoring, TextTower

log = logging.getLogger("clipsearch")
GPU_HINT = ("a GPU is here, but PyTorch is not installed: images are embedded on the CPU. For GPU speed: "
            "install the gpu extra (pip install '.[gpu]' in clipsearch's folder; PyTorch with CUDA, about 5 GB)")


class LazyEmbedder:
    """The model of a spec, made ready on first use: a crawl that finds nothing new, or a
    command that fails first, never pays for it. Texts: the numpy text tower (a text search
    loads nothing else). Images: the ONNX image tower on a CPU, torch on a GPU."""

    def __init__(self, spec: str, text_tower_dir: str | os.PathLike | None = None,
                 image_tower_dir: str | os.PathLike | None = None, image_precision: str = "fp32",
                 device: str = "auto", batch_size: int | None = None, cache_dir: str | os.PathLike | None = None,
                 notify: Callable[[str], None] | None = None):
        self.spec = canonical(spec)
        self._device_setting = device or "auto"
        self._batch = batch_size
        self._cache = cache_dir
        self._source = fingerprint(self.spec, cache_dir)  # the saved towers must be of these weights
        self._text_dir = Path(text_tower_dir) if text_tower_dir is not None else None
        self._image_dir = Path(image_tower_dir) if image_tower_dir is not None else None
        self._precision = image_precision  # "int8": the image tower's weights quantised (an option)
        self._notify = notify
        self._lock = threading.RLock()
        self._torch: OpenClipEmbedder | None = None  # images on a GPU; a half the towers cannot run
        self._image: ImageTower | None = None
        self._ready = False
        self._failure: Exception | None = None
        self._on_gpu: bool | None = None
        self._text = self._saved_text()

    # --- what the pipeline and searches ask -------------------------------------------------
    @property
    def loaded(self) -> bool:
        """Whether the model was made ready (towers or torch in hand) in this process."""
        return self._ready

    @property
    def failed(self) -> bool:
        return self._failure is not None

    @property
    def dim(self) -> int:
        if self._text is not None:
            return self._text.dim
        return self._images().dim

    @property
    def batch_size(self) -> int:
        self.load()
        if self._torch is not None and self._gpu():
            return self._torch.batch_size
        return self._batch or default_batch_size("cpu")

    @property
    def preprocess(self) -> Preprocess:
        return self._images().preprocess

    @property
    def device(self) -> str:
        images = self._images()
        return "cpu" if images is self._image else images.device  # type: ignore[union-attr]
    @property
    def scoring(self) -> Scoring | None:
        """How the model turns cosines into logits (texttower.Scoring); None if unknown."""
        if self._text is not None and self._text.scoring is not None:
            return self._text.scoring
        return self._torch.scoring if self._torch is not None else None

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        return self._images().embed_images(pixels)

    def _images(self) -> ImageTower | OpenClipEmbedder:
        """What embeds images: the saved image tower where they are embedded on the CPU (found
        without loading anything else), else whatever load() made ready."""
        image = self._cpu_image()
        if image is not None:
            return image
        self.load()
        if self._image is not None:
            return self._image
        assert self._torch is not None
        return self._torch

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if self._text is None:
            self.load()
        if self._text is not None:
            return self._text.embed_texts(texts)
        assert self._torch is not None
        return self._torch.embed_texts(texts)

    # --- making it ready ------------------------------------------------------------------
    def load(self) -> None:
        """Make the model ready: towers found or built (on a CPU), torch loaded (on a GPU, or
        for what the towers cannot run). A failure is kept and raised again, not retried by
        every waiting thread."""
        with self._lock:
            if self._failure is not None:
                raise self._failure
            if self._ready:
                return
            try:
                self._prepare()
            except Exception as exc:
                self._failure = exc
                raise
            self._ready = True

    def _prepare(self) -> None:
        if self._gpu():
            self._torch = OpenClipEmbedder(self.spec, device=self._device_setting, batch_size=self._batch,
                                           cache_dir=self._cache)
            if self._text is None and self._text_dir is not None:
                self._text = self._build_text_from(self._torch.checkpoint(), self._torch)
            if self._text is not None:
                self._torch.drop_text_tower()  # a third of ViT-B-32's weights, not needed on the GPU
            return
        self._image = self._image or self._saved_image()
        build_text = self._text is None and self._text_dir is not None
        build_image = self._image is None and self._image_dir is not None
        checkpoint = None
        if build_text or build_image:
            from .build import open_checkpoint

            checkpoint = open_checkpoint(self.spec, self._cache)
            if build_text:
                self._text = self._build_text_from(checkpoint, checkpoint.torch_model)
                release_pages(checkpoint.weights)  # read again from the file if the image tower needs them
            if build_image:
                self._image = self._build_image_from(checkpoint)
        if self._image is None or self._text is None:  # a half the towers do not run (or no folder for it)
            self._torch = (checkpoint.torch_model if checkpoint and checkpoint.torch_model
                           else self._torch_for("a part of it the towers cannot run"))
            if self._image is not None:
                self._torch.drop_image_tower()
            if self._text is not None:
                self._torch.drop_text_tower()
        checkpoint = None
        return_freed_memory()

    def _cpu_image(self) -> ImageTower | None:
        """The saved image tower where images are embedded on the CPU (found without loading
        anything else, nor importing torch)."""
        if self._image is None and not self._ready and self._image_dir is not None and not self._gpu():
            self._image = self._saved_image()
        return self._image

    def _gpu(self) -> bool:
        """Whether images go to a GPU through torch (known without importing torch where no GPU
        can be: `--device cpu`, or "auto" without an NVIDIA driver or Apple GPU)."""
        if self._on_gpu is None:
            if _cpu_only(self._device_setting):
                self._on_gpu = False
            else:
                from .build import torch_available
                from .hub import GPU_EXTRA

                if not torch_available():
                    if self._device_setting != "auto":
                        raise BadArgument("device", self._device_setting,
                                          "needs PyTorch: " + GPU_EXTRA)
                    log.warning(GPU_HINT)
                    if self._notify is not None:
                        self._notify(GPU_HINT)
                    self._on_gpu = False
                else:
                    self._on_gpu = pick_device(self._device_setting) != "cpu"
        return self._on_gpu

    def _torch_for(self, why: str) -> OpenClipEmbedder:
        from .build import torch_available
        from .hub import GPU_EXTRA

        if not torch_available():
            raise ClipsearchError(f"model {self.spec} needs PyTorch ({why}): {GPU_EXTRA}")
        return OpenClipEmbedder(self.spec, device="cpu", batch_size=self._batch, cache_dir=self._cache)

    # --- the towers -----------------------------------------------------------------------
    def _saved_text(self) -> TextTower | None:
        """This model's text tower in the library folder, or else in the model cache."""
        if self._text_dir is None:
            return None
        from . import texttower

        tower = texttower.TextTower.load(self._text_dir, self.spec, self._source)
        if tower is None and self._cache is not None:
            try:
                tower = texttower.adopt(self._cache, self._text_dir, self.spec, self._source)
            except OSError as exc:
                log.warning("could not use the text tower in %s: %s", self._cache, exc)
        return tower

    def _saved_image(self) -> ImageTower | None:
        """This model's image tower in the library folder, or else in the model cache."""
        if self._image_dir is None:
            return None
        from . import imagetower

        tower = imagetower.ImageTower.load(self._image_dir, self.spec, self._source, self._precision)
        if tower is None and self._cache is not None:
            try:
                tower = imagetower.adopt(Path(self._cache), self._image_dir, self.spec, self._source, self._precision)
            except OSError as exc:
                log.warning("could not use the image tower in %s: %s", self._cache, exc)
        return tower

    def _build_text_from(self, checkpoint: Checkpoint, reference: OpenClipEmbedder | None) -> TextTower | None:
        """Save the text tower of a checkpoint and use it; None (and why, in the log) if the
        model's text tower is of a kind texttower.py does not run, or it does not give the
        reference's vectors."""
        if self._text_dir is None:
            return None
        from . import texttower

        saved = True
        try:
            tower = texttower.save(self._text_dir, self.spec, self._source, checkpoint.weights, checkpoint.model_cfg,
                                   checkpoint.tokenizer_folder)
        except (UnsupportedArchitecture, ValueError) as exc:
            log.info("no numpy text tower for %s (%s): texts are embedded with torch", self.spec, exc)
            return None
        except OSError as exc:  # a full disk, a read-only folder: it runs from memory this time
            log.warning("could not save the text tower of %s in %s (%s): it is made again next time", self.spec,
                        self._text_dir, exc.strerror or exc)
            _discard(self._text_dir)
            tower, saved = texttower.in_memory(self.spec, self._source, checkpoint.weights, checkpoint.model_cfg,
                                               checkpoint.tokenizer_folder), False
        if reference is not None:
            # The vectors must agree as the image tower's do (a float16 token table, or fp16
            # weights on a GPU, round to about 1e-4 and 1e-3 a component).
            cosine = float(np.min(np.sum(reference.embed_texts(_PROBES) * tower.embed_texts(_PROBES), axis=1)))
            if not cosine >= 0.9999:
                log.warning("no numpy text tower for %s: it differs from torch's (cosine %.6f)", self.spec, cosine)
                _discard(self._text_dir)
                return None
        if saved:
            self._share(texttower.share, self._text_dir)
            log.info("text tower for %s saved in %s", self.spec, self._text_dir)
        return tower

    def _build_image_from(self, checkpoint: Checkpoint) -> ImageTower | None:
        """Build, check (against torch, where the weights came through it) and save the image
        tower; None (and why, in the log) if the builders do not know the architecture."""
        if self._image_dir is None:
            return None
        from . import imagetower

        saved = True
        try:
            tower = imagetower.build(self._image_dir, self.spec, self._source, checkpoint, self._precision)
        except UnsupportedArchitecture as exc:
            log.warning("images of %s are embedded with torch: no ONNX image tower for it (%s)", self.spec, exc)
            return None
        except OSError as exc:  # a full disk, a read-only folder: it runs from memory this time
            log.warning("could not save the image tower of %s in %s (%s): it is made again next time", self.spec,
                        self._image_dir, exc.strerror or exc)
            tower, saved = imagetower.in_memory(self.spec, self._source, checkpoint), False
        reference = checkpoint.torch_model
        if reference is not None:
            probes = _probe_images(tower.preprocess.size)
            cosine = imagetower.agreement(tower, reference.embed_images(probes), probes)
            if not cosine >= imagetower.MIN_COSINE[self._precision]:
                log.warning("images of %s are embedded with torch: its %s ONNX image tower differs from torch's "
                            "(cosine %.6f)", self.spec, self._precision, cosine)
                if saved:
                    imagetower.discard(tower)
                return None
        if not saved:
            return tower
        imagetower.publish(tower)
        self._share(lambda folder, cache: imagetower.share(tower, Path(cache)), self._image_dir)
        log.info("ONNX image tower (%s) for %s saved in %s", self._precision, self.spec, self._image_dir)
        return tower

    def _share(self, share, folder: Path) -> None:
        if self._cache is None:
            return
        try:
            share(folder, self._cache)
        except OSError as exc:
            log.warning("could not keep the tower in %s: %s", self._cache, exc)


def _discard(folder: Path) -> None:
    from . import texttower

    try:
        (folder / texttower.DESCRIPTION).unlink(missing_ok=True)
        for path in folder.glob("text-tower-*"):
            path.unlink(missing_ok=True)
    except OSError:
        pass


class OpenClipEmbedder:
    """An open_clip model in inference mode on one device (fp16 on CUDA)."""

    def __init__(self, spec: str, device: str = "auto", batch_size: int | None = None,
                 cache_dir: str | os.PathLike | None = None):
        parsed = parse_spec(spec)
        self.spec = str(parsed)
        self.device = pick_device(device)
        self.batch_size = batch_size or default_batch_size(self.device)
        # On a CPU torch keeps its default of one thread per physical core.
        self._model, self._tokenizer, self.quick_gelu = _load(parsed, self.device, cache_dir)
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
        self.mean = tuple(float(v) for v in cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)))
        self.std = tuple(float(v) for v in cfg.get("std", (0.26862954, 0.26130258, 0.27577711)))
        # Fold /255 and the normalisation into one multiply-add on the device.
        self._scale = (1.0 / (255.0 * torch.tensor(self.std))).view(1, 3, 1, 1).to(self.device)
        self._shift = (-torch.tensor(self.mean) / torch.tensor(self.std)).view(1, 3, 1, 1).to(self.device)
        self.dim = int(self.embed_texts(["a photo"]).shape[1])
        self.scoring = _scoring_of(self._model)

    def state_dict(self) -> dict:
        return self._model.state_dict()

    def checkpoint(self) -> Checkpoint:
        """This model's tensors (numpy, float32, on the CPU), config and preprocessing, for
        building towers from."""
        from .build import checkpoint_of

        return checkpoint_of(self)

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            batch = torch.from_numpy(np.require(pixels, np.uint8, ["C", "W"])).to(self.device, non_blocking=True)
            batch = batch.permute(0, 3, 1, 2).float() * self._scale + self._shift
            features = self._model.encode_image(batch.to(self._dtype), normalize=True)
            return features.float().cpu().numpy()

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            tokens = self._tokenizer(list(texts)).to(self.device)
            features = self._model.encode_text(tokens, normalize=True)
            return features.float().cpu().numpy()

    def drop_text_tower(self) -> None:
        """Free the torch text tower (texts are embedded by the numpy tower from now on):
        glibc would keep 150 MB of the 250 MB of ViT-B-32's otherwise."""
        import torch

        model = self._model
        if isinstance(getattr(model, "text", None), torch.nn.Module):
            model.text = None  # CustomTextCLIP keeps its text tower in one module
        else:
            for name in ("transformer", "token_embedding", "ln_final", "positional_embedding", "text_projection"):
                if getattr(model, name, None) is not None:
                    setattr(model, name, None)
        return_freed_memory()

    def drop_image_tower(self) -> None:
        """Free the torch image tower (images are embedded by the ONNX tower from now on)."""
        if getattr(self._model, "visual", None) is not None:
            self._model.visual = None
        return_freed_memory()


def _scoring_of(model) -> Scoring | None:
    from .texttower import Scoring

    scale = getattr(model, "logit_scale", None)
    if scale is None:
        return None
    bias = getattr(model, "logit_bias", None)
    return Scoring(float(scale.detach().float().exp().reshape(-1)[0]),
                   None if bias is None else float(bias.detach().float().reshape(-1)[0]))


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




def _load(spec: ModelSpec, device: str, cache_dir):
    """Build the model and tokenizer: (model, tokenizer, whether QuickGELU was forced); every
    failure becomes a ClipsearchError that says what to do."""
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
    quick_gelu = False
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
            # OpenAI's weights were trained with QuickGELU; open_clip 3.3 only warns when the
            # architecture's config does not say so ("QuickGELU mismatch"): force it.
            tag = {} if local or not spec.pretrained else open_clip.get_pretrained_cfg(arch, spec.pretrained) or {}
            quick_gelu = bool(tag.get("quick_gelu"))
            model = open_clip.create_model(arch, pretrained=spec.pretrained, precision=precision,
                                           device=device, cache_dir=cache, require_pretrained=True,
                                           force_preprocess_cfg=published, force_quick_gelu=quick_gelu)
            tokenizer = open_clip.get_tokenizer(arch, cache_dir=cache)
    except ClipsearchError:
        raise
    except Exception as exc:  # noqa: BLE001 - network, hub, file and format errors all end here
        raise ClipsearchError(_load_failure(spec, cache, exc, offline)) from exc
    model.eval()
    return model, tokenizer, quick_gelu


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
