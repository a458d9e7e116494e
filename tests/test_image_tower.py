"""The image tower on ONNX Runtime: the same vectors as torch, no torch in a crawl or an
image query once it exists, and torch kept wherever a tower cannot be built or trusted."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys

import numpy as np
import pytest

from clipsearch.ingest.decode import load_image
from clipsearch.model import imagetower
from clipsearch.model.embed import LazyEmbedder, OpenClipEmbedder

from .conftest import SHAPES_CONFIG, SHAPES_MODEL, TINY_MODEL, make_photo, make_photos, run_cli


def _pixels(folder, preprocess, count=12) -> np.ndarray:
    photos = make_photos(folder, count)
    return np.stack([load_image(str(p), preprocess, 10**9)[0] for p in photos])


@pytest.mark.parametrize("spec", [TINY_MODEL, SHAPES_MODEL], ids=["tiny ViT", "trained ResNet"])
def test_the_onnx_tower_gives_the_vectors_torch_gives(tmp_path, spec):
    torch_model = OpenClipEmbedder(spec, device="cpu")
    lazy = LazyEmbedder(spec, image_tower_dir=tmp_path / "tower", device="cpu")
    lazy.load()  # exports, checks and switches to the export
    assert lazy._image is not None and list((tmp_path / "tower").glob("*.onnx"))
    pixels = _pixels(tmp_path / "photos", torch_model.preprocess)
    expected = torch_model.embed_images(pixels)
    got = lazy.embed_images(pixels)
    assert got.shape == expected.shape and got.dtype == np.float32
    assert np.min(np.sum(got * expected, axis=1)) >= 0.9999
    # A new process's view: the tower alone, without loading the model.
    fresh = LazyEmbedder(spec, image_tower_dir=tmp_path / "tower", device="cpu")
    assert fresh.dim == torch_model.dim and fresh.preprocess == torch_model.preprocess
    assert np.allclose(fresh.embed_images(pixels), got, atol=1e-6)
    assert not fresh.loaded


def test_a_crawl_and_an_image_query_in_a_fresh_process_import_no_torch(tmp_path):
    home, photos = tmp_path / "home", tmp_path / "photos"
    make_photos(photos, 12)
    first = run_cli("--home", str(home), "crawl", str(photos), "--model", TINY_MODEL)
    assert first.returncode == 0, first.stderr
    assert (home / "image-tower" / imagetower.DESCRIPTION).is_file()
    added = [make_photo(photos / f"new_{i}.png", 500 + i) for i in range(3)]
    code = f"""
import json, sys
from clipsearch.config import load_settings
from clipsearch.library import Library
library = Library(load_settings({str(home)!r}))
report = library.crawl()
hits = library.search(image={str(added[1])!r}, k=3)
print(json.dumps({{"embedded": report.stats.embedded, "top": hits[0].path, "score": hits[0].score,
                  "torch": "torch" in sys.modules, "open_clip": "open_clip" in sys.modules}}))
"""
    result = run_cli_python(code)
    assert result["embedded"] == 3
    assert result["top"] == str(added[1]) and result["score"] == pytest.approx(1.0, abs=1e-4)
    assert not result["torch"] and not result["open_clip"]


def run_cli_python(code: str) -> dict:
    import subprocess

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_changed_checkpoint_is_not_served_by_an_old_export(tmp_path):
    config = tmp_path / "shapes-clip.json"
    checkpoint = tmp_path / "shapes-clip.pt"
    shutil.copy(SHAPES_CONFIG, config)
    shutil.copy(SHAPES_MODEL.split(":")[-1], checkpoint)
    spec = f"{config}:{checkpoint}"
    LazyEmbedder(spec, image_tower_dir=tmp_path / "tower", device="cpu").load()
    old = list((tmp_path / "tower").glob("*.onnx"))
    assert _served_by_a_saved_tower(LazyEmbedder(spec, image_tower_dir=tmp_path / "tower", device="cpu"))

    import torch

    weights = torch.load(checkpoint, map_location="cpu")  # retrained under the same name
    state = weights.get("state_dict", weights)
    first = next(key for key, value in state.items() if value.is_floating_point())
    state[first] = state[first] * 1.01
    torch.save(weights, checkpoint)
    lazy = LazyEmbedder(spec, image_tower_dir=tmp_path / "tower", device="cpu")
    assert not _served_by_a_saved_tower(lazy)  # built again, for these weights
    new = list((tmp_path / "tower").glob("*.onnx"))
    assert len(new) == 1 and new != old
    assert _served_by_a_saved_tower(LazyEmbedder(spec, image_tower_dir=tmp_path / "tower", device="cpu"))


@pytest.mark.parametrize("failure", ["export fails", "vectors differ"])
def test_a_model_without_a_trustworthy_export_keeps_torch_with_one_log_line(tmp_path, monkeypatch, caplog,
                                                                             failure):
    if failure == "export fails":
        from clipsearch.model import imagegraph
        from clipsearch.model.checkpoint import UnsupportedArchitecture

        def refuse(weights, model_cfg, preprocess, opset=imagegraph.OPSET, external=None):
            raise UnsupportedArchitecture("a block the graph builder does not know")

        monkeypatch.setattr(imagegraph, "build_image_tower", refuse)
    else:
        monkeypatch.setitem(imagetower.MIN_COSINE, "fp32", 1.5)  # no export can reach it
    lazy = LazyEmbedder(TINY_MODEL, image_tower_dir=tmp_path / "tower", device="cpu")
    with caplog.at_level(logging.WARNING, logger="clipsearch"):
        lazy.load()
    lines = [r.getMessage() for r in caplog.records if "ONNX" in r.getMessage()]
    assert len(lines) == 1 and "embedded with torch" in lines[0], lines
    assert "\n" not in lines[0]
    assert not list((tmp_path / "tower").glob("*.onnx")) and lazy._image is None
    pixels = _pixels(tmp_path / "photos", lazy.preprocess, 4)
    assert np.allclose(lazy.embed_images(pixels), OpenClipEmbedder(TINY_MODEL, device="cpu").embed_images(pixels),
                       atol=1e-6)


def test_a_second_library_of_the_same_model_reuses_both_towers_without_torch(tmp_path):
    cache = tmp_path / "model-cache"
    env = {"CLIPSEARCH_MODEL_CACHE": str(cache)}
    make_photos(tmp_path / "a", 4)
    first = run_cli("--home", str(tmp_path / "one"), "crawl", str(tmp_path / "a"), "--model", TINY_MODEL, env=env)
    assert first.returncode == 0, first.stderr
    assert list(cache.glob("image-towers/*/image-tower.json"))
    photos = make_photos(tmp_path / "b", 4, start_seed=40)
    code = f"""
import json, os, sys
os.environ["CLIPSEARCH_MODEL_CACHE"] = {str(cache)!r}
from clipsearch.config import load_settings
from clipsearch.library import Library
library = Library(load_settings({str(tmp_path / "two")!r}, model={TINY_MODEL!r}))
report = library.crawl([{str(tmp_path / "b")!r}])
hits = library.search(image={str(photos[2])!r}, k=1)
texts = library.search("a photo of a dog", k=2)
print(json.dumps({{"embedded": report.stats.embedded, "top": hits[0].path, "texts": len(texts),
                  "torch": "torch" in sys.modules}}))
"""
    result = run_cli_python(code)
    assert result == {"embedded": 4, "top": str(photos[2]), "texts": 2, "torch": False}
    for tower in ("image-tower/image-tower.json", "text-tower/text-tower.json"):
        assert (tmp_path / "two" / tower).is_file()


def _served_by_a_saved_tower(lazy: LazyEmbedder) -> bool:
    """Whether images are embedded by a saved tower alone (nothing loaded or built for it)."""
    lazy.preprocess  # noqa: B018 - asked, as the crawl asks it
    return not lazy.loaded
