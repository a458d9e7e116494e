"""Decoding that scales with the machine (issue 12): worker processes, their shared memory
budget and crashes, and the device (nvJPEG) path, whose code runs here on CPU tensors and
is compared with the CPU path on the same photos."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from clipsearch.config import DEFAULT_EXTENSIONS
from clipsearch.ingest import devicedecode
from clipsearch.ingest.decode import DecodeError, load_image
from clipsearch.ingest.pipeline import Pipeline
from clipsearch.ingest.scan import ScanRules
from clipsearch.ingest.source import Walk
from clipsearch.ingest.workers import CRASHED, Decoding, ProcessDecoder, ThreadDecoder, decoder, pick_mode
from clipsearch.records import Preprocess

from .conftest import make_photo, run_cli

PREP = Preprocess(size=64)
MAX_PIXELS = 10**9


def _exif(orientation: int | None = None, camera: bool = False) -> Image.Exif:
    exif = Image.Exif()
    if orientation:
        exif[274] = orientation
    if camera:
        exif[271], exif[272], exif[306] = "Canon", "EOS 5D", "2021:07:04 12:30:00"
        exif.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 24.0), 3: "W", 4: (2.0, 21.0, 3.0)})
    return exif


def _detailed_photo(path: Path, size: tuple[int, int], seed: int) -> Path:
    """Fine detail everywhere (the generated photos are smooth): where libjpeg's reduced
    decoding and a full decode part ways most."""
    rng = np.random.default_rng(seed)
    width, height = size
    coarse = Image.fromarray((rng.random((height // 4, width // 4, 3)) * 255).astype(np.uint8))
    pixels = np.asarray(coarse.resize(size, Image.Resampling.BICUBIC)) + rng.normal(0, 30, (height, width, 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=92)
    return path


def _odd_files(folder: Path) -> dict[str, Path]:
    """Photos of every kind the decoders meet: JPEGs (rotated, grey, with camera data, tiny,
    large), CMYK and progressive JPEGs, PNG, a PNG named .jpg, corrupt and truncated files."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "plain": make_photo(folder / "plain.jpg", 1, size=(400, 300), quality=92),
        "tall": make_photo(folder / "tall.jpg", 2, size=(150, 420), quality=92),
        "camera": make_photo(folder / "camera.jpg", 3, size=(320, 240), exif=_exif(6, camera=True)),
        "tiny": make_photo(folder / "tiny.jpg", 4, size=(40, 30)),
        "large": make_photo(folder / "large.jpeg", 5, size=(1400, 1000), quality=90),
        "detailed": _detailed_photo(folder / "detailed.jpg", (900, 1500), 7),
        "png": make_photo(folder / "shape.png", 6, size=(200, 160)),
        "cmyk": folder / "cmyk.jpg",
        "progressive": make_photo(folder / "progressive.jpg", 8, size=(300, 200), progressive=True),
        "grey": folder / "grey.jpg",
        "png-named-jpg": folder / "really-a-png.jpg",
        "truncated": folder / "truncated.jpg",
        "corrupt": folder / "corrupt.jpg",
    }
    for orientation in range(2, 9):
        files[f"orientation-{orientation}"] = make_photo(folder / f"turned-{orientation}.jpg", 20 + orientation,
                                                         size=(240, 160), exif=_exif(orientation), quality=92)
    Image.open(files["plain"]).convert("CMYK").save(files["cmyk"], "JPEG")
    Image.open(files["plain"]).convert("L").save(files["grey"], "JPEG")
    Image.open(files["png"]).save(files["png-named-jpg"], "PNG")
    data = files["large"].read_bytes()
    files["truncated"].write_bytes(data[: len(data) // 3])
    files["corrupt"].write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(4000))
    return files


@pytest.fixture(scope="module")
def odd(tmp_path_factory) -> dict[str, Path]:
    return _odd_files(tmp_path_factory.mktemp("odd"))


# --- worker processes ---------------------------------------------------------------------
def test_auto_uses_processes_only_where_there_are_cores_for_them():
    assert pick_mode("auto", 2) == "threads"
    assert pick_mode("auto", 16) == "processes"
    assert pick_mode("processes", 2) == "processes" and pick_mode("threads", 16) == "threads"
    assert isinstance(decoder("auto", 2, 1 << 27, PREP, MAX_PIXELS), ThreadDecoder)


def test_worker_processes_decode_exactly_as_the_crawl_thread_does(odd):
    pool = ProcessDecoder(2, 1 << 27, PREP, MAX_PIXELS)
    try:
        for name, path in odd.items():
            try:
                expected, meta = load_image(str(path), PREP, MAX_PIXELS)
            except DecodeError as exc:
                with pytest.raises(DecodeError) as raised:
                    pool.decode(str(path))
                assert str(raised.value) == str(exc), name  # the same words for the user
                continue
            decoded = pool.decode(str(path))
            assert np.array_equal(decoded.pixels, expected), name
            assert decoded.meta == meta, name
            assert decoded.cpu_s > 0
    finally:
        pool.close()


def _crash_on_request(path: str, prep, max_pixels, budget):
    """A decoder that dies (as a segfault would) on files named crash-*."""
    if os.path.basename(path).startswith("crash-"):
        os._exit(11)
    time.sleep(0.05)  # long enough that others are in hand when a worker dies
    return load_image(path, prep, max_pixels, budget)


def test_a_worker_that_dies_fails_its_own_file_and_nothing_else(tmp_path):
    good = [make_photo(tmp_path / f"good-{i}.jpg", i) for i in range(10)]
    bad = make_photo(tmp_path / "crash-me.jpg", 99)
    pool = ProcessDecoder(2, 1 << 27, PREP, MAX_PIXELS, load=_crash_on_request)
    outcomes: dict[str, object] = {}

    def decode(path: Path) -> None:
        try:
            outcomes[path.name] = pool.decode(str(path))
        except DecodeError as exc:
            outcomes[path.name] = str(exc)

    try:
        threads = [threading.Thread(target=decode, args=(p,)) for p in [*good[:5], bad, *good[5:]]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert outcomes["crash-me.jpg"] == CRASHED
        for path in good:
            assert np.array_equal(outcomes[path.name].pixels, load_image(str(path), PREP, MAX_PIXELS)[0])
        assert pool.restarts >= 1
        assert pool.decode(str(good[0])).pixels.shape == (64, 64, 3)  # and it goes on
    finally:
        pool.close()


def _hold_and_log(path: str, prep, max_pixels, budget):
    """A decode holding as much of the budget as the file's name says, logging when."""
    nbytes = int(os.path.basename(path).split("-")[1])
    with budget.hold(nbytes):
        start = time.time()
        time.sleep(0.3)
        end = time.time()
    with open(path, "a", encoding="utf-8") as log:
        log.write(json.dumps([start, end]))
    return np.zeros((1, 1, 3), np.uint8), None


def test_the_memory_budget_holds_across_worker_processes(tmp_path):
    large = [tmp_path / f"large-{60}-{i}" for i in range(3)]
    small = [tmp_path / f"small-{10}-{i}" for i in range(3)]
    for path in [*large, *small]:
        path.write_text("")
    warm = [tmp_path / f"warm-0-{i}" for i in range(6)]
    for path in warm:
        path.write_text("")
    pool = ProcessDecoder(6, 100, PREP, MAX_PIXELS, load=_hold_and_log)
    try:
        for batch in (warm, [*large, *small]):  # all six workers started first, then the test
            threads = [threading.Thread(target=pool.decode, args=(str(p),)) for p in batch]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
    finally:
        pool.close()
    spans = sorted(json.loads(p.read_text()) for p in large)
    for (_, first_end), (second_start, _) in zip(spans, spans[1:]):
        assert second_start >= first_end  # 60 + 60 > 100: never side by side
    small_spans = [json.loads(p.read_text()) for p in small]
    assert max(s for s, _ in small_spans) < min(e for _, e in small_spans)  # 10s fit beside each other


def _crawl(folder: Path, db: Path, embedder, decode_in: str = "auto", device_decode: str | None = "auto"):
    """Crawl folder into a new catalog: (stats, {path: (vector, row)} of the indexed files,
    {path: error} of the failed ones)."""
    from clipsearch.catalog.store import Store

    store = Store(db)
    try:
        store.add_root(str(folder))
        root = store.roots()[0]
        decoding = Decoding(2, MAX_PIXELS, decode_in, device=device_decode)
        stats = Pipeline(store, embedder, [Walk(root.id, root.path, ScanRules(DEFAULT_EXTENSIONS))], decoding).run()
        ids, vectors = next(store.iter_live_vectors(embedder.dim))
        rows = store.rows(ids.tolist())
        indexed = {rows[i].path: (vector, rows[i]) for i, vector in zip(ids.tolist(), vectors)}
        failed = {row.path: row.error for row in store.failed_files()}
    finally:
        store.close()
    return stats, indexed, failed


def test_a_crawl_in_worker_processes_indexes_what_threads_do(odd, tmp_path, embedder):
    _, by_threads, failed = _crawl(odd["plain"].parent, tmp_path / "threads.db", embedder,
                                   decode_in="threads", device_decode=None)
    stats, by_processes, failed_too = _crawl(odd["plain"].parent, tmp_path / "processes.db", embedder,
                                             decode_in="processes", device_decode=None)
    assert {Path(p).name for p in failed} == {"truncated.jpg", "corrupt.jpg"}
    assert failed_too == failed
    assert by_processes.keys() == by_threads.keys()
    for path, (vector, row) in by_threads.items():
        np.testing.assert_allclose(by_processes[path][0], vector, atol=1e-5)
        assert by_processes[path][1].extra == row.extra
    # Worker processes started outside the log's redirection of descriptor 2 would hold its
    # pipe open: the crawl would wait 5 s at its end and leave the pipe's reader behind.
    assert not [t for t in threading.enumerate() if t.name == "clipsearch-chatter"]
    assert stats.embedded + stats.moved == len(by_threads)  # really-a-png.jpg has shape.png's bytes


# --- the device path, run on CPU tensors ---------------------------------------------------
@pytest.mark.parametrize("orientation", range(1, 9))
def test_device_images_are_turned_upright_exactly_as_pillow_turns_them(orientation):
    import torch

    stored = (np.random.default_rng(orientation).random((5, 7, 3)) * 255).astype(np.uint8)
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[274] = orientation
    image.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(image))
    turned = devicedecode.upright(torch.from_numpy(stored).permute(2, 0, 1), orientation)
    assert np.array_equal(turned.permute(1, 2, 0).numpy(), expected)


def test_only_plain_jpegs_go_to_the_device(odd):
    def header(name: str):
        return devicedecode.read_jpeg(bytearray(odd[name].read_bytes()), MAX_PIXELS)

    for name in ("plain", "grey", "tiny", "camera", "orientation-6"):
        assert header(name) is not None, name
    # nvJPEG decodes some files Pillow refuses as truncated: those stay on the CPU path.
    for name in ("cmyk", "progressive", "png", "png-named-jpg", "corrupt", "truncated"):
        assert header(name) is None, name
    assert devicedecode.read_jpeg(bytearray(odd["large"].read_bytes()), 1_000_000) is None  # over max_pixels


@pytest.mark.parametrize("prep", [Preprocess(64), Preprocess(64, "squash"), Preprocess(96, "longest", fill_color=128),
                                  Preprocess(64, interpolation="bilinear")])
def test_the_device_path_gives_the_model_what_the_cpu_path_gives_it(odd, prep):
    names = [n for n in odd if devicedecode.read_jpeg(bytearray(odd[n].read_bytes()), MAX_PIXELS) is not None]
    assert len(names) >= 12
    jpegs = [devicedecode.read_jpeg(bytearray(odd[n].read_bytes()), MAX_PIXELS) for n in names]
    outputs = devicedecode.decode_jpegs(jpegs, prep, "cpu")
    for name, jpeg, out in zip(names, jpegs, outputs):
        expected, meta = load_image(str(odd[name]), prep, MAX_PIXELS)
        assert out is not None and out.shape == expected.shape == (prep.size, prep.size, 3), name
        difference = np.abs(out.astype(np.int16) - expected.astype(np.int16))
        # Both resize with Pillow's antialiased filters; what is left is libjpeg's scaled
        # IDCT against a block mean, and rounding (levels of 0-255).
        assert difference.mean() < 1.5, (name, difference.mean())
        assert np.percentile(difference, 99) <= 12, name
        assert jpeg.meta == meta, name  # the same size (upright), date, camera and place


def test_a_file_the_device_decoder_refuses_is_told_apart_from_the_rest_of_its_batch(odd):
    plain, tall = (devicedecode.read_jpeg(bytearray(odd[n].read_bytes()), MAX_PIXELS) for n in ("plain", "tall"))
    assert plain is not None and tall is not None
    data = odd["large"].read_bytes()
    cut = devicedecode.JpegInput(bytearray(data[: len(data) // 3]), plain.meta, 1, plain.pixels)  # past the check
    outputs = devicedecode.decode_jpegs([plain, cut, tall], PREP, "cpu")
    assert outputs[1] is None
    assert outputs[0] is not None and outputs[2] is not None


def test_a_crawl_decoding_jpegs_on_a_device_indexes_what_the_cpu_path_does(odd, tmp_path, embedder):
    _, by_cpu, failed = _crawl(odd["plain"].parent, tmp_path / "cpu.db", embedder, device_decode=None)
    stats, by_device, failed_too = _crawl(odd["plain"].parent, tmp_path / "device.db", embedder,
                                          device_decode="cpu")
    # Plain JPEGs went to the device; CMYK, progressive, PNG and the files it refused did not.
    plain = [n for n in odd if n not in ("cmyk", "progressive", "png", "png-named-jpg", "corrupt", "truncated")]
    assert stats.device_decoded == len(plain)
    assert failed_too == failed  # refused by the device, then failed on the CPU with its words
    assert by_device.keys() == by_cpu.keys()
    for path, (vector, row) in by_cpu.items():
        assert float(np.dot(vector, by_device[path][0])) > 0.99, path
        assert (by_device[path][1].width, by_device[path][1].height, by_device[path][1].taken_at) == \
            (row.width, row.height, row.taken_at)
        assert by_device[path][1].extra == row.extra


def test_chatter_of_worker_processes_reaches_the_log(tmp_path, monkeypatch):
    """A TIFF that makes libtiff write to descriptor 2, decoded in a worker process."""
    from .test_damage import _tiff_with_tag

    folder = tmp_path / "odd"
    folder.mkdir()
    for i in range(3):
        _tiff_with_tag(folder / f"webp-{i}.tif", 259, 50001, seed=i, compression="tiff_lzw")
        make_photo(folder / f"plain-{i}.jpg", i)
    home = tmp_path / "home"
    monkeypatch.setenv("CLIPSEARCH_DECODE_IN", "processes")
    from .conftest import TINY_MODEL

    result = run_cli("--home", str(home), "crawl", str(folder), "--model", TINY_MODEL)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
    assert "image decoder warnings" in result.stdout
    assert "WEBP compression" in (home / "clipsearch.log").read_text(encoding="utf-8")


def _hang(path: str, prep, max_pixels, budget):
    """A decoder stuck on a hostile file (it says so first, beside the file)."""
    Path(path + ".in-hand").touch()
    time.sleep(600)


def test_stopping_a_crawl_ends_worker_processes_stuck_in_a_decode(tmp_path):
    photo = make_photo(tmp_path / "stuck.jpg", 1)
    pool = ProcessDecoder(2, 1 << 27, PREP, MAX_PIXELS, load=_hang)
    caller = threading.Thread(target=lambda: _swallow(pool.decode, str(photo)), daemon=True)
    caller.start()
    deadline = time.monotonic() + 60
    while not Path(str(photo) + ".in-hand").exists():  # the decode is in hand
        assert time.monotonic() < deadline, "the worker never took the file"
        time.sleep(0.05)
    processes = list(pool._pool._processes.values())
    assert processes and all(p.is_alive() for p in processes)
    pool.close(wait=False)  # Ctrl-C, a failed crawl
    deadline = time.monotonic() + 30
    while not all(_ended(process) for process in processes):
        assert time.monotonic() < deadline, "a worker process outlived the crawl"
        time.sleep(0.05)


def _ended(process) -> bool:
    """Gone, or a zombie: the executor's own thread may reap a killed worker before this
    process's handle sees its exit status."""
    if not process.is_alive():
        return True
    try:
        with open(f"/proc/{process.pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _swallow(function, *args):
    try:
        function(*args)
    except Exception:  # noqa: BLE001 - the caller of a decode being stopped sees an error
        pass


def test_where_worker_processes_cannot_start_threads_decode_instead(tmp_path):
    """Workers that die before they can answer (here: a sitecustomize that ends every
    spawned child, as a broken environment would): the files must decode in threads, not be
    recorded as having crashed the decoder."""
    photos = [make_photo(tmp_path / f"p{i}.jpg", i) for i in range(3)]
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(
        "import sys\nif 'spawn_main' in ' '.join(sys.orig_argv):\n    raise SystemExit(3)\n", encoding="utf-8")
    script = tmp_path / "decode.py"
    script.write_text(
        "from clipsearch.records import Preprocess\n"
        "from clipsearch.ingest.workers import ProcessDecoder\n"
        "if __name__ == '__main__':\n"
        "    pool = ProcessDecoder(2, 1 << 27, Preprocess(64), 10**9)\n"
        f"    shapes = [pool.decode(p).pixels.shape for p in {[str(p) for p in photos]!r}]\n"
        "    print(pool.fell_back, shapes)\n"
        "    pool.close()\n", encoding="utf-8")
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=root,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(root)])})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "True [(64, 64, 3), (64, 64, 3), (64, 64, 3)]"
    assert "decode worker processes could not start" in result.stderr  # said, once


def test_a_device_that_refuses_whole_batches_is_left_for_the_cpu(odd, tmp_path, embedder, monkeypatch, caplog):
    from clipsearch.ingest import pipeline

    calls = []
    queued = threading.Semaphore(0)  # released for each JPEG a reader sends towards the device
    read_jpeg = pipeline.read_jpeg

    def counted(data, max_pixels):
        jpeg = read_jpeg(data, max_pixels)
        if jpeg is not None:
            queued.release()
        return jpeg

    def refuse_all(items, prep, device):
        calls.append(len(items))
        if len(calls) == 1:
            # The device holds its first batch until a reader has sent it one more JPEG (the
            # rest go to the CPU): a second batch waits, however loaded the machine.
            for _ in range(len(items) + 1):
                assert queued.acquire(timeout=60), "no more JPEGs came for the device"
        return [None] * len(items)

    import shutil

    folder = tmp_path / "photos"  # the odd files (a shared folder: copied) and more JPEGs
    shutil.copytree(odd["plain"].parent, folder)
    for i in range(12):  # enough JPEGs for several batches of 4
        make_photo(folder / "more" / f"extra_{i:02d}.jpg", 500 + i)
    monkeypatch.setattr(pipeline, "read_jpeg", counted)
    monkeypatch.setattr(pipeline, "decode_jpegs", refuse_all)
    monkeypatch.setattr(pipeline, "BATCH_FILES", 4)  # several batches from this folder
    stats, by_device, failed = _crawl(folder, tmp_path / "refused.db", embedder, device_decode="cpu")
    _, by_cpu, failed_too = _crawl(folder, tmp_path / "cpu.db", embedder, device_decode=None)
    assert stats.device_decoded == 0 and len(calls) == 2  # two refused batches, then the CPU alone
    assert by_device.keys() == by_cpu.keys() and failed == failed_too
    assert "refused two whole batches" in caplog.text
