"""Local checkpoints load through the users' own code path and give the saved model's vectors."""

from __future__ import annotations

import json

import numpy as np
import open_clip
import torch

from clipsearch.config import load_settings
from clipsearch.library import Library
from clipsearch.model.embed import OpenClipEmbedder

from .conftest import FIXTURES, make_photos


def _random_model(config_path, seed: int):
    open_clip.add_model_config(str(config_path))
    torch.manual_seed(seed)
    return open_clip.create_model(config_path.stem, pretrained=None).eval()


def _text_vector(model, text: str) -> np.ndarray:
    tokenizer = open_clip.get_tokenizer(model_name="ViT-B-32", context_length=model.context_length)
    with torch.inference_mode():
        return model.encode_text(tokenizer([text]), normalize=True)[0].numpy()


def test_a_config_file_with_a_local_checkpoint_gives_that_checkpoints_vectors(tmp_path):
    config = tmp_path / "my-tiny.json"
    config.write_text(FIXTURES.joinpath("tiny-clip.json").read_text())
    model = _random_model(config, seed=7)
    checkpoint = tmp_path / "weights.pt"
    torch.save(model.state_dict(), checkpoint)

    embedder = OpenClipEmbedder(f"{config}:{checkpoint}", device="cpu")
    assert embedder.spec == f"{config}:{checkpoint}"
    np.testing.assert_allclose(embedder.embed_texts(["a red circle"])[0], _text_vector(model, "a red circle"),
                               atol=1e-6)
    # ...and it is not just any random model: the seeded "random" one differs.
    other = OpenClipEmbedder(f"{config}:random", device="cpu")
    assert not np.allclose(other.embed_texts(["a red circle"])[0], _text_vector(model, "a red circle"), atol=1e-3)


def test_an_openai_style_checkpoint_file_alone_is_enough(tmp_path):
    # OpenAI's files carry no config: the architecture is read from the weights' shapes
    # (heads = width / 64), and the weights are fp16.
    config = tmp_path / "tiny-openai.json"
    config.write_text(json.dumps({
        "embed_dim": 64, "quick_gelu": True,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}}))
    model = _random_model(config, seed=3).half().float()
    checkpoint = tmp_path / "tiny-openai.pt"
    torch.save(model.state_dict(), checkpoint)

    photos = make_photos(tmp_path / "photos", 6)
    library = Library(load_settings(tmp_path / "home", model=str(checkpoint), device="cpu"))
    report = library.crawl([tmp_path / "photos"])
    assert report.stats.embedded == 6
    assert library.status().model == str(checkpoint)
    assert library.search(image=photos[1], k=1)[0].path == str(photos[1])
    np.testing.assert_allclose(OpenClipEmbedder(str(checkpoint), device="cpu").embed_texts(["a dog"])[0],
                               _text_vector(model, "a dog"), atol=1e-3)


def test_a_local_file_of_published_weights_gets_their_preprocessing(tmp_path):
    # MobileCLIP-S2's weights want mean 0, std 1 and bilinear resizing; open_clip gives a local
    # file OpenAI's defaults unless told.
    torch.manual_seed(0)
    checkpoint = tmp_path / "mobileclip_s2.pt"
    torch.save(open_clip.create_model("MobileCLIP-S2").state_dict(), checkpoint)
    embedder = OpenClipEmbedder(f"MobileCLIP-S2:{checkpoint}", device="cpu")
    assert embedder.preprocess.interpolation == "bilinear"
    np.testing.assert_allclose(embedder._shift.flatten().numpy(), [0, 0, 0])
    np.testing.assert_allclose(embedder._scale.flatten().numpy(), [1 / 255] * 3, rtol=1e-6)
