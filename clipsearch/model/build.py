"""A model's checkpoint as tensors, from wherever its spec points, for building its towers.

    a hub name (ViT-B-32-SigLIP2-256:webli)    hub.py: open_clip_model.safetensors + config
    hf-hub:ORG/REPO, local-dir:FOLDER          the same files, named by repo or folder
    ARCH:/path/weights.safetensors             the file, the architecture from ARCH, a
                                               config .json or a config beside the file
    ARCH:random, .pt / .bin checkpoints,       PyTorch is needed to make or unpickle them
    OpenAI's own .pt files                     (the `gpu` extra): the torch model's state dict

Everything but the last row is read without torch: safetensors memory-mapped
(checkpoint.py). The result is the state dict under open_clip's names, the model config
(open_clip's model_cfg), the preprocessing (size, mean, std, resize mode), a hub
tokenizer's folder (SigLIP) and, when the weights came through torch, that model: the
towers are then checked against it before they are used.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ..errors import ClipsearchError
from . import hub
from .checkpoint import OpenClipConfig, UnsupportedArchitecture, preprocess_defaults, read_config, read_safetensors
from .spec import RANDOM, ModelSpec, parse_spec

if TYPE_CHECKING:
    from .embed import OpenClipEmbedder

log = logging.getLogger("clipsearch")


@dataclass
class Checkpoint:
    weights: Mapping[str, np.ndarray]  # open_clip's state dict names
    model_cfg: dict
    preprocess: dict  # size, mean, std, interpolation, resize_mode, fill_color
    tokenizer_folder: Path | None = None  # tokenizer.json (+ tokenizer_config.json) of a hub tokenizer
    torch_model: OpenClipEmbedder | None = None  # the reference, when the weights came through torch


def torch_available() -> bool:
    """Whether PyTorch and open_clip are installed (the `gpu` extra), known without importing them."""
    import importlib.util

    try:
        return importlib.util.find_spec("torch") is not None and importlib.util.find_spec("open_clip") is not None
    except (ImportError, ValueError):
        return False


def open_checkpoint(spec: str, cache_dir: str | os.PathLike | None = None) -> Checkpoint:
    """The checkpoint spec names, as tensors. A ClipsearchError that says what to do where
    it cannot be had (no network, no such file, PyTorch needed and not installed)."""
    parsed = parse_spec(spec)
    local = parsed.pretrained is not None and os.path.isfile(parsed.pretrained)
    if local and str(parsed.pretrained).lower().endswith(".safetensors"):
        return _local_safetensors(parsed)
    if parsed.arch.startswith("local-dir:"):
        return _folder(Path(parsed.arch.split(":", 1)[1]), cache_dir)
    if parsed.arch.startswith("hf-hub:"):
        repo = parsed.arch.split(":", 1)[1]
        weights = hub.fetch(repo, hub.WEIGHTS, cache_dir)
        config = hub.fetch(repo, hub.CONFIG, cache_dir)
        if weights is None or config is None:
            return _through_torch(spec, cache_dir, f"the hub repo {repo} has no {hub.WEIGHTS} and {hub.CONFIG}")
        return _files(weights, read_config(config), cache_dir)
    if parsed.pretrained not in (None, RANDOM) and not local and parsed.arch and not parsed.arch.endswith(".json"):
        model = hub.known(parsed.arch, parsed.pretrained)
        if model is not None:
            files = hub.download(model, cache_dir)
            return _files(files.weights, files.config, cache_dir, files.tokenizer_folder)
    return _through_torch(spec, cache_dir, "its weights are read with PyTorch")


def _local_safetensors(parsed: ModelSpec) -> Checkpoint:
    """ARCH:/path/file.safetensors: the architecture from ARCH (a config .json, an
    open_clip_config.json beside the file, the table, open_clip's own configs)."""
    path = Path(str(parsed.pretrained))
    beside = path.parent / hub.CONFIG
    if parsed.arch.lower().endswith(".json"):
        raw = json.loads(Path(parsed.arch).read_text(encoding="utf-8"))
        config = read_config(parsed.arch) if "model_cfg" in raw else \
            OpenClipConfig(raw, preprocess_defaults(raw, _published_preprocess(Path(parsed.arch).stem)))
    elif beside.is_file():
        config = read_config(beside)
    else:
        model_cfg = _arch_config(parsed.arch)
        config = OpenClipConfig(model_cfg, preprocess_defaults(model_cfg, _published_preprocess(parsed.arch)))
    return _files(path, config, None, _tokenizer_beside(path))


def _folder(folder: Path, cache_dir) -> Checkpoint:
    weights, config = folder / hub.WEIGHTS, folder / hub.CONFIG
    if not weights.is_file() or not config.is_file():
        raise ClipsearchError(f"{folder} has no {hub.WEIGHTS} and {hub.CONFIG}")
    return _files(weights, read_config(config), cache_dir, _tokenizer_beside(weights))


def _files(weights: Path, config: OpenClipConfig, cache_dir, tokenizer_folder: Path | None = None) -> Checkpoint:
    text = config.model_cfg.get("text_cfg") or {}
    if text.get("hf_tokenizer_name") and tokenizer_folder is None:
        tokenizer = hub.fetch(text["hf_tokenizer_name"], hub.TOKENIZER_FILES[0], cache_dir)
        if tokenizer is None:
            raise ClipsearchError(f"the tokenizer {text['hf_tokenizer_name']} has no {hub.TOKENIZER_FILES[0]}")
        hub.fetch(text["hf_tokenizer_name"], hub.TOKENIZER_FILES[1], cache_dir, required=False)
        tokenizer_folder = tokenizer.parent
    return Checkpoint(read_safetensors(weights), config.model_cfg, dict(config.preprocess_cfg), tokenizer_folder)


def _tokenizer_beside(path: Path) -> Path | None:
    return path.parent if (path.parent / hub.TOKENIZER_FILES[0]).is_file() else None


def _arch_config(arch: str) -> dict:
    """open_clip's model config for an architecture name: the table's, else open_clip's."""
    for model in hub.MODELS.values():
        if model.arch == arch:
            return dict(model.model_cfg)
    if torch_available():
        import open_clip

        found = open_clip.get_model_config(arch)
        if found is not None:
            return dict(found)
    raise ClipsearchError(f"the architecture of model {arch!r} is not known without PyTorch: name its config file "
                          f"(--model /path/to/config.json:/path/to/weights.safetensors), or {hub.GPU_EXTRA}")


def _published_preprocess(arch: str) -> dict:
    """The preprocessing all of arch's published weights share (a local file of them gets
    it too: MobileCLIP-S2 would otherwise get OpenAI's mean and std instead of its 0 and 1)."""
    found = [m.preprocess for m in hub.MODELS.values() if m.arch == arch]
    if found:
        return dict(found[0])
    if torch_available():
        import open_clip

        keys = ("mean", "std", "interpolation", "resize_mode")
        known = {tuple((key, open_clip.get_pretrained_cfg(arch, tag).get(key)) for key in keys)
                 for tag in open_clip.list_pretrained_tags_by_model(arch)}
        if len(known) == 1:
            return {key: value for key, value in known.pop() if value is not None}
    return {}


def _through_torch(spec: str, cache_dir, why: str) -> Checkpoint:
    """The checkpoint of a model only PyTorch can make or read: its state dict as numpy."""
    if not torch_available():
        raise ClipsearchError(f"model {spec} needs PyTorch ({why}): {hub.GPU_EXTRA}, or use a model published as "
                              "safetensors (`clipsearch presets` lists them)")
    from .embed import OpenClipEmbedder

    return checkpoint_of(OpenClipEmbedder(spec, device="cpu", cache_dir=cache_dir))


def checkpoint_of(torch_model: OpenClipEmbedder) -> Checkpoint:
    """A loaded torch model's tensors (float32 numpy on the CPU), config and preprocessing."""
    weights = {name: tensor.detach().float().cpu().numpy() for name, tensor in torch_model.state_dict().items()}
    parsed = parse_spec(torch_model.spec)
    if parsed.arch.lower().endswith(".json"):
        model_cfg = json.loads(Path(parsed.arch).read_text(encoding="utf-8"))
        model_cfg = dict(model_cfg.get("model_cfg", model_cfg))
    elif not parsed.arch:
        model_cfg = openai_config(weights)
    elif parsed.arch.startswith(("hf-hub:", "local-dir:")):
        raise UnsupportedArchitecture(f"the config of {parsed.arch} is read by open_clip alone")
    else:
        model_cfg = _arch_config(parsed.arch)
    if torch_model.quick_gelu:
        model_cfg["quick_gelu"] = True
    prep = torch_model.preprocess
    preprocess = {"size": prep.size, "resize_mode": prep.resize_mode, "interpolation": prep.interpolation,
                  "fill_color": prep.fill_color, "mean": torch_model.mean, "std": torch_model.std}
    return Checkpoint(weights, model_cfg, preprocess, None, torch_model)


def openai_config(weights: Mapping[str, Any]) -> dict:
    """open_clip's model config of an OpenAI checkpoint, read from its tensors' shapes (as
    open_clip's build_model_from_openai_state_dict does)."""
    def count(prefix: str) -> int:
        return len({k[len(prefix):].split(".")[0] for k in weights if k.startswith(prefix)})

    text_width = weights["token_embedding.weight"].shape[1]
    text = {"context_length": weights["positional_embedding"].shape[0], "vocab_size":
            weights["token_embedding.weight"].shape[0], "width": text_width, "heads": text_width // 64,
            "layers": count("transformer.resblocks.")}
    if "visual.proj" in weights:
        width, patch = weights["visual.conv1.weight"].shape[0], weights["visual.conv1.weight"].shape[-1]
        grid = round((weights["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        vision: dict = {"image_size": grid * patch, "layers": count("visual.transformer.resblocks."),
                        "width": width, "patch_size": patch}
    elif "visual.attnpool.c_proj.weight" in weights:
        grid = round((weights["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        vision = {"image_size": grid * 32, "layers": [count(f"visual.layer{i}.") for i in range(1, 5)],
                  "width": weights["visual.conv1.weight"].shape[0] * 2}  # the stem's first conv has width / 2
    else:
        raise UnsupportedArchitecture("an OpenAI checkpoint of an unknown image tower")
    return {"embed_dim": weights["text_projection"].shape[1], "quick_gelu": True, "vision_cfg": vision,
            "text_cfg": text}
