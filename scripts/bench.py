"""Measure crawl speed against what this machine allows.

    python scripts/bench.py crawl FOLDER [--model ViT-B-32-256:random] [--sample 48]

Prints, for a folder of photos:
  - decode CPU-seconds per image (load_image in one thread, the crawl's own code path)
  - model CPU-seconds per image (embed_images on already-decoded batches)
  - the limit: cores / (decode + model CPU-s per image), in images per second
  - the crawl: images per second end to end (a fresh library in a temporary folder),
    the achieved / limit ratio, and the peak RSS of the process
Random weights of the real architecture cost exactly what the real weights cost.
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
    rate = stats.embedded / max(stats.elapsed, 1e-9)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    crawl = sub.add_parser("crawl", help="crawl throughput against the machine's limit")
    crawl.add_argument("folder", type=Path)
    crawl.add_argument("--model", default="ViT-B-32-256:random")
    crawl.add_argument("--sample", type=int, default=48, help="images used to time decode and model alone")
    crawl.add_argument("--device", default="auto")
    args = parser.parse_args()
    result = bench_crawl(args.folder, args.model, args.sample, args.device)
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:<{width}}  {value:.2f}" if isinstance(value, float) else f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
