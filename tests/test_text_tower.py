"""The fast text path: the numpy text tower is saved when a library's model is first used,
and a text search in a fresh process uses it without importing torch; a text tower it does
not cover, or a changed checkpoint, is never served by a wrong tower."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import open_clip

from clipsearch.config import load_settings
from clipsearch.library import Library
from clipsearch.model.embed import LazyEmbedder, OpenClipEmbedder
from clipsearch.model.texttower import TextTower

from .conftest import FIXTURES, TINY_MODEL, make_photos


def _variant(tmp_path, name: str, custom_text: bool = False, quick_gelu: bool = False, **text_cfg) -> str:
    config = json.loads(FIXTURES.joinpath("tiny-clip.json").read_text())
    config["text_cfg"].update(text_cfg)
    config["custom_text"], config["quick_gelu"] = custom_text, quick_gelu
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(config))
    return f"{path}:random"


def test_a_text_tower_it_does_not_cover_keeps_the_torch_path(tmp_path):
    spec = _variant(tmp_path, "with-cls", custom_text=True, embed_cls=True)
    lazy = LazyEmbedder(spec, text_tower_dir=tmp_path / "tower", device="cpu")
    vector = lazy.embed_texts(["a red circle"])
    assert not (tmp_path / "tower").exists()
    np.testing.assert_allclose(vector, OpenClipEmbedder(spec, device="cpu").embed_texts(["a red circle"]), atol=1e-6)


def _search_without_torch(home, *args) -> tuple[list, list]:
    """`clipsearch search` in a fresh process; also which heavy modules that process imported."""
    code = ("import sys, json\nfrom clipsearch.cli import cli\ntry:\n    cli(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    code = e.code\nprint(json.dumps(sorted(m for m in ('torch', 'open_clip') if m in sys.modules)), "
            "file=sys.stderr)\nsys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code, "--home", str(home), "search", *args, "--json"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "250"})
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()], json.loads(done.stderr.splitlines()[-1])


def test_a_text_search_after_a_crawl_needs_no_torch_and_finds_the_same(tmp_path, tiny_embedder):
    make_photos(tmp_path / "photos", 24)
    home = tmp_path / "home"
    library = Library(load_settings(home, model=TINY_MODEL, device="cpu"))
    library.crawl([tmp_path / "photos"])
    assert TextTower.load(home / "text-tower").spec == tiny_embedder.spec

    fast, imported = _search_without_torch(home, "a red car in the snow", "-k", "5", "--exact")
    assert imported == []
    expected = Library(load_settings(home), embedder=tiny_embedder).search("a red car in the snow", k=5, exact=True)
    assert [r["path"] for r in fast] == [r.path for r in expected]
    np.testing.assert_allclose([r["score"] for r in fast], [r.score for r in expected], atol=1e-5)

    # The crawl exported the image tower too: an image query needs no torch either ...
    photo = str(tmp_path / "photos" / "photo_0003.jpg")
    hits, imported = _search_without_torch(home, "--image", photo, "-k", "1")
    assert imported == [] and hits[0]["path"] == photo
    # ... and without that export (nor its copy in the model cache) it loads the model, and
    # finds the same.
    shutil.rmtree(home / "image-tower")
    shutil.rmtree(os.path.join(os.environ["CLIPSEARCH_MODEL_CACHE"], "image-towers"))
    hits, imported = _search_without_torch(home, "--image", photo, "-k", "1")
    assert imported == ["open_clip", "torch"] and hits[0]["path"] == photo


def test_a_changed_checkpoint_file_is_not_served_by_an_old_tower(tmp_path):
    import torch

    config = tmp_path / "mine.json"
    config.write_text(FIXTURES.joinpath("tiny-clip.json").read_text())
    checkpoint = tmp_path / "mine.pt"
    open_clip.add_model_config(str(config))
    for seed in (1, 2):
        torch.manual_seed(seed)
        torch.save(open_clip.create_model("mine").state_dict(), checkpoint)
        os.utime(checkpoint, ns=(seed * 10**9, seed * 10**9))
        spec = f"{config}:{checkpoint}"
        lazy = LazyEmbedder(spec, text_tower_dir=tmp_path / "tower", device="cpu")
        lazy.load()  # writes (or rewrites) the tower
        fresh = LazyEmbedder(spec, text_tower_dir=tmp_path / "tower", device="cpu")
        from_tower = fresh.embed_texts(["a dog"])
        assert not fresh.loaded  # served by the tower, not by the torch model
        np.testing.assert_allclose(from_tower, OpenClipEmbedder(spec, device="cpu").embed_texts(["a dog"]), atol=2e-5)
    assert len(list((tmp_path / "tower").glob("*.safetensors"))) == 1
