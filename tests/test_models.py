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


def test_a_checkpoint_retrained_in_place_is_never_mixed_into_the_library(tmp_path):
    # The case from the house issue: a library crawled with model.json:model.pt, the checkpoint
    # then retrained under the same path, a second folder crawled.
    from .conftest import run_cli

    config = tmp_path / "mine.json"
    config.write_text(FIXTURES.joinpath("tiny-clip.json").read_text())
    checkpoint = tmp_path / "mine.pt"
    torch.save(_random_model(config, seed=1).state_dict(), checkpoint)
    make_photos(tmp_path / "first", 4)
    make_photos(tmp_path / "second", 3, start_seed=40)
    home = ["--home", str(tmp_path / "home")]
    spec = f"{config}:{checkpoint}"
    assert run_cli(*home, "crawl", str(tmp_path / "first"), "--model", spec).returncode == 0

    torch.save(_random_model(config, seed=2).state_dict(), checkpoint)  # retrained, same name
    for command in (["crawl", str(tmp_path / "second")], ["search", "a photo"]):
        result = run_cli(*home, *command)
        assert result.returncode == 1, result.stderr
        line = result.stderr.strip()
        assert "\n" not in line and "has changed since" in line and str(checkpoint) in line
        assert f"clipsearch reembed --model {spec}" in line
    status = run_cli(*home, "status")
    assert "7 live" not in status.stdout and "4 live" in status.stdout  # nothing of the new weights went in

    assert run_cli(*home, "reembed", "--model", spec).returncode == 0
    assert run_cli(*home, "crawl", str(tmp_path / "second")).returncode == 0
    found = run_cli(*home, "search", "a photo", "-k", "10", "--paths-only")
    assert found.returncode == 0 and len(found.stdout.split()) == 7


def test_a_checkpoint_only_touched_keeps_its_identity(tmp_path):
    import os

    from clipsearch.model.identity import fingerprint

    config = tmp_path / "mine.json"
    config.write_text(FIXTURES.joinpath("tiny-clip.json").read_text())
    checkpoint = tmp_path / "mine.pt"
    torch.save(_random_model(config, seed=1).state_dict(), checkpoint)
    spec, cache = f"{config}:{checkpoint}", tmp_path / "cache"
    before = fingerprint(spec, cache)
    os.utime(checkpoint, ns=(1, 1))
    assert fingerprint(spec, cache) == before
    assert fingerprint(f"{config}:random", cache) != before
    assert fingerprint("ViT-B-32-256:datacomp_s34b_b86k", cache) == ""  # named weights: the name is the identity


def test_a_library_made_before_fingerprints_records_its_weights_at_the_next_crawl(tmp_path):
    from clipsearch.catalog.store import Store

    from .conftest import run_cli

    config = tmp_path / "mine.json"
    config.write_text(FIXTURES.joinpath("tiny-clip.json").read_text())
    checkpoint = tmp_path / "mine.pt"
    torch.save(_random_model(config, seed=1).state_dict(), checkpoint)
    make_photos(tmp_path / "photos", 3)
    home = tmp_path / "home"
    assert run_cli("--home", str(home), "crawl", str(tmp_path / "photos"), "--model",
                   f"{config}:{checkpoint}").returncode == 0
    # As a catalog of schema 7 with vectors is migrated: the weights are not known.
    store = Store(home / "catalog.db")
    recorded = store.get_meta("model_weights")
    store.set_meta("model_weights", "unrecorded")
    store.close()
    assert run_cli("--home", str(home), "search", "a photo").returncode == 0  # trusted, not refused
    make_photos(tmp_path / "photos", 1, start_seed=9)
    assert run_cli("--home", str(home), "crawl").returncode == 0
    store = Store(home / "catalog.db")
    assert store.get_meta("model_weights") == recorded and len(recorded) == 64
    store.close()
