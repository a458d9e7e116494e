"""The library's one writer: the write lock and a catalog connection, held until closed.

Everything that changes a library goes through a Writer: a crawl (`Library.crawl` opens one
for its length), `rebuild`, `reembed`, `repair`, an import, and the watch daemon, which
holds one for as long as it runs and feeds it the changes its file system events name
(files to check, moves, deleted folders, folders that went offline or came back). Searches
never need it: readers are never blocked. A Writer receives the services it needs (the
model policy, the forest keeper) and never sees the Library.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from .catalog.lock import WriteLock
from .catalog.store import Store
from .config import Settings
from .errors import ClipsearchError, NotIndexed
from .ingest.scan import ScanRules, rules_for
from .ingest.source import Listed, Source, Walk
from .keeper import ForestKeeper, index_info
from .paths import PathRule, absolute
from .policy import ModelPolicy
from .records import (
    CrawlReport,
    CrawlSummary,
    FileRecord,
    Imported,
    ImportReport,
    IndexInfo,
    RepairReport,
    Root,
    TextReport,
    Write,
)

if TYPE_CHECKING:
    from .index import Manifest
    from .ingest.cluster import Cluster
    from .ingest.pipeline import CrawlStats, Pipeline
    from .ingest.workers import Decoding
    from .model.spec import Embedder

log = logging.getLogger("clipsearch")
_FEW = 64  # the daemon's changes: fewer files than this decode in threads (no processes to start)


class Writer:
    """`with Writer(settings, policy, keeper) as writer:` holds the write lock (or raises
    LibraryBusy). The catalog is opened on first use: `repair` must look at a damaged one
    before anything opens it."""

    def __init__(self, settings: Settings, policy: ModelPolicy, keeper: ForestKeeper):
        self.settings = settings
        self.policy = policy
        self.keeper = keeper
        self.rule = PathRule.for_setting(settings.path_case)
        self._lock = WriteLock(settings.home)
        self._lock.__enter__()
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.settings.catalog_path)
        return self._store

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            if self._store is not None:
                self._store.close()
                self._store = None
        finally:
            self._lock.__exit__()

    # --- crawl ----------------------------------------------------------------------------
    def crawl(self, folders: Sequence[str | os.PathLike] = (), *, model: str | None = None, given: dict | None = None,
              retry_failed: bool = False, on_progress: Callable[[CrawlSummary], None] | None = None,
              on_index: Callable[[int, int], None] | None = None,
              on_commit: Callable[[Sequence[Write]], None] | None = None, refresh_index: bool = True,
              on_text: Callable[[int, int], None] | None = None) -> CrawlReport:
        """Library.crawl under this writer's lock. Roots whose folder is missing go offline
        instead of being walked (their files are kept). Then, the photos searchable already,
        the second passes: places from GPS positions, and words read in the photos
        (`read_text`), resumable, `on_text(done, total)` told as they go."""
        from .ingest.pipeline import CrawlStats

        paths = [self._folder(f) for f in folders]
        embedder = self._prepare_model(model)
        sources, offline = self._sources(paths, given or {})
        if sources:
            pipeline = self._pipeline(embedder, sources, retry_failed=retry_failed, on_progress=on_progress,
                                      on_commit=on_commit, cluster=self._cluster(embedder, sources))
            log.info("crawl of %s with %s", ", ".join(s.folder for s in sources), embedder.spec)
            stats = pipeline.run()
        else:
            stats = CrawlStats()
            stats.finished = time.monotonic()
        stats.offline = offline
        _log_crawl(stats)
        manifest, rebuilt = self.refresh_index(on_index) if refresh_index else (None, False)
        placed = self.place_photos()
        texts = self.read_texts(on_text) if self.settings.read_text else None
        return CrawlReport(stats.summary(), index_info(manifest), rebuilt, placed, texts)

    # --- second passes: what a CLIP vector does not hold ---------------------------------------
    def place_photos(self) -> int:
        """Look up the place of every photo whose GPS position has not been (places.py: a
        table shipped with clipsearch, no network); returns how many were looked up."""
        done = 0
        while rows := self.store.unplaced(5000):
            from .places import names_of, places

            table = places()
            found = []
            for file_id, lat, lon in rows:
                place = table.nearest(lat, lon)
                found.append((file_id, None if place is None else (place.city, place.area, place.region,
                                                                   place.country, place.country_code),
                              names_of(place)))
            self.store.set_places(found)
            done += len(rows)
        if done:
            log.info("placed %d photos from their GPS positions", done)
        return done

    def read_texts(self, on_text: Callable[[int, int], None] | None = None, limit: int | None = None,
                   stop: Callable[[], bool] | None = None) -> TextReport:
        """Read the words in the searchable photos not read yet (from their content as it is
        now), a batch at a time, each batch committed: an interrupted pass loses at most the
        batch in flight and the next one carries on. `limit`: at most this many photos (the
        daemon reads a few between changes); `stop()`: asked between photos."""
        from .ingest.ocr import ReaderMissing, read_files

        started = time.monotonic()
        total = limit if limit is not None else self.store.text_counts()[2]
        report = TextReport(0, 0, total)
        if on_text and total:
            on_text(0, total)  # the bar shows while the reader loads (the first time: its detector made)
        after = 0
        while report.read < total and not (stop and stop()):
            rows = self.store.unread(min(16, total - report.read), after)
            if not rows:
                break
            after = rows[-1][0]
            known = self.store.texts_of_hashes([h for _, _, h in rows if h])  # copies: read once
            todo = [(path, hash_) for _, path, hash_ in rows if hash_ not in known]
            try:
                read = dict(zip(todo, read_files(todo, self.settings, self.spool, stop)))
            except ReaderMissing as exc:
                log.warning("%s", exc)
                report.problem = str(exc)
                break
            found: list[tuple[int, str | None, str]] = []
            for file_id, path, hash_ in rows:
                text = known[hash_] if hash_ in known else read[(path, hash_)]
                if text is not None:
                    found.append((file_id, hash_, text))
            self.store.set_texts(found)
            for _, hash_, _ in found:
                (self.spool / f"{hash_}.jpg").unlink(missing_ok=True)
            report.read += len(found)
            report.with_words += sum(1 for _, _, text in found if text)
            if on_text:
                on_text(report.read, total)
            if len(found) < len(rows):
                break  # stopped part-way
        if limit is None and report.read >= total and self.spool.is_dir():
            shutil.rmtree(self.spool, ignore_errors=True)  # copies of photos gone or changed since
        report.seconds = time.monotonic() - started
        if report.read:
            log.info("read the words in %d photos (%d hold some) in %.1f s", report.read, report.with_words,
                     report.seconds)
        return report

    def update(self, records: Sequence[FileRecord],
               on_commit: Callable[[Sequence[Write]], None] | None = None) -> CrawlSummary:
        """Check these files (new or changed ones are embedded; nothing else is looked at)."""
        by_root: dict[int, list[FileRecord]] = defaultdict(list)
        for record in records:
            by_root[record.root_id].append(record)
        roots = {r.id: r for r in self.store.roots()}
        sources = [Listed(root_id, roots[root_id].path, self.rules(roots[root_id]), tuple(part))
                   for root_id, part in by_root.items() if root_id in roots]
        embedder = self._prepare_model(None)
        # A few changed files are not worth starting worker processes for.
        return self._pipeline(embedder, sources, on_commit=on_commit,
                              mode="threads" if len(records) < _FEW else None).run().summary()

    def decoding(self, mode: str | None = None) -> Decoding:
        """How this library's crawls decode (the settings; `mode` chosen for this one)."""
        from .ingest.workers import Decoding, default_workers

        settings = self.settings
        memory = settings.decode_memory_mb
        return Decoding(settings.workers or default_workers(), settings.max_pixels, mode or settings.decode_in,
                        memory << 20 if memory else None, "auto" if settings.gpu_decode else None)

    def _pipeline(self, embedder: Embedder, sources: Sequence[Source], mode: str | None = None,
                  **options) -> Pipeline:
        """What runs decode and embed over sources: the local pipeline (the seam a cluster's
        executor would stand in)."""
        from .ingest.pipeline import Pipeline

        if self.settings.read_text:
            from .ingest.ocr import warm

            # The text reader loads beside the model, once there is a photo to embed: the
            # words pass then starts at once, and a crawl that embeds nothing loads neither.
            options.update(spool=self.spool, on_model=lambda: warm(self.settings))
        return Pipeline(self.store, embedder, sources, self.decoding(mode), rule=self.rule, **options)

    def _cluster(self, embedder: Embedder, sources: Sequence[Source]) -> Cluster | None:
        """The Ray cluster this crawl decodes and embeds on (engine = "ray"), else None. The
        watch daemon's batches stay local: a cluster's start (seconds) outweighs a few files."""
        if self.settings.engine != "ray":
            return None
        from .ingest.cluster import Cluster, Embedding
        from .ingest.ocr import DETECT_SIDE

        s = self.settings
        embedding = Embedding(embedder.spec, str(s.text_tower_dir), str(s.image_tower_dir), s.image_precision,
                              s.device, s.batch_size, str(s.model_cache), s.max_pixels,
                              DETECT_SIDE if s.read_text else 0)
        return Cluster(embedding, [source.folder for source in sources], s.ray_address, s.workers)

    @property
    def spool(self) -> Path:
        """Where the crawl leaves small copies of the photos it embedded for the words pass."""
        return self.settings.home / "spool"

    def _prepare_model(self, asked: str | None) -> Embedder:
        embedder = self.policy.embedder(self.policy.spec_for(self.store, asked))
        self.policy.bind(self.store, embedder)
        return embedder

    def _folder(self, folder: str | os.PathLike) -> str:
        return folder_to_crawl(folder, self.store.roots, self.rule)

    def _sources(self, paths: list[str], given: dict) -> tuple[list[Source], list[str]]:
        """The walks a crawl of these folders (all roots if none) makes, and the roots that
        are offline."""
        rule = self.rule
        if paths:
            for path in paths:
                if not any(rule.under(path, r.path) for r in self.store.roots()):
                    self.store.add_root(path, rule)  # folds known roots inside it into it
            roots = self.store.roots()
            # Each folder belongs to the root that contains it, among the roots as they are now.
            targets = [(path, max((r for r in roots if rule.under(path, r.path)), key=lambda r: len(r.path)))
                       for path in paths]
        else:
            targets = [(r.path, r) for r in self.store.roots()]
            if not targets:
                raise NotIndexed(self.settings.home, "folders")
        # A folder inside (or equal to) another folder of the same root is walked once, as part of it.
        kept: list[tuple[str, Root]] = []
        for path, root in sorted(targets, key=lambda t: len(t[0])):
            if not any(k.id == root.id and rule.under(path, k_path) for k_path, k in kept):
                kept.append((path, root))
        sources: list[Source] = []
        offline: list[str] = []
        for path, root in kept:
            was_offline = root.offline_since is not None
            if not self.check_root(root):
                offline.append(root.path)
                continue
            if was_offline:
                path = root.path  # back: all of it is walked, or the rest would stay offline
            if not rule.same(path, root.path):
                # A part of a root is walked by the root's own rules, so that the next crawl of
                # the whole root agrees with it about which files exist.
                if given:
                    flags = ", ".join("--" + name.replace("include_", "").replace("_", "-") for name in given)
                    raise ClipsearchError(f"{flags}: scan rules belong to the whole folder {root.path}; "
                                          f"run `clipsearch crawl {root.path}` with them")
                rules = self.rules(root)
                _check_not_skipped(path, root.path, rules)
                sources.append(Walk(root.id, path, rules, whole_root=False))
                continue
            if given:
                options = {**root.options, **{k: v for k, v in given.items() if k != "exclude"}}
                self.store.set_root_rules(root.id, given.get("exclude", root.exclude), options)
            sources.append(Walk(root.id, root.path, self.rules(root, given), whole_root=True))
        unique = {(s.root_id, s.folder): s for s in sources}  # two folders of a root that came back
        return list(unique.values()), offline

    # --- roots ----------------------------------------------------------------------------
    def roots(self) -> list[Root]:
        return self.store.roots()

    def rules(self, root: Root, given: dict | None = None) -> ScanRules:
        """Scan rules for a root: this crawl's flags, else the root's remembered ones, else settings."""
        return rules_for(root, self.settings, given)

    def root_of(self, path: str, roots: Sequence[Root] | None = None) -> Root | None:
        """The innermost root that holds path, if any."""
        holding = [r for r in (roots if roots is not None else self.store.roots()) if self.rule.under(path, r.path)]
        return max(holding, key=lambda r: len(r.path)) if holding else None

    def present(self, root: Root) -> bool:
        """Whether a root's folder is there. A folder that is missing or cannot be listed is
        not; nor is an empty one while the catalog holds photos of it: the mount point of a
        drive that is not plugged in (deleting every photo is seen file by file instead)."""
        try:
            with os.scandir(root.path) as listing:
                empty = next(listing, None) is None
        except OSError:
            return False
        return not empty or not self.store.has_files(root.id)

    def check_root(self, root: Root) -> bool:
        """Bring a root's offline state up to date with its folder; True if it is online."""
        if self.present(root):
            if root.offline_since is not None:
                self.store.set_online(root.id)
                log.info("online again: %s", root.path)
            return True
        if root.offline_since is None:
            count = self.store.set_offline(root.id)
            log.warning("offline: %s is not there; its %d photos are kept and left out of results "
                        "until it is back", root.path, count)
        return False

    def remove_root(self, folder: str | os.PathLike) -> tuple[Root, int]:
        """Stop indexing a root: its photos leave the results. Returns the root and how many."""
        path = absolute(folder)
        root = next((r for r in self.store.roots() if self.rule.same(r.path, path)), None)
        if root is None:
            inside = self.root_of(path)
            hint = (f"; it is inside {inside.path}: use --exclude to skip part of a folder" if inside else
                    "; `clipsearch roots` lists them")
            raise ClipsearchError(f"{folder} is not one of this library's folders{hint}")
        count = self.store.remove_root(root.id)
        log.info("folder removed: %s (%d photos left the results)", root.path, count)
        return root, count

    # --- the watch daemon's changes -------------------------------------------------------
    def delete_paths(self, paths: Sequence[str]) -> int:
        return self.store.delete_paths(paths)

    def delete_under(self, folder: str) -> int:
        return self.store.delete_under(folder)

    def move(self, src: str, dest: str, is_dir: bool) -> int:
        """Rows at src (a file, or everything under a folder) take the paths under dest and keep
        their vectors. A destination outside every root, or skipped by its rules, is a deletion."""
        root = self.root_of(dest)
        if root is not None:
            rules = self.rules(root)
            # A folder is judged by a photo inside it (its own name and every folder above).
            probe = os.path.join(dest, "photo." + min(rules.extensions)) if is_dir else dest
            if not rules.admits(probe, root.path):
                root = None
        if root is None:
            return self.delete_under(src) if is_dir else self.delete_paths([src])
        return self.store.move(src, dest, root.id, is_dir)

    # --- import ---------------------------------------------------------------------------
    def import_file(self, source_path: str, paths: str | None = None, model: str | None = None,
                    base: str | None = None, overwrite: bool = False,
                    on_progress: Callable[[int, int], None] | None = None,
                    on_index: Callable[[int, int], None] | None = None) -> ImportReport:
        """Bring the vectors of a file (interop/vectors.py layouts) into the catalog, without
        embedding anything, then refresh the index. See Library.import_vectors."""
        from .interop.vectors import open_source
        from .model import spec as spec_mod

        with open_source(source_path, paths) as source:
            spec = self._import_model(source.label, source.model, model)
            dim = int(self.store.get_meta("dim") or 0) or spec_mod.expected_dim(spec)
            if dim and dim != source.dim:
                raise ClipsearchError(f"{source.label} holds vectors of {source.dim} numbers, but model {spec} makes "
                                      f"vectors of {dim}: name the model they were made with (--model)")
            report = ImportReport(source.label, spec, source.count,
                                  model_assumed=not (model or source.model))
            roots = self.roots()
            seen: set[str] = set()
            done = 0
            for columns, vectors in source.chunks():
                items = self._imported(columns, vectors, base, roots, seen, report)
                added, replaced, kept, remote = self.store.import_rows(items, overwrite, binding=(spec, source.dim))
                report.added += added
                report.replaced += replaced
                report.kept += kept
                report.remote += remote
                done += len(vectors)
                if on_progress:
                    on_progress(done, source.count)
        if self.store.get_meta("dim") and self.store.get_meta("model_weights") is None:
            self.policy.record(self.store, spec)  # a new library: the weights its model names now
        log.info("import of %s: %d added, %d replaced, %d kept, %d remote, %d refused", report.source, report.added,
                 report.replaced, report.kept, report.remote, report.refused)
        manifest, report.rebuilt = self.refresh_index(on_index)
        report.index = index_info(manifest)
        return report

    def _import_model(self, label: str, recorded: str | None, asked: str | None) -> str:
        """The model imported vectors are taken to be of: the library's, which must agree with
        the one named on the command line and the one the file records."""
        from .model import spec as spec_mod

        current = self.store.get_meta("model") if self.store.get_meta("dim") else None
        recorded_spec = spec_mod.canonical(recorded) if recorded else None
        asked_spec = spec_mod.canonical(asked) if asked else None
        if recorded_spec and asked_spec and recorded_spec != asked_spec:
            raise ClipsearchError(f"{label} says its vectors were made with {recorded_spec}, not {asked_spec}")
        wanted = asked_spec or recorded_spec
        if current and wanted and wanted != current:
            raise ClipsearchError(f"this library's photos were embedded with model {current}, and these vectors with "
                                  f"{wanted}: vectors of two models cannot be searched together. Import them into "
                                  "another library (--home DIR)")
        if not current and not wanted:
            raise ClipsearchError(f"{label} does not say which model made its vectors: name it, e.g. "
                                  "--model ViT-B-32:openai (searches embed the query with it)")
        return current or wanted  # type: ignore[return-value]

    def _imported(self, columns: dict, vectors, base: str | None, roots: Sequence[Root], seen: set[str],
                  report: ImportReport) -> list[Imported]:
        """The rows of one chunk to write, counting those refused."""
        import stat

        import numpy as np


        norms = np.linalg.norm(vectors, axis=1) if len(vectors) else np.zeros(0)
        usable = np.isfinite(vectors).all(axis=1) & np.isfinite(norms) & (norms > 1e-12)
        items: list[Imported] = []
        for i, raw in enumerate(columns["paths"].tolist()):
            path = _import_path(raw, base)
            if path is None:
                report.no_path += 1
                continue
            if not usable[i]:
                report.not_finite += 1
                continue
            key = self.rule.key(path)
            if key in seen:
                report.duplicates += 1
                continue
            seen.add(key)
            local = None
            if "://" not in path:
                try:
                    local = os.stat(path)
                except (OSError, ValueError):
                    local = None
                if local is not None and not stat.S_ISREG(local.st_mode):
                    local = None
            root = self.root_of(path, roots) if local is not None else None
            items.append(Imported(
                path, (vectors[i] / norms[i]).astype(np.float32).tobytes(), root.id if root else None,
                local.st_size if local else None, local.st_mtime_ns if local else None, local is None,
                _text_or_none(columns, "hashes", i), _text_or_none(columns, "taken_at", i),
                _number_or_none(columns, "width", i), _number_or_none(columns, "height", i)))
        return items

    # --- the index, the model, the catalog itself ------------------------------------------
    def refresh_index(self, on_index: Callable[[int, int], None] | None = None) -> tuple[Manifest | None, bool]:
        """Build the forest unless the current one is sound and built from this catalog as it is."""
        return self.keeper.refresh(self.store, on_index)

    def rebuild_index(self, on_index: Callable[[int, int], None] | None = None) -> IndexInfo:
        """Build the forest again from the catalog's live vectors."""
        if self.store.get_meta("dim") is None:
            raise NotIndexed(None, "vectors")
        manifest = self.keeper.build(self.store, on_index)
        log.info("index generation %d built over %d photos", manifest.generation, manifest.count)
        return index_info(manifest)  # type: ignore[return-value]

    def reembed(self, model: str, on_progress: Callable[[CrawlSummary], None] | None = None,
                on_index: Callable[[int, int], None] | None = None) -> tuple[CrawlReport, int]:
        """Switch the library to another model: forget every vector and embed every photo
        again; (the crawl's report, how many imported photos no crawl can reach were dropped)."""
        from .model.spec import canonical

        spec = canonical(model)
        if not self.store.roots():
            raise NotIndexed(None, "folders")
        embedder = self.policy.embedder(spec)
        dim = embedder.dim  # loads the model first: one that fails to load changes nothing
        dropped = self.store.switch_model(embedder.spec, dim)
        self.policy.record(self.store, embedder.spec)
        return self.crawl(on_progress=on_progress, on_index=on_index), dropped

    def repair(self, on_index: Callable[[int, int], None] | None = None) -> RepairReport:
        """Check the catalog; if it is damaged, set it aside and recover what can be read into a
        new one (the same model, folders and vectors, less what was lost), then make the index
        match. A sound catalog only gets its index checked (and rebuilt if need be)."""
        from .catalog import repair as repair_mod

        catalog = self.settings.catalog_path
        if not catalog.is_file():
            raise ClipsearchError(f"there is no catalog at {catalog} to repair")
        problems = repair_mod.check(catalog)
        kept: Path | None = None
        recovery = old = None
        if problems:
            log.warning("catalog damaged: %s", "; ".join(problems))
            old = self.keeper.manifest()
            if self._store is not None:
                self._store.close()
                self._store = None
            kept = repair_mod.set_aside(catalog)
        store = self.store  # a new, empty one if the old was set aside
        if kept:
            recovery = repair_mod.recover(kept, store, (old.model, old.dim) if old else None)
            log.info("repair: %d photos recovered with vectors, %d rows lost, damaged copy at %s",
                     recovery.with_vector, recovery.unreadable, kept)
        manifest, rebuilt = self.refresh_index(on_index)
        self.keeper.forget()
        return RepairReport(problems, kept, recovery, old.count if old else None, index_info(manifest), rebuilt)


def _log_crawl(stats: CrawlStats) -> None:
    log.info("crawl done in %.1f s: %d found, %d new, %d changed, %d unchanged, %d embedded, %d moved, "
             "%d restored, %d deleted, %d failed", stats.elapsed, stats.found, stats.new, stats.changed,
             stats.unchanged, stats.embedded, stats.moved, stats.restored, stats.deleted, stats.failed)
    for problem in stats.problems:
        log.warning("not readable: %s: %s", problem.path, problem.error)


_FOREIGN_ABSOLUTE = re.compile(r"^([A-Za-z]:[\\/]|\\\\)")


def _import_path(raw: str, base: str | None) -> str | None:
    """An imported row's path as the catalog keeps it: absolute (relative ones from `base`,
    else the current folder) and normalised; a URL as it is; None for an empty one."""
    raw = raw.strip()
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        return None  # lone surrogates: not a path SQLite can keep
    if not raw:
        return None
    if "://" in raw or (os.sep == "/" and _FOREIGN_ABSOLUTE.match(raw)):
        return raw  # a URL, or another system's absolute path (C:\..., \\server\...): kept as written
    return absolute(os.path.join(base, raw) if base and not os.path.isabs(raw) else raw)


def _text_or_none(columns: dict, name: str, i: int) -> str | None:
    if name not in columns:
        return None
    value = columns[name][i]
    value = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return value or None


def _number_or_none(columns: dict, name: str, i: int) -> int | None:
    if name not in columns:
        return None
    value = int(columns[name][i])
    return value if value >= 0 else None


def folder_to_crawl(folder: str | os.PathLike, roots: Callable[[], Sequence[Root]], rule: PathRule) -> str:
    """The absolute path of a folder given to crawl: one that exists, or a root of the
    library that is missing (offline: the crawl says so). Else a one-line ClipsearchError.
    `roots` is called only for a missing folder."""
    path = absolute(folder)
    if os.path.isdir(path):
        return path
    if os.path.exists(path):
        raise ClipsearchError(f"not a folder: {folder}")
    known = next((r for r in roots() if rule.same(r.path, path)), None)
    if known is None:
        raise ClipsearchError(f"no such folder: {folder}")
    return known.path


def _check_not_skipped(folder: str, root: str, rules: ScanRules) -> None:
    """Refuse a subfolder that its root's rules skip (excluded or hidden): its files would be
    indexed now and deleted again by the next crawl of the root."""
    current = folder
    while current != root and len(current) > len(root):
        hidden = os.path.basename(current).startswith(".") and not rules.include_hidden
        if hidden or rules.excluded(current, is_dir=True):
            raise ClipsearchError(f"{folder} is skipped by the rules of {root} "
                                  f"({'hidden' if hidden else 'excluded'}); change them with "
                                  f"`clipsearch crawl {root} --hidden` or --exclude")
        current = os.path.dirname(current)
