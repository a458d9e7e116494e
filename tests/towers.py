"""Real open_clip architectures with seeded random weights, and their checkpoints written as
the hub publishes them (open_clip_model.safetensors beside open_clip_config.json): the
reference the towers are checked against. Random weights of a real architecture cost what
real weights cost, and torch's open_clip is the truth for what they must compute.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clipsearch.model.checkpoint import OpenClipConfig, preprocess_defaults, read_config, read_safetensors

FIXTURES = Path(__file__).parent / "fixtures"
SIGLIP = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "resize_mode": "squash"}

# name -> (open_clip config name or fixture file, overrides of the config, trained checkpoint):
# the architectures of the presets and of the models libraries may hold, and the test models.
ARCHS = {
    "tiny-clip": ("tiny-clip.json", {}, None),
    "shapes-clip": ("shapes-clip.json", {}, "shapes-clip.pt"),  # a ModifiedResNet, trained, fp16
    "ViT-B-32-256": ("ViT-B-32-256", {}, None),  # the default before SigLIP 2
    "ViT-B-32-openai": ("ViT-B-32", {"quick_gelu": True}, None),  # OpenAI's weights want QuickGELU
    "ViT-B-32-SigLIP2-256": ("ViT-B-32-SigLIP2-256", {}, None),  # the default
    "ViT-B-16-SigLIP2-256": ("ViT-B-16-SigLIP2-256", {}, None),  # high_accuracy and vpr
}


@dataclass
class Built:
    """One architecture: open_clip's model (the reference) and its checkpoint on disk."""

    name: str
    model: torch.nn.Module
    folder: Path  # open_clip_model.safetensors + open_clip_config.json
    config: OpenClipConfig
    weights: dict[str, np.ndarray]  # read back from the folder, memory-mapped

    @property
    def size(self) -> int:
        return int(self.config.preprocess_cfg["size"])

    @property
    def siglip(self) -> bool:
        return "timm_model_name" in self.config.model_cfg.get("vision_cfg", {})

    def reference_images(self, pixels: np.ndarray) -> np.ndarray:
        """open_clip's encode_image(normalize=True) of uint8 NHWC pixels, normalised as the
        graph does."""
        pre = self.config.preprocess_cfg
        x = (torch.from_numpy(pixels).float() / 255 - torch.tensor(pre["mean"])) / torch.tensor(pre["std"])
        with torch.no_grad():
            return self.model.encode_image(x.permute(0, 3, 1, 2).contiguous(), normalize=True).numpy()

    def reference_texts(self, tokens: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.model.encode_text(torch.from_numpy(tokens), normalize=True).numpy()


def build(name: str, folder: Path, model_cfg: dict | None = None) -> Built:
    """An architecture of ARCHS, or (with model_cfg) a config of a test's own, called name."""
    import open_clip
    from open_clip.factory import get_model_config
    from safetensors.torch import save_file

    if model_cfg is not None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.json").write_text(json.dumps(model_cfg))
        source, overrides, trained = f"{name}.json", {}, None
        open_clip.add_model_config(folder / source)
    else:
        source, overrides, trained = ARCHS[name]
        if source.endswith(".json"):
            open_clip.add_model_config(FIXTURES / source)
    source = source.removesuffix(".json")
    model_cfg = {**get_model_config(source), **overrides}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.create_model(source, pretrained=str(FIXTURES / trained) if trained else None,
                                       force_quick_gelu=bool(overrides.get("quick_gelu"))).eval()
    state = model.state_dict()
    if trained:
        # Keep the checkpoint's own dtype (float16) in the file: checkpoint.py widens it.
        saved = torch.load(FIXTURES / trained, map_location="cpu", weights_only=True)
        state = {k: saved[k] if k in saved else v for k, v in state.items()}
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "open_clip_model.safetensors"))
    siglip = "timm_model_name" in model_cfg.get("vision_cfg", {})
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": model_cfg, "preprocess_cfg": preprocess_defaults(model_cfg, SIGLIP if siglip else {})}))
    config = read_config(folder / "open_clip_config.json")
    return Built(name, model, folder, config, read_safetensors(folder / "open_clip_model.safetensors"))


def probe_images(size: int) -> np.ndarray:
    """Noise, a horizontal gradient, a colour ramp, black and white: (5, size, size, 3) uint8."""
    rng = np.random.default_rng(7)
    ramp = np.linspace(0, 255, size)
    gradient = np.broadcast_to(ramp[None, :, None], (size, size, 3))
    colours = np.stack([np.broadcast_to(ramp[:, None], (size, size)), np.broadcast_to(ramp[None, :], (size, size)),
                        np.full((size, size), 80.0)], axis=-1)
    return np.stack([rng.integers(0, 256, (size, size, 3)), gradient, colours, np.zeros((size, size, 3)),
                     np.full((size, size, 3), 255)]).astype(np.uint8)


def agreement(ours: np.ndarray, theirs: np.ndarray) -> tuple[float, float]:
    """The smallest cosine between our vector and open_clip's for the same probe, and the
    smallest between the differences of two probes' vectors: random weights make every
    image's vector alike, and the second number shows the graph still tells them apart."""
    pairs = [(i, j) for i in range(len(ours)) for j in range(i + 1, len(ours))]
    a = np.stack([ours[i] - ours[j] for i, j in pairs])
    b = np.stack([theirs[i] - theirs[j] for i, j in pairs])
    differences = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return float(np.sum(ours * theirs, axis=1).min()), float(differences.min())


def siglip_tokens(text_cfg: dict, rows: int = 8) -> np.ndarray:
    """Token rows as SigLIP's tokenizer lays them out (its Gemma vocabulary is not here):
    random ids, then <eos> (1), then <pad> (0); one row cut at the context length."""
    rng = np.random.default_rng(3)
    context, vocab = text_cfg["context_length"], text_cfg["vocab_size"]
    tokens = np.zeros((rows, context), np.int64)
    for row, length in zip(tokens, [0, 1, 3, 7, 12, 30, context - 1, context + 20]):
        ids = list(rng.integers(5, vocab, min(length, context - 1))) + [1]
        row[:len(ids)] = ids
    return tokens
