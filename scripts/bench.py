"""Measure clipsearch on this machine: crawl, queries, the index, re-crawls, memory.

    python scripts/bench.py                      # everything below, with generated data
    python scripts/bench.py crawl [FOLDER]       # crawl throughput against the machine's limit
    python scripts/bench.py query                # warm and cold query latency at 100k vectors
    python scripts/bench.py index [--count N]    # forest recall@10, query time, build, size
    python scripts/bench.py recrawl              # unchanged re-crawl of a 100k-file tree
    python scripts/bench.py towers               # the image tower: torch vs onnxruntime per image
    python scripts/bench.py web                  # the gallery: results, thumbnails, a ZIP
    python scripts/bench.py batch                # clipsearch batch against a search per process, 100k
    python scripts/bench.py vectors              # export and import of 1M vectors: time, peak memory
    python scripts/bench.py formats [PHOTO]      # decode time of a 12 MP JPEG, HEIC, AVIF and RAW
    python scripts/bench.py words [FOLDER]       # words read: crawl cost and recall; filters at 100k
    python scripts/bench.py photos               # only generate the default photos
    python scripts/bench.py checkpoint ARCH DIR  # random weights of ARCH in a hub repository's layout

Common options: --model (default ViT-B-32-256:random: the default preset's architecture
with random weights, which cost exactly what the real weights cost), --device, --data DIR
(where generated data is kept between runs; default: the user cache folder), --json FILE.

crawl: decode CPU-seconds per image (load_image in one thread, the crawl's own code) and
model CPU-seconds per image (embed_images on decoded batches), each measured on its own;
the limit, cores / (decode + model CPU-s per image); then a crawl of the folder into a
fresh library in a fresh process: images/s, achieved / limit, the crawl's own split per
image (decode CPU, model wall, catalog write wall) and its peak RSS. Without FOLDER it uses
generated photos: 12 MP JPEGs at camera quality (4:2:0, quality 92, sensor noise, EXIF
dates), 6 MP PNGs and 12 MP WebPs, 80/10/10.

query: a library of 100k vectors of the model's dimension; the text tower's own time
(torch, and the numpy tower that searches use), warm Library.search p50/p95 (the code path
of the interactive prompt), and cold `clipsearch search` in a fresh process (warm disk
cache), next to `clipsearch --help` and `clipsearch status`.

index: Annoy forest over clustered unit vectors; recall@10 against exact search.

batch: 2,000 text queries in a CSV through `clipsearch batch` (index, and --preset vpr:
every photo scored in one pass per batch) against `clipsearch search` in a process per
query, on the query library (100k); whole processes, start-up included.

vectors: a catalog of 1M clustered 512-d vectors exported to .npz and imported into a new
library, each in a fresh process: seconds and peak RSS (GNU time), the import's index
build timed apart.

formats: one photo (a real one given, else a generated one) made into 12 MP files: JPEG q90,
HEIC (iPhone-like: 512 px tiles, a 320 px thumbnail), AVIF, and DNGs with a full-size JPEG
preview, a 1600x1200 preview, and none (the sensor data, uncompressed; lossless-JPEG too where
imagecodecs is installed). Each is decoded to the 256 px model input by load_image in a fresh
process (1 warm-up, median of 3), with the codecs' own threads and with one thread each (as
the crawl's decode processes run them).

recrawl: a tree of 100k small image files, crawled once with the tiny test model, then
`clipsearch crawl` again with nothing changed, in a fresh process.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import clipsearch  # noqa: E402,F401,I001 - first, as in the command: it sets numpy's BLAS threads before numpy loads
import numpy as np  # noqa: E402
from clipsearch.catalog.store import Store  # noqa: E402
from clipsearch.config import DEFAULT_EXTENSIONS, load_settings  # noqa: E402
from clipsearch.ingest.decode import DecodeError, load_image  # noqa: E402
from clipsearch.library import Library  # noqa: E402
from clipsearch.ingest.scan import ScanRules, walk  # noqa: E402
from clipsearch.records import Embedded, FileRecord, ImageMeta  # noqa: E402

TOWER_ARCHS = ["ViT-B-32-SigLIP2-256", "ViT-B-16-SigLIP2-256", "ViT-B-32-256", "ViT-B-32"]
TINY_MODEL = f"{ROOT / 'tests' / 'fixtures' / 'tiny-clip.json'}:random"
QUERIES = ["a red car in the snow", "two dogs playing on a beach", "birthday cake with candles",
           "mountain lake at sunset", "a cat sleeping on a sofa", "city street at night in the rain",
           "children on a playground", "a plate of pasta", "old church with a tower", "fireworks over a river"]


# --- data -----------------------------------------------------------------------------------
def default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("clipsearch")) / "bench"


def _photo(job: tuple[int, str, Path]) -> str:
    """One camera-like photo: smooth scene, textured detail at several scales, sensor noise."""
    from PIL import Image

    index, kind, folder = job
    rng = np.random.default_rng(index)
    width, height = (3000, 2000) if kind == "png" else (4000, 3000)
    image = np.zeros((height, width, 3), np.float32)
    for cells, strength in ((3, 90.0), (12, 40.0), (60, 18.0), (300, 10.0)):
        small = rng.uniform(-1, 1, (cells * height // width + 2, cells + 2, 3)).astype(np.float32)
        layer = Image.fromarray(((small + 1) * 127.5).astype(np.uint8)).resize((width, height),
                                                                             Image.Resampling.BICUBIC)
        image += (np.asarray(layer, np.float32) - 127.5) / 127.5 * strength
    image += rng.uniform(60, 190, 3).astype(np.float32)
    image += rng.normal(0, 4.0, (height, width, 1)).astype(np.float32)  # luminance noise
    picture = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    path = folder / f"photo_{index:04d}.{kind}"
    if kind == "jpg":
        exif = Image.Exif()
        taken = f"{2015 + index % 10}:{1 + index % 12:02d}:{1 + index % 28:02d} 12:{index % 60:02d}:00"
        exif.get_ifd(0x8769)[0x9003] = taken
        picture.save(path, "JPEG", quality=92, subsampling="4:2:0", exif=exif.tobytes())
    elif kind == "png":
        picture.save(path, "PNG", compress_level=6)
    else:
        picture.save(path, "WEBP", quality=90)
    return str(path)


def generated_photos(data: Path, count: int) -> Path:
    folder = data / f"photos-{count}"
    if (folder / ".complete").exists():
        return folder
    from multiprocessing import Pool

    folder.mkdir(parents=True, exist_ok=True)
    kinds = ["png" if i % 10 == 3 else "webp" if i % 10 == 7 else "jpg" for i in range(count)]
    print(f"generating {count} photos in {folder} (once) ...", file=sys.stderr)
    with Pool(os.cpu_count()) as pool:
        for done, _ in enumerate(pool.imap_unordered(_photo, [(i, k, folder) for i, k in enumerate(kinds)]), 1):
            if done % 20 == 0:
                print(f"  {done}/{count}", file=sys.stderr)
    (folder / ".complete").touch()
    return folder


def clustered(n: int, dim: int, clusters: int, seed: int, hard: bool = False) -> np.ndarray:
    """Unit vectors in clusters. By default they vary in a 32-d subspace plus a little noise,
    as CLIP embeddings of photos do (their intrinsic dimension is a few dozen); `hard` adds
    isotropic noise in every dimension instead, the worst case for any tree index."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    basis = np.random.default_rng(9).standard_normal((32, dim)).astype(np.float32)
    centres_low = 2.0 * np.random.default_rng(0).standard_normal((clusters, 32)).astype(np.float32)
    centres_full = np.random.default_rng(0).standard_normal((clusters, dim)).astype(np.float32)
    for start in range(0, n, 100_000):  # in slices: a million at once would need 10 GB of temporaries
        size = min(100_000, n - start)
        pick = rng.integers(0, clusters, size)
        if hard:
            points = centres_full[pick] + 2.0 * rng.standard_normal((size, dim), np.float32)
        else:
            latent = centres_low[pick] + rng.standard_normal((size, 32), np.float32)
            points = latent @ basis + 0.3 * np.sqrt(32) * rng.standard_normal((size, dim), np.float32)
        out[start:start + size] = points / np.linalg.norm(points, axis=1, keepdims=True)
    return out


# --- crawl ----------------------------------------------------------------------------------
def _cpu_seconds(fn) -> tuple[float, float]:
    """(CPU seconds of the whole process, wall seconds) spent in fn()."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def bench_crawl(folder: Path, model: str, sample: int, device: str, decode_in: str = "auto") -> dict:
    from clipsearch.ingest.workers import default_workers, pick_mode
    from clipsearch.model.embed import OpenClipEmbedder

    files = [r.path for r in walk(str(folder), 0, ScanRules.make(DEFAULT_EXTENSIONS)) if hasattr(r, "size")]
    if not files:
        sys.exit(f"no images under {folder}")
    embedder = OpenClipEmbedder(model, device=device)
    picked = files[:: max(1, len(files) // sample)][:sample]
    decoded = []

    def decode_all():
        for path in picked:
            try:
                decoded.append(load_image(path, embedder.preprocess, 200_000_000)[0])
            except DecodeError:
                pass

    decode_cpu, _ = _cpu_seconds(decode_all)
    batch = np.stack(decoded)
    embedder.embed_images(batch)  # warm-up
    embed_cpu, embed_wall = _cpu_seconds(lambda: embedder.embed_images(batch))
    model_cpu_ms = 1000 * embed_cpu / len(batch)
    if embedder.device.startswith("cuda"):
        big = np.concatenate([batch] * max(1, 1024 // len(batch)))  # the model's own batch size
        for start in range(0, len(big), embedder.batch_size):
            embedder.embed_images(big[start:start + embedder.batch_size])
        _, embed_wall = _cpu_seconds(lambda: [embedder.embed_images(big[i:i + embedder.batch_size])
                                              for i in range(0, len(big), embedder.batch_size)])
        batch = big
    cores = default_workers()
    on_gpu = embedder.device.startswith("cuda")
    preprocess = embedder.preprocess
    model_rate = len(batch) / embed_wall
    embedder = None  # freed before the crawl's own process starts
    # The crawl itself in a fresh process: its peak RSS is the crawl's alone.
    child = subprocess.run([sys.executable, __file__, "--model", model, "--device", device, "_crawl", str(folder),
                            "--decode-in", decode_in], capture_output=True, text=True)
    if child.returncode != 0:
        sys.exit(child.stderr)
    crawl = json.loads(child.stdout)
    # After the crawl, so that nothing of these measurements runs beside it. The crawl's own
    # decoders at full width, over enough files to keep every worker busy for a while.
    want = max(len(picked), 12 * cores)
    rated = files[:: max(1, len(files) // want)][:want]  # spread over the folder: its mix
    device_jpegs = _device_jpegs(rated) if on_gpu else []
    jpegs = [p for p in rated if p in set(device_jpegs)]
    others = [p for p in rated if p not in set(jpegs)]
    mode = pick_mode(decode_in, cores)
    cpu_rate = _decode_rate(rated, preprocess, cores, mode)
    figures: dict = {
        "photos": len(files), "cores": cores, "model": model, "device": crawl["device"], "decode_in": mode,
        "decode_cpu_ms_per_image": 1000 * decode_cpu / len(picked),
        "model_cpu_ms_per_image": model_cpu_ms,
        "model_wall_ms_per_image": 1000 * embed_wall / len(batch),
        "model_images_per_s": model_rate,
        "cpu_decode_images_per_s_at_full_width": cpu_rate,
    }
    if on_gpu:
        gpu_rate = _gpu_decode_rate(jpegs, preprocess, crawl["device"]) if jpegs else 0.0
        cpu_jpeg = _decode_rate(jpegs, preprocess, cores, mode) if jpegs else 0.0
        cpu_other = _decode_rate(others, preprocess, cores, mode) if others else 0.0
        share = len(jpegs) / len(rated)
        # JPEGs the GPU takes go to it and, while it is busy, to the CPU workers; everything
        # else only to the CPU. Of T images a second, the CPU must decode (1 - share) T others
        # (taking (1 - share) T / cpu_other of its time) and share T - gpu JPEGs in the rest:
        # T = (gpu + cpu_jpeg) / (share + cpu_jpeg (1 - share) / cpu_other). An upper bound:
        # the cores also hash every file and feed the GPU.
        if share == 0:
            decode_limit = cpu_other
        elif share == 1 or not cpu_other:
            decode_limit = gpu_rate + cpu_jpeg
        else:
            decode_limit = min((gpu_rate + cpu_jpeg) / (share + cpu_jpeg * (1 - share) / cpu_other),
                               cpu_other / (1 - share) + gpu_rate)
        figures.update({"gpu_decode_images_per_s": gpu_rate, "cpu_decode_jpeg_images_per_s": cpu_jpeg,
                        "cpu_decode_other_images_per_s": cpu_other, "jpeg_share": share,
                        "decode_limit_images_per_s": decode_limit,
                        "limit": "min(model, GPU + CPU decode of this mix)"})
        limit = min(model_rate, decode_limit)
    else:
        figures["gpu_decode_images_per_s"] = "no GPU"
        # Decoding and the model share the cores: their CPU-seconds per image add up.
        figures["limit"] = "cores / (decode + model CPU-s per image)"
        limit = cores / (decode_cpu / len(picked) + embed_cpu / len(batch))
    figures["limit_images_per_s"] = limit
    return {**figures, **crawl, "achieved_over_limit": crawl["crawl_images_per_s"] / limit}


def _decode_rate(files: list[str], preprocess, workers: int, mode: str) -> float:
    """images/s of the crawl's own CPU decoder (ingest/workers.py: threads or processes)
    with `workers` workers over files (page cache warm), fed as the crawl feeds it."""
    from concurrent.futures import ThreadPoolExecutor

    from clipsearch.ingest.decode import decode_budget
    from clipsearch.ingest.workers import decoder

    cpu_decoder = decoder(mode, workers, decode_budget(workers), preprocess, 200_000_000)

    def one(path: str) -> None:
        try:
            cpu_decoder.decode(path)
        except DecodeError:
            pass

    try:
        with ThreadPoolExecutor(workers + 2 if cpu_decoder.processes else workers) as pool:
            list(pool.map(one, files[:workers]))  # processes started, caches warm
            start = time.perf_counter()
            list(pool.map(one, files))
            return len(files) / (time.perf_counter() - start)
    finally:
        cpu_decoder.close()


def _device_jpegs(files: list[str]) -> list[str]:
    """The files the crawl would send to the device decoder."""
    from clipsearch.ingest.devicedecode import read_jpeg

    return [p for p in files if p.lower().endswith((".jpg", ".jpeg", ".jpe", ".jfif"))
            and read_jpeg(bytearray(Path(p).read_bytes()), 200_000_000) is not None]


def _gpu_decode_rate(files: list[str], preprocess, device: str) -> float:
    """JPEGs/s of the device decoder (nvJPEG), in the crawl's batches (BATCH_FILES files or
    BATCH_PIXELS pixels, whichever comes first), bytes already read."""
    from clipsearch.ingest.devicedecode import BATCH_FILES, BATCH_PIXELS, decode_jpegs, read_jpeg

    jpegs = [j for j in (read_jpeg(bytearray(Path(p).read_bytes()), 200_000_000) for p in files) if j is not None]
    if not jpegs:
        return 0.0
    batches, batch, pixels = [], [], 0
    for jpeg in jpegs:
        if batch and (len(batch) == BATCH_FILES or pixels + jpeg.pixels > BATCH_PIXELS):
            batches.append(batch)
            batch, pixels = [], 0
        batch.append(jpeg)
        pixels += jpeg.pixels
    batches.append(batch)
    decode_jpegs(batches[0], preprocess, device)  # warm-up: nvJPEG's handles, kernels
    start = time.perf_counter()
    for batch in batches:
        decode_jpegs(batch, preprocess, device)
    return len(jpegs) / (time.perf_counter() - start)


def _crawl_child(folder: Path, model: str, device: str, decode_in: str) -> None:
    with tempfile.TemporaryDirectory() as home:
        library = Library(load_settings(home, model=model, device=device, decode_in=decode_in))
        workers = _WorkerMemory()
        start = time.perf_counter()
        report = library.crawl([folder])
        wall = time.perf_counter() - start
        worker_mb = workers.total_mb()
        stats = report.stats
        done = max(stats.embedded, 1)
        print(json.dumps({
            "device": _model(library.settings, library.status().model).device,
            "embedded": stats.embedded, "failed": stats.failed, "decoded_on_gpu": stats.device_decoded,
            "crawl_images_per_s": stats.images_per_second,
            "crawl_wall_s_with_model_load_and_index": wall,
            "crawl_decode_cpu_ms_per_image": 1000 * stats.decode_cpu_s / done,
            "crawl_model_wall_ms_per_image": 1000 * stats.embed_wall_s / done,
            "crawl_write_ms_per_image": 1000 * stats.write_wall_s / done,
            "crawl_peak_rss_mb": _peak_rss_mb(),
            "crawl_worker_processes": len(workers.peaks),
            "crawl_peak_rss_mb_with_workers": _peak_rss_mb() + worker_mb,
        }))


class _WorkerMemory:
    """Peak RSS of this process's children (decode worker processes), summed over them:
    each child's VmHWM, read a few times a second while they live (Linux)."""

    def __init__(self):
        import threading

        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.25):
            for task in Path("/proc/self/task").glob("*/children"):
                try:
                    pids = task.read_text().split()
                except OSError:
                    continue
                for pid in pids:
                    try:
                        peak = _proc(int(pid))["peak_mb"]
                    except (OSError, KeyError, ValueError, IndexError):
                        continue
                    self.peaks[int(pid)] = max(peak, self.peaks.get(int(pid), 0.0))

    def total_mb(self) -> float:
        self._stop.set()
        self._thread.join()
        return sum(self.peaks.values())


def _peak_rss_mb() -> float:
    """This process's peak RSS. On Linux from VmHWM: ru_maxrss of a process started by
    another carries over the parent's peak (the bench's own 1.6 GB) across fork and exec."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _model(settings, spec: str):
    """The library's embedder of spec, as its crawls and searches make it (loaded on first use)."""
    from clipsearch.notices import Notices
    from clipsearch.policy import ModelPolicy

    return ModelPolicy(settings, Notices()).embedder(spec)


# --- queries --------------------------------------------------------------------------------
def _fill_library(home: Path, model: str, dim: int, count: int) -> None:
    """A catalog of `count` photos with clustered vectors, and its forest (built once)."""
    if (home / ".complete-v2").exists():  # v2: forests tied to their catalog (older ones are not served)
        return
    print(f"building a {count:,}-vector library in {home} (once) ...", file=sys.stderr)
    home.mkdir(parents=True, exist_ok=True)
    store = Store(home / "catalog.db")
    store.add_root("/bench/photos")
    root = store.roots()[0].id
    vectors = clustered(count, dim, max(10, count // 100), seed=1)
    meta = ImageMeta(4000, 3000, "JPEG")
    for start in range(0, count, 5000):
        store.write([Embedded(FileRecord(f"/bench/photos/{i // 1000:03d}/IMG_{i:07d}.jpg", root, 4_000_000, i),
                              f"{i:032x}", meta, vectors[i]) for i in range(start, min(count, start + 5000))])
    store.set_meta("model", model)
    store.close()
    Library(load_settings(home)).rebuild_index()
    (home / ".complete-v2").touch()


def _timed_runs(args: list[str], runs: int) -> float:
    """Median wall seconds of a command in a fresh process."""
    times = []
    for _ in range(runs + 1):  # the first run only warms the disk cache
        start = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def bench_query(data: Path, model: str, count: int, device: str) -> dict:
    from clipsearch.model.embed import OpenClipEmbedder
    from clipsearch.model.spec import canonical

    spec = canonical(model)
    home = data / f"library-{count}-{spec.replace('/', '_').replace(':', '_')}"
    embedder = _model(load_settings(home, device=device), spec)
    _fill_library(home, spec, embedder.dim, count)
    embedder.load()  # saves the text tower the first time
    embedder = None

    def p50_ms(fn, runs=30) -> float:
        times = []
        for i in range(runs):
            start = time.perf_counter()
            fn(QUERIES[i % len(QUERIES)])
            times.append(time.perf_counter() - start)
        return 1000 * statistics.median(times)

    try:  # torch's own text tower, for comparison (open_clip needs the model's tokenizer from its hub)
        torch_model = OpenClipEmbedder(spec, device=device)
        torch_text = p50_ms(lambda q: torch_model.embed_texts([q]))
    except Exception as exc:  # noqa: BLE001
        print(f"torch text tower not timed: {exc}", file=sys.stderr)
        torch_text = float("nan")
    torch_model = None
    from clipsearch.model.texttower import TextTower

    tower = TextTower.load(home / "text-tower")
    numpy_text = p50_ms(lambda q: tower.embed_texts([q])) if tower else float("nan")
    warm = Library(load_settings(home, device=device))
    warm.search(QUERIES[0], k=10)
    times = []
    for i in range(100):
        start = time.perf_counter()
        warm.search(QUERIES[i % len(QUERIES)] + f" {i}", k=10)
        times.append(time.perf_counter() - start)
    cli = [sys.executable, "-m", "clipsearch.cli", "--home", str(home)]
    return {
        "vectors": count, "model": spec,
        "text_tower_torch_ms_p50": torch_text, "text_tower_numpy_ms_p50": numpy_text,
        "warm_search_ms_p50": 1000 * statistics.median(times),
        "warm_search_ms_p95": 1000 * float(np.percentile(times, 95)),
        "warm_search_over_torch_text_tower": statistics.median(times) * 1000 / torch_text,
        "cold_search_s": _timed_runs(cli + ["search", QUERIES[0]], 5),
        "cold_search_json_s": _timed_runs(cli + ["search", QUERIES[1], "--json"], 5),
        "status_s": _timed_runs(cli + ["status"], 5),
        "help_s": _timed_runs(cli + ["--help"], 5),
    }


# --- the prompt -----------------------------------------------------------------------------
def bench_prompt(data: Path, model: str, count: int, device: str) -> dict:
    """Warm queries inside the prompt (parsing, search, the rendered table), filtered ones
    matching 1% of the library, and the time from `clipsearch query` to its first prompt."""
    import io

    from rich.console import Console

    from clipsearch.model.spec import canonical
    from clipsearch.model.texttower import TextTower
    from clipsearch.prompt import Session

    spec = canonical(model)
    home = data / f"library-{count}-{spec.replace('/', '_').replace(':', '_')}"
    if not (home / "text-tower").is_dir():
        bench_query(data, model, count, device)  # builds the library and saves the text tower
    _fill_library(home, spec, 0, count)
    tower = TextTower.load(home / "text-tower")
    assert tower is not None, "no text tower: run `bench.py query` first"
    session = Session(Library(load_settings(home, device=device)), Console(file=io.StringIO(), width=160),
                      opener=lambda path: None, inline=lambda path, console: False)
    session.banner()
    session.handle(QUERIES[0])  # waits for the warm-up

    def p50_p95(make_line, runs=100) -> tuple[float, float]:
        times = []
        for i in range(runs):
            line = make_line(i)
            start = time.perf_counter()
            session.handle(line)
            times.append(time.perf_counter() - start)
        return 1000 * statistics.median(times), 1000 * float(np.percentile(times, 95))

    text_times = []
    for i in range(100):
        start = time.perf_counter()
        tower.embed_texts([QUERIES[i % len(QUERIES)] + f" {i}"])
        text_times.append(time.perf_counter() - start)
    text_p50 = 1000 * statistics.median(text_times)
    plain = p50_p95(lambda i: f"{QUERIES[i % len(QUERIES)]} {i}")
    # The library's photos lie in folders of 1,000 (bench/photos/000 ...): one folder is 1%.
    folder = p50_p95(lambda i: f"{QUERIES[i % len(QUERIES)]} {i} in:/bench/photos/{i % 100:03d}")
    named = p50_p95(lambda i: f"{QUERIES[i % len(QUERIES)]} {i} in:{i % 100:03d}")
    filtered_rows = len(session.library.search(f"{QUERIES[0]} in:/bench/photos/007", k=2000))
    return {
        "vectors": count, "model": spec, "text_tower_ms_p50": text_p50,
        "prompt_query_ms_p50": plain[0], "prompt_query_ms_p95": plain[1],
        "prompt_query_over_text_tower": plain[0] / text_p50,
        "filtered_1pct_folder_ms_p50": folder[0], "filtered_1pct_folder_ms_p95": folder[1],
        "filtered_1pct_folder_name_ms_p50": named[0], "filtered_1pct_folder_name_ms_p95": named[1],
        "filtered_over_unfiltered": max(folder[0], named[0]) / plain[0],
        "rows_in_a_1pct_filter": filtered_rows,
        "first_prompt_s": _first_prompt_seconds(home, 5),
    }


def _first_prompt_seconds(home: Path, runs: int) -> float:
    """Median seconds from starting `clipsearch query` in a terminal to its prompt."""
    import pexpect

    times = []
    for _ in range(runs + 1):
        start = time.perf_counter()
        child = pexpect.spawn(sys.executable, ["-m", "clipsearch.cli", "--home", str(home), "query"],
                              env={**os.environ, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"},
                              encoding="utf-8", timeout=30, dimensions=(40, 160))
        child.expect("›")
        times.append(time.perf_counter() - start)
        child.sendcontrol("d")
        child.expect(pexpect.EOF)
        child.close()
    return statistics.median(times[1:])


# --- index ----------------------------------------------------------------------------------
def bench_index(count: int, dim: int, queries: int, hard: bool = False) -> dict:
    from clipsearch.index import Forest, build_forest, exact_top

    vectors = clustered(count, dim, max(10, count // 100), seed=1, hard=hard)
    probes = clustered(queries, dim, max(10, count // 100), seed=2, hard=hard)
    chunks = ((np.arange(s, min(s + 20_000, count)), vectors[s:s + 20_000]) for s in range(0, count, 20_000))
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        manifest = build_forest(Path(folder), "bench", dim, 0, count, chunks)
        build = time.perf_counter() - start
        size = (Path(folder) / manifest.forest).stat().st_size
        # Opening checks the files first: by stat when they are as built, by SHA-256 when
        # not (a copied or restored index). Both timings include loading the forest.
        opened = []
        for files in (manifest.files, {name: {**f, "stat": [0, 0, 0]} for name, f in manifest.files.items()}):
            start = time.perf_counter()
            Forest(Path(folder), dataclasses.replace(manifest, files=files))
            opened.append(1000 * (time.perf_counter() - start))
        forest = Forest(Path(folder), manifest)
        ids = np.arange(count)
        recall, elapsed = [], []
        forest.query(probes[0], 10)
        for probe in probes:
            start = time.perf_counter()
            found, _ = forest.query(probe, 10)
            elapsed.append(time.perf_counter() - start)
            truth, _ = exact_top(ids, vectors, probe, 10)
            recall.append(len(set(found.tolist()) & set(truth.tolist())) / 10)
    return {"vectors": count, "dim": dim, "data": "hard (isotropic)" if hard else "clustered (low rank)",
            "trees": manifest.trees, "build_s": build, "file_mb": size / 2**20,
            "open_verified_by_stat_ms": opened[0], "open_verified_by_sha256_ms": opened[1],
            "recall_at_10": float(np.mean(recall)), "query_ms_p50": 1000 * statistics.median(elapsed),
            "query_ms_mean": 1000 * float(np.mean(elapsed))}


# --- image tower ----------------------------------------------------------------------------
def _torch_images(arch: str, weights: Path, preprocess: dict, quick_gelu: bool = False):
    """open_clip's image tower of the checkpoint at weights, as a function of uint8 NHWC
    pixels (the same normalisation as the ONNX graph) -> L2-normalised vectors."""
    import open_clip
    import torch

    model = open_clip.create_model(arch, pretrained=str(weights), force_quick_gelu=quick_gelu).eval()
    mean = torch.tensor(preprocess["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(preprocess["std"]).view(1, 3, 1, 1)

    def embed(pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - mean) / std
            out = model.encode_image(x)
            return torch.nn.functional.normalize(out, dim=-1).numpy()

    return embed


def bench_towers(data: Path, archs: list[str], batch: int = 16, runs: int = 6) -> dict:
    """For each architecture (random weights in a hub repository's layout, made once by
    `random_checkpoint`: they cost what real ones do): the towers built from its tensors
    (model/build.py) as a first crawl builds them, their build time, peak memory and size,
    the image tower's time per image (fp32, int8 per channel; onnxruntime with its default
    threads, batches of `batch`) against open_clip's in torch, and a text query on the
    numpy text tower (one text, and 16 together)."""
    import onnxruntime

    from clipsearch.model import imagetower, texttower
    from clipsearch.model.build import open_checkpoint

    figures: dict = {}
    for arch in archs:
        spec = random_checkpoint(arch, data / "checkpoints" / arch)
        weights = Path(spec.split(":", 1)[1])
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = open_checkpoint(spec)
            row: dict = {"checkpoint_mb": weights.stat().st_size / 1e6}
            prep = checkpoint.preprocess
            size = prep["size"][0] if isinstance(prep["size"], (list, tuple)) else prep["size"]
            pixels = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)

            def per_image(embed, pixels=pixels) -> float:
                embed(pixels)
                start = time.perf_counter()
                for _ in range(runs):
                    embed(pixels)
                return 1000 * (time.perf_counter() - start) / (runs * batch)

            start = time.perf_counter()
            text = texttower.save(Path(folder) / "text", spec, "", checkpoint.weights, checkpoint.model_cfg,
                                  checkpoint.tokenizer_folder)
            row["text_build_s"] = time.perf_counter() - start
            row["text_mb"] = sum(f.stat().st_size for f in (Path(folder) / "text").iterdir()) / 1e6
            for precision in ("fp32", "int8"):
                start = time.perf_counter()
                tower = imagetower.build(Path(folder) / precision, spec, "", checkpoint, precision)
                row[f"{precision}_build_s"] = time.perf_counter() - start
                row[f"{precision}_mb"] = (tower.path.stat().st_size
                                          + imagetower.weights_of(tower.path).stat().st_size) / 1e6
                options = onnxruntime.SessionOptions()
                options.log_severity_level = 3
                start = time.perf_counter()
                session = onnxruntime.InferenceSession(str(tower.path), options, providers=["CPUExecutionProvider"])
                row[f"{precision}_session_s"] = time.perf_counter() - start
                row[f"{precision}_ms_per_image"] = per_image(lambda p, run=session: run.run(None, {"pixels": p})[0])
                row[f"_{precision}_out"] = session.run(None, {"pixels": pixels})[0]
                session = None
            torch_images = _torch_images(arch, weights, prep, bool(checkpoint.model_cfg.get("quick_gelu")))
            row["torch_ms_per_image"] = per_image(torch_images)
            reference = torch_images(pixels)
            for precision in ("fp32", "int8"):
                row[f"{precision}_min_cosine_to_torch"] = float(np.min(np.sum(row.pop(f"_{precision}_out") * reference,
                                                                              axis=1)))
            torch_images = None
            texts = [QUERIES[i % len(QUERIES)] for i in range(16)]
            text.embed_texts(texts[:1])
            start = time.perf_counter()
            for i in range(10):
                text.embed_texts([texts[i]])
            row["text_one_ms"] = 100 * (time.perf_counter() - start)
            start = time.perf_counter()
            text.embed_texts(texts)
            row["text_16_ms_each"] = 1000 * (time.perf_counter() - start) / 16
            figures[arch] = row
            checkpoint = text = None
    return figures


# --- random checkpoints in a hub repository's layout ----------------------------------------
GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]


def gemma_sized_tokenizer(folder: Path, vocab_size: int, seed: int = 0) -> Path:
    """A tokenizer.json in the layout of SigLIP 2's Gemma tokenizer and of its size (BPE with
    byte fallback, `vocab_size` tokens, as many merges, "▁" for spaces, <eos> after the
    text): the real one cannot be downloaded here, and loading it is part of a cold query."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors

    rng = np.random.default_rng(seed)
    vocab = {token: i for i, token in enumerate(GEMMA_SPECIALS)}
    vocab.update({f"<0x{b:02X}>": len(vocab) + b for b in range(256)})
    alphabet = ([chr(c) for c in range(ord("a"), ord("z") + 1)] + ["▁"] + [chr(c) for c in range(0xC0, 0x250)]
                + [chr(c) for c in range(0x3041, 0x3097)] + [chr(c) for c in range(0x4E00, 0x4E00 + 3000)])
    pieces = list(alphabet)
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    merges: list[tuple[str, str]] = []
    while len(vocab) < vocab_size:  # each merge joins two tokens already there, as BPE training does
        left, right = pieces[int(len(pieces) * rng.random() ** 2)], pieces[int(len(pieces) * rng.random() ** 3)]
        joined = left + right
        if len(joined) > 16 or joined in vocab:
            continue
        vocab[joined] = len(vocab)
        pieces.append(joined)
        merges.append((left, right))
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True,
                                     fuse_unk=True))
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tokenizer.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in GEMMA_SPECIALS])
    tokenizer.post_processor = processors.TemplateProcessing(single="$A <eos>", pair="$A <eos> $B <eos>",
                                                             special_tokens=[("<eos>", 1)])
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "GemmaTokenizer", "padding_side": "right", "pad_token": "<pad>", "eos_token": "<eos>",
         "bos_token": "<bos>", "unk_token": "<unk>", "model_max_length": 64}), encoding="utf-8")
    return folder / "tokenizer.json"


def random_checkpoint(arch: str, folder: Path) -> str:
    """Random weights of a real architecture as its hub repository holds them
    (open_clip_model.safetensors, open_clip_config.json; for SigLIP models a tokenizer of the
    real size beside them), made once with open_clip; returns the model spec that names them."""
    weights = folder / "open_clip_model.safetensors"
    if not weights.is_file():
        import open_clip
        from safetensors.numpy import save_file

        from clipsearch.model.build import _arch_config, _published_preprocess

        print(f"writing random {arch} weights to {folder} (once) ...", file=sys.stderr)
        folder.mkdir(parents=True, exist_ok=True)
        model_cfg = _arch_config(arch)
        if model_cfg["text_cfg"].get("hf_tokenizer_name"):
            gemma_sized_tokenizer(folder, model_cfg["text_cfg"]["vocab_size"])
        model = open_clip.create_model(arch, pretrained=None, force_quick_gelu=bool(model_cfg.get("quick_gelu")))
        tensors = {name: value.detach().float().numpy().copy() for name, value in model.state_dict().items()}
        (folder / "open_clip_config.json").write_text(json.dumps(
            {"model_cfg": model_cfg, "preprocess_cfg": _published_preprocess(arch)}), encoding="utf-8")
        save_file(tensors, str(folder / "part.safetensors"))
        (folder / "part.safetensors").replace(weights)
    return f"{arch}:{weights}"


# --- re-crawl -------------------------------------------------------------------------------
def _tree(data: Path, count: int) -> Path:
    """`count` small, distinct JPEG files in folders of 500 (made once)."""
    folder = data / f"tree-{count}"
    if (folder / ".complete").exists():
        return folder
    from io import BytesIO

    from PIL import Image

    print(f"writing {count:,} small photos in {folder} (once) ...", file=sys.stderr)
    buffer = BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    base = buffer.getvalue()
    for i in range(count):
        sub = folder / f"{i // 500:04d}"
        if i % 500 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        # Bytes after the end-of-image marker are ignored by decoders: distinct files, same picture.
        (sub / f"IMG_{i:07d}.jpg").write_bytes(base + i.to_bytes(8, "little"))
    (folder / ".complete").touch()
    return folder


def bench_recrawl(data: Path, count: int) -> dict:
    tree = _tree(data, count)
    home = data / f"recrawl-home-{count}"
    cli = [sys.executable, "-m", "clipsearch.cli", "--home", str(home), "crawl", str(tree)]
    first = None
    if not (home / ".complete").exists():
        print(f"first crawl of {count:,} files with the tiny model (once) ...", file=sys.stderr)
        start = time.perf_counter()
        subprocess.run(cli + ["--model", TINY_MODEL], check=True, capture_output=True)
        first = time.perf_counter() - start
        (home / ".complete").touch()
    return {"files": count, "first_crawl_s": first, "unchanged_recrawl_s": _timed_runs(cli, 3)}


# --- decode scaling (issue 12) ----------------------------------------------------------------
def _decode_one(path: str) -> int:
    """Decode and preprocess one file as the crawl does for ViT-B-32-256 (256 px, bicubic)."""
    from clipsearch.records import Preprocess

    try:
        return load_image(path, Preprocess(256), 200_000_000)[0].nbytes
    except DecodeError:
        return 0


def bench_decode_scaling(folder: Path, widths: list[int]) -> dict:
    """images/s of load_image over the folder's files with N threads and N processes (the
    processes hand the uint8 model input back, pickled, as worker processes would)."""
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    files = [r.path for r in walk(str(folder), 0, ScanRules.make(DEFAULT_EXTENSIONS)) if hasattr(r, "size")]
    figures: dict = {"files": len(files), "cores": os.cpu_count()}
    for path in files:  # every configuration reads from the page cache
        Path(path).read_bytes()
    for width in widths:
        for kind, pool in (("threads", ThreadPoolExecutor), ("processes", ProcessPoolExecutor)):
            with pool(width) as executor:
                list(executor.map(_decode_one, files[:width]))  # workers started and warm
                start = time.perf_counter()
                list(executor.map(_decode_one, files, chunksize=1))
                figures[f"{kind}_{width}_images_per_s"] = len(files) / (time.perf_counter() - start)
    return figures


# --- the web gallery (issue 13) ---------------------------------------------------------------
def bench_web(data: Path, model: str, count: int, device: str) -> dict:
    """Through the app in-process (Starlette's TestClient: the app's own cost, no network):
    result cards for a query on the 100k-vector library, server warm; thumbnails of the 200
    generated photos, cold cache and cached; a ZIP of them."""
    import shutil

    from starlette.testclient import TestClient

    from clipsearch.model.embed import OpenClipEmbedder
    from clipsearch.model.spec import canonical
    from clipsearch.web.app import create_app

    spec = canonical(model)
    home = data / f"library-{count}-{spec.replace('/', '_').replace(':', '_')}"
    _fill_library(home, spec, OpenClipEmbedder(spec, device=device).dim, count)
    library = Library(load_settings(home, device=device))
    _model(library.settings, spec).load()
    figures: dict = {"photos": count}
    with TestClient(create_app(library), base_url="http://127.0.0.1:8765") as client:
        client.get("/results", params={"q": "warm up"})
        for path, name in (("/results", "results_html"), ("/api/search", "search_json")):
            times = []
            for i in range(30):
                start = time.perf_counter()
                answer = client.get(path, params={"q": QUERIES[i % len(QUERIES)]})
                times.append(time.perf_counter() - start)
                assert answer.status_code == 200, answer.text
            times.sort()
            figures[f"{name}_48_p50_ms"] = 1000 * statistics.median(times)
            figures[f"{name}_48_p95_ms"] = 1000 * times[int(0.95 * len(times)) - 1]
        library_times = []
        for i in range(30):
            start = time.perf_counter()
            library.search(QUERIES[i % len(QUERIES)], k=48)
            library_times.append(time.perf_counter() - start)
        figures["library_search_48_p50_ms"] = 1000 * statistics.median(library_times)

    photos = generated_photos(data, 200)
    thumbs_home = data / "web-thumbs-home"
    if not (thumbs_home / ".complete").exists():
        shutil.rmtree(thumbs_home, ignore_errors=True)
        Library(load_settings(thumbs_home, model=TINY_MODEL, device="cpu")).crawl([photos])
        (thumbs_home / ".complete").touch()
    shutil.rmtree(thumbs_home / "thumbs", ignore_errors=True)
    small = Library(load_settings(thumbs_home, device="cpu"))
    ids = [r.file_id for r in small.search("sort:newest", k=1000)]
    with TestClient(create_app(small), base_url="http://127.0.0.1:8765") as client:
        start = time.perf_counter()
        for file_id in ids:
            assert client.get(f"/thumb/{file_id}/256").status_code == 200
        figures["thumbnails_cold_per_s"] = len(ids) / (time.perf_counter() - start)
        times = []
        for file_id in ids:
            start = time.perf_counter()
            client.get(f"/thumb/{file_id}/256")
            times.append(time.perf_counter() - start)
        figures["thumbnail_cached_p50_ms"] = 1000 * statistics.median(times)
        start = time.perf_counter()
        size = 0
        with client.stream("POST", "/download", data={"ids": ",".join(map(str, ids))}) as answer:
            for piece in answer.iter_bytes():
                size += len(piece)
        seconds = time.perf_counter() - start
        figures["zip_mb"] = size / 1e6
        figures["zip_mb_per_s"] = size / 1e6 / seconds
    return figures


# --- the watch daemon -----------------------------------------------------------------------
def _proc(pid: int) -> dict:
    """VmRSS and VmHWM (MiB) and CPU seconds (user + system) of a running process (Linux)."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    memory = {line.split(":")[0]: int(line.split()[1]) / 1024 for line in status if line.startswith(("VmRSS", "VmHWM"))}
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return {"rss_mb": memory["VmRSS"], "peak_mb": memory["VmHWM"], "cpu_s": cpu}


def _start_daemon(home: Path, debounce: float | None = None) -> subprocess.Popen:
    from clipsearch.daemon.client import daemon_state

    args = [sys.executable, "-m", "clipsearch.cli", "--home", str(home), "watch"]
    if debounce is not None:
        args += ["--debounce", str(debounce)]
    daemon = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while True:
        state = daemon_state(home)
        if state is not None and state.pid == daemon.pid and state.state == "watching":
            return daemon
        if daemon.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the daemon did not start (exit {daemon.returncode})")
        time.sleep(0.05)


def _stop_daemon(daemon: subprocess.Popen) -> None:
    daemon.terminate()
    daemon.wait(60)


def _live(home: Path, paths: list[str]) -> int:
    store = Store.open_existing(home / "catalog.db")
    if store is None:
        return 0
    try:
        known = store.known_paths(paths)
        return sum(k.status == "live" and k.has_vector for k in known.values())
    finally:
        store.close()


def _live_total(home: Path) -> int:
    store = Store.open_existing(home / "catalog.db")
    try:
        return store.live_count() if store else 0
    finally:
        if store:
            store.close()


def bench_watch_latency(data: Path, model: str, device: str, photos: int = 10) -> dict:
    """Seconds from a photo's last write (closed) to its row being searchable, at the default
    debounce, with the model already loaded by a first photo."""
    tag = model.replace("/", "_").replace(":", "_")[-40:]
    root, home = data / f"watch-latency-{tag}", data / f"watch-latency-home-{tag}"
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(home, ignore_errors=True)  # a library that has seen these photos would only hash them
    root.mkdir(parents=True)
    source = generated_photos(data, 200)
    sources = sorted(source.glob("*.jpg"))[: photos + 3]
    for path in sources[:2]:
        shutil.copy(path, root / path.name)
    subprocess.run([sys.executable, "-m", "clipsearch.cli", "--home", str(home), "crawl", str(root), "--model", model,
                    "--device", device], check=True, capture_output=True)
    daemon = _start_daemon(home)
    try:
        delays = []
        for i, path in enumerate(sources[2:]):
            target = root / f"new-{i:03d}.jpg"
            data_bytes = path.read_bytes()
            with open(target, "wb") as handle:
                handle.write(data_bytes)
            written = time.perf_counter()
            while not _live(home, [str(target)]):
                time.sleep(0.005)
            delays.append(time.perf_counter() - written)
        warm = delays[1:]  # the first loads the model
    finally:
        _stop_daemon(daemon)
    return {"model": model, "first_photo_s (model load)": delays[0], "p50_s": statistics.median(warm),
            "max_s": max(warm), "photos": len(warm)}


def bench_watch_idle(data: Path, count: int, seconds: float = 30.0) -> dict:
    """RSS and CPU of an idle daemon watching `count` files (indexed once with the tiny model)."""
    tree = _tree(data, count)
    home = data / f"recrawl-home-{count}"
    if not (home / ".complete").exists():
        bench_recrawl(data, count)
    started = time.perf_counter()
    daemon = _start_daemon(home)
    ready = time.perf_counter() - started
    try:
        time.sleep(5)  # settle: the start-up reconcile's memory handed back
        before = _proc(daemon.pid)
        time.sleep(seconds)
        after = _proc(daemon.pid)
    finally:
        _stop_daemon(daemon)
    return {"files": count, "folders": sum(1 for _ in tree.iterdir()), "start_to_watching_s": ready,
            "idle_rss_mb": after["rss_mb"], "peak_rss_mb": after["peak_mb"],
            "idle_cpu_percent": 100 * (after["cpu_s"] - before["cpu_s"]) / seconds}


def bench_watch_storm(data: Path, count: int = 10_000) -> dict:
    """`count` files appearing at once in a watched folder (a folder moved in) against a crawl
    of the same files, both with the tiny model (decode-bound, like a real storm on a GPU)."""
    def storm_folder(name: str) -> Path:
        folder = data / name
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(_tree(data, count), folder)
        return folder

    times = {}
    for way in ("crawl", "watch"):
        home, root = data / f"storm-home-{way}", data / f"storm-root-{way}"
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        shutil.copy(next(generated_photos(data, 200).glob("*.jpg")), root / "first.jpg")
        cli = [sys.executable, "-m", "clipsearch.cli", "--home", str(home), "crawl"]
        subprocess.run(cli + [str(root), "--model", TINY_MODEL, "--device", "cpu"], check=True, capture_output=True)
        files = storm_folder(f"storm-files-{way}")
        if way == "crawl":
            os.rename(files, root / "storm")
            start = time.perf_counter()
            subprocess.run(cli, check=True, capture_output=True)
            times[way] = time.perf_counter() - start
        else:
            daemon = _start_daemon(home)
            try:
                start = time.perf_counter()
                os.rename(files, root / "storm")
                while _live_total(home) < count + 1:
                    time.sleep(0.05)
                times[way] = time.perf_counter() - start
                peak = _proc(daemon.pid)["peak_mb"]
            finally:
                _stop_daemon(daemon)
        shutil.rmtree(root)
    return {"files": count, "crawl_s": times["crawl"], "watch_storm_s": times["watch"],
            "ratio": times["watch"] / times["crawl"], "daemon_peak_rss_mb": peak}


# --- main -----------------------------------------------------------------------------------
# --- batch queries, vectors out and in -------------------------------------------------------
def _timed_child(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of a command in a fresh process (GNU time's figure)."""
    start = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", *args], check=True, capture_output=True, text=True)
    return time.perf_counter() - start, int(done.stderr.strip().splitlines()[-1]) / 1024


def bench_batch(data: Path, model: str, count: int, queries: int) -> dict:
    """`clipsearch batch` against `clipsearch search` run once per query (a process each)."""
    from clipsearch.model.embed import OpenClipEmbedder
    from clipsearch.model.spec import canonical

    spec = canonical(model)
    home = data / f"library-{count}-{spec.replace('/', '_').replace(':', '_')}"
    _fill_library(home, spec, OpenClipEmbedder(spec, device="cpu").dim, count)
    _model(load_settings(home), spec).load()  # the numpy text tower, saved once
    csv_path = data / f"batch-{queries}.csv"
    with open(csv_path, "w", encoding="utf-8") as file:
        file.write("image_path,description\n")
        for i in range(queries):
            file.write(f",{QUERIES[i % len(QUERIES)]} {i}\n")
    cli = [sys.executable, "-m", "clipsearch.cli", "--home", str(home)]
    per_process = _timed_runs(cli + ["search", QUERIES[0], "-k", "5", "--json"], 5)
    out = data / "batch-results.csv"
    index_s, index_mb = _timed_child(cli + ["batch", str(csv_path), "-o", str(out), "-k", "5"])
    exact_s, exact_mb = _timed_child(cli + ["batch", str(csv_path), "-o", str(out), "-k", "5", "--preset", "vpr"])
    return {
        "vectors": count, "queries": queries,
        "one_query_per_process_s": per_process, "one_query_per_process_q_per_s": 1 / per_process,
        "batch_index_s": index_s, "batch_index_q_per_s": queries / index_s,
        "batch_index_over_per_process": (queries / index_s) * per_process, "batch_index_peak_rss_mb": index_mb,
        "batch_exact_s": exact_s, "batch_exact_q_per_s": queries / exact_s,
        "batch_exact_over_per_process": (queries / exact_s) * per_process, "batch_exact_peak_rss_mb": exact_mb,
    }


def _fill_catalog(home: Path, dim: int, count: int, model: str = "ViT-B-32-256:random") -> None:
    """A catalog of `count` photos with clustered vectors and no forest (export needs none)."""
    if (home / ".complete").exists():
        return
    print(f"building a {count:,}-vector catalog in {home} (once) ...", file=sys.stderr)
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    store = Store(home / "catalog.db")
    store.add_root("/bench/photos")
    root = store.roots()[0].id
    meta = ImageMeta(4000, 3000, "JPEG", "2021-06-01T12:00:00")
    for start in range(0, count, 50_000):
        vectors = clustered(min(50_000, count - start), dim, 100, seed=start)
        for part in range(start, min(count, start + 50_000), 5000):
            store.write([Embedded(FileRecord(f"/bench/photos/{i // 1000:04d}/IMG_{i:07d}.jpg", root, 4_000_000, i),
                                  f"{i:032x}", meta, vectors[i - start])
                         for i in range(part, min(count, part + 5000))])
    store.set_meta("model", model)
    store.close()
    (home / ".complete").touch()


def bench_vectors(data: Path, count: int, dim: int = 512) -> dict:
    """Export a library of `count` vectors to .npz and import it into a new library, each in a
    fresh process: seconds and peak RSS (the vectors alone are count x dim x 4 bytes)."""
    home = data / f"vectors-home-{count}"
    _fill_catalog(home, dim, count)
    target = data / f"export-{count}.npz"
    cli = [sys.executable, "-m", "clipsearch.cli"]
    export_s, export_mb = _timed_child(cli + ["--home", str(home), "export", str(target)])
    fresh = data / f"import-home-{count}"
    shutil.rmtree(fresh, ignore_errors=True)
    # The import alone, then the index build it ends with, timed apart in one child.
    # Peak RSS of the import before the build: VmHWM when the build first reports.
    code = ("import sys, time, json; from clipsearch.config import load_settings; "
            "from clipsearch.library import Library; t = time.perf_counter(); built = []; "
            "hwm = lambda: int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]); "
            "r = Library(load_settings(sys.argv[1])).import_vectors(sys.argv[2], "
            "on_index=lambda d, n: built or built.append((time.perf_counter(), hwm()))); "
            "e = time.perf_counter(); "
            "print(json.dumps([built[0][0] - t if built else e - t, e - t, r.added, built[0][1] if built else hwm()]))")
    start = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-c", code, str(fresh), str(target)],
                          check=True, capture_output=True, text=True)
    import_total = time.perf_counter() - start
    rows_s, with_index_s, added, rows_kb = json.loads(done.stdout.strip().splitlines()[-1])
    import_mb = int(done.stderr.strip().splitlines()[-1]) / 1024
    figures = {
        "vectors": count, "dim": dim, "vector_bytes_mb": count * dim * 4 / 2**20,
        "export_s": export_s, "export_peak_rss_mb": export_mb, "npz_mb": target.stat().st_size / 2**20,
        "import_rows_s": rows_s, "import_with_index_build_s": with_index_s, "import_process_s": import_total,
        "import_rows_peak_rss_mb": rows_kb / 1024, "import_peak_rss_mb_with_index_build": import_mb,
        "imported": added,
    }
    target.unlink()
    shutil.rmtree(fresh, ignore_errors=True)
    return figures



# --- formats ------------------------------------------------------------------------------------
FORMAT_FILES = {
    "JPEG q90 (draft)": ("photo.jpg", 256),
    "HEIC (512 px tiles, 320 px thumbnail)": ("photo.heic", 256),
    "HEIC, 224 px input (decodes the thumbnail)": ("photo.heic", 224),
    "AVIF (q80)": ("photo.avif", 256),
    "RAW DNG, full-size JPEG preview": ("preview_full.dng", 256),
    "RAW DNG, 1600x1200 JPEG preview": ("preview_small.dng", 256),
    "RAW DNG, no preview: half-size render": ("sensor.dng", 256),
    "RAW DNG, no preview, lossless JPEG: half-size render": ("sensor_ljpeg.dng", 256),
}


def _format_files(source: Path | None, out: Path) -> Path:
    """The 12 MP files of bench_formats, made once from source (cropped to 4:3, 4000x3000, a
    little grain so that the codecs see detail as in a camera's file)."""
    from PIL import Image

    from clipsearch.ingest.formats import enable_heif
    from tests.dngfile import dng_bytes

    if (out / "sensor.dng").exists():
        return out
    source = source or next(p for p in sorted(generated_photos(default_data_dir(), 200).iterdir())
                            if p.suffix == ".jpg")
    enable_heif()
    out.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as img:
        img = img.convert("RGB")
        width, height = img.size
        crop = min(width, height * 4 // 3)
        img = img.crop(((width - crop) // 2, 0, (width + crop) // 2, height)).resize((4000, 3000),
                                                                                     Image.Resampling.LANCZOS)
    grain = np.random.default_rng(0).normal(0, 3, (3000, 4000, 3))
    photo = Image.fromarray(np.clip(np.asarray(img, np.float64) + grain, 0, 255).astype(np.uint8))
    photo.save(out / "photo.jpg", "JPEG", quality=90)
    photo.save(out / "photo.heic", "HEIF", quality=60, tile_size=512, thumbnails=[320])
    photo.save(out / "photo.avif", "AVIF", quality=80, speed=8)
    pixels, taken = np.asarray(photo), "2023:07:14 18:30:05"
    (out / "preview_full.dng").write_bytes(dng_bytes(pixels, preview=photo, taken=taken))
    (out / "preview_small.dng").write_bytes(dng_bytes(pixels, preview=photo.resize((1600, 1200)), taken=taken))
    try:
        import imagecodecs  # optional: compresses the mosaic as cameras do

        (out / "sensor_ljpeg.dng").write_bytes(dng_bytes(pixels, taken=taken, ljpeg=imagecodecs.ljpeg_encode))
    except ImportError:
        pass
    (out / "sensor.dng").write_bytes(dng_bytes(pixels, taken=taken))
    return out


def _decode_child(path: Path, size: int, one_thread: bool) -> None:
    from clipsearch.ingest import formats
    from clipsearch.records import Preprocess

    if one_thread:
        from PIL import AvifImagePlugin

        AvifImagePlugin.DEFAULT_MAX_THREADS = 1
        formats.enable_heif(decode_threads=1)
    walls, cpus = [], []
    for run in range(4):
        wall, cpu = time.perf_counter(), time.process_time()
        pixels, _ = load_image(str(path), Preprocess(size=size), max_pixels=200_000_000)
        if run:
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
    assert pixels.shape == (size, size, 3)
    print(json.dumps({"wall_ms": 1000 * statistics.median(walls), "cpu_ms": 1000 * statistics.median(cpus),
                      "rss_mb": _peak_rss_mb()}))


def bench_formats(source: Path | None, data: Path) -> dict:
    out = _format_files(source, data / "formats-12mp")
    figures: dict = {}
    for one_thread in (False, True):
        env = {**os.environ, "OMP_NUM_THREADS": "1"} if one_thread else dict(os.environ)
        how = "1 thread" if one_thread else "own threads"
        for label, (name, size) in FORMAT_FILES.items():
            if not (out / name).exists():
                continue
            command = [sys.executable, __file__, "_decode", str(out / name), "--size", str(size)]
            result = json.loads(subprocess.run(command + ["--one-thread"] * one_thread, env=env, check=True,
                                               capture_output=True, text=True).stdout.splitlines()[-1])
            figures[f"{label}, {how}: ms wall / CPU, MB peak RSS, MB file"] = (
                f"{result['wall_ms']:.0f} / {result['cpu_ms']:.0f}, {result['rss_mb']:.0f}, "
                f"{(out / name).stat().st_size / 1e6:.1f}")
    return figures



# --- words, places and dates ----------------------------------------------------------------
SIGN_WORDS = ["BAKERY", "Harbour", "STATION", "Museum", "Pharmacy", "Lighthouse", "Garden", "EXIT", "Welcome",
              "Market", "Coffee", "Hotel", "Library", "Parking", "Bridge", "Theatre", "Cinema", "Bakery", "Tram"]
SIGN_SIZES = [20, 24, 28, 40, 56, 80]  # letter height at 1280 px on the long side


def _text_quarter(source: Path, out: Path) -> tuple[Path, dict[str, list[tuple[str, int]]]]:
    """source's photos copied to out, a quarter of them with 1-3 words drawn on (sizes, colours
    standing out from the background, outlines or none, slight turns varying); returns out
    and {name: [(word, letter px)]}."""
    import random

    from PIL import Image

    from tests.wordphotos import draw_words

    truth_file = out / ".truth.json"
    if truth_file.exists():
        return out, json.loads(truth_file.read_text())
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(24)
    truth: dict[str, list[tuple[str, int]]] = {}
    for number, path in enumerate(sorted(p for p in source.iterdir() if p.is_file())):
        if number % 4:
            shutil.copy(path, out / path.name)
            continue
        with Image.open(path) as img:
            img = img.convert("RGB")
        words = []
        for line in range(rng.randint(1, 3)):
            word, size = rng.choice(SIGN_WORDS), rng.choice(SIGN_SIZES)
            at = (int(rng.uniform(0.05, 0.5) * img.width), int((0.1 + 0.28 * line) * img.height))
            # Legible, as a sign is: a colour that stands out from what is under the words.
            box = img.crop((at[0], at[1], min(img.width, at[0] + int(size * 5 * max(img.size) / 1280)),
                            min(img.height, at[1] + int(size * 1.5 * max(img.size) / 1280))))
            dark = box.convert("L").resize((1, 1)).getpixel((0, 0)) < 128
            colour = rng.choice([(255, 255, 255), (250, 220, 40)] if dark else [(20, 20, 20), (200, 30, 30)])
            outline = rng.choice([None, (0, 0, 0) if dark else (255, 255, 255)])
            img = draw_words(img, word, size, at, colour, rng.uniform(-3, 3), outline)
            words.append((word, size))
        name = path.stem + ".jpg"
        img.save(out / name, quality=92)
        truth[name] = words
    truth_file.write_text(json.dumps(truth))
    return out, truth


def _crawl_seconds(folder: Path, home: Path, model: str, read_text: bool, cache: Path) -> tuple[float, dict]:
    shutil.rmtree(home, ignore_errors=True)
    env = {**os.environ, "CLIPSEARCH_READ_TEXT": "true" if read_text else "false", "CLIPSEARCH_MODEL_CACHE": str(cache)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "clipsearch.cli", "--home", str(home), "crawl", str(folder),
                    "--model", model], check=True, capture_output=True, env=env)
    seconds = time.perf_counter() - start
    store = Store(home / "catalog.db", readonly=True)
    texts = {os.path.basename(p): t for p, t in store.db.execute(
        "SELECT f.path, t.text FROM texts t JOIN files f ON f.id = t.file_id").fetchall()}
    store.close()
    return seconds, texts


def bench_words(data: Path, model: str, folder: Path | None, count: int) -> dict:
    figures: dict = {}
    # 1. The crawl with and without reading words, whole processes, side by side.
    if folder is not None:
        quarter, truth = _text_quarter(folder, data / "words-quarter")
        cache = data / "words-model-cache"
        _crawl_seconds(folder, data / "words-home", model, True, cache)  # warms the towers and the detector
        for label, photos in (("wallpapers", folder), ("quarter with words", quarter)):
            without, _ = _crawl_seconds(photos, data / "words-home", model, False, cache)
            with_words, texts = _crawl_seconds(photos, data / "words-home", model, True, cache)
            count_photos = sum(1 for p in photos.iterdir() if p.is_file() and not p.name.startswith("."))
            print(f"{label}: {without:.1f} s without, {with_words:.1f} s with words read", file=sys.stderr)
            figures[f"{label}: crawl s without / with words read (ratio)"] = (
                f"{without:.1f} / {with_words:.1f} ({with_words / without:.2f}x)")
            figures[f"{label}: words pass photos/s"] = f"{count_photos / max(with_words - without, 1e-6):.1f}"
            figures[f"{label}: photos with words read"] = sum(1 for t in texts.values() if t)
            if photos == quarter:
                found: dict[int, list[int]] = {}
                for name, words in truth.items():
                    read = " ".join(texts.get(name, "").lower().split())
                    for word, size in words:
                        found.setdefault(size, []).append(word.lower() in read)
                for size in sorted(found):
                    hits = found[size]
                    figures[f"recall of drawn words, {size} px letters"] = f"{sum(hits) / len(hits):.3f} ({len(hits)})"
                big = [h for size, hits in found.items() if size >= 20 for h in hits]
                figures["recall of drawn words >= 20 px"] = f"{sum(big) / len(big):.3f}"
                stray = sum(1 for name, t in texts.items() if t and name not in truth)
                figures["photos without drawn words that got some"] = stray
    # 2. Filters at `count` photos: text: and place: against the same query unfiltered.
    figures.update(_words_filters(data, model, count))
    # 3. The place table: what loading it costs (the crawl's place pass; never a search).
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from clipsearch.places import places; places().nearest(38.7, -9.1)"],
                   check=True)
    figures["place table: fresh process, import + load + 1 lookup, s"] = time.perf_counter() - start
    return figures


def _words_filters(data: Path, model: str, count: int) -> dict:
    """The query library of `count` photos, its copy given words (a quarter of the photos) and
    places (three in five); warm Library.search p50 with and without the filters, and the
    first search in a fresh process."""
    import random

    from clipsearch.model.spec import canonical, expected_dim
    from clipsearch.places import names_of, places

    spec = canonical(model)
    source = data / f"library-{count}-{spec.replace('/', '_').replace(':', '_')}"
    _fill_library(source, spec, expected_dim(spec), count)
    home = data / f"words-library-{count}"
    if not (home / ".complete-words").exists():
        shutil.rmtree(home, ignore_errors=True)
        shutil.copytree(source, home, ignore=shutil.ignore_patterns("*.lock"))
        store = Store(home / "catalog.db")
        rng = random.Random(5)
        vocab = [f"w{i}" for i in range(5000)] + ["open", "exit", "the", "sale"]
        ids = [r[0] for r in store.db.execute("SELECT id FROM files ORDER BY id")]
        table = places()
        towns = [table.nearest(lat, lon) for lat, lon in [(38.71, -9.14), (41.15, -8.61), (48.86, 2.35),
                                                          (40.42, -3.70), (51.5, -0.12), (52.52, 13.4)]]
        store.set_texts([(i, f"{i:032x}", " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 8)))
                          + (" bakery" if i % 400 == 0 else "")) for i in ids if i % 4 == 0])
        store.set_texts([(i, f"{i:032x}", "") for i in ids if i % 4])
        placed = []
        for i in ids:
            if i % 5 < 3:
                town = towns[rng.randrange(len(towns))]
                placed.append((i, (town.city, town.area, town.region, town.country, town.country_code), names_of(town)))
        store.set_places(placed)
        store.close()
        Library(load_settings(home)).rebuild_index()
        (home / ".complete-words").touch()
    library = Library(load_settings(home))
    figures: dict = {}
    for label, suffix in (("unfiltered", ""), ("place:lisbon (1 in 10)", " place:lisbon"),
                          ("text:bakery (1 in 400)", " text:bakery"), ("text:open (common)", " text:open"),
                          ("not:\"a crowd\"", ' not:"a crowd"'), ("words read as a place", " lisbon")):
        library.search(QUERIES[0] + suffix, k=10)
        times = []
        for i in range(30):
            start = time.perf_counter()
            library.search(QUERIES[i % len(QUERIES)] + suffix, k=10)
            times.append(time.perf_counter() - start)
        figures[f"{count:,} photos, warm search p50 ms: {label}"] = 1000 * statistics.median(times)
    cli = [sys.executable, "-m", "clipsearch.cli", "--home", str(home), "search"]
    figures["cold search s: plain"] = _timed_runs(cli + [QUERIES[0]], 5)
    figures["cold search s: with place: and text:"] = _timed_runs(cli + [QUERIES[0] + " place:lisbon text:open"], 5)
    return figures


def bench_rerank(data: Path, count: int) -> dict:
    """What query expansion, k-reciprocal re-ranking and a tuned head add to an image query
    (the vector of a library photo, `like=`) at `count` photos of 768 dimensions, p50 of 100
    queries each, side by side in one run; and `tune`'s time for 1,000 labelled photos (20
    classes of 50) of the same library."""
    from clipsearch.catalog.store import Store
    from clipsearch.notices import Notices
    from clipsearch.policy import ModelPolicy
    from clipsearch.tuning import tune

    dim, spec = 768, "ViT-B-32-SigLIP2-256"
    home = data / f"rerank-library-{count}"
    _fill_library(home, spec, dim, count)
    # clustered() draws each photo's cluster first: the labels of the first 100,000 photos.
    labels = np.random.default_rng(1).integers(0, max(10, count // 100), min(count, 100_000))
    chosen = [int(i) for c in range(20) for i in np.flatnonzero(labels == c)[:50]]
    settings = load_settings(home)
    (home / "head.npz").unlink(missing_ok=True)
    with Store.reading(settings.catalog_path) as store:
        rows = store.rows([i + 1 for i in chosen])
        photos = [(rows[i + 1].path, str(labels[i])) for i in chosen]
        started = time.perf_counter()
        report = tune(store, ModelPolicy(settings, Notices()), photos, home / "head.npz", dim=dim)
        tune_s = time.perf_counter() - started
    library = Library(settings)
    queries = [int(i) + 1 for i in np.random.default_rng(5).integers(0, count, 100)]
    pipelines = {"plain": {}, "qe": {"qe": True}, "rerank": {"rerank": True}, "qe+rerank": {"qe": True, "rerank": True},
                 "tuned": {"tuned": True}, "all": {"qe": True, "rerank": True, "tuned": True}}
    off = {"qe": False, "rerank": False, "tuned": False, "tta": False}
    times: dict[str, list[float]] = {name: [] for name in pipelines}
    for like in queries[:5]:  # warm: the forest mapped, the head read
        library.search(like=like, k=10, switches={**off, "rerank": True, "tuned": True})
    for like in queries:
        for name, switches in pipelines.items():  # interleaved: drift hits every pipeline alike
            started = time.perf_counter()
            library.search(like=like, k=10, switches={**off, **switches})
            times[name].append(time.perf_counter() - started)
    p50 = {name: 1000 * statistics.median(t) for name, t in times.items()}
    return {"photos": count, "dim": dim, **{f"{name}_ms_p50": round(ms, 2) for name, ms in p50.items()},
            **{f"{name}_added_ms": round(ms - p50["plain"], 2) for name, ms in p50.items() if name != "plain"},
            "tune_photos": report.photos, "tune_classes": report.classes, "tune_s": round(tune_s, 2),
            "tune_holdout_map_plain": report.plain_map, "tune_holdout_map_head": report.head_map}


def bench_ray(data: Path, model: str, photos: int, runs: int = 2) -> dict:
    """A crawl of `photos` generated photos with the local pipeline against the same crawl on
    a local Ray (`--engine ray`, started and stopped by the crawl), each in a fresh process
    and a fresh library, alternated `runs` times (drift hits both alike); the words pass off.
    Ray's share: its start (init + actors with the model loaded, from clipsearch.log)."""
    folder = generated_photos(data, photos)
    env = {**os.environ, "CLIPSEARCH_READ_TEXT": "false"}
    walls: dict[str, list[float]] = {"local": [], "ray": []}
    starts: list[float] = []
    for run in range(runs + 1):  # run 0 makes the towers once (the model cache then serves them)
        for engine in ("local", "ray"):
            home = data / f"ray-bench-{engine}"
            shutil.rmtree(home, ignore_errors=True)
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "clipsearch.cli", "--home", str(home), "crawl", str(folder),
                            "--model", model, "--engine", engine], check=True, capture_output=True, env=env)
            if run:
                walls[engine].append(time.perf_counter() - started)
                log_text = (home / "clipsearch.log").read_text()
                if engine == "ray":
                    starts.append(float(log_text.split("actors ready in ")[-1].split()[0]))
    local, on_ray = statistics.median(walls["local"]), statistics.median(walls["ray"])
    return {"photos": photos, "model": model, "runs": runs, "local_crawl_s": round(local, 2),
            "ray_crawl_s": round(on_ray, 2), "ray_over_local": round(on_ray / local, 3),
            "ray_start_s": round(statistics.median(starts), 2),
            "ray_over_local_without_start": round((on_ray - statistics.median(starts)) / local, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32-256:random", help="model spec (default: %(default)s)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data", type=Path, default=None, help="generated data folder (default: user cache)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    sub = parser.add_subparsers(dest="what")
    crawl = sub.add_parser("crawl", help="crawl throughput against the machine's limit")
    crawl.add_argument("folder", type=Path, nargs="?", help="photos (default: generated)")
    crawl.add_argument("--photos", type=int, default=200, help="generated photos (default: %(default)s)")
    crawl.add_argument("--sample", type=int, default=48, help="images used to time decode and model alone")
    crawl.add_argument("--decode-in", default="auto", choices=["auto", "threads", "processes"])
    child = sub.add_parser("_crawl")
    child.add_argument("folder", type=Path)
    child.add_argument("--decode-in", default="auto")
    query = sub.add_parser("query", help="warm and cold query latency")
    query.add_argument("--count", type=int, default=100_000)
    prompt = sub.add_parser("prompt", help="warm and filtered queries in the prompt; time to the first prompt")
    prompt.add_argument("--count", type=int, default=100_000)
    index = sub.add_parser("index", help="forest build time, size, recall@10 and query time")
    index.add_argument("--count", type=int, nargs="+", default=[100_000, 1_000_000])
    index.add_argument("--dim", type=int, default=512)
    index.add_argument("--queries", type=int, default=200)
    index.add_argument("--hard", action="store_true", help="isotropic noise: the worst case for trees")
    recrawl = sub.add_parser("recrawl", help="unchanged re-crawl of a large tree")
    recrawl.add_argument("--count", type=int, default=100_000)
    towers = sub.add_parser("towers", help="the towers of the presets' models: build, size, ms per image and text")
    towers.add_argument("--archs", nargs="+", help="open_clip architectures (default: the presets')")
    scaling = sub.add_parser("decode", help="decode scaling: images/s with N threads and N processes")
    scaling.add_argument("folder", type=Path, nargs="?", help="photos (default: generated)")
    scaling.add_argument("--widths", type=int, nargs="+", default=None, help="worker counts (default: 1 and cores)")
    watch = sub.add_parser("watch", help="the daemon: write-to-searchable latency, idle cost, a 10,000-file storm")
    watch.add_argument("--files", type=int, default=100_000, help="files watched while idle (default: %(default)s)")
    watch.add_argument("--storm", type=int, default=10_000)
    web = sub.add_parser("web", help="the gallery: result cards at 100k, thumbnails cold and cached, a ZIP")
    web.add_argument("--count", type=int, default=100_000)
    batch = sub.add_parser("batch", help="clipsearch batch against one search per process, at 100k")
    batch.add_argument("--count", type=int, default=100_000)
    batch.add_argument("--queries", type=int, default=2000)
    vectors = sub.add_parser("vectors", help="export and import of 1M vectors: time and peak memory")
    vectors.add_argument("--count", type=int, default=1_000_000)
    made = sub.add_parser("checkpoint", help="random weights of a real architecture in a hub repository's layout")
    made.add_argument("arch", help="an open_clip architecture, e.g. ViT-B-32-SigLIP2-256")
    made.add_argument("folder", type=Path)
    rerank = sub.add_parser("rerank", help="query expansion, re-ranking, tuned head: added latency at 100k; tune time")
    rerank.add_argument("--count", type=int, default=100_000)
    on_ray = sub.add_parser("ray", help="a local Ray crawl (--engine ray) against the local pipeline")
    on_ray.add_argument("--photos", type=int, default=200)
    fmt = sub.add_parser("formats", help="decode time of 12 MP JPEG, HEIC, AVIF and RAW files")
    fmt.add_argument("source", type=Path, nargs="?", help="a photo to make them from (default: a generated one)")
    words = sub.add_parser("words", help="words read in photos: crawl cost, recall; text:/place: filters at 100k")
    words.add_argument("folder", type=Path, nargs="?", help="photos to crawl with and without (e.g. 130 wallpapers)")
    words.add_argument("--count", type=int, default=100_000)
    decode_child = sub.add_parser("_decode")
    decode_child.add_argument("path", type=Path)
    decode_child.add_argument("--size", type=int, default=256)
    decode_child.add_argument("--one-thread", action="store_true")
    photos = sub.add_parser("photos", help="generate the default photos only")
    photos.add_argument("--photos", type=int, default=200)
    args = parser.parse_args()
    data = args.data or default_data_dir()

    if args.what == "_crawl":
        return _crawl_child(args.folder, args.model, args.device, args.decode_in)
    if args.what == "_decode":
        return _decode_child(args.path, args.size, args.one_thread)
    results: dict[str, dict] = {}
    if args.what == "checkpoint":
        print(random_checkpoint(args.arch, args.folder))
        return
    if args.what == "photos":
        print(generated_photos(data, args.photos))
        return
    if args.what in (None, "crawl"):
        folder = getattr(args, "folder", None) or generated_photos(data, getattr(args, "photos", 200))
        results["crawl"] = bench_crawl(folder, args.model, getattr(args, "sample", 48), args.device,
                                       getattr(args, "decode_in", "auto"))
    if args.what in (None, "query"):
        results["query"] = bench_query(data, args.model, getattr(args, "count", 100_000), args.device)
    if args.what in (None, "prompt"):
        results["prompt"] = bench_prompt(data, args.model, getattr(args, "count", 100_000), args.device)
    if args.what in (None, "index"):
        for count in getattr(args, "count", None) or [100_000, 1_000_000]:
            results[f"index-{count}"] = bench_index(count, getattr(args, "dim", 512), getattr(args, "queries", 200),
                                                    getattr(args, "hard", False))
    if args.what in (None, "recrawl"):
        results["recrawl"] = bench_recrawl(data, getattr(args, "count", 100_000))
    if args.what in (None, "towers"):
        results["towers"] = bench_towers(data, getattr(args, "archs", None) or TOWER_ARCHS)
    if args.what == "ray":
        results["ray"] = bench_ray(data, args.model, args.photos)
    if args.what == "rerank":
        results["rerank"] = bench_rerank(data, args.count)
    if args.what == "words":
        results["words"] = bench_words(data, args.model, args.folder, args.count)
    if args.what == "formats":
        results["formats"] = bench_formats(args.source, data)
    if args.what == "decode":
        folder = args.folder or generated_photos(data, 200)
        results["decode"] = bench_decode_scaling(folder, args.widths or sorted({1, os.cpu_count() or 1}))
    if args.what in (None, "web"):
        results["web"] = bench_web(data, args.model, getattr(args, "count", 100_000), args.device)
    if args.what in (None, "batch"):
        results["batch"] = bench_batch(data, args.model, getattr(args, "count", 100_000),
                                       getattr(args, "queries", 2000))
    if args.what in (None, "vectors"):
        results["vectors"] = bench_vectors(data, getattr(args, "count", 1_000_000))
    if args.what in (None, "watch"):
        results["watch-latency"] = bench_watch_latency(data, args.model, args.device)
        results["watch-latency-tiny"] = bench_watch_latency(data, TINY_MODEL, "cpu")
        results["watch-storm"] = bench_watch_storm(data, getattr(args, "storm", 10_000))
        results["watch-idle"] = bench_watch_idle(data, getattr(args, "files", 100_000))
    for name, figures in results.items():
        print(f"[{name}]")
        width = max(map(len, figures))
        for key, value in figures.items():
            print(f"  {key:<{width}}  {value:.3f}" if isinstance(value, float) else f"  {key:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
