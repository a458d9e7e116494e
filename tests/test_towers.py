"""The towers built from a checkpoint's tensors, without torch, give open_clip's vectors: the
ONNX image tower (fp32 and int8) and the numpy text tower, for every architecture the
presets name, the ones libraries may already hold, and the test models."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime
import pytest

from clipsearch.model.checkpoint import UnsupportedArchitecture, read_safetensors, write_safetensors
from clipsearch.model.imagegraph import TIMM_VITS, build_image_tower
from clipsearch.model.texttower import TextTower, scoring_of, text_config, text_tensors
from clipsearch.model.tokenizer import clip_tokenizer

from .towers import ARCHS, FIXTURES, Built, agreement, build, probe_images, siglip_tokens

MIN_COSINE = {"fp32": 0.9999, "int8": 0.98}
TEXTS = ["a dog on the beach", "", "the receipt from the bakery", "beach portugal 2019", "chien sur la plage",
         "海辺の犬", "A Photo of a RED car, in the snow!", "word " * 100]


@pytest.fixture(scope="module", params=list(ARCHS))
def built(request, tmp_path_factory) -> Built:
    """One architecture at a time (the big ones hold ~1.5 GB of weights)."""
    return build(request.param, tmp_path_factory.mktemp(request.param))


def _session(model: onnx.ModelProto | str) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    source = model if isinstance(model, str) else model.SerializeToString()
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _tokens(built: Built) -> np.ndarray:
    text_cfg = built.config.model_cfg["text_cfg"]
    if "hf_tokenizer_name" in text_cfg:
        return siglip_tokens(text_cfg)
    return clip_tokenizer(text_cfg.get("context_length", 77))(TEXTS)


def test_the_image_tower_gives_open_clips_vectors_in_fp32_and_int8(built, tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = build_image_tower(built.weights, built.config.model_cfg, built.config.preprocess_cfg)
    onnx.checker.check_model(model)
    probes = probe_images(built.size)
    theirs = built.reference_images(probes)
    ours = _session(model).run(None, {"pixels": probes})[0]
    assert ours.shape == theirs.shape == (len(probes), built.config.model_cfg["embed_dim"])
    same, apart = agreement(ours, theirs)
    print(f"{built.name} fp32: cosine >= {same:.7f}, of differences >= {apart:.7f}")
    assert same >= MIN_COSINE["fp32"] and apart >= MIN_COSINE["fp32"]
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
    if built.name in ("tiny-clip", "shapes-clip"):
        return  # a few thousand weights say nothing of int8 on a real model
    # One scale per output channel: one per matrix gave 0.973 on SigLIP 2 B/32 (imagetower.quantize).
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    onnx.save_model(model, str(fp32))
    del model
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)
    same, apart = agreement(_session(str(int8)).run(None, {"pixels": probes})[0], theirs)
    print(f"{built.name} int8: cosine >= {same:.4f}, of differences >= {apart:.4f}")
    assert same >= MIN_COSINE["int8"] and apart >= MIN_COSINE["int8"]


def test_the_text_tower_gives_open_clips_vectors_with_a_float16_token_table(built, tmp_path):
    tokens = _tokens(built)
    theirs = built.reference_texts(tokens)
    tower = TextTower(built.weights, text_config(built.config.model_cfg))
    ours = tower.encode(tokens)
    assert ours.dtype == np.float32 and float(np.abs(ours - theirs).max()) <= 1e-4
    together_alone = np.concatenate([tower.encode(tokens[i:i + 1]) for i in range(len(tokens))])
    np.testing.assert_allclose(ours, together_alone, atol=2e-6)
    # As saved: memory-mapped, a large token table (SigLIP 2) in float16.
    path = tmp_path / "text.safetensors"
    tensors, dtypes = text_tensors(built.weights)
    write_safetensors(path, tensors, dtypes=dtypes)
    saved = TextTower(read_safetensors(path), text_config(built.config.model_cfg))
    cosines = np.sum(saved.encode(tokens) * theirs, axis=1)
    print(f"{built.name} text: max |difference| {np.abs(ours - theirs).max():.1e}; as saved: cosine >= "
          f"{cosines.min():.7f}")
    assert cosines.min() >= 0.9999
    scoring = scoring_of(built.weights)
    assert scoring is not None and scoring.sigmoid == built.siglip


def test_the_batch_axis_of_the_image_tower_is_dynamic(tmp_path):
    built = build("tiny-clip", tmp_path / "tiny")
    session = _session(build_image_tower(built.weights, built.config.model_cfg, built.config.preprocess_cfg))
    probes = probe_images(built.size)
    together = session.run(None, {"pixels": probes})[0]
    alone = np.concatenate([session.run(None, {"pixels": probes[i:i + 1]})[0] for i in range(len(probes))])
    np.testing.assert_allclose(alone, together, atol=2e-6)


def test_the_timm_table_agrees_with_timm():
    import timm
    import torch
    from timm.layers import GELUTanh

    for name, arch in TIMM_VITS.items():
        with torch.device("meta"):
            trunk = timm.create_model(name, pretrained=False, num_classes=0)
        block = trunk.blocks[0]
        act = block.mlp.act
        assert block.attn.num_heads == arch.heads, name
        assert ("gelu_tanh" if isinstance(act, GELUTanh) or getattr(act, "approximate", "none") == "tanh"
                else "gelu") == arch.act, name
        assert trunk.global_pool == arch.pool and trunk.cls_token is None, name
        assert block.norm1.eps == arch.eps, name


@pytest.mark.parametrize("variant", [
    {"quick_gelu": True, "text_cfg": {"no_causal_mask": True, "ls_init_value": 0.5, "proj_bias": True,
                                      "pool_type": "last", "norm_kwargs": {"eps": 1e-6}}},
    {"text_cfg": {"pool_type": "first", "act_kwargs": {"approximate": "tanh"}}},
    {"text_cfg": {"pool_type": "eos", "eos_id": 49407, "proj_type": "none", "width": 64}},
], ids=["quickgelu-bidirectional-layerscale-bias-last", "tanh-first", "eos-no-projection"])
def test_text_variants_of_open_clips_transformer(tmp_path, variant):
    """The custom-text layout (text.*), layer scale, QuickGELU, tanh GELU, eps, every pooling."""
    config = json.loads((FIXTURES / "tiny-clip.json").read_text())
    config["custom_text"] = True
    config["quick_gelu"] = variant.get("quick_gelu", False)
    config["text_cfg"].update(variant["text_cfg"])
    if config["text_cfg"].get("proj_type") == "none":
        config["embed_dim"] = config["text_cfg"]["width"]
    built = build("variant", tmp_path / "variant", config)
    assert any(name.startswith("text.") for name in built.weights)
    tokens = clip_tokenizer(16)(TEXTS)
    ours = TextTower(built.weights, text_config(built.config.model_cfg)).encode(tokens)
    assert float(np.abs(ours - built.reference_texts(tokens)).max()) <= 1e-5


def test_what_the_builders_do_not_know_is_refused(tmp_path):
    built = build("tiny-clip", tmp_path / "tiny")
    cfg, pre = built.config.model_cfg, built.config.preprocess_cfg
    with pytest.raises(UnsupportedArchitecture):
        build_image_tower(built.weights, {**cfg, "vision_cfg": {**cfg["vision_cfg"], "qk_norm": True}}, pre)
    with pytest.raises(UnsupportedArchitecture):
        build_image_tower({k: v for k, v in built.weights.items() if k != "visual.conv1.weight"}, cfg, pre)
    with pytest.raises(UnsupportedArchitecture):
        siglip = {"embed_dim": 64, "vision_cfg": {"timm_model_name": "vit_tiny_patch16_224", "timm_pool": "map"}}
        build_image_tower(built.weights, siglip, {**pre, "size": 224})
    with pytest.raises(UnsupportedArchitecture):  # positions for another image size
        build_image_tower(built.weights, cfg, {**pre, "size": 64})
    for text in ({"embed_cls": True}, {"hf_model_name": "xlm-roberta-base"}):
        with pytest.raises(UnsupportedArchitecture):
            text_config({"text_cfg": text})


def test_the_safetensors_reader_agrees_with_the_safetensors_package(tmp_path):
    import torch
    from safetensors.torch import save_file

    tensors = {"f32": torch.randn(3, 5), "f16": torch.randn(7).half(), "bf16": torch.randn(2, 2).bfloat16(),
               "i64": torch.arange(6).reshape(2, 3), "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 4)}
    save_file(tensors, str(tmp_path / "t.safetensors"))
    read = read_safetensors(tmp_path / "t.safetensors")
    for name, tensor in tensors.items():
        np.testing.assert_array_equal(read[name], tensor.float().numpy() if name == "bf16" else tensor.numpy())
    assert not read["f32"].flags.writeable and not read["f32"].flags.owndata  # a view of the memory map
    write_safetensors(tmp_path / "ours.safetensors", {n: read[n] for n in ("f32", "f16", "i64")})
    from safetensors.numpy import load_file

    again = load_file(str(tmp_path / "ours.safetensors"))
    for name in ("f32", "f16", "i64"):
        np.testing.assert_array_equal(again[name], read[name])
