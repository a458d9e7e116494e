"""Measure crawl speed against what this machine allows.

    python scripts/bench.py crawl FOLDER [--model ViT-B-32-256:random] [--sample 48]
    python scripts/bench.py index [--count 20000] [--dim 512] [--queries 200] [--hard]

Prints, for a folder of photos:
  - decode CPU-seconds per image (load_image in one thread, the crawl's own code path)
  - model CPU-seconds per image (embed_images on already-decoded batches)
  - the limit: cores / (decode + model CPU-s per image), in images per second
  - the crawl: images per second end to end (a fresh library in a temporary folder),
    the achieved / limit ratio, and the peak RSS of the process
Random weights of the real architecture cost exactly what the real weights cost.

`index` builds the forest over clustered unit vectors (like CLIP embeddings of a photo
collection) and prints build time, file size, recall@10 against exact search and the
time per query.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from clipsearch.config import load_settings
from clipsearch.decode import DecodeError, load_image
from clipsearch.embed import OpenClipEmbedder
from clipsearch.library import Library
from clipsearch.scan import ScanRules, walk
from clipsearch.config import DEFAULT_EXTENSIONS


def _cpu_seconds(fn) -> tuple[float, float]:
    """(CPU seconds of the whole process, wall seconds) spent in fn()."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def bench_crawl(folder: Path, model: str, sample: int, device: str) -> dict:
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
    embedder.embed_images(batch[:2])  # warm-up
    embed_cpu, embed_wall = _cpu_seconds(lambda: embedder.embed_images(batch))
    cores = os.cpu_count() or 1
    per_image = decode_cpu / len(picked) + embed_cpu / len(batch)

    with tempfile.TemporaryDirectory() as home:
        library = Library(load_settings(home), embedder=embedder)
        start = time.perf_counter()
        report = library.crawl([folder])
        wall = time.perf_counter() - start
    stats = report.stats
    rate = stats.images_per_second
    return {
        "images": stats.found, "embedded": stats.embedded, "failed": stats.failed,
        "decode_cpu_ms_per_image": 1000 * decode_cpu / len(picked),
        "model_cpu_ms_per_image": 1000 * embed_cpu / len(batch),
        "model_wall_ms_per_image": 1000 * embed_wall / len(batch),
        "limit_images_per_s": cores / per_image,
        "crawl_images_per_s": rate,
        "achieved_over_limit": rate / (cores / per_image),
        "crawl_wall_s_with_index": wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cores": cores, "device": embedder.device, "model": embedder.spec,
        "batch_size": embedder.batch_size,
    }


def clustered(n: int, dim: int, clusters: int, seed: int, hard: bool = False) -> np.ndarray:
    """Unit vectors in clusters. By default they vary in a 32-d subspace plus a little noise,
    as CLIP embeddings of photos do (their intrinsic dimension is a few dozen); `hard` adds
    isotropic noise in every dimension instead, the worst case for any tree index."""
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, clusters, n)
    if hard:
        centres = np.random.default_rng(0).standard_normal((clusters, dim)).astype(np.float32)
        points = centres[pick] + 2.0 * rng.standard_normal((n, dim)).astype(np.float32)
    else:
        basis = np.random.default_rng(9).standard_normal((32, dim)).astype(np.float32)
        centres = 2.0 * np.random.default_rng(0).standard_normal((clusters, 32)).astype(np.float32)
        latent = centres[pick] + rng.standard_normal((n, 32)).astype(np.float32)
        points = latent @ basis + 0.3 * np.sqrt(32) * rng.standard_normal((n, dim)).astype(np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


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
        forest = Forest(Path(folder), manifest)
        ids = np.arange(count)
        recall, elapsed = [], 0.0
        for probe in probes:
            start = time.perf_counter()
            found, _ = forest.query(probe, 10)
            elapsed += time.perf_counter() - start
            truth, _ = exact_top(ids, vectors, probe, 10)
            recall.append(len(set(found.tolist()) & set(truth.tolist())) / 10)
    return {"vectors": count, "dim": dim, "data": "hard (isotropic)" if hard else "clip-like (low rank)",
            "trees": manifest.trees, "build_s": build,
            "file_mb": size / 2**20, "recall_at_10": float(np.mean(recall)),
            "query_ms": 1000 * elapsed / queries}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    crawl = sub.add_parser("crawl", help="crawl throughput against the machine's limit")
    crawl.add_argument("folder", type=Path)
    crawl.add_argument("--model", default="ViT-B-32-256:random")
    crawl.add_argument("--sample", type=int, default=48, help="images used to time decode and model alone")
    crawl.add_argument("--device", default="auto")
    index = sub.add_parser("index", help="forest build time, size, recall@10 and query time")
    index.add_argument("--count", type=int, default=20_000)
    index.add_argument("--dim", type=int, default=512)
    index.add_argument("--queries", type=int, default=200)
    index.add_argument("--hard", action="store_true", help="isotropic noise: the worst case for trees")
    args = parser.parse_args()
    if args.what == "index":
        result = bench_index(args.count, args.dim, args.queries, args.hard)
    else:
        result = bench_crawl(args.folder, args.model, args.sample, args.device)
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:<{width}}  {value:.2f}" if isinstance(value, float) else f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
