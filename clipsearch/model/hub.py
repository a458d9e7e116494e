"""Where a model's files live on the Hugging Face hub, and fetching them, without open_clip.

open_clip publishes a model in a hub repo as `open_clip_model.safetensors` (the state dict
under open_clip's own names) and `open_clip_config.json` (`model_cfg`: the architecture;
`preprocess_cfg`: size, mean, std, resize mode); SigLIP's tokenizer is the repo's
`tokenizer.json` (and `tokenizer_config.json`). For the models the presets use, and the
ones clipsearch had as defaults before, `MODELS` carries what open_clip's package would
otherwise supply: the repo, the architecture (a copy of open_clip's model_configs/NAME.json,
used where a repo has no open_clip_config.json), the tag's preprocessing, and what a user
should know (COCO 5k text-to-image R@1 as published, the weights' licence, their size).

Other names go through open_clip's own tables when open_clip is installed (the `gpu`
extra), else they are refused with the way out (hf-hub:ORG/REPO, a local file, the extra).

Two notes from reading open_clip 3.3:
- OpenAI's weights were trained with QuickGELU; `create_model("ViT-B-32", "openai")` only
  warns ("QuickGELU mismatch") and builds GELU. The table sets `quick_gelu` for them, and the
  torch path forces it (model/embed.py).
- open_clip prefers `open_clip_model.safetensors` to the pickled `open_clip_pytorch_model.bin`;
  a repo with only the pickle needs torch to read it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from ..errors import ClipsearchError
from .checkpoint import OpenClipConfig, preprocess_defaults

log = logging.getLogger("clipsearch")

WEIGHTS = "open_clip_model.safetensors"
WEIGHTS_PICKLE = "open_clip_pytorch_model.bin"
CONFIG = "open_clip_config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
GPU_EXTRA = "install the gpu extra (pip install '.[gpu]' in clipsearch's folder)"

_OPENAI = {"mean": (0.48145466, 0.4578275, 0.40821073), "std": (0.26862954, 0.26130258, 0.27577711),
           "interpolation": "bicubic", "resize_mode": "shortest"}
_SIGLIP = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bicubic", "resize_mode": "squash"}

_VIT_B_32_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}
_SIGLIP2_TEXT = {"context_length": 64, "vocab_size": 256000, "tokenizer_kwargs": {"clean": "canonicalize"},
                 "width": 768, "heads": 12, "layers": 12, "no_causal_mask": True, "proj_bias": True,
                 "pool_type": "last", "norm_kwargs": {"eps": 1e-6}, "act_kwargs": {"approximate": "tanh"}}


@dataclass(frozen=True)
class HubModel:
    """One open_clip model and tag, as the hub holds it."""

    arch: str
    tag: str
    repo: str
    model_cfg: dict  # open_clip's model_configs/ARCH.json, plus what the tag implies
    preprocess: dict
    tokenizer_repo: str | None = None  # a hub tokenizer (SigLIP); None: CLIP's BPE
    coco_r1: float | None = None  # published zero-shot COCO 5k text-to-image R@1
    licence: str = ""
    weights_mb: int = 0  # the download

    @property
    def spec(self) -> str:
        return f"{self.arch}:{self.tag}"


def _siglip2(arch: str, timm_name: str, r1: float, mb: int) -> HubModel:
    return HubModel(arch, "webli", f"timm/{arch}",
                    {"embed_dim": 768, "init_logit_bias": -10, "custom_text": True,
                     "vision_cfg": {"image_size": 256, "timm_model_name": timm_name, "timm_model_pretrained": False,
                                    "timm_pool": "map", "timm_proj": "none"},
                     "text_cfg": {**_SIGLIP2_TEXT, "hf_tokenizer_name": f"timm/{arch}"}},
                    _SIGLIP, tokenizer_repo=f"timm/{arch}", coco_r1=r1, licence="Apache-2.0", weights_mb=mb)


MODELS: dict[str, HubModel] = {m.spec: m for m in (
    _siglip2("ViT-B-32-SigLIP2-256", "vit_base_patch32_siglip_256", 47.2, 1506),
    _siglip2("ViT-B-16-SigLIP2-256", "vit_base_patch16_siglip_256", 53.2, 1502),
    HubModel("ViT-B-32-256", "datacomp_s34b_b86k", "laion/CLIP-ViT-B-32-256x256-DataComp-s34B-b86K",
             {"embed_dim": 512, "vision_cfg": {"image_size": 256, "layers": 12, "width": 768, "patch_size": 32},
              "text_cfg": _VIT_B_32_TEXT}, _OPENAI, coco_r1=39.9, licence="MIT", weights_mb=605),
    # OpenAI's weights in open_clip's names, published by timm's maintainers. quick_gelu is
    # the tag's (pretrained.py), not the architecture's: without it the vectors are wrong.
    HubModel("ViT-B-32", "openai", "timm/vit_base_patch32_clip_224.openai",
             {"embed_dim": 512, "quick_gelu": True,
              "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
              "text_cfg": _VIT_B_32_TEXT}, _OPENAI, coco_r1=30.4, licence="MIT", weights_mb=605),
)}


@dataclass(frozen=True)
class Downloaded:
    """A model's files on disk: the weights, its config, a hub tokenizer's folder."""

    weights: Path
    config: OpenClipConfig
    tokenizer_folder: Path | None = None
    files: tuple[Path, ...] = field(default=())


def known(arch: str, tag: str | None) -> HubModel | None:
    """The table's entry for an architecture and tag, or what open_clip's own tables say of
    it when open_clip is installed; None if neither knows it."""
    if tag is None:
        return None
    found = MODELS.get(f"{arch}:{tag}")
    if found is not None:
        return found
    try:
        import open_clip  # only with the gpu extra: its tables know every published model
    except ImportError:
        return None
    pretrained = open_clip.get_pretrained_cfg(arch, tag) or {}
    repo = (pretrained.get("hf_hub") or "").strip("/")
    model_cfg = open_clip.get_model_config(arch)
    if not repo or model_cfg is None:
        return None
    model_cfg = dict(model_cfg)
    if pretrained.get("quick_gelu"):
        model_cfg["quick_gelu"] = True
    keys = ("mean", "std", "interpolation", "resize_mode")
    text = model_cfg.get("text_cfg") or {}
    return HubModel(arch, tag, repo, model_cfg, {k: pretrained[k] for k in keys if pretrained.get(k) is not None},
                    tokenizer_repo=text.get("hf_tokenizer_name"))


def download(model: HubModel, cache_dir: str | os.PathLike | None = None) -> Downloaded:
    """The model's files (fetched once; from the cache without a network request after):
    its safetensors weights, its open_clip_config.json if the repo has one (else the
    table's architecture), and a hub tokenizer's files. A ClipsearchError that says what to
    do when they cannot be had."""
    weights = fetch(model.repo, WEIGHTS, cache_dir, model=model)
    if weights is None:
        raise ClipsearchError(
            f"the hub repo {model.repo} has no {WEIGHTS}: the weights of {model.spec} can only be read with PyTorch "
            f"({GPU_EXTRA})")
    config_file = fetch(model.repo, CONFIG, cache_dir, required=False, model=model)
    model_cfg, given = dict(model.model_cfg), dict(model.preprocess)
    if config_file is not None:
        published = json.loads(config_file.read_text(encoding="utf-8"))
        # The tag's quick_gelu wins: a repo's config may not say it (see the module's notes).
        model_cfg = {**published.get("model_cfg", model_cfg),
                     **{k: v for k, v in model.model_cfg.items() if k == "quick_gelu"}}
        given = {**given, **published.get("preprocess_cfg", {})}
    files = [weights] + ([config_file] if config_file else [])
    tokenizer_folder = None
    if model.tokenizer_repo:
        tokenizer = fetch(model.tokenizer_repo, TOKENIZER_FILES[0], cache_dir, model=model)
        if tokenizer is None:
            raise ClipsearchError(f"the hub repo {model.tokenizer_repo} has no {TOKENIZER_FILES[0]}")
        tokenizer_config = fetch(model.tokenizer_repo, TOKENIZER_FILES[1], cache_dir, required=False, model=model)
        tokenizer_folder = tokenizer.parent
        files += [tokenizer] + ([tokenizer_config] if tokenizer_config else [])
    return Downloaded(weights, OpenClipConfig(model_cfg, preprocess_defaults(model_cfg, given)), tokenizer_folder,
                      tuple(files))


def fetch(repo: str, filename: str, cache_dir: str | os.PathLike | None = None, required: bool = True,
          model: HubModel | None = None) -> Path | None:
    """A file of a hub repo: from the cache without a network request if it is there, else
    downloaded. None if the repo has no such file. A ClipsearchError that says what to do
    when it is not cached and the hub cannot be reached (`required`: else None)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    cache = None if cache_dir is None else str(cache_dir)
    quiet = logging.getLogger("huggingface_hub")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # a retry per attempt; our own message carries the reason
    try:
        try:
            return Path(hf_hub_download(repo, filename, cache_dir=cache, local_files_only=True))
        except (EntryNotFoundError, LocalEntryNotFoundError):
            pass
        if offline():
            if not required:
                return None
            raise ClipsearchError(_unreachable(repo, filename, cache, model))
        try:
            return Path(hf_hub_download(repo, filename, cache_dir=cache))
        except EntryNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - network, permissions, a repo that moved: one message
            if not required:
                return None
            reason = " ".join(str(exc).split()).split(". ")[0][:200] or type(exc).__name__
            raise ClipsearchError(f"could not download the weights of model {model.spec if model else repo}: "
                                  f"{filename} of {repo} ({reason}). " + _way_out(repo, model)) from exc
    finally:
        quiet.setLevel(level)


def offline() -> bool:
    """True if the hub cannot be reached (checked once a process, 5 s at most); then only
    the cache is looked in, instead of huggingface_hub's minute and a half of retries."""
    from huggingface_hub import constants

    global _OFFLINE
    if constants.HF_HUB_OFFLINE:
        return True
    if _OFFLINE is None:
        url = urlparse(constants.ENDPOINT)
        try:
            socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                     timeout=5).close()
            _OFFLINE = False
        except OSError:
            _OFFLINE = True
    return _OFFLINE


_OFFLINE: bool | None = None


def _unreachable(repo: str, filename: str, cache: str | None, model: HubModel | None) -> str:
    where = cache or "the Hugging Face cache"
    return (f"could not load the weights of model {model.spec if model else repo}: {filename} of {repo} is not in "
            f"the cache ({where}) and there is no network connection. " + _way_out(repo, model))


def _way_out(repo: str, model: HubModel | None) -> str:
    files = f"{WEIGHTS}, {CONFIG}" + (f", {TOKENIZER_FILES[0]} and {TOKENIZER_FILES[1]}"
                                      if model is not None and model.tokenizer_repo else "")
    return (f"Weights are downloaded once, on first use: connect and run the command again, or download "
            f"{files} from https://huggingface.co/{repo} into one folder on another computer and name the "
            f"weights file: --model {model.arch if model else 'ARCH'}:/path/to/{WEIGHTS}")
