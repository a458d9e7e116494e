"""Without PyTorch: a crawl (its towers built from safetensors), a text query and an image
query, in a fresh process where torch and open_clip cannot even be imported; a sigmoid
model's scores are match probabilities, with an absolute "nothing close"; queries in other
languages go through SigLIP's tokenizer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import make_photo, make_photos
from .test_tokenizer import CONFIGS, _gemma_like
from .towers import FIXTURES, build

# Run before anything else in the child: torch, torchvision and open_clip are not there.
_BLOCK = """
import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "open_clip"):
            raise ImportError(f"{name} is not installed (the test's torch-free install)")
sys.meta_path.insert(0, _NoTorch())
"""


def _sigmoid_config(vocab: int) -> dict:
    """A tiny model laid out like SigLIP 2 (its text side: a hub tokenizer, bidirectional,
    last-token pooling, biased projection, tanh GELU; a logit bias), with a ViT image side."""
    config = json.loads((FIXTURES / "tiny-clip.json").read_text())
    config["init_logit_bias"] = -20  # random weights: every photo surely below a 1% match
    config["custom_text"] = True
    config["text_cfg"] = {"context_length": 16, "vocab_size": vocab, "width": 32, "heads": 2, "layers": 1,
                          "hf_tokenizer_name": "the-tokenizer-beside-the-weights",
                          "tokenizer_kwargs": {"clean": "canonicalize"}, "no_causal_mask": True, "proj_bias": True,
                          "pool_type": "last", "norm_kwargs": {"eps": 1e-6}, "act_kwargs": {"approximate": "tanh"}}
    return config


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    """Model specs of safetensors checkpoints with their config: `clip` (the tiny test model)
    and `sigmoid` (tiny, SigLIP-like, its tokenizer.json beside the weights)."""
    root = tmp_path_factory.mktemp("checkpoints")
    clip = build("tiny-clip", root / "clip")
    _gemma_like(root / "sigmoid", CONFIGS["gemma"])
    vocab = len(json.loads((root / "sigmoid" / "tokenizer.json").read_text())["model"]["vocab"]) + 8
    sigmoid = build("sigmoid", root / "sigmoid", _sigmoid_config(vocab))
    return {name: f"{built.folder / 'open_clip_config.json'}:{built.folder / 'open_clip_model.safetensors'}"
            for name, built in (("clip", clip), ("sigmoid", sigmoid))}


def _without_torch(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _BLOCK + code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("model", ["clip", "sigmoid"])
def test_a_crawl_and_text_and_image_queries_need_no_torch_at_all(checkpoints, tmp_path, model):
    photos = make_photos(tmp_path / "photos", 10)
    code = f"""
import json, sys
from clipsearch.config import load_settings
from clipsearch.library import Library
library = Library(load_settings({str(tmp_path / "home")!r}, model={checkpoints[model]!r}))
report = library.crawl([{str(tmp_path / "photos")!r}])
texts = [len(library.search(q, k=3)) for q in ("a photo of a dog", "chien sur la plage", "海辺の犬", "собака")]
hits = library.search(image={str(photos[4])!r}, k=2)
print(json.dumps({{"embedded": report.stats.embedded, "texts": texts, "top": hits[0].path,
                  "score": hits[0].score, "torch": [m for m in ("torch", "open_clip") if m in sys.modules]}}))
"""
    result = _without_torch(code)
    assert result["embedded"] == 10 and result["texts"] == [3, 3, 3, 3]
    assert result["top"] == str(photos[4]) and result["score"] == pytest.approx(1.0, abs=1e-4)
    assert result["torch"] == []
    home = tmp_path / "home"
    assert (home / "image-tower" / "image-tower.json").is_file() and (home / "text-tower" / "text-tower.json").is_file()
    # A later text query, in a process of its own, loads the saved towers: for a hub tokenizer
    # its compiled form, not the `tokenizers` package (0.6 s and 180 MB for Gemma's).
    later = _without_torch(f"""
import json, sys
from clipsearch.config import load_settings
from clipsearch.library import Library
library = Library(load_settings({str(home)!r}))
found = [len(library.search(q, k=3)) for q in ("chien sur la plage", "海辺の犬")]
print(json.dumps({{"found": found, "loaded": [m for m in ("torch", "open_clip", "tokenizers") if m in sys.modules]}}))
""")
    assert later == {"found": [3, 3], "loaded": []}


def test_a_sigmoid_models_scores_are_match_probabilities_and_nothing_close_is_absolute(checkpoints, tmp_path):
    from clipsearch.config import load_settings
    from clipsearch.library import Library
    from clipsearch.planner import MATCH_FLOOR

    photos = make_photos(tmp_path / "photos", 12)
    sigmoid = Library(load_settings(tmp_path / "sigmoid", model=checkpoints["sigmoid"]))
    sigmoid.crawl([tmp_path / "photos"])
    results = sigmoid.search("a photo of a dog", k=12)
    scores = [r.score for r in results]
    assert all(0 <= s <= 1 for s in scores) and scores == sorted(scores, reverse=True)
    # Random weights and a bias of -10: every photo is very unlikely to match any words.
    assert max(scores) < MATCH_FLOOR
    assert sigmoid.judge("a photo of a dog", results) == MATCH_FLOOR
    assert sigmoid.judge("a photo of a dog min:0", results) is None  # asked to see them anyway
    assert sigmoid.search("a photo of a dog min:0.5", k=12) == []  # min: is a probability too
    own = sigmoid.search(image=photos[3], k=1)[0]
    assert own.score == pytest.approx(1.0, abs=1e-4)  # an image query keeps its cosine
    assert sigmoid.judge(None, [own], like=own.file_id) is None


def test_the_web_page_says_nothing_close_instead_of_showing_noise(checkpoints, tmp_path):
    from starlette.testclient import TestClient

    from clipsearch.config import load_settings
    from clipsearch.library import Library
    from clipsearch.web.app import create_app

    make_photos(tmp_path / "photos", 6)
    library = Library(load_settings(tmp_path / "home", model=checkpoints["sigmoid"]))
    library.crawl([tmp_path / "photos"])
    client = TestClient(create_app(library), base_url="http://127.0.0.1:8765")
    page = client.get("/results", params={"q": "a dog on the beach"})
    assert page.status_code == 200 and "Nothing close" in page.text and 'class="card"' not in page.text
    anyway = client.get("/results", params={"q": "a dog on the beach min:-1"})
    assert "Nothing close" not in anyway.text and anyway.text.count('class="card"') == 6
    assert client.get("/api/search", params={"q": "a dog"}).json()["nothing_close"] == pytest.approx(0.01)


def test_a_model_only_torch_can_read_says_how_to_get_it(tmp_path):
    photo = make_photo(tmp_path / "photos" / "a.jpg", 1)
    spec = f"{FIXTURES / 'tiny-clip.json'}:random"
    code = f"""
import json
from clipsearch.cli import cli
import click.testing
result = click.testing.CliRunner().invoke(cli, ["--home", {str(tmp_path / "home")!r}, "crawl",
                                                {str(photo.parent)!r}, "--model", {spec!r}])
print(json.dumps({{"code": result.exit_code, "error": result.stderr}}))
"""
    result = _without_torch(code)
    assert result["code"] == 1 and "needs PyTorch" in result["error"] and "pip install '.[gpu]'" in result["error"]
    assert "Traceback" not in result["error"] and len(result["error"].strip().splitlines()) == 1


def test_the_merges_file_ships_inside_the_package():
    from clipsearch.model.tokenizer import merges_file

    assert Path(merges_file()).is_file() and "site-packages/open_clip" not in merges_file()


def test_a_library_of_the_old_default_keeps_its_model_and_works_offline_without_torch(tmp_path):
    """A library crawled with ViT-B-32-256 (DataComp), the default before SigLIP 2: its towers
    saved (here from random weights of that architecture), the hub out of reach. It keeps its
    model, crawls and answers without torch; the new default chooses only for new libraries."""
    from clipsearch.model import imagetower, texttower
    from clipsearch.model.build import Checkpoint

    built = build("ViT-B-32-256", tmp_path / "weights")
    spec, home = "ViT-B-32-256:datacomp_s34b_b86k", tmp_path / "home"
    texttower.save(home / "text-tower", spec, "", built.weights, built.config.model_cfg)
    checkpoint = Checkpoint(built.weights, built.config.model_cfg, built.config.preprocess_cfg)
    imagetower.publish(imagetower.build(home / "image-tower", spec, "", checkpoint))
    photos = make_photos(tmp_path / "photos", 4)
    code = f"""
import json, sys
from clipsearch.config import load_settings
from clipsearch.library import Library
old = Library(load_settings({str(home)!r}, model="datacomp"))
first = old.crawl([{str(tmp_path / "photos")!r}])
later = Library(load_settings({str(home)!r}))  # the default setting is SigLIP 2 now
make = __import__("tests.conftest", fromlist=["make_photo"]).make_photo
make(__import__("pathlib").Path({str(tmp_path / "photos" / "new.jpg")!r}), 99)
second = later.crawl()
hits = later.search(image={str(photos[2])!r}, k=1)
print(json.dumps({{"first": first.stats.embedded, "second": second.stats.embedded, "model": later.status().model,
                  "top": hits[0].path, "texts": len(later.search("a dog", k=3)),
                  "torch": [m for m in ("torch", "open_clip") if m in sys.modules]}}))
"""
    result = _without_torch(code)
    assert result == {"first": 4, "second": 1, "model": spec, "top": str(photos[2]), "texts": 3, "torch": []}


def test_a_gpu_without_pytorch_is_used_as_a_cpu_and_the_way_to_gpu_speed_is_said_once(checkpoints, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\nexit 0\n")  # what tells a machine with an NVIDIA GPU
    (bin_dir / "nvidia-smi").chmod(0o755)
    make_photos(tmp_path / "photos", 3)
    code = f"""
import json, os
os.environ["PATH"] = {str(bin_dir)!r} + os.pathsep + os.environ["PATH"]
import click.testing
from clipsearch.cli import cli
runner = click.testing.CliRunner()
first = runner.invoke(cli, ["--home", {str(tmp_path / "home")!r}, "crawl", {str(tmp_path / "photos")!r},
                            "--model", {checkpoints["clip"]!r}])
print(json.dumps({{"code": first.exit_code, "stderr": first.stderr, "stdout": first.stdout}}))
"""
    result = _without_torch(code)
    assert result["code"] == 0, result["stderr"]
    assert result["stderr"].count("pip install '.[gpu]'") == 1
    assert "3" in result["stdout"] and "embedded" in result["stdout"]
