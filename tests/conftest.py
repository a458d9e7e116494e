"""Shared fixtures: a temporary library home, a tiny real open_clip model, generated photos.

The model is the one thing that is small: an open_clip model built from
tests/fixtures/tiny-clip.json with seeded random weights, loaded through the same code
path users take (`--model path/to/config.json:random`).

Tests of what search finds use SHAPES_MODEL instead: a tiny CLIP trained by
scripts/train_tiny_clip.py on labelled shape photos (tests/shapes.py), loaded as a user's
local checkpoint, with `shape_photos` / `shape_library` (photos of a seed it never saw).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsearch.config import load_settings
from clipsearch.library import Library

from .shapes import TEST_SEED, ShapePhoto, make_shape_folder

FIXTURES = Path(__file__).parent / "fixtures"
TINY_MODEL = f"{FIXTURES / 'tiny-clip.json'}:random"
# Trained to tell 5 colours and 4 shapes apart (scripts/train_tiny_clip.py retrains it).
SHAPES_CONFIG, SHAPES_CHECKPOINT = FIXTURES / "shapes-clip.json", FIXTURES / "shapes-clip.pt"
SHAPES_MODEL = f"{SHAPES_CONFIG}:{SHAPES_CHECKPOINT}"
SHAPES_PER_COMBO = 10


# Every test's crawls leave the words in photos unread (the pass that reads them costs more
# than the tiny model's crawl): test_words.py reads them, with the setting as users have it.
# The detector the reader quantizes (~10 s, once) is shared by every test and run.
TEST_SETTINGS = {"CLIPSEARCH_READ_TEXT": "false",
                 "CLIPSEARCH_OCR_CACHE": os.path.join(tempfile.gettempdir(), f"clipsearch-test-ocr-{os.getuid()}")}


@contextmanager
def clean_environment(model_cache: Path) -> Iterator[None]:
    """For fixtures wider than a test, which run outside _clean_environment: no CLIPSEARCH_*
    setting of the user's, no network, and a model cache of their own."""
    with pytest.MonkeyPatch.context() as env:
        for name in list(os.environ):
            if name.startswith("CLIPSEARCH_"):
                env.delenv(name)
        env.setenv("HF_HUB_OFFLINE", "1")
        env.setenv("CLIPSEARCH_MODEL_CACHE", str(model_cache))
        for name, value in TEST_SETTINGS.items():
            env.setenv(name, value)
        yield


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch, tmp_path):
    """No test sees the user's library or CLIPSEARCH_* settings."""
    for name in list(os.environ):
        if name.startswith("CLIPSEARCH_"):
            monkeypatch.delenv(name)
    for name, value in TEST_SETTINGS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CLIPSEARCH_HOME", str(tmp_path / "home"))
    # Exported image towers are shared through the model cache: keep tests out of the user's.
    monkeypatch.setenv("CLIPSEARCH_MODEL_CACHE", str(tmp_path / "model-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


class CountingEmbedder:
    """The real tiny model, counting what it is asked to embed (re-crawl tests count batches)."""

    def __init__(self, inner):
        self.inner = inner
        self.spec, self.dim, self.batch_size = inner.spec, inner.dim, inner.batch_size
        self.preprocess = inner.preprocess
        self.batches = 0
        self.images = 0

    def embed_images(self, pixels):
        self.batches += 1
        self.images += len(pixels)
        return self.inner.embed_images(pixels)

    def embed_texts(self, texts):
        return self.inner.embed_texts(texts)


@pytest.fixture(scope="session")
def tiny_embedder():
    from clipsearch.model.embed import OpenClipEmbedder

    return OpenClipEmbedder(TINY_MODEL, device="cpu", batch_size=8)


@pytest.fixture
def embedder(tiny_embedder):
    return CountingEmbedder(tiny_embedder)


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def make_library(home, embedder):
    """make_library(**settings) -> a Library in the test's home using the counting tiny model."""

    def make(**flags) -> Library:
        return Library(load_settings(home, **flags), embedder=embedder)

    return make


@pytest.fixture
def library(make_library) -> Library:
    return make_library()


def make_photo(path: Path, seed: int, size=(96, 72), fmt: str | None = None, **save) -> Path:
    """A small, distinct photo-like image: smooth colour blobs plus noise, so every seed differs."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), dtype=np.float64)
    for _ in range(4):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(8, 40)
        colour = rng.uniform(0, 255, 3)
        mask = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None]
        img = img * (1 - mask) + colour * mask
    img += rng.normal(0, 12, img.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, fmt, **save)
    return path


def make_photos(folder: Path, count: int, start_seed: int = 0, suffix: str = ".jpg") -> list[Path]:
    return [make_photo(folder / f"photo_{i:04d}{suffix}", start_seed + i) for i in range(count)]


def run_cli(*args: str, env: dict | None = None, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """Run the real `clipsearch` command in a fresh process."""
    full_env = {**os.environ, "COLUMNS": "250", **(env or {})}  # wide enough that rich does not wrap
    return subprocess.run([sys.executable, "-m", "clipsearch.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, **kwargs)


@pytest.fixture(scope="session")
def shape_photos(tmp_path_factory) -> list[ShapePhoto]:
    """SHAPES_PER_COMBO labelled photos (JPEG and PNG, red-circle-0007.jpg ...) of every colour
    and shape in tests/shapes.py, drawn with a seed the shapes model was not trained on.
    Shared by the session: do not change the files."""
    return make_shape_folder(tmp_path_factory.mktemp("shapes"), SHAPES_PER_COMBO, TEST_SEED)


@dataclass(frozen=True)
class ShapeLibrary:
    home: Path
    folder: Path
    photos: list[ShapePhoto]


@pytest.fixture(scope="session")
def shape_library(tmp_path_factory, shape_photos) -> ShapeLibrary:
    """A library home in which `clipsearch crawl --model SHAPES_MODEL` indexed shape_photos.
    Shared by the session: search it, do not crawl or change it."""
    home = tmp_path_factory.mktemp("shapes-home")
    folder = shape_photos[0].path.parent
    with clean_environment(home / "model-cache"):
        result = run_cli("--home", str(home), "crawl", str(folder), "--model", SHAPES_MODEL, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    return ShapeLibrary(home, folder, shape_photos)
