"""Keeping a long crawl's resident memory close to what it uses (glibc only; a no-op elsewhere).

glibc serves blocks above a threshold with their own mappings, returned to the system when
freed; but each time such a block is freed it raises the threshold, up to 32 MB. A crawl
decodes photos of 8-40 MB in several threads, so after the first few, their buffers come
from the threads' heaps and stay there: 0.2-0.3 GB of a ViT-B-32 crawl's peak on 2 cores
(docs/benchmarks.md). Fixing the threshold at 1 MB keeps decode buffers and torch's large
tensors in mappings of their own.
"""

from __future__ import annotations

import ctypes
import gc
import sys

_M_MMAP_THRESHOLD = -3


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None  # musl and others: nothing to tune


def map_large_blocks(threshold: int = 1 << 20) -> None:
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, threshold)


def return_freed_memory() -> None:
    """Give memory freed inside the heaps back to the system (glibc otherwise keeps it)."""
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
