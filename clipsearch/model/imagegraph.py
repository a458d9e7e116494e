"""The image tower of an open_clip checkpoint as an ONNX graph, built from its tensors.

No torch and no tracing: the graph is written node by node from the state dict that
open_clip publishes (`visual.*` names) and the model's open_clip config. Three families:

- open_clip's VisionTransformer (OpenAI, LAION, DataComp ViTs): conv patch embedding, class
  token, positional embedding, ln_pre, pre-norm blocks, ln_post, class-token (or mean)
  pooling, `proj`; GELU, or QuickGELU for OpenAI-trained weights (`quick_gelu`).
- timm's VisionTransformer inside open_clip's TimmModel (SigLIP, SigLIP 2): patch embedding
  with bias, no class token, final norm, attention pooling with a learned latent query
  (`timm_pool: "map"`) or mean pooling; the layer count comes from the weights, the rest
  (heads, activation) from the timm model name (_TIMM_VITS).
- open_clip's ModifiedResNet (OpenAI's RN50 family, and the repo's small shapes model):
  batch norms folded into the convolutions, attention pooling.

The graph takes what the decoder produces, uint8 pixels (N, H, W, 3), already resized;
inside: the model's normalisation as one multiply-add, NHWC -> NCHW, the tower, the
projection and L2 normalisation; out: float32 vectors (N, dim). Everything else raises
UnsupportedArchitecture, and the caller keeps torch for that model.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import onnx
from onnx import TensorProto

from ._onnx import OPSET, GraphBuilder, float_rows, uint8_images
from .checkpoint import UnsupportedArchitecture, count_numbered

__all__ = ["build_image_tower", "save_model", "UnsupportedArchitecture", "TIMM_VITS"]


@dataclass(frozen=True)
class TimmVit:
    """What a timm ViT's name fixes and its weights do not tell: heads, activation, pooling."""

    heads: int
    act: str = "gelu"  # "gelu" (erf) or "gelu_tanh"
    pool: str = "map"  # the model's own pooling; open_clip's timm_pool may override it
    eps: float = 1e-6  # timm's LayerNorm default


# timm/models/vision_transformer.py, the SigLIP entries open_clip configs name. Note that
# timm builds the B/16 SigLIP towers with exact GELU and the B/32 (and So400m/16, g-opt, L/16
# at 512) with the tanh approximation; tests/test_image_tower.py checks this table against timm.
TIMM_VITS: dict[str, TimmVit] = {
    "vit_base_patch32_siglip_256": TimmVit(12, "gelu_tanh"),
    "vit_base_patch16_siglip_224": TimmVit(12),
    "vit_base_patch16_siglip_256": TimmVit(12),
    "vit_base_patch16_siglip_384": TimmVit(12),
    "vit_base_patch16_siglip_512": TimmVit(12),
    "vit_large_patch16_siglip_256": TimmVit(16),
    "vit_large_patch16_siglip_384": TimmVit(16),
    "vit_large_patch16_siglip_512": TimmVit(16, "gelu_tanh"),
    "vit_so400m_patch14_siglip_224": TimmVit(16),
    "vit_so400m_patch14_siglip_378": TimmVit(16),
    "vit_so400m_patch14_siglip_384": TimmVit(16),
    "vit_so400m_patch16_siglip_256": TimmVit(16, "gelu_tanh"),
    "vit_so400m_patch16_siglip_384": TimmVit(16, "gelu_tanh"),
    "vit_so400m_patch16_siglip_512": TimmVit(16, "gelu_tanh"),
    "vit_giantopt_patch16_siglip_256": TimmVit(16, "gelu_tanh"),
    "vit_giantopt_patch16_siglip_384": TimmVit(16, "gelu_tanh"),
}

_BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default, which ModifiedResNet keeps


def build_image_tower(weights: Mapping[str, np.ndarray], model_cfg: dict, preprocess: Mapping,
                      opset: int = OPSET, external: str | os.PathLike | None = None) -> onnx.ModelProto:
    """The image tower of an open_clip model as an ONNX model: input `pixels` uint8
    (N, H, W, 3) at preprocess["size"], output `vectors` float32 (N, embed_dim), rows
    L2-normalised. `weights` is the state dict under open_clip's names (only `visual.*`
    is read); `preprocess` needs size, mean and std (checkpoint.read_config fills them).
    opset 20 spells GELU as one op instead of five to eight. With `external` (a path), the
    weights are written there as the graph is built and the model points at them: save it
    into the same folder with `save_model`."""
    if external is None:
        return _build(weights, model_cfg, preprocess, GraphBuilder(opset))
    with open(external, "wb") as sink:
        return _build(weights, model_cfg, preprocess, GraphBuilder(opset, sink, Path(external).name))


def _build(weights: Mapping[str, np.ndarray], model_cfg: dict, preprocess: Mapping,
           g: GraphBuilder) -> onnx.ModelProto:
    vision = dict(model_cfg.get("vision_cfg") or {})
    size = _pair(preprocess.get("size") or vision.get("image_size", 224))
    mean = np.asarray(preprocess["mean"], np.float64)
    std = np.asarray(preprocess["std"], np.float64)
    # (x / 255 - mean) / std as one multiply-add, in NHWC where the channel is the last axis.
    x = g.op("Cast", "pixels", to=TensorProto.FLOAT)
    x = g.op("Add", g.op("Mul", x, g.const(1.0 / (255.0 * std), "scale")), g.const(-mean / std, "shift"))
    x = g.op("Transpose", x, perm=[0, 3, 1, 2], hint="nchw")
    if vision.get("timm_model_name"):
        features = _timm_vit(g, x, weights, vision, size)
        name = vision["timm_model_name"]
    elif isinstance(vision.get("layers"), (list, tuple)):
        features = _modified_resnet(g, x, weights, vision, size)
        name = "modified_resnet"
    else:
        features = _open_clip_vit(g, x, weights, model_cfg, vision, size)
        name = "vision_transformer"
    dim = int(model_cfg["embed_dim"])
    g.l2_normalize(features, out="vectors")
    return g.model([uint8_images("pixels", size)], [float_rows("vectors", dim)], name=name,
                   doc="open_clip image tower: uint8 NHWC pixels -> L2-normalised vectors")


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Write model to path with its weights in a file of their own beside it (path with the
    suffix .weights): onnxruntime then maps them instead of parsing them, and the .onnx
    file stays small. Returns the weights file's path. `model` is left as it was (onnx
    would move its weights out of it: a copy is saved)."""
    path = Path(path)
    if any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer):
        onnx.save_model(model, str(path))  # built with `external`: its weights are on disk already
        return path.parent / external_location(model)
    weights = path.with_suffix(".weights")
    weights.unlink(missing_ok=True)  # onnx appends to an existing external-data file
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    onnx.save_model(copy, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=weights.name, size_threshold=1024)
    return weights


def external_location(model: onnx.ModelProto) -> str:
    """The file name the model's external initialisers point at."""
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                return entry.value
    raise ValueError("the model has no external weights")


# -- families -------------------------------------------------------------------------------


def _open_clip_vit(g: GraphBuilder, x: str, w: Mapping[str, np.ndarray], model_cfg: dict, vision: dict,
                   size: tuple[int, int]) -> str:
    p = "visual."
    _refuse(w, p, ["attn_pool.", "attn_pool_contrastive."], "attentional pooling")
    for flag in ("qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn_inner", "scale_attn", "scale_fc"):
        if vision.get(flag):
            raise UnsupportedArchitecture(f"vision_cfg.{flag}")
    if vision.get("block_type") not in (None, "default"):
        raise UnsupportedArchitecture(f"vision_cfg.block_type {vision['block_type']!r}")
    conv = _get(w, p + "conv1.weight")
    width, patch = conv.shape[0], conv.shape[2:]
    heads = width // int(vision.get("head_width", 64))
    eps = float((vision.get("norm_kwargs") or {}).get("eps", 1e-5))
    act = _open_clip_act(model_cfg, vision)
    pool = vision.get("pool_type", "tok")
    if pool not in ("tok", "avg"):
        raise UnsupportedArchitecture(f"vision pool_type {pool!r}")
    tokens = _patches(g, x, conv, None, size)
    grid = (size[0] // patch[0]) * (size[1] // patch[1])
    positional = _get(w, p + "positional_embedding")
    if positional.shape[0] != grid + 1:
        raise UnsupportedArchitecture(f"positional embedding of {positional.shape[0]} rows for {grid} patches")
    # The class token with its position is one constant row in front of the patches.
    tokens = g.op("Add", tokens, g.const(positional[1:], "pos"))
    first = (_get(w, p + "class_embedding") + positional[0])[None, None, :]
    tokens = g.op("Concat", _rows_like(g, tokens, first), tokens, axis=1, hint="with_class")
    if p + "ln_pre.weight" in w:
        tokens = g.layer_norm(tokens, w[p + "ln_pre.weight"], w[p + "ln_pre.bias"], eps, "ln_pre")
    layers = count_numbered(w, p + "transformer.resblocks.")
    for i in range(layers):
        b = f"{p}transformer.resblocks.{i}."
        # With class-token pooling only the first row of the last block's output is read:
        # that block computes keys and values for every row, the rest for one (7% of the
        # tower's work at ViT-B/32-256).
        only_first = i == layers - 1 and pool == "tok"
        tokens = _open_clip_block(g, tokens, w, b, heads, act, eps, only_first)
    if pool == "tok":
        pooled = g.op("Squeeze", tokens, g.const([1], "axis")) if layers else \
            g.op("Gather", tokens, g.const(0, "first"), axis=1)
        pooled = g.layer_norm(pooled, w[p + "ln_post.weight"], w[p + "ln_post.bias"], eps, "ln_post")
    else:
        rest = g.op("Slice", tokens, g.const([1], "start"), g.const([2**62], "end"), g.const([1], "axis"))
        if vision.get("final_ln_after_pool"):
            pooled = g.layer_norm(g.reduce("ReduceMean", rest, [1], keepdims=False),
                                  w[p + "ln_post.weight"], w[p + "ln_post.bias"], eps, "ln_post")
        else:
            normed = g.layer_norm(rest, w[p + "ln_post.weight"], w[p + "ln_post.bias"], eps, "ln_post")
            pooled = g.reduce("ReduceMean", normed, [1], keepdims=False)
    if p + "proj" in w:
        pooled = g.op("MatMul", pooled, g.const(w[p + "proj"], "proj"), hint="proj")
    return pooled


def _open_clip_block(g: GraphBuilder, x: str, w: Mapping[str, np.ndarray], b: str, heads: int, act: str,
                     eps: float, only_first: bool) -> str:
    """One ResidualAttentionBlock (nn.MultiheadAttention inside); layer scale folded into the
    output projections."""
    in_w, in_b = _get(w, b + "attn.in_proj_weight"), _get(w, b + "attn.in_proj_bias")
    wq, wk, wv = np.split(np.asarray(in_w, np.float32), 3)
    bq, bk, bv = np.split(np.asarray(in_b, np.float32), 3)
    out_w, out_b = _scaled(w, b + "attn.out_proj.", b + "ls_1.gamma")
    h = g.layer_norm(x, w[b + "ln_1.weight"], w[b + "ln_1.bias"], eps, "ln_1")
    if only_first:
        x = g.op("Slice", x, g.const([0], "start"), g.const([1], "end"), g.const([1], "axis"))
        q_src = g.op("Slice", h, g.const([0], "start"), g.const([1], "end"), g.const([1], "axis"))
    else:
        q_src = h
    x = g.op("Add", x, g.attention(q_src, h, wq, bq, wk, bk, wv, bv, out_w, out_b, heads), hint="resid")
    fc2_w, fc2_b = _scaled(w, b + "mlp.c_proj.", b + "ls_2.gamma")
    h = g.layer_norm(x, w[b + "ln_2.weight"], w[b + "ln_2.bias"], eps, "ln_2")
    h = g.mlp(h, (w[b + "mlp.c_fc.weight"], w[b + "mlp.c_fc.bias"]), (fc2_w, fc2_b), act)
    return g.op("Add", x, h, hint="resid")


def _timm_vit(g: GraphBuilder, x: str, w: Mapping[str, np.ndarray], vision: dict, size: tuple[int, int]) -> str:
    name = vision["timm_model_name"]
    arch = TIMM_VITS.get(name)
    if arch is None:
        raise UnsupportedArchitecture(f"timm model {name!r} is not in TIMM_VITS")
    p = "visual.trunk."
    _refuse(w, p, ["cls_token", "reg_token", "norm_pre.", "fc_norm."], "class/register tokens or extra norms")
    if any(re.match(re.escape(p) + r"blocks\.\d+\.(attn\.(q_norm|k_norm|norm)|ls\d|norm1_post)", k) for k in w):
        raise UnsupportedArchitecture("qk-norm or layer-scale timm blocks")
    pool = vision.get("timm_pool", "avg") or arch.pool
    conv = _get(w, p + "patch_embed.proj.weight")
    tokens = _patches(g, x, conv, _get(w, p + "patch_embed.proj.bias"), size)
    positional = _get(w, p + "pos_embed")[0]
    grid = (size[0] // conv.shape[2]) * (size[1] // conv.shape[3])
    if positional.shape[0] != grid:
        raise UnsupportedArchitecture(f"pos_embed of {positional.shape[0]} rows for {grid} patches")
    tokens = g.op("Add", tokens, g.const(positional, "pos"))
    eps = arch.eps
    for i in range(count_numbered(w, p + "blocks.")):
        b = f"{p}blocks.{i}."
        wq, wk, wv = np.split(np.asarray(_get(w, b + "attn.qkv.weight"), np.float32), 3)
        bq, bk, bv = np.split(np.asarray(_get(w, b + "attn.qkv.bias"), np.float32), 3)
        h = g.layer_norm(tokens, w[b + "norm1.weight"], w[b + "norm1.bias"], eps, "norm1")
        tokens = g.op("Add", tokens, g.attention(h, h, wq, bq, wk, bk, wv, bv, w[b + "attn.proj.weight"],
                                                 w[b + "attn.proj.bias"], arch.heads), hint="resid")
        h = g.layer_norm(tokens, w[b + "norm2.weight"], w[b + "norm2.bias"], eps, "norm2")
        h = g.mlp(h, (w[b + "mlp.fc1.weight"], w[b + "mlp.fc1.bias"]),
                  (w[b + "mlp.fc2.weight"], w[b + "mlp.fc2.bias"]), arch.act)
        tokens = g.op("Add", tokens, h, hint="resid")
    tokens = g.layer_norm(tokens, _get(w, p + "norm.weight"), w[p + "norm.bias"], eps, "norm")
    if pool == "map":
        a = p + "attn_pool."
        if a + "q_norm.weight" in w or a + "pos_embed" in w:
            raise UnsupportedArchitecture("attention pool with qk-norm or its own positions")
        wk, wv = np.split(np.asarray(_get(w, a + "kv.weight"), np.float32), 2)
        bk, bv = np.split(np.asarray(_get(w, a + "kv.bias"), np.float32), 2)
        latent = _get(w, a + "latent")[0]  # (latent_len, width)
        if latent.shape[0] != 1:
            raise UnsupportedArchitecture("attention pool with several latent queries")
        # The query is a learned constant: its projection is computed once, at build time.
        pooled = g.attention(latent, tokens, _get(w, a + "q.weight"), w.get(a + "q.bias"), wk, bk, wv, bv,
                             w[a + "proj.weight"], w[a + "proj.bias"], arch.heads, hint="map")
        h = g.layer_norm(pooled, w[a + "norm.weight"], w[a + "norm.bias"], eps, "map_norm")
        h = g.mlp(h, (w[a + "mlp.fc1.weight"], w[a + "mlp.fc1.bias"]),
                  (w[a + "mlp.fc2.weight"], w[a + "mlp.fc2.bias"]), arch.act, hint="map_mlp")
        pooled = g.op("Squeeze", g.op("Add", pooled, h), g.const([1], "axis"))
    elif pool == "avg":
        pooled = g.reduce("ReduceMean", tokens, [1], keepdims=False)
    else:
        raise UnsupportedArchitecture(f"timm_pool {pool!r}")
    proj = vision.get("timm_proj", "linear")
    if proj == "linear":
        pooled = g.linear(pooled, _get(w, "visual.head.proj.weight"), w.get("visual.head.proj.bias"), "head")
    elif proj not in ("none", "", None):
        raise UnsupportedArchitecture(f"timm_proj {proj!r}")
    return pooled


def _modified_resnet(g: GraphBuilder, x: str, w: Mapping[str, np.ndarray], vision: dict,
                     size: tuple[int, int]) -> str:
    p = "visual."
    width = int(vision.get("width", 64))
    heads = width * 32 // int(vision.get("head_width", 64))
    x = _conv_bn(g, x, w, p + "conv1", p + "bn1", stride=2, pad=1, relu=True)
    x = _conv_bn(g, x, w, p + "conv2", p + "bn2", pad=1, relu=True)
    x = _conv_bn(g, x, w, p + "conv3", p + "bn3", pad=1, relu=True)
    x = _avg_pool(g, x, 2)
    for stage in range(1, 5):
        for i in range(count_numbered(w, f"{p}layer{stage}.")):
            b = f"{p}layer{stage}.{i}."
            stride = 2 if stage > 1 and i == 0 else 1
            out = _conv_bn(g, x, w, b + "conv1", b + "bn1", relu=True)
            out = _conv_bn(g, out, w, b + "conv2", b + "bn2", pad=1, relu=True)
            if stride > 1:
                out = _avg_pool(g, out, stride)
            out = _conv_bn(g, out, w, b + "conv3", b + "bn3")
            identity = x
            if b + "downsample.0.weight" in w:
                identity = _conv_bn(g, _avg_pool(g, x, stride) if stride > 1 else x, w, b + "downsample.0",
                                    b + "downsample.1")
            x = g.op("Relu", g.op("Add", out, identity, hint="resid"))
    # AttentionPool2d: the mean of the grid as a first token, positions, one query row.
    a = p + "attnpool."
    channels = _get(w, a + "k_proj.weight").shape[1]
    tokens = g.op("Transpose", g.op("Reshape", x, g.const([0, channels, -1], "shape")), perm=[0, 2, 1])
    tokens = g.op("Concat", g.reduce("ReduceMean", tokens, [1], keepdims=True), tokens, axis=1)
    positional = _get(w, a + "positional_embedding")
    grid = (size[0] // 32) * (size[1] // 32)
    if positional.shape[0] != grid + 1:
        raise UnsupportedArchitecture(f"attnpool positions of {positional.shape[0]} rows for {grid} cells")
    tokens = g.op("Add", tokens, g.const(positional, "pos"))
    first = g.op("Slice", tokens, g.const([0], "start"), g.const([1], "end"), g.const([1], "axis"))
    pooled = g.attention(first, tokens, w[a + "q_proj.weight"], w[a + "q_proj.bias"], w[a + "k_proj.weight"],
                         w[a + "k_proj.bias"], w[a + "v_proj.weight"], w[a + "v_proj.bias"],
                         w[a + "c_proj.weight"], w[a + "c_proj.bias"], heads, hint="attnpool")
    return g.op("Squeeze", pooled, g.const([1], "axis"))


# -- pieces ---------------------------------------------------------------------------------


def _patches(g: GraphBuilder, x: str, conv: np.ndarray, bias: np.ndarray | None, size: tuple[int, int]) -> str:
    """Non-overlapping patch embedding (N, 3, H, W) -> (N, patches, width)."""
    patch = [int(conv.shape[2]), int(conv.shape[3])]
    if size[0] % patch[0] or size[1] % patch[1]:
        raise UnsupportedArchitecture(f"image size {size} is not a multiple of the patch {patch}")
    inputs = [x, g.const(conv, "patch_w")] + ([g.const(bias, "patch_b")] if bias is not None else [])
    y = g.op("Conv", *inputs, kernel_shape=patch, strides=patch, hint="patch_embed")
    y = g.op("Reshape", y, g.const([0, int(conv.shape[0]), -1], "shape"))
    return g.op("Transpose", y, perm=[0, 2, 1], hint="tokens")


def _rows_like(g: GraphBuilder, tokens: str, rows: np.ndarray) -> str:
    """A constant (1, k, D) block repeated over the batch of `tokens`."""
    batch = g.op("Slice", g.op("Shape", tokens), g.const([0], "start"), g.const([1], "end"))
    shape = g.op("Concat", batch, g.const([rows.shape[1], rows.shape[2]], "shape"), axis=0)
    return g.op("Expand", g.const(rows, "rows"), shape)


def _conv_bn(g: GraphBuilder, x: str, w: Mapping[str, np.ndarray], conv: str, bn: str, stride: int = 1,
             pad: int = 0, relu: bool = False) -> str:
    """A bias-free convolution followed by an inference-mode batch norm, as one convolution:
    the norm's scale goes into the kernel, its shift into the bias."""
    kernel = np.asarray(_get(w, conv + ".weight"), np.float64)
    scale = np.asarray(w[bn + ".weight"], np.float64) / np.sqrt(np.asarray(w[bn + ".running_var"], np.float64)
                                                                 + _BN_EPS)
    shift = np.asarray(w[bn + ".bias"], np.float64) - np.asarray(w[bn + ".running_mean"], np.float64) * scale
    y = g.op("Conv", x, g.const(kernel * scale[:, None, None, None], "conv_w"), g.const(shift, "conv_b"),
             kernel_shape=list(kernel.shape[2:]), strides=[stride, stride], pads=[pad] * 4, hint="conv")
    return g.op("Relu", y) if relu else y


def _avg_pool(g: GraphBuilder, x: str, k: int) -> str:
    return g.op("AveragePool", x, kernel_shape=[k, k], strides=[k, k], hint="avgpool")


def _open_clip_act(model_cfg: dict, vision: dict) -> str:
    if model_cfg.get("quick_gelu"):
        return "quick_gelu"
    approximate = (vision.get("act_kwargs") or {}).get("approximate", "none")
    return {"none": "gelu", "tanh": "gelu_tanh"}[approximate]


def _scaled(w: Mapping[str, np.ndarray], linear: str, gamma: str) -> tuple[np.ndarray, np.ndarray]:
    """A linear layer with the layer scale after it (if any) folded into its rows."""
    weight, bias = np.asarray(_get(w, linear + "weight"), np.float32), np.asarray(w[linear + "bias"], np.float32)
    if gamma in w:
        scale = np.asarray(w[gamma], np.float32)
        weight, bias = weight * scale[:, None], bias * scale
    return weight, bias


def _get(w: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    try:
        return w[name]
    except KeyError:
        raise UnsupportedArchitecture(f"the checkpoint has no {name!r}") from None


def _refuse(w: Mapping[str, np.ndarray], prefix: str, parts: list[str], what: str) -> None:
    if any(k.startswith(prefix + part) for k in w for part in parts):
        raise UnsupportedArchitecture(what)


def _pair(size) -> tuple[int, int]:
    if isinstance(size, (list, tuple)):
        return int(size[0]), int(size[1])
    return int(size), int(size)
