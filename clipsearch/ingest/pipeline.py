"""The crawl: bounded, threaded stages from folders to stored vectors.

    crawlers (a thread per folder) -> classify (against the catalog) -> readers (hash)
        -> CPU decoders (threads or processes; ingest/workers.py) -+-> embedder (batches)
        -> device decoder (JPEGs, when the model runs on CUDA) ---+   -> writer (a transaction a batch)
        -> or, with a cluster: a dispatcher that sends batches to Ray actors (decode + embed
           there; cluster.py) and hands their answers to the writer

Every stage is joined to the next by a bounded queue, so a slow disk never fills memory
and the model always has decoded work a few batches ahead. Files whose size and mtime are
unchanged are never opened. New or changed files are read and hashed first, by more
readers than there are decoders (a slow disk or a network share must not starve them):
bytes the catalog already has a vector for (a move, a rename, a copy) are not decoded.
A killed crawl loses at most the batches not yet committed; the next crawl redoes them.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from .._quiet import decoder_chatter_to_log
from ..catalog.store import DELETED, FAILED, LIVE, OFFLINE, Store
from ..model.spec import Embedder
from ..paths import EXACT_CASE, PathRule, is_under
from ..records import (
    CrawlSummary,
    Embedded,
    Failed,
    FileRecord,
    KnownFile,
    Renamed,
    Restored,
    Reused,
    WalkProblem,
    Write,
)
from .decode import DecodeError, bytes_hash, decode_budget, file_hash
from .devicedecode import BATCH_FILES, BATCH_PIXELS, DEVICE_BYTES, JpegInput, decode_jpegs, read_jpeg
from .ocr import DETECT_SIDE
from .source import Source
from .workers import PROCESSES, THREADS, Decoding, ProcessDecoder, ThreadDecoder, decoder, pick_mode, start_helpers

if TYPE_CHECKING:
    from .cluster import Cluster


_END = object()  # end of a stream
log = logging.getLogger("clipsearch")
_WRITE_BATCH = 64  # files without a vector of their own (failed, moved) committed together
_HANDOFF = 256  # records passed from a crawler to the classifier at a time (queues cost ~10 us a hand-off)
_READERS = 4  # at least this many files are read (and hashed) side by side
_JPEG = (".jpg", ".jpeg", ".jpe", ".jfif")


@dataclass
class CrawlStats:
    found: int = 0
    unchanged: int = 0
    new: int = 0
    changed: int = 0
    moved: int = 0  # vector reused by content hash: moved, renamed or copied files
    embedded: int = 0
    failed: int = 0
    restored: int = 0
    deleted: int = 0
    vanished: int = 0  # gone between being found and being read: neither indexed nor failed
    device_decoded: int = 0  # JPEGs decoded on the model's device (the rest on the CPU)
    problems: list[WalkProblem] = field(default_factory=list)
    offline: list[str] = field(default_factory=list)  # roots not there: kept, not walked
    decoder_messages: int = 0  # warnings and errors of image libraries, sent to the log
    crawlers: int = 0
    _crawlers_done: int = 0
    loading_model: bool = False
    started: float = field(default_factory=time.monotonic)
    model_ready: float | None = None  # when the model was loaded, if it was needed
    finished: float | None = None
    # Where the time went for the embedded files, summed over the crawl (scripts/bench.py
    # reports it per image): CPU time of hashing and decoding (in whichever thread or process
    # it ran; a device decode counts its CPU side only), wall time of model calls, and
    # wall time of catalog commits (of every kind of write).
    decode_cpu_s: float = 0.0
    embed_wall_s: float = 0.0
    write_wall_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: float) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    @property
    def scanning(self) -> bool:
        """True until every folder has been walked (until then the total is unknown)."""
        return self._crawlers_done < self.crawlers

    @property
    def processed(self) -> int:
        return self.unchanged + self.restored + self.moved + self.embedded + self.failed

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def summary(self) -> CrawlSummary:
        """These counts now, as a plain frozen value for the faces."""
        with self._lock:
            return CrawlSummary(
                self.found, self.unchanged, self.new, self.changed, self.moved, self.embedded, self.failed,
                self.restored, self.deleted, self.vanished, self.device_decoded, tuple(self.problems),
                tuple(self.offline), self.decoder_messages, self.elapsed, self.images_per_second, self.scanning,
                self.loading_model, self.decode_cpu_s, self.embed_wall_s, self.write_wall_s)

    @property
    def images_per_second(self) -> float:
        """Files embedded per second since the model was ready (its loading not counted)."""
        if self.model_ready is None:
            return 0.0
        return self.embedded / max((self.finished or time.monotonic()) - self.model_ready, 1e-9)


class _Stopped(Exception):
    pass


class Pipeline:
    """Runs one crawl; `run()` blocks, calling `on_progress(summary)` a few times a second."""

    def __init__(self, store: Store, embedder: Embedder, sources: Sequence[Source], decoding: Decoding, *,
                 retry_failed: bool = False, on_progress: Callable[[CrawlSummary], None] | None = None,
                 on_commit: Callable[[Sequence[Write]], None] | None = None, rule: PathRule = EXACT_CASE,
                 spool: Path | None = None, on_model: Callable[[], object] | None = None,
                 cluster: Cluster | None = None):
        """`sources`: what to look at (ingest/source.py); `decoding`: how (workers.py);
        `spool`: where to leave a small JPEG of each photo embedded, made from its decode, for
        the words pass that follows (ingest/ocr.py), named by the content's hash; `cluster`:
        decode and embed there instead (started when the first file needs it, closed at the end)."""
        self.cluster = cluster
        self.store = store
        self.spool = spool
        self.on_model = on_model  # called as the model starts loading (the text reader warms)
        self.embedder = embedder
        self.sources = list(sources)
        self.workers = max(1, decoding.workers)
        self.max_pixels = decoding.max_pixels
        decode_in, device_decode, decode_memory = decoding.mode, decoding.device, decoding.memory
        self.retry_failed = retry_failed
        self.on_progress = on_progress
        self.on_commit = on_commit  # told of every batch written (the watch daemon logs them)
        self.rule = rule
        self.stats = CrawlStats()
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._mode = THREADS if cluster is not None else pick_mode(decode_in, self.workers)
        self._device_decode = None if cluster is not None else device_decode
        self._device: str | None = None  # where JPEGs are decoded, once the model is loaded
        self._device_failures = 0
        self.readers = max(_READERS, self.workers)
        # Threads wait on worker processes: a few more than there are processes keep them fed.
        self.decoders = self.workers + 2 if self._mode == PROCESSES else self.workers
        if cluster is not None:
            self.decoders = 1  # the dispatcher
        self._found: queue.Queue = queue.Queue(maxsize=64)
        self._to_read: queue.Queue = queue.Queue(maxsize=self.readers * 8)
        self._to_decode: queue.Queue = queue.Queue(maxsize=self.decoders * 4)
        self._to_device: queue.Queue = queue.Queue(maxsize=BATCH_FILES)
        # What decodes side by side may hold: sized from the workers and the machine, or set.
        self._budget = decode_memory or decode_budget(self.workers)
        # Made when the model is loaded (its batch size sizes the queue, its input the decoder).
        self._to_embed: queue.Queue | None = None
        self._decoder: ThreadDecoder | ProcessDecoder | None = None
        self._model_lock = threading.Lock()
        self._model_ready = threading.Event()
        self._to_write: queue.Queue = queue.Queue(maxsize=8)
        # Known files by path key (the case rule's), or by exact path for a list of changes.
        self._known = [source.known(store, rule) for source in self.sources]
        self._seen: list[set[int]] = [set() for _ in self.sources]
        self._twins: Store | None = None  # a reader for _claim, guarded by _hash_lock
        self._in_flight: set[str] = set()
        self._hash_lock = threading.Lock()
        self._left = {"readers": self.readers, "producers": self.decoders + (self._device_decode is not None)}
        self._left_lock = threading.Lock()
        self._writer_done = threading.Event()
        self._device_bytes = 0  # bytes of JPEGs read for the device and not yet decoded
        self.stats.crawlers = len(self.sources)

    # --- driver ---------------------------------------------------------------------------
    def run(self) -> CrawlStats:
        if self._mode == PROCESSES:
            start_helpers()  # before descriptor 2 is redirected (workers.py)
        threads: list[threading.Thread] = []
        writer: threading.Thread | None = None
        try:
            # The threads, and the worker processes, start in here: their descriptor 2 is the log's.
            with decoder_chatter_to_log() as chatter:
                try:
                    threads = [self._thread(self._crawl, i) for i in range(len(self.sources))]
                    threads.append(self._thread(self._classify))
                    threads += [self._thread(self._read) for _ in range(self.readers)]
                    decode = self._decode if self.cluster is None else self._dispatch
                    threads += [self._thread(decode) for _ in range(self.decoders)]
                    if self._device_decode is not None:
                        threads.append(self._thread(self._decode_on_device))
                    threads.append(self._thread(self._embed))
                    writer = self._thread(self._write)
                    threads.append(writer)
                    # Waiting on an Event, not joining: a Ctrl-C that lands in Thread.join
                    # can leave the thread marked finished while it still commits (3.11).
                    while any(t.is_alive() for t in threads):
                        if self._writer_done.wait(0.1):
                            for t in threads:
                                t.join(0.1)
                        self._tick()
                except BaseException:
                    self._stop.set()
                    raise
                finally:
                    if self._decoder is not None:
                        self._decoder.close(wait=not self._stop.is_set())
                    if self.cluster is not None:
                        self.cluster.close()
                self.stats.decoder_messages = chatter.count
        except BaseException:
            # Ctrl-C: the writer finishes the transaction in hand, everything else stops. A
            # thread busy loading the model is not waited for (daemon threads die with us).
            self._stop.set()
            if writer is not None:
                self._writer_done.wait()
            deadline = time.monotonic() + 2.0
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))
            raise
        finally:
            if self._twins is not None:
                self._twins.close()
        if self._errors:
            raise self._errors[0]
        self.stats.deleted = self._mark_vanished()
        for source in self.sources:
            if source.whole_root:  # a subfolder crawl does not vouch for the rest of the root
                self.store.mark_crawled(source.root_id)
        self.stats.finished = time.monotonic()
        self._tick()
        return self.stats

    def _thread(self, target, *args) -> threading.Thread:
        def guarded():
            try:
                target(*args)
            except _Stopped:
                pass
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                self._errors.append(exc)
                self._stop.set()

        thread = threading.Thread(target=guarded, name=f"clipsearch-{target.__name__.strip('_')}", daemon=True)
        thread.start()
        return thread

    def _tick(self) -> None:
        if self.on_progress:
            self.on_progress(self.stats.summary())

    def _put(self, q: queue.Queue, item) -> None:
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _get(self, q: queue.Queue, timeout: float | None = None):
        """Next item, or None after `timeout` seconds with nothing (None: wait for ever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._stop.is_set():
                raise _Stopped
            wait = 0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic()))
            try:
                return q.get(timeout=wait) if wait > 0 else q.get_nowait()
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    return None

    # --- stages ---------------------------------------------------------------------------
    def _crawl(self, index: int) -> None:
        records: list[FileRecord] = []
        for item in self.sources[index].files():
            if isinstance(item, WalkProblem):
                with self.stats._lock:
                    self.stats.problems.append(item)
                continue
            records.append(item)
            if len(records) == _HANDOFF:
                self._hand_over(index, records)
                records = []
        self._hand_over(index, records)
        self.stats.add(_crawlers_done=1)
        self._put(self._found, (index, _END))

    def _hand_over(self, index: int, records: list[FileRecord]) -> None:
        if records:
            self.stats.add(found=len(records))
            self._put(self._found, (index, records))

    def _classify(self) -> None:
        crawling = len(self.sources)
        while crawling:
            index, records = self._get(self._found)
            if records is _END:
                crawling -= 1
                continue
            known_files, seen = self._known[index], self._seen[index]
            key = self.sources[index].key(self.rule)
            counts = {"new": 0, "changed": 0, "unchanged": 0, "restored": 0}
            for record in records:
                known: KnownFile | None = known_files.get(key(record.path))
                if known is None:
                    counts["new"] += 1
                    self._put(self._to_read, record)
                    continue
                seen.add(known.id)
                if known.path and known.path != record.path:
                    # Renamed only in case, on a file system that ignores case: the same file.
                    self._put(self._to_write, Renamed(known.id, record.path))
                same = known.size == record.size and known.mtime_ns == record.mtime_ns
                if same and known.has_vector and known.status in (LIVE, DELETED, OFFLINE):
                    if known.status != LIVE:
                        counts["restored"] += 1
                        self._put(self._to_write, Restored(known.id))
                    else:
                        counts["unchanged"] += 1
                elif same and known.status == FAILED and not self.retry_failed:
                    counts["unchanged"] += 1
                else:
                    counts["changed"] += 1
                    self._put(self._to_read, record)
            self.stats.add(**counts)
        for _ in range(self.readers):
            self._put(self._to_read, _END)

    def _load_model(self) -> queue.Queue:
        """Load the model (once, by the first reader that needs it) and make the decoders
        for its input; returns the embed queue."""
        with self._model_lock:
            if self._to_embed is None:
                if self.on_model is not None:
                    self.on_model()
                self.stats.loading_model = True
                if self.cluster is not None:
                    try:
                        self.cluster.start()  # the model loads on its actors
                    finally:
                        self.stats.loading_model = False
                    self.stats.model_ready = time.monotonic()
                    self._to_embed = queue.Queue(maxsize=1)  # only the end passes through it
                    self._model_ready.set()
                    return self._to_embed
                try:
                    batch_size = self.embedder.batch_size  # loads the model
                    prep = self.embedder.preprocess
                finally:
                    self.stats.loading_model = False
                self.stats.model_ready = time.monotonic()
                self._decoder = decoder(self._mode, self.workers, self._budget, prep, self.max_pixels,
                                        preview=DETECT_SIDE if self.spool is not None else 0)
                self._device = self._pick_device()
                # Decoders keep up to three batches ready for the model.
                self._to_embed = queue.Queue(maxsize=3 * max(1, batch_size))
                self._model_ready.set()
            return self._to_embed

    def _pick_device(self) -> str | None:
        from . import devicedecode

        wanted = self._device_decode
        if wanted == "auto":
            wanted = getattr(self.embedder, "device", "cpu")
            if not wanted.startswith("cuda"):
                return None
        if wanted is None or not devicedecode.available(wanted):
            return None
        return wanted

    def _read(self) -> None:
        """Hash each file (reading it is what a slow disk makes slow: readers outnumber
        decoders) and send it on: to the writer if its bytes already have a vector, to the
        device if it is a JPEG for it, else to the CPU decoders. A JPEG that may go to the
        device is read into memory once, and the bytes hashed are the bytes decoded."""
        while (record := self._get(self._to_read)) is not _END:
            cpu = time.thread_time()
            data = self._read_for_device(record)
            try:
                digest = file_hash(record.path) if data is None else bytes_hash(data)
            except DecodeError as exc:
                if not os.path.lexists(record.path):
                    self.stats.add(vanished=1)  # deleted or moved away meanwhile: not a failure
                    continue
                self._put(self._to_write, Failed(record, None, str(exc)))
                continue
            claim = self._claim(record, digest)
            if claim is not None:
                self._device_done(data)
                self._put(self._to_write, claim)
                continue
            hashing = time.thread_time() - cpu
            self._load_model()  # the first file waits here while the model loads
            cpu = time.thread_time()
            jpeg = read_jpeg(data, self.max_pixels) if data is not None and self._device is not None else None
            self.stats.add(decode_cpu_s=hashing + time.thread_time() - cpu)
            if jpeg is not None:
                self._put(self._to_device, (record, digest, jpeg))
            else:
                self._device_done(data)
                self._put(self._to_decode, (record, digest))
        if self._last("readers"):
            for _ in range(self.decoders):
                self._put(self._to_decode, _END)
            if self._device_decode is not None:
                self._put(self._to_device, _END)

    def _read_for_device(self, record: FileRecord) -> bytearray | None:
        """The file's bytes if it may go to the device: a JPEG by name, the device known and
        with room (at most DEVICE_BYTES read and waiting, a full batch waiting at most: else
        the CPU decodes JPEGs too, and on a 16-core workstation the GPU and the cores together
        decode the most). None: the CPU path (which reads the file itself)."""
        undecided = self._device_decode is not None and not self._model_ready.is_set()  # until the model loads
        if not (self._device or undecided) or not record.path.lower().endswith(_JPEG) or self._to_device.full():
            return None
        size = record.size or 0
        with self._left_lock:
            if self._device_bytes and self._device_bytes + size > DEVICE_BYTES:
                return None
            self._device_bytes += size
        try:
            with open(record.path, "rb") as handle:
                data = bytearray(size + 1)
                if handle.readinto(data) == size:
                    del data[size:]
                    return data
        except OSError:
            pass  # the CPU path says what is wrong
        self._device_done(size)  # changed since it was listed: the CPU path takes it
        return None

    def _device_done(self, data: bytearray | int | None) -> None:
        if data is not None:
            with self._left_lock:
                self._device_bytes -= data if isinstance(data, int) else len(data)

    def _last(self, kind: str) -> bool:
        with self._left_lock:
            self._left[kind] -= 1
            return self._left[kind] == 0

    def _decoded(self, record: FileRecord, digest: str, meta, pixels) -> None:
        assert self._to_embed is not None
        self._put(self._to_embed, (record, digest, meta, pixels))

    def _decode_on_cpu(self, record: FileRecord, digest: str) -> bool:
        """Decode on the CPU and send on; False if the file failed."""
        assert self._decoder is not None
        try:
            decoded = self._decoder.decode(record.path)
        except DecodeError as exc:
            self._put(self._to_write, Failed(record, digest, str(exc)))
            return False
        self.stats.add(decode_cpu_s=decoded.cpu_s)
        self._decoded(record, digest, decoded.meta, decoded.pixels)
        return True

    def _decode(self) -> None:
        while (item := self._get(self._to_decode)) is not _END:
            self._decode_on_cpu(*item)
        self._producer_done()

    def _dispatch(self) -> None:
        """With a cluster: send the files to embed in batches (at most a few per actor in
        flight: the driver's memory stays bounded), and hand each batch's answers to the
        writer as it finishes."""
        cluster = self.cluster
        assert cluster is not None
        batch: list[tuple[FileRecord, str]] = []
        ended = False
        while not ended or batch or cluster.busy:
            item = None
            if not ended and (cluster.has_room or not cluster.busy):
                item = self._get(self._to_decode, timeout=0.05 if batch or cluster.busy else None)
                if item is _END:
                    ended = True
                elif item is not None:
                    batch.append(item)
            if batch and cluster.has_room and (ended or item is None or len(batch) >= cluster.batch):
                cluster.submit(batch)
                batch = []
            for files, answers in cluster.collect(0.0 if cluster.has_room and not ended else 0.1):
                self._answered(files, answers)
            if self._stop.is_set():
                raise _Stopped
        self._producer_done()

    def _answered(self, files: list[tuple[FileRecord, str]], answers: list) -> None:
        writes: list[Write] = []
        for (record, digest), answer in zip(files, answers):
            if answer[0] == "ok":
                _, meta, vector, cpu_s = answer
                self.stats.add(decode_cpu_s=cpu_s)
                writes.append(Embedded(record, digest, meta, vector))
            elif answer[0] == "failed":
                writes.append(Failed(record, digest, answer[1]))
            else:
                self.stats.add(vanished=1)
                with self._hash_lock:
                    self._in_flight.discard(digest)
        if self.spool is not None:
            self._spool([w for w in writes if isinstance(w, Embedded)])
        if writes:
            self._put(self._to_write, writes)

    def _decode_on_device(self) -> None:
        """Decode JPEGs on the device in batches of up to BATCH_FILES files or BATCH_PIXELS
        pixels; a batch is also sent when no more JPEGs are waiting."""
        batch: list[tuple[FileRecord, str, JpegInput]] = []
        pixels = 0
        while True:
            item = self._get(self._to_device, timeout=0.02 if batch else None)
            if item is not None and item is not _END and batch and pixels + item[2].pixels > BATCH_PIXELS:
                self._device_batch(batch)  # this one would take the batch over its pixels
                batch, pixels = [], 0
            if item is not None and item is not _END:
                batch.append(item)
                pixels += item[2].pixels
            if batch and (item is None or item is _END or len(batch) >= BATCH_FILES or pixels >= BATCH_PIXELS):
                self._device_batch(batch)
                batch, pixels = [], 0
            if item is _END:
                break
        self._producer_done()

    def _device_batch(self, batch: list[tuple[FileRecord, str, JpegInput]]) -> None:
        device = self._device
        outputs: list = [None] * len(batch)
        if device is not None:
            try:
                outputs = decode_jpegs([jpeg for _, _, jpeg in batch], self.embedder.preprocess, device)
            except Exception as exc:  # noqa: BLE001 - out of device memory, a driver error: CPU decodes
                log.warning("decoding JPEGs on %s failed (%s): they are decoded on the CPU", device, exc)
        for _, _, jpeg in batch:
            self._device_done(jpeg.data)
        done = sum(out is not None for out in outputs)
        self.stats.add(device_decoded=done)
        rescued = 0
        for (record, digest, jpeg), out in zip(batch, outputs):
            if out is None:  # refused by nvJPEG (or the device failed): the CPU decodes it
                rescued += self._decode_on_cpu(record, digest)
            else:
                self._decoded(record, digest, jpeg.meta, out)
        # A batch the device refused whole, whose files the CPU could decode: the device is
        # the trouble, not the files. Twice running, and the rest of the crawl stays on the CPU.
        if done == 0 and rescued:
            self._device_failures += 1
            if self._device_failures >= 2 and self._device is not None:
                log.warning("the device decoder refused two whole batches of JPEGs the CPU could decode: "
                            "the rest of this crawl decodes JPEGs on the CPU")
                self._device = None
        elif done:
            self._device_failures = 0

    def _producer_done(self) -> None:
        """A decoder has finished; the last one ends the embedder's stream."""
        if not self._last("producers"):
            return
        with self._model_lock:
            embed_queue = self._to_embed
        if embed_queue is None:
            self._model_ready.set()  # nothing to embed: the model was never needed
        else:
            self._put(embed_queue, _END)

    def _claim(self, record: FileRecord, digest: str) -> Reused | None:
        """A Reused item if these bytes already have a vector (or will, from a twin being
        embedded in this crawl); None if this file is to be embedded."""
        with self._hash_lock:
            if digest in self._in_flight:
                return Reused(record, digest)
            if self._twins is None:
                self._twins = Store(self.store.path, readonly=True)
            # Read the twin now: later in this crawl its row may be overwritten (two files
            # swapping names), and then these bytes are simply embedded again.
            twin = self._twins.twin(digest)
            if twin is not None:
                return Reused(record, digest, twin)
            self._in_flight.add(digest)
            return None

    def _embed(self) -> None:
        while not self._model_ready.wait(0.1):
            if self._stop.is_set():
                raise _Stopped
        if self._to_embed is None:
            self._put(self._to_write, _END)
            return
        to_embed = self._to_embed
        batch_size = max(1, self.embedder.batch_size)
        finished = False
        while not finished:
            batch: list[tuple] = []
            while len(batch) < batch_size:
                item = self._get(to_embed)
                if item is _END:
                    finished = True
                    break
                batch.append(item)
            if not batch:
                break
            start = time.perf_counter()
            vectors = self.embedder.embed_images(np.stack([pixels for _, _, _, pixels in batch]))
            self.stats.add(embed_wall_s=time.perf_counter() - start)
            writes = [Embedded(record, digest, meta, vector)
                      for (record, digest, meta, _), vector in zip(batch, vectors)]
            if self.spool is not None:
                self._spool(writes)
            self._put(self._to_write, writes)
        self._put(self._to_write, _END)

    def _spool(self, writes: Sequence[Embedded]) -> None:
        """Leave each photo's small JPEG for the words pass (a file it cannot read, or none,
        and it decodes the photo itself)."""
        spool = self.spool
        if spool is None:
            return
        try:
            spool.mkdir(parents=True, exist_ok=True)
            for item in writes:
                if item.meta.preview and item.hash:
                    (spool / f"{item.hash}.jpg").write_bytes(item.meta.preview)
                    item.meta.preview = None
        except OSError as exc:
            log.debug("words pass spool not written: %s", exc)

    def _write(self) -> None:
        try:
            self._write_all()
        finally:
            self._writer_done.set()

    def _write_all(self) -> None:
        writer = Store(self.store.path)
        pending: list[Write] = []
        waiting: list[Reused] = []
        try:
            while True:
                try:
                    item = self._to_write.get(timeout=0.2)
                except queue.Empty:
                    item = None
                if item is _END:
                    break
                if isinstance(item, list):
                    pending.extend(item)
                elif item is not None:
                    pending.append(item)
                if pending and (item is None or isinstance(item, list) or len(pending) >= _WRITE_BATCH
                                or self._stop.is_set()):
                    waiting = self._commit(writer, [*pending, *waiting])
                    pending = []
                if self._stop.is_set() and self._to_write.empty():
                    return
            waiting = self._commit(writer, [*pending, *waiting])
            # Twins that never got a vector: their original failed (or was lost); fail alike.
            leftovers = [Failed(r.record, r.hash, writer.failure_for_hash(r.hash)
                                or "identical to another file that could not be indexed") for r in waiting]
            self._commit(writer, leftovers)
        finally:
            writer.close()

    def _commit(self, writer: Store, items: Sequence[Write]) -> list[Reused]:
        if not items:
            return []
        start = time.perf_counter()
        waiting = writer.write(items)
        self.stats.add(write_wall_s=time.perf_counter() - start)
        still_waiting = {id(item) for item in waiting}
        counts = {"embedded": 0, "moved": 0, "failed": 0}
        for item in items:
            if isinstance(item, Embedded):
                counts["embedded"] += 1
            elif isinstance(item, Reused) and id(item) not in still_waiting:
                counts["moved"] += 1
            elif isinstance(item, Failed):
                counts["failed"] += 1
                log.warning("failed: %s: %s", item.record.path, item.error)
        self.stats.add(**counts)
        if self.on_commit is not None:
            self.on_commit([item for item in items if id(item) not in still_waiting])
        return waiting

    # --- after the walk -------------------------------------------------------------------
    def _mark_vanished(self) -> int:
        """Mark catalogued files that the walk did not see as deleted, except under folders
        that could not be listed (their files may well still be there)."""
        unreadable = [p.path for p in self.stats.problems]
        gone = []
        for source, known, seen in zip(self.sources, self._known, self._seen):
            if not source.vouches:
                continue  # a list of changes vouches for nothing else
            for entry in known.values():
                if entry.id not in seen and entry.status != DELETED \
                        and not any(is_under(entry.path, folder) for folder in unreadable):
                    gone.append(entry.id)
        return self.store.mark_deleted(gone)
