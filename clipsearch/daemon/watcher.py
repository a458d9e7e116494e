"""The watch daemon: keeps a library in step with its folders while photos come and go.

    watchdog observer (a thread) -> Changes (debounced paths, moves, deletions)
        -> Watcher.run: the library's one Writer, in batches -> the forest, rebuilt aside

On start the daemon takes the library's write lock, watches every root and reconciles
them (the crawl's own change check), so nothing that changed while it was stopped is
missed. A file is embedded once its size and date have kept still for the debounce time
(a copy in progress is not read half-written); every file ready at that moment goes to
the embedder together, so a storm of 10,000 files is processed at crawl speed. Moves keep
vectors (the rows take the new paths); a deleted folder marks its files deleted; a root
that disappears goes offline instead (its files are kept) and is reconciled when it is
back. New vectors are searchable at once (rows newer than the forest are scored
exactly); the forest is rebuilt in a thread when enough has changed or all is quiet, and
swapped in atomically. The model is loaded when there is something to embed and released
after idle minutes.

Files in the library folder: `watch.pid`, `watch.log` (a detached daemon's output) and
`watch/`: `state.json` (for `clipsearch status`), `requests/` and `answers/` (a crawl
started while the daemon runs is handed to it).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .._files import write_whole
from ..catalog.faults import storage_error
from ..errors import ClipsearchError, DaemonError
from ..ingest.scan import valid_name
from ..paths import is_under
from ..records import FileRecord
from . import protocol
from .client import PID_FILE, STATE_DIR, _write_json

if TYPE_CHECKING:
    from ..config import Settings
    from ..keeper import ForestKeeper
    from ..policy import ModelPolicy
    from ..records import Root, Write
    from ..writer import Writer

log = logging.getLogger("clipsearch")

_INOTIFY_LIMIT = ("the system's limit of inotify watches is reached; {root} is polled instead (slower to notice "
                  "changes). Raise the limit: `sudo sysctl fs.inotify.max_user_watches=524288` (and "
                  "fs.inotify.max_user_instances), and make it permanent in /etc/sysctl.d/")
_EVENTS: list = []  # _events(), once watchdog is imported
_LOG_EACH = 20  # a batch of up to this many files is logged file by file; larger ones in one line


# --- what the events said -------------------------------------------------------------------
@dataclass
class Batch:
    """Work taken from Changes at one moment: operations in event order, then stable paths."""

    ops: list[tuple[str, str, str | None, bool]] = field(default_factory=list)  # (op, path, dest, is_dir)
    ready: list[str] = field(default_factory=list)


class Changes:
    """What file system events named, waiting to be applied: thread-safe, filled by the
    observer's thread and emptied by the daemon's. Created and modified files wait until
    their size and date have kept still for `debounce` seconds; moves and deletions are
    kept in the order they happened."""

    def __init__(self, debounce: float, clock: Callable[[], float] = time.monotonic):
        self.debounce = debounce
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[float, tuple[int, int] | None]] = {}  # path -> (last seen change, stat)
        self._ops: list[tuple[str, str, str | None, bool]] = []
        self.wake = threading.Event()
        self.last_event = 0.0

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending) + len(self._ops)

    def touch(self, path: str) -> None:
        """A file was created or written to."""
        signature = _signature(path)
        with self._lock:
            self._pending[path] = (self._clock(), signature)
            self._event()

    def move(self, src: str, dest: str, is_dir: bool) -> None:
        with self._lock:
            if is_dir:
                for path in [p for p in self._pending if is_under(p, src)]:
                    self._pending[dest + path[len(src):]] = self._pending.pop(path)
            elif src in self._pending:
                self._pending[dest] = self._pending.pop(src)
            self._ops.append(("move", src, dest, is_dir))
            self._event()

    def delete(self, path: str, is_dir: bool) -> None:
        with self._lock:
            for pending in [p for p in self._pending if p == path or (is_dir and is_under(p, path))]:
                del self._pending[pending]
            self._ops.append(("delete", path, None, is_dir))
            self._event()

    def _event(self) -> None:
        self.last_event = self._clock()
        self.wake.set()

    def take(self) -> Batch:
        """The operations so far, and the paths that have kept still for the debounce time
        (a path whose size or date changed meanwhile waits another round)."""
        now = self._clock()
        with self._lock:
            batch = Batch(self._ops, [])
            self._ops = []
            due = [(p, sig) for p, (t, sig) in self._pending.items() if now - t >= self.debounce]
        checked = [(path, old, _signature(path)) for path, old in due]  # stat outside the lock
        with self._lock:
            for path, old, new in checked:
                entry = self._pending.get(path)
                if entry is None or entry[1] != old:
                    continue  # touched again meanwhile
                if new == old or new is None:
                    batch.ready.append(path)
                    del self._pending[path]
                else:
                    self._pending[path] = (now, new)
        return batch

    def give_back(self, batch: Batch) -> None:
        """Work that could not be done (a full disk): kept, to be tried again."""
        with self._lock:
            self._ops = batch.ops + self._ops
            for path in batch.ready:
                self._pending.setdefault(path, (self._clock() - self.debounce, _signature(path)))

    def next_due(self) -> float | None:
        """Seconds until the next pending path may be ready (0 with operations waiting)."""
        with self._lock:
            if self._ops:
                return 0.0
            if not self._pending:
                return None
            oldest = min(t for t, _ in self._pending.values())
        return max(0.0, oldest + self.debounce - self._clock())


def _signature(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _events() -> list:
    """The events asked of the kernel. Not opens, reads and closes without a write: the
    daemon's own reading of every new file would otherwise come back as events, by the
    thousand in a storm (and cost the observer's thread as much CPU as the decoding)."""
    from watchdog import events

    return [events.FileCreatedEvent, events.FileModifiedEvent, events.FileClosedEvent, events.FileMovedEvent,
            events.FileDeletedEvent, events.DirCreatedEvent, events.DirMovedEvent, events.DirDeletedEvent]


class _Handler:
    """watchdog's callbacks for one root -> Changes. Only files the root's rules admit count."""

    def __init__(self, changes: Changes, admits: Callable[[str], bool]):
        self.changes = changes
        self.admits = admits

    def dispatch(self, event) -> None:
        kind, src = event.event_type, os.fsdecode(event.src_path)
        if kind in ("opened", "closed_no_write") or (event.is_directory and kind in ("modified", "created")):
            return
        dest = os.fsdecode(getattr(event, "dest_path", "") or "")
        if not valid_name(src) or not valid_name(dest):
            # The catalog stores text; the crawl reports such names (rename the file to index it).
            log.warning("not indexed: a file name that is not valid UTF-8 under %s", os.path.dirname(src)[:200]
                        .encode("utf-8", "replace").decode())
            return
        if kind == "moved":
            if event.is_directory or self.admits(src) or self.admits(dest):
                self.changes.move(src, dest, event.is_directory)
            if not event.is_directory and self.admits(dest):
                self.changes.touch(dest)  # checked once still (a download renamed into place is new)
        elif kind == "deleted":
            if event.is_directory or self.admits(src):
                self.changes.delete(src, event.is_directory)
        elif self.admits(src):  # created, modified, closed
            self.changes.touch(src)


# --- the daemon -----------------------------------------------------------------------------
class Watcher:
    """The daemon's work; `run(stop)` blocks until `stop` is set. Times are in seconds."""

    def __init__(self, settings: Settings, open_writer: Callable[[], Writer], keeper: ForestKeeper,
                 policy: ModelPolicy, *, debounce: float | None = None, polling: bool = False,
                 poll_interval: float = 5.0, idle_release: float = 300.0, quiet_rebuild: float = 60.0,
                 rebuild_share: float = 0.1, check_every: float = 2.0, retry_after: float = 5.0):
        self.settings = settings
        self.home = settings.home
        self._open_writer = open_writer
        self.keeper = keeper
        self.policy = policy
        self.changes = Changes(settings.watch_debounce if debounce is None else debounce)
        self.polling = polling
        self.poll_interval = poll_interval
        self.idle_release = idle_release
        self.quiet_rebuild = quiet_rebuild
        self.rebuild_share = rebuild_share
        self.check_every = check_every
        self.retry_after = retry_after
        self.started = time.time()
        self.writer: Writer | None = None
        self.ready = threading.Event()  # set once the start-up reconcile is done
        self.error: str | None = None  # the last storage error, until work succeeds again
        self._watches: dict[int, tuple[Any, Any, tuple[int, int] | None]] = {}  # root id -> (observer, watch, identity)
        self._polled: set[str] = set()
        self._observer: Any = None
        self._poller: Any = None
        self._build: threading.Thread | None = None
        self._last_work = time.monotonic()
        self._unread = True  # photos whose place or words the second passes have not seen
        self._last_check = 0.0
        self._retry_at = 0.0
        self._reconcile: set[int] = set()  # roots to walk once quiet (after a storm)
        self._reconcile_now: set[int] = set()  # roots to walk at once (back online; a failed catch-up)
        self._build_failed = 0.0  # when the last background build failed (not tried again for a while)
        self._offline: list[str] = []
        self._state_written = 0.0
        self._state: dict = {}
        self.totals = {"indexed": 0, "moved": 0, "deleted": 0, "failed": 0}

    # --- driver ---------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        global _EVENTS
        _EVENTS = _events()

        # watchdog warns when a folder's watch is added twice in an event storm; it copes.
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="watchdog")
        self.writer = self._open_writer()  # LibraryBusy if another process writes
        try:
            self._write_pid()
            self._observer = Observer()
            self._poller = PollingObserver(timeout=self.poll_interval)
            self._observer.start()
            self._poller.start()
            self._watch_requests()
            self._write_state("starting")
            folders = ", ".join(r.path for r in self.writer.roots()) or "no folders yet"
            log.info("watching %s (debounce %.1f s)", folders, self.changes.debounce)
            self._check_roots(initial=True)
            if not self._guarded(self._reconcile_all):
                self._reconcile_now.update(r.id for r in self.writer.roots())  # caught up once writing works
            self.ready.set()
            self._write_state("watching")
            # Wake the loop the moment stop is set (a thread blocked on an event costs nothing).
            threading.Thread(target=_wake_on, args=(stop, self.changes.wake), name="clipsearch-stop",
                             daemon=True).start()
            while not stop.is_set():
                self._cycle()
                self.changes.wake.wait(self._wait())
                self.changes.wake.clear()
        except _Stop:
            log.info("asked to stop")
        finally:
            self._shutdown()

    def _wait(self) -> float:
        waits = [self.check_every]
        if self._retry_at:  # a storage failure: nothing is tried before the retry time
            waits.append(max(0.05, self._retry_at - time.monotonic()))
        else:
            due = self.changes.next_due()
            if due is not None:
                waits.append(max(due, 0.02))
        return min(waits)

    def _cycle(self) -> None:
        now = time.monotonic()
        if now - self._last_check >= self.check_every:
            self._last_check = now
            self._guarded(self._check_roots, clears=False)
            self._guarded(self._answer_requests, clears=False)
        if self._retry_at and now < self._retry_at:
            return
        batch = self.changes.take()
        if batch.ops or batch.ready:
            if not self._guarded(self._apply, batch):
                self.changes.give_back(batch)
                return
            self._last_work = time.monotonic()
            self._unread = True
        if self._reconcile_now:  # roots back online, or a start-up catch-up that failed
            roots, self._reconcile_now = self._reconcile_now, set()
            if not self._guarded(self._reconcile_roots, roots):
                self._reconcile_now |= roots
                return
        quiet = time.monotonic() - max(self._last_work, self.changes.last_event)
        if self._reconcile and quiet >= min(self.quiet_rebuild, 5.0) and not len(self.changes):
            roots, self._reconcile = self._reconcile, set()
            if not self._guarded(self._reconcile_roots, roots):
                self._reconcile |= roots
        self._guarded(self._maybe_rebuild, quiet, clears=False)
        self._guarded(self._second_passes, clears=False)
        if quiet >= self.idle_release and self.policy.release():
            log.info("model released after %.0f idle seconds", quiet)
        self._write_state("watching")

    def _second_passes(self) -> None:
        """What the crawl does after embedding, for the photos the daemon indexed: their places
        from GPS, then their words, a few photos at a time between changes (a change waiting
        stops the reading; the next cycle goes on)."""
        writer = self.writer
        if not self._unread or writer is None:
            return
        writer.place_photos()
        if writer.settings.read_text:
            report = writer.read_texts(limit=8, stop=lambda: len(self.changes) > 0)
            self._unread = report.read == 8
        else:
            self._unread = False

    def _guarded(self, work, *args, clears: bool = True) -> bool:
        """Run work; a storage failure (a full disk, a read-only folder) is logged once and
        retried after a while, the daemon goes on. Only work that writes the changes (clears)
        says, by succeeding, that the failure is over: checks that wrote nothing prove nothing."""
        try:
            work(*args)
        except (ClipsearchError, sqlite3.Error, OSError) as exc:
            error = storage_error(exc, self.home) if not isinstance(exc, ClipsearchError) else exc
            if error is None:
                raise
            message = str(error)
            if message != self.error:
                log.error("%s; the daemon keeps the changes and tries again every %.0f s", message, self.retry_after)
            self.error = message
            self._retry_at = time.monotonic() + self.retry_after
            self._write_state("waiting", force=True)
            return False
        if clears:
            if self.error:
                log.info("writing works again: catching up")
            self.error, self._retry_at = None, 0.0
        return True

    # --- roots ----------------------------------------------------------------------------
    def _check_roots(self, initial: bool = False) -> None:
        """Watch the roots that are there, and notice roots that went away or came back."""
        assert self.writer is not None
        roots = self.writer.roots()
        offline = []
        for root in roots:
            identity = _identity(root.path)
            held = self._watches.get(root.id)
            if held and held[2] == identity and identity is not None and root.offline_since is None:
                if _alive(held[0], held[1]):
                    continue  # the same folder as before (a drive re-plugged gets a new identity)
                log.warning("the watch of %s stopped; watching it again", root.path)
            if held:
                self._unwatch(root.id)
            if not self.writer.check_root(root):
                offline.append(root.path)
                continue
            try:
                self._watch(root)
            except OSError as exc:  # gone again, or not readable: looked at again on the next check
                log.warning("cannot watch %s: %s", root.path, exc.strerror or exc)
                continue
            if not initial and (held or root.offline_since is not None):
                log.info("watching again: %s", root.path)
                self._reconcile_now.add(root.id)  # what changed while it was away
            elif not initial:
                log.info("watching %s", root.path)
        for root_id in [i for i in self._watches if i not in {r.id for r in roots}]:
            self._unwatch(root_id)  # removed from the library
        self._offline = offline

    def _watch(self, root: Root) -> None:
        assert self.writer is not None
        rules = self.writer.rules(root)
        def admits(path: str) -> bool:
            return rules.admits(path, root.path)

        handler = _Handler(self.changes, admits)
        observer = self._poller if self.polling else self._observer
        try:
            watch = observer.schedule(handler, root.path, recursive=True, event_filter=_EVENTS)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EMFILE) or observer is self._poller:
                raise
            log.warning(_INOTIFY_LIMIT.format(root=root.path))
            observer = self._poller
            watch = observer.schedule(handler, root.path, recursive=True, event_filter=_EVENTS)
        if observer is self._poller:
            self._polled.add(root.path)
        self._watches[root.id] = (observer, watch, _identity(root.path))

    def _unwatch(self, root_id: int) -> None:
        observer, watch, _ = self._watches.pop(root_id)
        try:
            observer.unschedule(watch)
        except (KeyError, OSError):
            pass  # its emitter already stopped (the folder was deleted)

    # --- applying changes -----------------------------------------------------------------
    def _apply(self, batch: Batch) -> None:
        """Apply a batch: operations in order, then the stable paths. Operations applied are
        taken out of the batch as they commit, so that a failure gives back only the rest."""
        assert self.writer is not None
        roots = self.writer.roots()
        online = {r.id for r in roots if r.offline_since is None and r.id in self._watches}
        rules = {r.id: self.writer.rules(r) for r in roots}

        def reachable(path: str) -> bool:
            root = self.writer.root_of(path, roots) if self.writer else None
            return root is not None and root.id in online and os.path.isdir(root.path)

        while batch.ops:
            op, path, dest, is_dir = batch.ops[0]
            if op == "move":
                moved = self.writer.move(path, dest or path, is_dir)
                if moved:
                    self.totals["moved"] += moved
                    log.info("moved %s -> %s%s", path, dest, f" ({moved} photos)" if is_dir else "")
            elif not reachable(path):
                pass  # its whole root is away: offline, not deleted
            elif is_dir:
                # Even if a folder of that name is back (replaced by another): what is in it now
                # is checked file by file through its own events.
                count = self.writer.delete_under(path)
                if count:
                    self.totals["deleted"] += count
                    log.info("deleted %s (%d photos)", path, count)
            else:
                # Consecutive file deletions go together, in one transaction.
                gone = []
                while batch.ops and batch.ops[0][0] == "delete" and not batch.ops[0][3]:
                    if not os.path.lexists(batch.ops[0][1]) and reachable(batch.ops[0][1]):
                        gone.append(batch.ops[0][1])
                    batch.ops.pop(0)
                if gone:
                    self._delete(gone)
                continue
            batch.ops.pop(0)
        records: list[FileRecord] = []
        gone = []
        for path in batch.ready:
            root = self.writer.root_of(path, roots)
            if root is None or root.id not in online or not rules[root.id].admits(path, root.path):
                continue  # away, or moved where the rules do not look (its row, if any, went with the move)
            try:
                st = os.stat(path)
            except OSError:
                if reachable(path):
                    gone.append(path)
                continue
            records.append(FileRecord(path, root.id, st.st_size, st.st_mtime_ns))
        if gone:
            self._delete(gone)
        if records:
            if len(records) > 1000:
                self._reconcile.update(r.root_id for r in records)  # a storm: events may have been dropped
            stats = self.writer.update(records, on_commit=self._log_written)
            if len(records) > _LOG_EACH:
                log.info("%d files checked in %.1f s: %d indexed, %d unchanged, %d failed (decode %.1f CPU-s, "
                         "model %.1f s, writes %.1f s)", len(records), stats.elapsed, stats.embedded + stats.moved,
                         stats.unchanged, stats.failed, stats.decode_cpu_s, stats.embed_wall_s, stats.write_wall_s)

    def _delete(self, paths: Sequence[str]) -> None:
        assert self.writer is not None
        count = self.writer.delete_paths(paths)
        self.totals["deleted"] += count
        if count and count <= _LOG_EACH:
            for path in paths:
                log.info("deleted %s", path)
        elif count:
            log.info("deleted %d photos", count)

    def _log_written(self, items: Sequence[Write]) -> None:
        from ..records import Embedded, Failed, Reused

        indexed = [i for i in items if isinstance(i, (Embedded, Reused))]
        self.totals["indexed"] += len(indexed)
        self.totals["failed"] += sum(isinstance(i, Failed) for i in items)
        if len(indexed) <= _LOG_EACH:
            for item in indexed:
                log.info("indexed %s%s", item.record.path, " (same bytes as a photo already indexed)"
                         if isinstance(item, Reused) else "")

    def _reconcile_all(self) -> None:
        assert self.writer is not None
        if self.writer.roots():
            report = self.writer.crawl(refresh_index=False, on_commit=self._log_written)
            self._last_work = time.monotonic()
            if report.stats.deleted:
                self.totals["deleted"] += report.stats.deleted

    def _reconcile_roots(self, root_ids: set[int]) -> None:
        assert self.writer is not None
        folders = [r.path for r in self.writer.roots() if r.id in root_ids and r.id in self._watches]
        if folders:
            self.writer.crawl(folders, refresh_index=False, on_commit=self._log_written)
            self._last_work = time.monotonic()

    # --- the forest -----------------------------------------------------------------------
    def _maybe_rebuild(self, quiet: float) -> None:
        """Rebuild the forest aside when the share of rows changed since its build passes
        rebuild_share, or when anything changed and all has been quiet for quiet_rebuild."""
        if self._build is not None and self._build.is_alive():
            return
        if self._build_failed and time.monotonic() - self._build_failed < 300:
            return
        if len(self.changes):
            return  # in the middle of a storm: the build would only slow it down
        assert self.writer is not None
        store = self.writer.store
        if not store.get_meta("dim"):
            return
        manifest = self.keeper.manifest()
        changed = store.count_changed_since(manifest.built_seq if manifest else 0)
        if not changed:
            return
        live = manifest.count if manifest else 0
        if changed >= max(1000, self.rebuild_share * live) or quiet >= self.quiet_rebuild:
            self._build = threading.Thread(target=self._rebuild, name="clipsearch-rebuild", daemon=True)
            self._build.start()

    def _rebuild(self) -> None:
        from ..catalog.store import Store

        store = Store(self.settings.catalog_path)
        try:
            manifest = self.keeper.build(store)
            log.info("index generation %d built over %d photos", manifest.generation, manifest.count)
        except Exception as exc:  # noqa: BLE001 - searches score new rows exactly meanwhile
            self._build_failed = time.monotonic()
            log.error("index rebuild failed (%s: %s); tried again in 5 minutes", type(exc).__name__, exc)
        finally:
            store.close()

    # --- requests from other commands -----------------------------------------------------
    def _watch_requests(self) -> None:
        folder = self.home / STATE_DIR / "requests"
        folder.mkdir(parents=True, exist_ok=True)
        (self.home / STATE_DIR / "answers").mkdir(exist_ok=True)
        for stale in folder.glob("*.json"):  # left by a daemon that stopped: their askers gave up
            try:
                request = protocol.decode_request(json.loads(stale.read_text(encoding="utf-8")))
            except (OSError, ValueError, DaemonError):
                request = protocol.StopRequest()
            stale.unlink(missing_ok=True)
            if not isinstance(request, protocol.StopRequest):
                self._reply(stale.name, protocol.Refused("the watch daemon restarted before it answered; "
                                                         "run the command again"))

        class Wake:
            def dispatch(_self, event) -> None:  # noqa: N805
                self._last_check = 0.0  # look at requests now
                self.changes.wake.set()

        try:
            self._observer.schedule(Wake(), str(folder), recursive=False)
        except OSError:
            pass  # no inotify watch to spare: requests are still looked at every check_every seconds

    def _answer_requests(self) -> None:
        folder = self.home / STATE_DIR / "requests"
        for path in sorted(folder.glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # being written
            path.unlink(missing_ok=True)
            if self._build is not None:
                self._build.join()  # one forest build at a time: the request may build too
            answer: protocol.Answer
            try:
                answer = self._answer(protocol.decode_request(data))
            except _Stop:
                raise
            except Exception as exc:  # noqa: BLE001 - the asker gets the reason, the daemon goes on
                error = storage_error(exc, self.home) if isinstance(exc, (sqlite3.Error, OSError)) else None
                answer = protocol.Refused(str(error or exc))
                if not isinstance(exc, ClipsearchError) and error is None:
                    log.error("request %s failed", data.get("kind"), exc_info=exc)
            self._reply(path.name, answer)

    def _reply(self, name: str, answer: protocol.Answer) -> None:
        _write_json(self.home / STATE_DIR / "answers" / name, protocol.encode(answer))

    def _answer(self, request: protocol.Request) -> protocol.Answer:
        assert self.writer is not None
        if isinstance(request, protocol.StopRequest):
            raise _Stop
        if isinstance(request, protocol.CrawlRequest):
            log.info("crawl handed over: %s", ", ".join(request.folders or ["every folder"]))
            report = self.writer.crawl(request.folders, model=request.model, given=request.given,
                                       retry_failed=request.retry_failed, on_commit=self._log_written)
            if request.given:  # the rules changed: watch with the new ones
                for root_id in list(self._watches):
                    self._unwatch(root_id)
            self._check_roots()
            return protocol.Crawled(report.stats, report.rebuilt)
        if isinstance(request, protocol.ImportRequest):
            log.info("import handed over: %s", request.source)
            imported = self.writer.import_file(request.source, request.paths, request.model, request.base,
                                               request.overwrite)
            self._check_roots()
            return protocol.Imported(imported)
        if isinstance(request, protocol.RemoveRootRequest):
            root, count = self.writer.remove_root(request.folder)
            self._check_roots()
            self.writer.refresh_index()
            return protocol.RootRemoved(root.path, count)
        raise DaemonError(f"the watch daemon does not know the request {request!r}")

    # --- files in the library folder ------------------------------------------------------
    def _write_pid(self) -> None:
        write_whole(self.home / PID_FILE, str(os.getpid()), durable=False)

    def _write_state(self, state: str, force: bool = False) -> None:
        """HOME/watch/state.json, when what it says has changed (at most once a second)."""
        now = time.monotonic()
        if not force and now - self._state_written < 1.0:
            return
        content = {"pid": os.getpid(), "state": state, "started_at": self.started, "backlog": len(self.changes),
                   "offline": self._offline, "polled": sorted(self._polled), "roots": len(self._watches),
                   "error": self.error, **self.totals}
        if content == self._state and not force:
            return  # an idle daemon writes nothing
        self._state_written, self._state = now, content
        try:
            _write_json(self.home / STATE_DIR / "state.json", {**content, "updated_at": time.time()})
        except OSError:
            pass  # a full or read-only library folder: status shows the last state

    def _shutdown(self) -> None:
        for observer in (self._observer, self._poller):
            if observer is not None:
                observer.stop()
        for observer in (self._observer, self._poller):
            if observer is not None and observer.is_alive():
                observer.join(5)
        if self._build is not None:
            self._build.join()
        for name in (PID_FILE, f"{STATE_DIR}/state.json"):
            try:
                (self.home / name).unlink(missing_ok=True)
            except OSError:
                pass
        if self.writer is not None:
            self.writer.close()
        log.info("watch daemon stopped")


class _Stop(Exception):
    pass


def _wake_on(stop: threading.Event, wake: threading.Event) -> None:
    stop.wait()
    wake.set()


def _alive(observer, watch) -> bool:
    """Whether the thread that reads a watch's events still runs (an inotify emitter stops
    when, say, the watch limit is reached on a new subfolder)."""
    return any(emitter.watch == watch and emitter.is_alive() for emitter in observer.emitters)


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino
