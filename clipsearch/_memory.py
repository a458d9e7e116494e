"""Giving memory that a crawl freed back to the system (glibc only; a no-op elsewhere).

glibc keeps freed blocks in its heaps for reuse. After the torch text tower is dropped
(embed.py), `malloc_trim` hands 150 of its 250 MB back at once.

What this module does not do: fix glibc's mmap threshold for the whole crawl. With
`MALLOC_MMAP_THRESHOLD_=1048576` in the environment, decode buffers and torch's larger
tensors get mappings of their own and go back to the system when freed: peak RSS of a
ViT-B-32-256 crawl falls from about 1.7 to 1.4 GiB, but every model call then page-faults
its activations in afresh and the crawl is 15-20% slower (docs/benchmarks.md). Users short
of memory can set it; the default keeps the speed.
"""

from __future__ import annotations

import ctypes
import gc
import sys


def return_freed_memory() -> None:
    """Give memory freed inside the heaps back to the system (glibc otherwise keeps it)."""
    gc.collect()
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # musl and others: nothing to do
