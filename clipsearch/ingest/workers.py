"""The crawl's CPU decoders: decoding in threads, or in worker processes.

Threads are what a 2-core laptop wants: nothing to start, nothing to copy, and the model
takes most of the CPU anyway. They do not scale: part of each decode holds the GIL, so 16
threads decode 8x what one does; 16 processes decode 16x (issue 12, docs/benchmarks.md).
`decoder()` picks one from the settings; both decode a path into model input with
`load_image`, raise DecodeError for a bad file, and keep their decodes inside one memory
budget (ingest/decode.py). A process pool hands back the small model input (an S x S x 3
uint8 array, 150-200 KB), never the decoded photo.

A worker that dies (a decoder's crash, the kernel's OOM killer) breaks the whole pool:
every file it had in hand is decoded again, alone, in a one-process pool of its own, so
the file that kills a decoder is recorded as failed and the others are not.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np

from ..records import ImageMeta, Preprocess
from .decode import DecodeError, MemoryBudget, load_image

log = logging.getLogger("clipsearch")

THREADS, PROCESSES = "threads", "processes"
MODES = ("auto", THREADS, PROCESSES)
# Below this many decode workers threads are used when the mode is "auto": on 2 cores the
# model holds the CPU and processes only cost memory (docs/benchmarks.md, decode scaling).
PROCESSES_FROM = 4
CRASHED = "the image decoder crashed on this file (a damaged or hostile image)"

LoadFunction = Callable[..., "tuple[np.ndarray, ImageMeta]"]


@dataclass(frozen=True)
class Decoding:
    """How a crawl decodes: `workers` CPU decode workers, in threads or processes (`mode`:
    auto, threads or processes); `memory`: bytes that decodes side by side may hold (None:
    sized from the workers and the machine, decode.decode_budget); the pixel limit; and
    `device`: "auto" (JPEGs on the model's device when that is a CUDA GPU), None (never), or
    a torch device that decodes them whatever the model runs on (tests: "cpu")."""

    workers: int
    max_pixels: int
    mode: str = "auto"
    memory: int | None = None
    device: str | None = "auto"


class Decoded(NamedTuple):
    pixels: np.ndarray
    meta: ImageMeta
    cpu_s: float  # CPU time the decode took, wherever it ran


def pick_mode(mode: str, workers: int) -> str:
    """threads or processes, for a setting of auto, threads or processes."""
    if mode == "auto":
        return PROCESSES if workers >= PROCESSES_FROM else THREADS
    return mode


def decoder(mode: str, workers: int, budget: int, prep: Preprocess, max_pixels: int,
            preview: int = 0) -> ThreadDecoder | ProcessDecoder:
    """The CPU decoder for a crawl with this many decode workers and memory budget (bytes);
    `preview`: each photo's meta also carries a small JPEG of it (load_image)."""
    if pick_mode(mode, workers) == PROCESSES:
        return ProcessDecoder(workers, budget, prep, max_pixels, preview=preview)
    return ThreadDecoder(budget, prep, max_pixels, preview)


class ThreadDecoder:
    """Decodes in the calling thread; calls from several threads run side by side."""

    processes = 0

    def __init__(self, budget: int, prep: Preprocess, max_pixels: int, preview: int = 0):
        self._budget = MemoryBudget(budget)
        self._prep, self._max_pixels, self._preview = prep, max_pixels, preview

    def decode(self, path: str) -> Decoded:
        cpu = time.thread_time()
        pixels, meta = load_image(path, self._prep, self._max_pixels, self._budget, preview=self._preview)
        return Decoded(pixels, meta, time.thread_time() - cpu)

    def close(self, wait: bool = True) -> None:
        pass


class SharedBudget:
    """MemoryBudget for decodes in several processes: the same rule (a decode that would go
    over the limit waits; one alone may always run), kept in shared memory."""

    def __init__(self, limit: int, context: Any):
        self.limit = limit
        self._used = context.Value("q", 0, lock=False)  # guarded by _cond
        self._cond = context.Condition()

    @contextmanager
    def hold(self, nbytes: int):
        with self._cond:
            self._cond.wait_for(lambda: self._used.value == 0 or self._used.value + nbytes <= self.limit)
            self._used.value += nbytes
        try:
            yield
        finally:
            with self._cond:
                self._used.value -= nbytes
                self._cond.notify_all()


class ProcessDecoder:
    """Decodes in a pool of worker processes; `decode` blocks the calling thread (call it
    from as many threads as there are processes, and a few more to keep them fed).

    The workers are started with "spawn" (a fork of a process that holds torch and threads
    is not safe) the first time they are needed, and inherit descriptor 2: start them
    inside `decoder_chatter_to_log` and their libraries' messages reach the log too."""

    def __init__(self, processes: int, budget: int, prep: Preprocess, max_pixels: int,
                 load: LoadFunction = load_image, preview: int = 0):
        self.processes = max(1, processes)
        self._budget, self._prep, self._max_pixels, self._load = budget, prep, max_pixels, load
        self._preview = preview
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._generation = 0  # bumped each time a broken pool is replaced
        self._alone: ProcessPoolExecutor | None = None  # for files that were in a broken pool
        self._alone_lock = threading.Lock()
        self._closed = False
        self._fallback: ThreadDecoder | None = None
        self.restarts = 0

    @property
    def fell_back(self) -> bool:
        """True once worker processes could not start here and threads decode instead."""
        return self._fallback is not None

    def _start(self, processes: int) -> ProcessPoolExecutor | None:
        """A started pool whose workers answer, or None where worker processes cannot run
        here (no shared memory, a script that spawning re-runs, a child that cannot import
        clipsearch): then this decoder decodes in threads from now on, and logs why once."""
        try:
            budget = SharedBudget(self._budget, self._context)
            pool = ProcessPoolExecutor(processes, mp_context=self._context, initializer=_worker_start,
                                       initargs=(budget, self._prep, self._max_pixels, self._load,
                                                 self._preview))
            pool.submit(_ping).result(timeout=120)
            return pool
        except (BrokenProcessPool, OSError, TimeoutError, RuntimeError) as exc:
            if self._fallback is None:
                log.warning("decode worker processes could not start (%s): decoding in threads "
                            "(setting decode_in = \"threads\" says so for good)", exc or type(exc).__name__)
                self._fallback = ThreadDecoder(self._budget, self._prep, self._max_pixels)
            return None

    def _current(self) -> tuple[ProcessPoolExecutor | None, int]:
        with self._lock:
            if self._closed:
                raise DecodeError("the crawl is stopping")
            if self._pool is None and self._fallback is None:
                self._pool = self._start(self.processes)
            return self._pool, self._generation

    def _replace(self, generation: int) -> None:
        with self._lock:
            if generation == self._generation and self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
                self._generation += 1
                self.restarts += 1

    def decode(self, path: str) -> Decoded:
        pool, generation = self._current()
        if pool is None:
            assert self._fallback is not None
            return self._fallback.decode(path)
        try:
            return pool.submit(_worker_decode, path).result()
        except BrokenProcessPool:
            self._replace(generation)
        # In hand when a worker died: this file may be the one that killed it. Alone, in a
        # pool whose worker has answered, it either decodes or is known to be the culprit.
        with self._alone_lock:
            if self._closed:
                raise DecodeError("the crawl is stopping")
            if self._alone is None:
                self._alone = self._start(1)
            if self._alone is None:
                assert self._fallback is not None
                return self._fallback.decode(path)
            try:
                return self._alone.submit(_worker_decode, path).result()
            except BrokenProcessPool:
                _stop(self._alone, wait=False)
                self._alone = None
                raise DecodeError(CRASHED) from None

    def close(self, wait: bool = True) -> None:
        """Stop the workers; wait=False (Ctrl-C, a failed crawl): at once, ending the
        decodes in hand (a decoder stuck on a hostile file must not keep the program alive)."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            _stop(pool, wait)
        with self._alone_lock:
            alone, self._alone = self._alone, None
        if alone is not None:
            _stop(alone, wait)


def _stop(pool: ProcessPoolExecutor, wait: bool) -> None:
    if not wait:
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            try:
                process.kill()
            except (OSError, AttributeError, ValueError):
                pass
    pool.shutdown(wait=wait, cancel_futures=True)


def start_helpers() -> None:
    """Start multiprocessing's resource tracker now, before descriptor 2 is redirected for a
    crawl: it lives as long as the program, and holding the log's pipe it would keep the
    redirection from closing (5 s lost at the end of every crawl)."""
    try:
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()
    except (ImportError, OSError, AttributeError):
        pass


# --- in the worker processes ---------------------------------------------------------------
_worker: tuple[SharedBudget, Preprocess, int, LoadFunction, int] | None = None


def _worker_start(budget: SharedBudget, prep: Preprocess, max_pixels: int, load: LoadFunction,
                  preview: int = 0) -> None:
    global _worker
    _worker = (budget, prep, max_pixels, load, preview)
    # Ctrl-C reaches the whole process group: the crawl stops the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # One decoding process a core: LibRaw's OpenMP threads (rawpy reads this when first
    # imported) would only oversubscribe the cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # Python warnings and Pillow's log records become one line each on descriptor 2, which
    # the crawl reads into its log (_quiet.py); a worker has no terminal of its own.
    warnings.simplefilter("always")
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: \
        _say(f"{category.__name__}: {message}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    pil = logging.getLogger("PIL")
    pil.addHandler(handler)
    pil.setLevel(logging.WARNING)
    pil.propagate = False


def _say(text: str) -> None:
    try:
        sys.stderr.write(text.replace("\n", " ") + "\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


def _ping() -> bool:
    return _worker is not None


def _worker_decode(path: str) -> Decoded:
    assert _worker is not None, "worker not started"
    budget, prep, max_pixels, load, preview = _worker
    cpu = time.process_time()
    pixels, meta = load(path, prep, max_pixels, budget, preview=preview) if preview else \
        load(path, prep, max_pixels, budget)
    return Decoded(pixels, meta, time.process_time() - cpu)


def default_workers() -> int:
    """One decode worker per core this process may use: the cores it may run on, and no
    more than a container's CPU quota (cgroup v2 cpu.max) allows."""
    try:
        cores = len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max", encoding="ascii").read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores
