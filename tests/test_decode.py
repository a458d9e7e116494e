"""Decoding: the model sees what open_clip's own transforms would give it; metadata is read."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from clipsearch.ingest.decode import DecodeError, MemoryBudget, file_hash, load_image
from clipsearch.records import Preprocess

from .conftest import make_photo


def _open_clip_input(path, tiny_embedder) -> np.ndarray:
    """open_clip's own preprocessing, as the model's reference."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    cfg = PreprocessCfg(**tiny_embedder._model.visual.preprocess_cfg)
    return image_transform_v2(cfg, is_train=False)(Image.open(path).convert("RGB")).numpy()


@pytest.mark.parametrize("size", [(200, 120), (90, 160), (64, 64)])
def test_preprocessing_matches_open_clip_transforms(tiny_embedder, tmp_path, size):
    path = make_photo(tmp_path / "p.png", 4, size=size)
    pixels, _ = load_image(str(path), tiny_embedder.preprocess, 10**9)
    ours = (torch.from_numpy(pixels.copy())[None].permute(0, 3, 1, 2).float() * tiny_embedder._scale
            + tiny_embedder._shift)[0].numpy()
    reference = _open_clip_input(path, tiny_embedder)
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, atol=1e-4)


def test_jpeg_draft_decoding_stays_close_to_a_full_decode(tmp_path):
    path = make_photo(tmp_path / "big.jpg", 8, size=(1600, 1200), quality=95)
    prep = Preprocess(size=224)
    drafted, meta = load_image(str(path), prep, 10**9)
    full = Image.open(path).convert("RGB").resize((298, 224), Image.Resampling.BICUBIC)
    left = (298 - 224) // 2
    reference = np.asarray(full.crop((left, 0, left + 224, 224)), dtype=np.float64)
    assert (meta.width, meta.height) == (1600, 1200)
    assert np.abs(drafted.astype(np.float64) - reference).mean() < 4.0


@pytest.mark.parametrize("mode", ["shortest", "squash", "longest"])
def test_a_large_image_is_reduced_first_and_stays_close_to_a_full_resample(tmp_path, mode):
    path = make_photo(tmp_path / "big.png", 9, size=(3000, 2000))
    prep = Preprocess(size=224, resize_mode=mode)
    ours, _ = load_image(str(path), prep, 10**9)
    full = Image.open(path).convert("RGB")
    if mode == "squash":
        reference = full.resize((224, 224), Image.Resampling.BICUBIC)
    elif mode == "longest":
        reference = Image.new("RGB", (224, 224))
        reference.paste(full.resize((224, 149), Image.Resampling.BICUBIC), (0, (224 - 149) // 2))
    else:
        reference = full.resize((336, 224), Image.Resampling.BICUBIC).crop((56, 0, 280, 224))
    difference = np.abs(ours.astype(np.float64) - np.asarray(reference, dtype=np.float64))
    assert ours.shape == (224, 224, 3) and difference.mean() < 1.0


def test_exif_orientation_is_applied(tmp_path):
    # A wide image whose EXIF says "rotate 90": the model must see it tall.
    img = Image.new("RGB", (200, 100), "black")
    img.paste((255, 255, 255), (0, 0, 100, 100))  # left half white
    exif = Image.Exif()
    exif[274] = 6  # rotate 90 CW to display
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=95)
    pixels, meta = load_image(str(path), Preprocess(size=50, resize_mode="squash"), 10**9)
    assert (meta.width, meta.height) == (100, 200)
    top, bottom = pixels[:20].mean(), pixels[-20:].mean()
    assert top > 200 and bottom < 50  # the white left half is now on top


def test_exif_date_camera_and_gps_are_read(tmp_path):
    exif = Image.Exif()
    exif[271], exif[272] = "Canon", "EOS 5D"
    exif.get_ifd(0x8769)[36867] = "2019:07:14 16:20:05"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (48.0, 51.0, 30.0)
    gps[3], gps[4] = "W", (2.0, 21.0, 0.0)
    path = tmp_path / "exif.jpg"
    make_photo(path, 1, exif=exif)
    _, meta = load_image(str(path), Preprocess(), 10**9)
    assert meta.taken_at == "2019-07-14T16:20:05"
    assert (meta.camera_make, meta.camera_model) == ("Canon", "EOS 5D")
    assert meta.gps_lat == pytest.approx(48.858333, abs=1e-5)
    assert meta.gps_lon == pytest.approx(-2.35, abs=1e-5)


def test_the_pixel_limit_refuses_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (3000, 2000)).save(path)
    with pytest.raises(DecodeError, match="over the 5 MP limit"):
        load_image(str(path), Preprocess(), 5_000_000)


def test_equal_bytes_give_equal_hashes_and_different_bytes_do_not(tmp_path):
    a = make_photo(tmp_path / "a.jpg", 1)
    b = tmp_path / "b.jpg"
    b.write_bytes(a.read_bytes())
    c = make_photo(tmp_path / "c.jpg", 2)
    assert file_hash(str(a)) == file_hash(str(b)) != file_hash(str(c))


def test_the_decode_budget_keeps_large_decodes_apart_and_lets_small_ones_by():
    budget = MemoryBudget(100)
    events: list[str] = []
    a_in, release_a = threading.Event(), threading.Event()

    def decode(name: str, size: int, entered: threading.Event | None = None, release: threading.Event | None = None):
        with budget.hold(size):
            events.append(f"{name} in")
            if entered:
                entered.set()
            if release:
                release.wait(5)
            events.append(f"{name} out")

    a = threading.Thread(target=decode, args=("a", 60, a_in, release_a))
    a.start()
    assert a_in.wait(5)
    b = threading.Thread(target=decode, args=("b", 60))  # 60 + 60 > 100: waits for a
    b.start()
    b.join(0.3)
    assert b.is_alive()
    decode("small", 30)  # fits beside a
    assert events == ["a in", "small in", "small out"]
    release_a.set()
    a.join(5)
    b.join(5)
    assert events[3:] == ["a out", "b in", "b out"]
    decode("huge", 150)  # over the limit alone: it runs, since nothing else holds anything
    assert events[-2:] == ["huge in", "huge out"]


def test_the_decode_budget_grows_with_the_workers_and_the_memory_there_is():
    from clipsearch.ingest.decode import BUDGET_FLOOR, available_memory, decode_budget

    mb, gb = 1 << 20, 1 << 30
    assert decode_budget(2, available=128 * gb) == BUDGET_FLOOR == 128 * mb  # a 2-core laptop: as measured
    assert decode_budget(16, available=128 * gb) == 14 * 160 * mb  # a 16-core workstation: 14 large decodes more
    assert decode_budget(16, available=4 * gb) == 512 * mb  # never more than an eighth of what is free
    assert decode_budget(16, available=256 * mb) == BUDGET_FLOOR  # nor less than the floor
    assert available_memory() is None or available_memory() > 0


def test_a_crawl_with_a_tiny_decode_budget_decodes_one_at_a_time_and_indexes_everything(make_library, tmp_path):
    from .conftest import make_photos

    library = make_library(decode_memory_mb=1, workers=4)
    make_photos(tmp_path / "photos", 6)
    report = library.crawl([tmp_path / "photos"])
    assert report.stats.embedded == 6 and report.stats.failed == 0
