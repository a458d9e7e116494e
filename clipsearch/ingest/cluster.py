"""The crawl's decode and embed on a Ray cluster (`clipsearch crawl --engine ray`).

    driver (this process, as in every crawl): walk -> classify -> read and hash -> writer
                                                          │ batches of (path, hash)   ▲ vectors, metadata,
                                                          ▼                           │ errors, per file
    Ray: one actor per GPU (or per CPU_PER_ACTOR cores): decode in threads, embed, answer

Only the new and changed files' decode and embedding leave the driver: the walk, the change
check, the catalog (one writer) and the forest stay where they are. Files are read by path,
so every node must see the photo folders at the same path (a shared mount); `start` checks
that on every node before anything is sent. Each actor loads the model as a crawl does (the
torch-free towers on a CPU node, from the library's folder or the node's model cache).

Faults: an actor whose process dies is restarted by Ray and its batch run again (Ray's
max_task_retries); a batch that still fails is sent to the other actors, and after that its
files are recorded as failed with the reason. A driver killed mid-crawl loses the batches in
flight, as a local crawl does; the next crawl redoes them. Ray is imported here only.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import ClipsearchError
from ..records import FileRecord

log = logging.getLogger("clipsearch")

BATCH = 32  # files a task: enough to fill a model call, few enough to spread a small crawl
IN_FLIGHT = 2  # batches an actor holds: one running, one waiting (bounded memory on the driver)
CPU_PER_ACTOR = 2  # on a cluster without GPUs, an actor per this many cores (one decodes, one embeds)
CONNECT_SECONDS = 5.0  # an address that does not answer within this is refused (Ray waits minutes)
RETRIES = 2  # a batch whose actor failed is sent again this many times


class ClusterError(ClipsearchError):
    """The cluster cannot run this crawl (not installed, not there, a node without the photos)."""


@dataclass(frozen=True)
class Embedding:
    """What a node needs to embed as this library does."""

    spec: str
    text_tower_dir: str
    image_tower_dir: str
    image_precision: str
    device: str
    batch_size: int | None
    cache_dir: str
    max_pixels: int
    preview: int  # a small JPEG of each photo for the words pass (0: none)


# One file's answer: ("ok", meta, vector, cpu seconds) | ("failed", reason) | ("vanished",)
Answer = tuple


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ClusterError("--engine ray needs Ray: pip install 'clipsearch[ray]' (or pip install ray)") from None
    return ray


def preflight(address: str | None) -> None:
    """What can be known before anything is written: Ray is installed, the address answers."""
    import_ray()
    if address:
        check_address(address)


def check_address(address: str, timeout: float = CONNECT_SECONDS) -> None:
    """Refuse, within `timeout` seconds, an address where nothing answers: Ray's own connect
    waits for minutes. `auto` (a cluster started on this machine) is left to Ray."""
    if address == "auto":
        return
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--address {address}: write HOST:PORT (the head node's, e.g. 10.0.0.5:6379) or "
                           "ray://HOST:10001")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ClusterError(f"no Ray cluster answers at {address} ({exc.strerror or exc}); nothing was written") \
            from None


class Cluster:
    """The actors of one crawl. `start()` connects (or starts a local Ray, stopped by
    `close()`), checks that every node sees `folders`, and loads the model on the actors."""

    def __init__(self, embedding: Embedding, folders: Sequence[str], address: str | None = None,
                 local_cpus: int | None = None):
        self.embedding = embedding
        self.folders = list(dict.fromkeys(folders))
        self.address = address
        self.local_cpus = local_cpus
        self._ray: Any = None
        self._started_here = False
        self._actors: list = []
        self._pending: dict = {}  # task ref -> (batch of (record, hash), actor index, tries)
        self._next = 0
        self.start_s = 0.0
        self._owner: threading.Thread | None = None  # the thread a local Ray was started from
        self._owner_stop = threading.Event()

    # --- life ------------------------------------------------------------------------------
    def start(self) -> None:
        started = time.monotonic()
        ray = import_ray()
        if self.address:
            check_address(self.address)
        # Ray's notes (its SIGTERM handler is left alone in a crawl's thread: good; token
        # authentication is on: good) are not the user's business; its errors still show.
        logging.getLogger("ray").setLevel(logging.ERROR)
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                       "configure_logging": False}
            if self.address:
                ray.init(address=self.address, **options)
            else:
                self._start_local(ray, options)
        self._ray = ray
        try:
            self._check_nodes()
            self._actors = self._make_actors()
        except BaseException:
            self.close()
            raise
        self.start_s = time.monotonic() - started
        log.info("Ray: %d actors ready in %.1f s", len(self._actors), self.start_s)

    def _start_local(self, ray: Any, options: dict[str, Any]) -> None:
        """Start a local Ray from a thread that lives until close(): Ray's processes die with
        the thread that started them (Linux's parent-death signal follows the thread), and a
        crawl's reader thread, which needs the cluster first, ends before the crawl does."""
        ready, failed = threading.Event(), []
        self._owner_stop = threading.Event()

        def own() -> None:
            try:
                ray.init(num_cpus=self.local_cpus, **options)
            except BaseException as exc:  # noqa: BLE001 - handed to start()
                failed.append(exc)
                return
            finally:
                ready.set()
            self._owner_stop.wait()
            ray.shutdown()

        self._owner = threading.Thread(target=own, name="clipsearch-ray", daemon=True)
        self._owner.start()
        ready.wait()
        if failed:
            raise failed[0]
        self._started_here = True

    def close(self) -> None:
        ray = self._ray
        if ray is None:
            return
        for actor in self._actors:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._actors, self._pending = [], {}
        if self._started_here:
            self._owner_stop.set()
            if self._owner is not None:
                self._owner.join(60)
            self._started_here = False
        self._ray = None

    def _check_nodes(self) -> None:
        """Every alive node must see the photo folders at the same path: a task pinned to each
        node looks, and the first node that cannot is named."""
        ray = self._ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        look = ray.remote(num_cpus=0)(missing_folders)
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        answers = ray.get([look.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
                           .remote(self.folders) for node in nodes])
        for node, missing in zip(nodes, answers):
            if missing:
                raise ClusterError(
                    f"node {node.get('NodeManagerAddress', node['NodeID'])} cannot see {missing[0]}: every node "
                    "must see the photo folders at the same path (a shared mount); nothing was written")

    def _make_actors(self) -> list:
        ray = self._ray
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
        count = gpus or max(1, cpus // CPU_PER_ACTOR)
        per_actor = max(1, cpus // count)
        remote = ray.remote(EmbedWorker).options(
            num_cpus=per_actor if not gpus else max(1, per_actor - 1), num_gpus=1 if gpus else 0,
            max_restarts=-1, max_task_retries=RETRIES)
        threads = per_actor
        # The first actor makes the model's towers where they are missing; the others then
        # find them made (two actors writing one tower at once would race).
        first = remote.remote(self.embedding, threads)
        ray.get(first.ready.remote())
        rest = [remote.remote(self.embedding, threads) for _ in range(count - 1)]
        ray.get([actor.ready.remote() for actor in rest])
        return [first, *rest]

    # --- work ------------------------------------------------------------------------------
    batch = BATCH

    @property
    def actors(self) -> int:
        return len(self._actors)

    @property
    def has_room(self) -> bool:
        return len(self._pending) < IN_FLIGHT * max(1, len(self._actors))

    @property
    def busy(self) -> bool:
        return bool(self._pending)

    def submit(self, batch: list[tuple[FileRecord, str]], tries: int = 0, avoid: int | None = None) -> None:
        index = self._next % len(self._actors)
        if avoid is not None and len(self._actors) > 1 and index == avoid:
            index = (index + 1) % len(self._actors)
        self._next = index + 1
        ref = self._actors[index].embed.remote([record.path for record, _ in batch])
        self._pending[ref] = (batch, index, tries)

    def collect(self, timeout: float) -> list[tuple[list[tuple[FileRecord, str]], list[Answer]]]:
        """The batches finished within timeout seconds, with each file's answer."""
        if not self._pending:
            return []
        ray = self._ray
        ready, _ = ray.wait(list(self._pending), num_returns=len(self._pending), timeout=timeout)
        done = []
        for ref in ready:
            batch, index, tries = self._pending.pop(ref)
            try:
                done.append((batch, ray.get(ref)))
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError, ray.exceptions.WorkerCrashedError) \
                    as exc:
                if tries < RETRIES:
                    log.warning("a batch of %d files failed on the cluster (%s): sent again", len(batch),
                                type(exc).__name__)
                    self.submit(batch, tries + 1, avoid=index)
                else:
                    reason = f"the cluster could not embed it ({type(exc).__name__})"
                    done.append((batch, [("failed", reason)] * len(batch)))
        return done


def missing_folders(folders: Sequence[str]) -> list[str]:
    """The folders this node cannot see (run on each node)."""
    return [folder for folder in folders if not os.path.isdir(folder)]


class EmbedWorker:
    """A Ray actor: the library's model, and decoders in `threads` threads."""

    def __init__(self, embedding: Embedding, threads: int):
        from ..model.embed import LazyEmbedder
        from .decode import decode_budget

        self.embedding = embedding
        self.embedder = LazyEmbedder(embedding.spec, text_tower_dir=embedding.text_tower_dir,
                                     image_tower_dir=embedding.image_tower_dir,
                                     image_precision=embedding.image_precision, device=embedding.device,
                                     batch_size=embedding.batch_size, cache_dir=embedding.cache_dir)
        self.threads = max(1, threads)
        self.budget = decode_budget(self.threads)
        self._pool = ThreadPoolExecutor(self.threads)
        self._decoder: Any = None

    def ready(self) -> int:
        """Load the model (and make the decoder for its input); its vector length."""
        from .workers import ThreadDecoder

        if self._decoder is None:
            self.embedder.batch_size  # noqa: B018 - loads the model
            self._decoder = ThreadDecoder(self.budget, self.embedder.preprocess, self.embedding.max_pixels,
                                          self.embedding.preview)
        return self.embedder.dim


    def embed(self, paths: Sequence[str]) -> list[Answer]:
        from .decode import DecodeError

        self.ready()

        def decode(path: str):
            try:
                return self._decoder.decode(path)
            except DecodeError as exc:
                return None if not os.path.lexists(path) else str(exc)

        decoded = list(self._pool.map(decode, paths))
        good = [d for d in decoded if d is not None and not isinstance(d, str)]
        vectors: Any = self.embedder.embed_images(np.stack([d.pixels for d in good])) if good else []
        answers: list[Answer] = []
        found = iter(zip(good, vectors))
        for item in decoded:
            if item is None:
                answers.append(("vanished",))
            elif isinstance(item, str):
                answers.append(("failed", item))
            else:
                done, vector = next(found)
                answers.append(("ok", done.meta, np.asarray(vector, dtype=np.float32), done.cpu_s))
        return answers
