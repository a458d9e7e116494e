"""The Library facade: what the CLI (and later the prompt and the watch daemon) call.

A Library is one home folder: the catalog, the forest and the write lock. Methods take
and return plain values and dataclasses; nothing here prints.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence, TypeVar

import numpy as np

from .catalog.faults import storage_error
from .catalog.lock import WriteLock
from .catalog.store import Store
from .config import Settings
from .errors import ClipsearchError, LibraryBusy
from .index import Forest, ForestDamaged, Manifest, build_forest, read_manifest, verify_files
from .ingest.scan import ScanRules
from .model import embed as embed_mod
from .model import spec as spec_mod
from .paths import PathRule, absolute
from .query import Query, Term
from .query import parse as parse_query
from .records import (
    BatchAnswer,
    BatchQuery,
    CrawlReport,
    DuplicateGroup,
    ExportReport,
    FileRow,
    ImportReport,
    LibraryStatus,
    Overview,
    Photo,
    RepairReport,
    Root,
    RootInfo,
    SearchResult,
)
from .search import camera_name, exact_many, gps_of, near_pairs, rank, results_for
from .writer import Writer, folder_to_crawl

if TYPE_CHECKING:
    from .ingest.pipeline import CrawlStats

log = logging.getLogger("clipsearch")
_T = TypeVar("_T")


# An image sent to search with (the web page): photo formats only, at most 50 MP, and one
# large decode at a time (a 14000 x 14000 PNG of a few hundred KB would hold 1.7 GB).
UPLOAD_PIXELS = 50_000_000
UPLOAD_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


@functools.cache
def _upload_budget():
    """One budget for every image sent, in every thread (made when first needed: the
    decoder's import is not paid by commands that never decode)."""
    from .ingest.decode import MemoryBudget

    return MemoryBudget(256 << 20)


# Varied everyday subjects; the relevance floor is measured against them (relevance_floor).
_CALIBRATION_CAPTIONS = (
    "a dog", "a cat", "a horse", "a bird", "a fish", "a car", "a bicycle", "a train", "an airplane", "a boat",
    "a city street at night", "a mountain landscape", "a beach with waves", "a forest", "a desert", "snow",
    "a plate of food", "a cake", "a cup of coffee", "fruit", "a bowl of soup", "a group of people", "a baby",
    "an old man", "a wedding", "a football match", "a concert", "a computer", "a book", "a chair", "a bed",
    "a kitchen", "a bathroom", "a flower", "a tree", "a sunset", "a bridge", "a church", "a skyscraper",
    "a painting", "a toy", "a clock", "a document with text", "a screenshot", "a map", "fireworks",
    "a swimming pool", "a garden", "a farm", "an insect")


def _storage_guard(method):
    """Storage failures (a damaged catalog, a read-only folder, a full disk) leave a Library
    method as one ClipsearchError with a message to act on; the log keeps the detail."""

    @functools.wraps(method)
    def guarded(self: "Library", *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (sqlite3.Error, OSError) as exc:
            error = storage_error(exc, self.settings.home)
            if error is None:
                raise
            log.error("%s", error, exc_info=exc)
            raise error from exc

    return guarded


class Library:
    """One clipsearch library (a home folder). Pass `embedder` to use a model object directly."""

    def __init__(self, settings: Settings, embedder: spec_mod.Embedder | None = None):
        self.settings = settings
        self._embedder = embedder
        self._forest: Forest | None = None  # kept between searches while its generation is current
        self._notices: list[str] = []  # for the faces to show: each said once per Library
        self._said: set[str] = set()
        self._relevance: tuple[str, float] | None = None  # (model, floor), measured once

    # --- model ----------------------------------------------------------------------------
    def _model_for(self, store: Store | None, asked: str | None = None) -> str:
        """The model spec to use. A library keeps the model its photos were embedded with;
        the model setting (config.toml, CLIPSEARCH_MODEL) only chooses it for a new library,
        and only a model asked for explicitly (`asked`, an injected embedder) is refused."""
        # The recorded model binds once a vector exists (the dimension is written with the
        # first one): a model that failed to load before embedding anything binds nothing.
        current = store.get_meta("model") if store and store.get_meta("dim") else None
        asked = asked or (self._embedder.spec if self._embedder else None)
        wanted = spec_mod.canonical(asked) if asked else None
        if current and wanted and wanted != current:
            raise ClipsearchError(
                f"this library's photos were embedded with model {current}, not {wanted}. "
                f"Keep one library per model: use another home (--home DIR or CLIPSEARCH_HOME) for {wanted}, "
                f"or switch this one with `clipsearch reembed --model {asked}` (embeds every photo again)")
        if current and not asked and self._preset_model() not in (None, current):
            self._notice(f"preset {self.settings.preset} names model {self._preset_model()}, but this library's "
                         f"photos were embedded with {current}, which answers; its search settings apply "
                         f"(`clipsearch reembed --model {self.settings.model}` switches the library)")
        return current or wanted or spec_mod.canonical(self.settings.model or "default")

    def _preset_model(self) -> str | None:
        """The model the settings' preset names (canonical), if the model setting is the preset's."""
        from .config import PRESETS

        preset = PRESETS.get(self.settings.preset or "")
        if preset is None or self.settings.model != preset.values["model"]:
            return None
        return spec_mod.canonical(preset.values["model"])

    def embedder(self, spec: str) -> spec_mod.Embedder:
        """The model for spec; loaded on first use, so commands with nothing to embed stay fast."""
        if self._embedder is None or self._embedder.spec != spec or getattr(self._embedder, "failed", False):
            self._embedder = embed_mod.LazyEmbedder(
                spec, text_tower_dir=self.settings.text_tower_dir, image_tower_dir=self.settings.image_tower_dir,
                image_precision=self.settings.image_precision,
                device=self.settings.device,
                batch_size=self.settings.batch_size, cache_dir=self.settings.model_cache)
        return self._embedder

    def _reader(self) -> Store:
        store = Store.open_existing(self.settings.catalog_path)
        if store is None:
            raise ClipsearchError(f"the library at {self.settings.home} is empty: "
                                  "run `clipsearch crawl FOLDER` first")
        return store

    # --- crawl ----------------------------------------------------------------------------
    def writer(self) -> Writer:
        """The library's one writer (the write lock and a catalog connection) until closed;
        raises LibraryBusy while another process holds it."""
        return Writer(self)

    @_storage_guard
    def crawl(self, folders: Sequence[str | os.PathLike] = (), *, model: str | None = None,
              exclude: Sequence[str] | None = None, extensions: Sequence[str] | None = None,
              include_hidden: bool | None = None, follow_symlinks: bool | None = None,
              retry_failed: bool = False, on_progress: Callable[[CrawlStats], None] | None = None,
              on_index: Callable[[int, int], None] | None = None,
              on_handover: Callable[[int], None] | None = None) -> CrawlReport:
        """Index folders (all known folders if none): new and changed files, moves, deletions;
        then rebuild the forest if anything changed. Scan flags left as None come from what
        the folder was last crawled with, then from the settings; flags given for a whole
        folder are remembered for it. A folder that is missing goes offline (its photos are
        kept and left out of results until it is back). While the watch daemon runs, the crawl
        is handed to it (`on_handover(pid)` is told) and this waits for its report."""
        given = {name: value for name, value in (("exclude", exclude), ("extensions", extensions),
                                                 ("include_hidden", include_hidden),
                                                 ("follow_symlinks", follow_symlinks)) if value is not None}
        self._check_folders(folders)  # before anything is written
        if model is None and self.settings.preset_from == "--preset":
            model = self._preset_model()  # a preset asked for now asks for its model
        try:
            writer = self.writer()
        except LibraryBusy:
            from .daemon import client as watch

            pid = watch.daemon_pid(self.settings.home)
            if pid is None:
                raise
            if on_handover:
                on_handover(pid)
            return watch.ask_daemon(self.settings.home, {
                "op": "crawl", "folders": [absolute(f) for f in folders],
                "model": model, "given": given, "retry_failed": retry_failed})
        with writer:
            return writer.crawl(folders, model=model, given=given, retry_failed=retry_failed,
                                on_progress=on_progress, on_index=on_index)

    def _check_folders(self, folders: Sequence[str | os.PathLike]) -> None:
        """Refuse a folder that does not exist (unless it is a root of the library: offline)
        or is not a folder, in one line, before anything is written."""
        rule = PathRule.for_setting(self.settings.path_case)
        for folder in folders:
            folder_to_crawl(folder, self._roots_now, rule)

    def _roots_now(self) -> list[Root]:
        return self._read_catalog(Store.roots, [])

    def _read_catalog(self, read: Callable[[Store], _T], empty: _T) -> _T:
        """read(store) on a read-only connection to the catalog, or `empty` where there is
        no catalog yet."""
        store = Store.open_existing(self.settings.catalog_path)
        if store is None:
            return empty
        try:
            return read(store)
        finally:
            store.close()

    @_storage_guard
    def remove_root(self, folder: str | os.PathLike) -> tuple[str, int]:
        """Stop indexing a folder: its photos leave the results. Returns (the folder as the
        library knows it, how many photos left). Handed to the watch daemon while it runs."""
        try:
            writer = self.writer()
        except LibraryBusy:
            from .daemon import client as watch

            if watch.daemon_pid(self.settings.home) is None:
                raise
            answer = watch.ask_daemon(self.settings.home, {"op": "remove-root",
                                                           "folder": absolute(folder)})
            return answer["folder"], answer["count"]
        with writer:
            root, count = writer.remove_root(folder)
            writer.refresh_index()
            return root.path, count

    @_storage_guard
    def roots(self) -> list[RootInfo]:
        """The library's folders: their rules, whether they are there, their photo counts."""
        store = Store.open_existing(self.settings.catalog_path)
        if store is None:
            return []
        try:
            counts = store.root_counts()
            infos = []
            for root in store.roots():
                rules = self._rules(root, {})
                infos.append(RootInfo(root.path, root.offline_since is None and os.path.isdir(root.path),
                                      root.offline_since, counts.get(root.id, {}).get("live", 0),
                                      counts.get(root.id, {}).get("offline", 0), tuple(root.exclude),
                                      tuple(sorted(rules.extensions)), rules.include_hidden, rules.follow_symlinks,
                                      root.crawled_at))
            return infos
        finally:
            store.close()

    def release_model(self) -> bool:
        """Forget the loaded model (the watch daemon, idle for a while); True if one was held.
        An injected embedder (tests) is kept."""
        if isinstance(self._embedder, embed_mod.LazyEmbedder):
            self._embedder = None
            self._relevance = None
            from ._memory import return_freed_memory

            return_freed_memory()
            return True
        return False

    def _rules(self, root: Root, given: dict) -> ScanRules:
        """Scan rules for a root: this crawl's flags, else the root's remembered ones, else settings."""
        def pick(name):
            return given.get(name, root.options.get(name, getattr(self.settings, name)))

        exclude = given.get("exclude", root.exclude)
        return ScanRules.make(pick("extensions"), (*self.settings.exclude, *exclude), pick("include_hidden"),
                              pick("follow_symlinks"))

    # --- index ----------------------------------------------------------------------------
    def _refresh_index(self, store: Store, on_index) -> tuple[Manifest | None, bool]:
        """Build the forest unless the current one is sound and built from this catalog as it
        is now."""
        if store.get_meta("dim") is None:
            return None, False  # nothing embedded yet
        problem: str | None
        try:
            manifest = read_manifest(self.settings.index_dir)
        except ForestDamaged as exc:
            manifest, problem = None, str(exc)
        else:
            # A writer does not hash: a file changed since its build is rebuilt instead.
            problem = self._index_problem(store, manifest, may_hash=False) if manifest else None
            if manifest and not problem and manifest.built_seq == store.max_seq():
                return manifest, False
        if problem:
            log.warning("index not usable (%s): rebuilding it", problem)
        return self._build(store, on_index), True

    def _build(self, store: Store, on_index) -> Manifest:
        dim = int(store.get_meta("dim") or 0)
        model = store.get_meta("model") or ""
        # Read first: rows written during the build count as fresh.
        catalog_id, built_seq, token = store.identity()
        count = store.live_count()
        return build_forest(self.settings.index_dir, model, dim, built_seq, count,
                            store.iter_live_vectors(dim), on_index, catalog_id=catalog_id, built_token=token)

    def _forest_problem(self, store: Store, manifest: Manifest) -> str | None:
        """Why this forest must not answer for this catalog, or None if it may. Rows are
        named by id: a forest of another catalog, or of another history of this one (a
        backup restored), would name the wrong photos."""
        if manifest.catalog_id is None or manifest.built_token is None:
            return "it was built by an older clipsearch"
        if manifest.catalog_id != store.get_meta("catalog_id"):
            return "it was built from another catalog"
        if store.write_token(manifest.built_seq) != manifest.built_token:
            return "the catalog has changed in a way the index does not know (replaced or restored)"
        if manifest.model != store.get_meta("model") or str(manifest.dim) != store.get_meta("dim"):
            return "it was built for another model"
        return None

    def _index_problem(self, store: Store, manifest: Manifest, may_hash: bool = True) -> str | None:
        """Why this forest must not be used: _forest_problem, or else its files (verify_files)."""
        problem = self._forest_problem(store, manifest)
        if problem is None and manifest.forest:
            try:
                verify_files(self.settings.index_dir, manifest, may_hash)
            except ForestDamaged as exc:
                problem = str(exc)
        return problem

    @_storage_guard
    def rebuild_index(self, on_index: Callable[[int, int], None] | None = None) -> Manifest:
        """Build the forest again from the catalog's live vectors."""
        with WriteLock(self.settings.home):
            store = self._reader()
            try:
                if store.get_meta("dim") is None:
                    raise ClipsearchError("nothing to index yet: run `clipsearch crawl FOLDER` first")
                return self._build(store, on_index)
            finally:
                store.close()

    @_storage_guard
    def reembed(self, model: str, on_progress=None, on_index=None) -> CrawlReport:
        """Switch the library to another model: forget every vector and embed every photo again."""
        spec = spec_mod.canonical(model)
        with WriteLock(self.settings.home):
            store = Store(self.settings.catalog_path)
            try:
                if not store.roots():
                    raise ClipsearchError("no folders in this library yet: run `clipsearch crawl FOLDER`")
                embedder = self.embedder(spec)
                dim = embedder.dim  # loads the model first: one that fails to load changes nothing
                dropped = store.switch_model(embedder.spec, dim)
                if dropped:
                    self._notice(f"{dropped} imported photos that no crawl can reach (remote, or outside the "
                                 "library's folders) left the library: their vectors were of the old model")
            finally:
                store.close()
        return self.crawl(on_progress=on_progress, on_index=on_index)

    @_storage_guard
    def repair(self, on_index: Callable[[int, int], None] | None = None) -> RepairReport:
        """Check the catalog; if it is damaged, set it aside and recover what can be read into a
        new one (the same model, folders and vectors, less what was lost), then make the index
        match. A sound catalog only gets its index checked (and rebuilt if need be)."""
        from .catalog import repair as repair_mod

        catalog = self.settings.catalog_path
        if not catalog.is_file():
            raise ClipsearchError(f"there is no catalog at {catalog} to repair")
        with WriteLock(self.settings.home):
            problems = repair_mod.check(catalog)
            kept = recovery = old = None
            if problems:
                log.warning("catalog damaged: %s", "; ".join(problems))
                old = _quietly(read_manifest, self.settings.index_dir)
                kept = repair_mod.set_aside(catalog)
            store = Store(catalog)  # a new, empty one if the old was set aside
            try:
                if kept:
                    recovery = repair_mod.recover(kept, store, (old.model, old.dim) if old else None)
                    log.info("repair: %d photos recovered with vectors, %d rows lost, damaged copy at %s",
                             recovery.with_vector, recovery.unreadable, kept)
                manifest, rebuilt = self._refresh_index(store, on_index)
            finally:
                store.close()
        self._forest = None
        return RepairReport(problems, kept, recovery, old.count if old else None, manifest, rebuilt)

    # --- queries --------------------------------------------------------------------------
    @_storage_guard
    def search(self, text: str | Query | None = None, image: str | os.PathLike | None = None, k: int = 10,
               exact: bool = False, *, like: int | None = None, offset: int = 0,
               image_data: bytes | None = None, files: bool = True) -> list[SearchResult]:
        """Results offset+1 .. offset+k for a query in the query language (query.py), plus an
        example image (a file, or `image_data`: an image's bytes, decoded in memory with the
        crawl's guards and never stored) and the vector of the photo with id `like`, if given;
        all the parts' vectors are added with their weights. A query of only filters lists
        the newest photos that pass them (score None). files=False: the query's words are
        never taken for image files on this computer (a web page's queries)."""
        parsed = self.parse(text, files) if isinstance(text, str) or text is None else text
        if image is not None:
            path = absolute(image)
            parsed = dataclasses.replace(parsed, terms=(*parsed.terms, Term(1.0, image=path)))
        if parsed.is_empty and like is None and image_data is None:
            raise ClipsearchError("give a text query or --image PATH")
        if parsed.filters.folders and not PathRule.for_setting(self.settings.path_case).case_sensitive:
            parsed = dataclasses.replace(parsed, filters=dataclasses.replace(parsed.filters, fold_case=True))
        if k < 1:
            raise ClipsearchError("-k must be at least 1")
        exact = exact or self.settings.exact_search
        store = self._reader()
        try:
            spec, dim = self._searchable(store)
            if not parsed.terms and like is None and image_data is None:
                ids = store.newest(parsed.filters, k, offset)
                return results_for(store, ids, [None] * len(ids), first_rank=offset + 1)
            query = self._query_vector(store, spec, dim, parsed, like, image_data)
            forest = None if exact else self._current_forest(store)
            results = rank(store, forest, query, k, dim, exact=exact, filters=parsed.filters, offset=offset)
            self._offline_notice(store)
        finally:
            store.close()
        if parsed.min_score is not None:
            results = [r for r in results if r.score is not None and r.score >= parsed.min_score]
        if parsed.sort != "score":
            results.sort(key=_date_key, reverse=parsed.sort == "newest")
        return results

    @_storage_guard
    def search_many(self, queries: Sequence[BatchQuery], k: int = 5,
                    min_score: float | None = None) -> list[BatchAnswer]:
        """Answers for many queries at once (`clipsearch batch`): their texts go to the model in
        one call, their images in another, and with exact_search every photo is scored for
        all of them in one pass. A query that fails gets its error and the others go on. An
        image query never finds its own file. References scoring below min_score (or the
        query's `min:`) are left out."""
        if k < 1:
            raise ClipsearchError("-k must be at least 1")
        answers = [BatchAnswer([]) for _ in queries]
        store = self._reader()
        try:
            spec, dim = self._searchable(store)
            parsed: dict[int, Query] = {}
            for number, item in enumerate(queries):
                try:
                    parsed[number] = self._batch_query(item)
                except ClipsearchError as exc:
                    answers[number].error = str(exc)
            vectors = self._batch_vectors(spec, parsed, answers)
            if not vectors:
                return answers
            exact = self.settings.exact_search
            forest = None if exact else self._current_forest(store)
            # An image query asks one more: its own file may be among the answers.
            want = {n: k + (queries[n].image is not None) for n in vectors}
            unfiltered = [n for n in vectors if not parsed[n].filters]
            found: dict[int, list[SearchResult]] = {}
            if exact and unfiltered:
                for n, (ids, scores) in zip(unfiltered, exact_many(
                        store.iter_live_vectors(dim), np.stack([vectors[n] for n in unfiltered]),
                        max(want[n] for n in unfiltered))):
                    found[n] = results_for(store, ids[:want[n]], scores[:want[n]])
            for n, vector in vectors.items():
                if n not in found:
                    found[n] = rank(store, forest, vector, want[n], dim, exact=exact, filters=parsed[n].filters)
            self._offline_notice(store)
        finally:
            store.close()
        rule = PathRule.for_setting(self.settings.path_case)
        for n, results in found.items():
            image = queries[n].image
            own = rule.key(absolute(image)) if image is not None else None
            floor = max((f for f in (min_score, parsed[n].min_score) if f is not None), default=None)
            kept = [r for r in results if own is None or rule.key(r.path) != own]
            kept = [r for r in kept if floor is None or (r.score is not None and r.score >= floor)]
            answers[n].results = [dataclasses.replace(r, rank=i) for i, r in enumerate(kept[:k], start=1)]
        return answers

    def _batch_query(self, item: BatchQuery) -> Query:
        if item.text and item.text.strip():
            query = self.parse(item.text, files=False)
            if not query.terms:
                raise ClipsearchError("the description has filters but nothing to search for")
            return query
        if item.image is None:
            raise ClipsearchError("no description, and image_path names no image")
        return Query(terms=(Term(1.0, image=item.image),))

    def _batch_vectors(self, spec: str, parsed: dict[int, Query], answers: list[BatchAnswer]) -> dict[int, np.ndarray]:
        """The query vector of each parsed query (by number): texts in one model call, images
        in another; a query whose image cannot be read gets its error instead."""
        if not parsed:
            return {}
        embedder = self.embedder(spec)
        texts = list(dict.fromkeys(t.text for q in parsed.values() for t in q.terms if t.text is not None))
        text_vectors = dict(zip(texts, embedder.embed_texts(texts))) if texts else {}
        pixels: dict[str, np.ndarray] = {}
        for n, query in list(parsed.items()):
            for term in query.terms:
                if term.image is not None and term.image not in pixels:
                    try:
                        pixels[term.image] = self._query_pixels(embedder, term.image)
                    except ClipsearchError as exc:
                        answers[n].error = str(exc)
                        del parsed[n]
                        break
        image_vectors = dict(zip(pixels, self._image_vectors(embedder, list(pixels.values())))) if pixels else {}
        vectors: dict[int, np.ndarray] = {}
        for n, query in parsed.items():
            try:
                vectors[n] = _unit([t.weight * (text_vectors[t.text] if t.text is not None
                                                else image_vectors[str(t.image)]) for t in query.terms],
                                   query).astype(np.float32)
            except ClipsearchError as exc:
                answers[n].error = str(exc)
        return vectors

    def _searchable(self, store: Store) -> tuple[str, int]:
        """(model spec, vector length) of a library that has vectors to search, else a
        ClipsearchError saying to crawl first."""
        spec = self._model_for(store)
        dim = int(store.get_meta("dim") or 0)
        if not dim:
            raise ClipsearchError("nothing indexed yet: run `clipsearch crawl FOLDER` first")
        return spec, dim

    def _offline_notice(self, store: Store) -> None:
        offline = [r.path for r in store.roots() if r.offline_since is not None]
        if offline:
            self._notice(f"{store.offline_count()} photos in offline folders ({', '.join(offline)}) are left out "
                         "until the folders are back")

    @_storage_guard
    def watch(self, stop, **options) -> None:
        """Run the watch daemon (daemon/watcher.py) until `stop` (a threading.Event) is set."""
        from .daemon.watcher import Watcher

        Watcher(self, **options).run(stop)

    @_storage_guard
    def overview(self) -> Overview:
        """Photos, folders and model in a few milliseconds (for the prompt's first line)."""
        return self._read_catalog(
            lambda store: Overview(store.searchable_count(), len(store.roots()), store.get_meta("model")),
            Overview(0, 0, None))

    @_storage_guard
    def warm(self) -> None:
        """Load what a text search needs (the text tower, the forest), so that the first query
        is answered as fast as the next ones; and measure the relevance floor."""
        store = self._reader()
        try:
            if not store.get_meta("dim"):
                return
            spec = self._model_for(store)
            self._current_forest(store)
            self.relevance_floor(store, spec)
        finally:
            store.close()

    def relevance_floor(self, store: Store | None = None, spec: str | None = None) -> float | None:
        """The score below which a text query's best result is not a real match for this model
        and library, or None if it cannot be known (too few photos, no text path).

        How: the library's own photos (a sample of up to 1,000) are scored against a fixed set
        of varied captions. For each photo its 3 best captions may describe it and are left
        out; the rest are unrelated pairs, and the floor is the 99th percentile of their scores:
        a real match scores above 99% of unrelated photo-caption pairs of this model. CLIP
        models differ widely in scale (ViT-B-32's unrelated pairs score about 0.1-0.2), which is
        why the floor is measured, not fixed."""
        current = spec or (self._embedder.spec if self._embedder is not None else None)
        if self._relevance is not None and self._relevance[0] == current:
            return self._relevance[1]  # no catalog read on the prompt's hot path
        own = store is None
        store = store or self._reader()
        try:
            dim = int(store.get_meta("dim") or 0)
            spec = spec or self._model_for(store)
            if self._relevance is not None and self._relevance[0] == spec:
                return self._relevance[1]  # measured once per model (a reembed measures again)
            ids, vectors = store.sample_vectors(dim, 1000) if dim else (None, None)
            if vectors is None or len(vectors) < 20:
                return None
            captions = self.embedder(spec).embed_texts([f"a photo of {c}" for c in _CALIBRATION_CAPTIONS])
        except ClipsearchError:
            return None
        finally:
            if own:
                store.close()
        scores = np.sort(vectors @ captions.T, axis=1)[:, :-3]
        floor = float(np.percentile(scores, 99))
        self._relevance = (spec, floor)
        return floor

    @staticmethod
    def parse(text: str | None, files: bool = True) -> Query:
        """The query language (query.py): a Query, or a QueryError naming the wrong part.
        files=False: no word is taken for an image file's path."""
        return parse_query(text or "", files=files)

    def _current_forest(self, store: Store, retry: bool = True) -> Forest | None:
        """The forest the manifest names if it may answer for this catalog, else None (every
        photo is then scored exactly, and a notice says why). It is reused from the last
        search while it is current: a fresh memory map pays a page fault for every node a
        query touches (18 ms instead of 4.5 ms per query at 100k photos)."""
        manifest = None
        try:
            manifest = read_manifest(self.settings.index_dir)
            if manifest is None or manifest.forest is None:
                self._forest = None
                return None
            problem = self._forest_problem(store, manifest)
            if problem:
                raise ForestDamaged(problem)
            if self._forest is None or self._forest.manifest != manifest:
                self._forest = None
                self._forest = Forest(self.settings.index_dir, manifest)
            self._forest.search_k = self.settings.search_k
            return self._forest
        except (ForestDamaged, OSError) as exc:
            if retry and self._forest is None and _quietly(read_manifest, self.settings.index_dir) != manifest:
                return self._current_forest(store, retry=False)  # replaced under our feet by a build
            self._notice(f"the search index is not used ({exc}): every photo is scored exactly until "
                         "the next crawl or `clipsearch rebuild` replaces it")
            log.warning("index not used: %s", exc)
            return None

    def _notice(self, text: str) -> None:
        if text not in self._said:
            self._said.add(text)
            self._notices.append(text)

    def take_notices(self) -> list[str]:
        """Things worth telling the user (an index not used, and why), each once."""
        notices, self._notices = self._notices, []
        return notices

    def _query_vector(self, store: Store, spec: str, dim: int, query: Query, like: int | None,
                      image_data: bytes | None = None) -> np.ndarray:
        """The weighted sum of the query's parts' vectors, L2-normalised. Texts go to the model
        in one call; images (files, or bytes sent, weight 1) are decoded with the crawl's guards."""
        parts: list[np.ndarray] = []
        texts = [t for t in query.terms if t.text is not None]
        images: list[tuple[float, str | bytes]] = [(t.weight, t.image) for t in query.terms if t.image is not None]
        if image_data is not None:
            images.append((1.0, image_data))
        if texts or images:
            embedder = self.embedder(spec)
            if texts:
                vectors = embedder.embed_texts([t.text for t in texts if t.text is not None])
                parts.extend(t.weight * v for t, v in zip(texts, vectors))
            if images:
                pixels = [self._query_pixels(embedder, source) for _, source in images]
                parts.extend(weight * v for (weight, _), v in zip(images, self._image_vectors(embedder, pixels)))
        if like is not None:
            ids, vectors = store.vectors([like], dim)
            if not len(ids):
                raise ClipsearchError("that photo is no longer in the library")
            parts.append(vectors[0])
        return _unit(parts, query)

    def _image_vectors(self, embedder: spec_mod.Embedder, pixels: Sequence[np.ndarray]) -> np.ndarray:
        """Vectors of query images in one model call, L2-normalised; with tta = "flip", each
        is the mean of the image's and its mirror image's (a view from the other side of the
        street still finds the place)."""
        batch = np.stack(pixels)
        if self.settings.tta == "flip":
            vectors = embedder.embed_images(np.concatenate([batch, batch[:, :, ::-1]]))
            vectors = vectors[:len(batch)] + vectors[len(batch):]
        else:
            vectors = embedder.embed_images(batch)
        vectors = np.asarray(vectors, dtype=np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def _query_pixels(self, embedder: spec_mod.Embedder, path: str | bytes) -> np.ndarray:
        import io

        from .ingest.decode import DecodeError, load_image

        if isinstance(path, bytes):  # an image sent to a page: in memory only
            if not path:
                raise ClipsearchError("the image sent is empty")
            try:
                return load_image(io.BytesIO(path), embedder.preprocess, min(self.settings.max_pixels, UPLOAD_PIXELS),
                                  _upload_budget(), formats=UPLOAD_FORMATS)[0]
            except DecodeError as exc:
                raise ClipsearchError(f"the image sent: {exc}") from None
        if not os.path.isfile(path):
            raise ClipsearchError(f"{path}: no such file")
        try:
            return load_image(path, embedder.preprocess, self.settings.max_pixels)[0]
        except DecodeError as exc:
            raise ClipsearchError(f"{path}: {exc}") from None

    @_storage_guard
    def status(self) -> LibraryStatus:
        store = Store.open_existing(self.settings.catalog_path)
        problem = None
        try:
            manifest = read_manifest(self.settings.index_dir)
        except ForestDamaged as exc:
            manifest, problem = None, str(exc)
        if store is None:
            return LibraryStatus(self.settings.home, None, None, [], {}, manifest, 0, 0, problem)
        try:
            if manifest and manifest.forest:
                problem = self._index_problem(store, manifest)
            per_root = store.root_counts()
            roots = [(r, per_root.get(r.id, {}).get("live", 0)) for r in store.roots()]
            dim = store.get_meta("dim")
            built = manifest.built_seq if manifest and not problem else 0
            pending = store.count_changed_since(built)
            size = sum(p.stat().st_size for p in self.settings.home.glob("catalog.db*"))
            from .daemon.client import daemon_state

            return LibraryStatus(self.settings.home, store.get_meta("model"), int(dim) if dim else None, roots,
                                 store.counts_by_status(), manifest, pending, size, problem,
                                 daemon_state(self.settings.home))
        finally:
            store.close()

    @_storage_guard
    def folders(self) -> list[str]:
        """The library's root folders that are online (no counting: a few milliseconds)."""
        return [r.path for r in self._roots_now() if r.offline_since is None]

    @_storage_guard
    def photos(self, file_ids: Sequence[int]) -> dict[int, Photo]:
        """The photos among file_ids that are in the library now (live: not deleted, failed
        or offline), by id. What a page may show or hand out: nothing else."""
        rows: dict[int, FileRow] = self._read_catalog(lambda store: store.rows([int(i) for i in file_ids]), {})
        return {i: _photo(r) for i, r in rows.items() if r.status == "live"}

    # --- vectors in and out, duplicates ---------------------------------------------------
    @_storage_guard
    def export_vectors(self, output: str | os.PathLike, fmt: str = "npz", live_only: bool = True,
                       on_progress: Callable[[int, int], None] | None = None) -> ExportReport:
        """Write the library's vectors with their paths (interop/vectors.py): an .npz, or with
        fmt "npy" the folder `output` with embeddings.npy and paths.npy. live_only False adds
        the rows kept with a vector while their photos are away (offline, deleted)."""
        from .interop import vectors as vectors_mod

        if fmt not in vectors_mod.FORMATS:
            raise ClipsearchError(f"--format {fmt!r} is not one of: {', '.join(vectors_mod.FORMATS)}")
        output = Path(absolute(output))
        if not output.parent.is_dir():
            raise ClipsearchError(f"{output.parent}: no such folder")
        if fmt == "npz" and output.is_dir():
            raise ClipsearchError(f"{output} is a folder: name the .npz file to write (or use --format npy)")
        store = self._reader()
        try:
            with store.snapshot():  # one moment of the catalog, whatever the crawl writes meanwhile
                dim = int(store.get_meta("dim") or 0)
                model = store.get_meta("model")
                if not dim or not model:
                    raise ClipsearchError("nothing embedded yet: run `clipsearch crawl FOLDER` first")
                count, path_chars, hash_chars, taken_chars = store.export_sizes(live_only)
                plan = vectors_mod.Plan(count, dim, path_chars, hash_chars, model, taken_chars)

                def read(column: str):
                    for values in store.export_column(live_only, column):
                        if column == "vector":
                            yield np.frombuffer(b"".join(values), dtype=np.float32).reshape(len(values), dim)
                        elif column in ("width", "height"):
                            yield np.array([-1 if v is None else v for v in values], dtype=np.int32)
                        else:
                            yield [v or "" for v in values]

                if fmt == "npz":
                    vectors_mod.write_npz(output, plan, read, on_progress)
                    files = [output]
                else:
                    files = vectors_mod.write_npy_pair(output, plan, read, on_progress)
        finally:
            store.close()
        return ExportReport(count, dim, model, files)

    @_storage_guard
    def import_vectors(self, source: str | os.PathLike, *, paths: str | os.PathLike | None = None,
                       model: str | None = None, base: str | os.PathLike | None = None, overwrite: bool = False,
                       on_progress: Callable[[int, int], None] | None = None,
                       on_index: Callable[[int, int], None] | None = None) -> ImportReport:
        """Bring vectors made elsewhere into the library without embedding anything: an .npz
        (ours, or any with `vectors` and `paths`), an .npy of vectors with the .npy of their
        paths, or a clip-retrieval output folder. The file is checked whole first (shapes,
        types, lengths, the model and its vector length); then rows with NaN, infinite or zero
        vectors, empty paths or a path seen before in the file are refused and counted; photos
        already embedded keep their vectors unless `overwrite`. A path not on this computer
        becomes a remote row: searchable, shown as remote. Relative paths are taken from
        `base` (default: the current folder). Handed to the watch daemon while it runs."""
        from .interop.vectors import open_source

        source, paths = absolute(source), absolute(paths) if paths is not None else None
        base = absolute(base) if base is not None else os.getcwd()
        with open_source(source, paths):
            pass  # a bad file is refused here, before the library is locked
        try:
            writer = self.writer()
        except LibraryBusy:
            from .daemon import client as watch

            if watch.daemon_pid(self.settings.home) is None:
                raise
            answer = watch.ask_daemon(self.settings.home, {"op": "import", "source": source, "paths": paths,
                                                           "model": model, "base": base, "overwrite": overwrite})
            fields = answer["report"]
            fields.pop("manifest", None)
            report = ImportReport(**fields)
            report.manifest = _quietly(read_manifest, self.settings.index_dir)
            return report
        with writer:
            report = writer.import_file(source, paths, model, base, overwrite, on_progress, on_index)
        self._forest = None
        return report

    @_storage_guard
    def duplicates(self, threshold: float = 0.95, near: bool = True,
                   on_progress: Callable[[int, int], None] | None = None) -> list[DuplicateGroup]:
        """Groups of photos that are copies of one another, largest first: the same bytes (the
        content hash the crawl keeps) and, with `near`, vectors at least `threshold` alike
        (cosine), found through the index and joined transitively. Reads only."""
        if not 0 < threshold <= 1:
            raise ClipsearchError("--threshold must be above 0 and at most 1 (cosine similarity, e.g. 0.95)")
        store = self._reader()
        try:
            _, dim = self._searchable(store)
            groups = _Groups()
            for ids in store.exact_duplicates():
                for other in ids[1:]:
                    groups.join(ids[0], other, 1.0)
            if near:
                forest = self._current_forest(store)
                for a, b, score in near_pairs(store, forest, dim, threshold, on_progress):
                    groups.join(a, b, score)
            members = groups.groups()
            rows = store.rows([i for group in members for i in group])
        finally:
            store.close()
        result = []
        for group in members:
            photos = [_photo(rows[i]) for i in group if i in rows and rows[i].status == "live"]
            if len(photos) < 2:
                continue
            hashes = {p.hash for p in photos}
            exact = len(hashes) == 1 and None not in hashes
            result.append(DuplicateGroup(exact, 1.0 if exact else groups.weakest(group), photos))
        result.sort(key=lambda g: (-len(g.photos), not g.exact, g.photos[0].path))
        return result

    @_storage_guard
    def errors(self, limit: int | None = None) -> list[FileRow]:
        return self._read_catalog(lambda store: store.failed_files(limit), [])


def _unit(parts: Sequence[np.ndarray], query: Query) -> np.ndarray:
    """The sum of a query's weighted part vectors, L2-normalised; a ClipsearchError if the
    parts cancel out."""
    vector = np.sum(parts, axis=0)
    norm = float(np.linalg.norm(vector))
    if norm < 1e-6:
        raise ClipsearchError(f"the parts of '{query}' cancel out: nothing is left to search for")
    return vector / norm


def _photo(row: FileRow) -> Photo:
    return Photo(row.id, row.path, row.size, row.width, row.height, row.format, row.taken_at, camera_name(row.extra),
                 gps_of(row.extra), row.hash, row.mtime_ns, row.remote)


def _date_key(result: SearchResult) -> str:
    """The date sort:date orders by: taken, else the file's date (local time, as store.py)."""
    if result.taken_at:
        return result.taken_at
    if result.mtime_ns:
        import datetime

        return datetime.datetime.fromtimestamp(result.mtime_ns / 1e9).isoformat(timespec="seconds")
    return ""


class _Groups:
    """Union-find over photo ids: pairs joined become groups (transitively)."""

    def __init__(self):
        self._parent: dict[int, int] = {}
        self._weakest: dict[int, float] = {}  # by root: the lowest score that joined the group

    def _root(self, item: int) -> int:
        parent = self._parent.setdefault(item, item)
        while parent != self._parent[parent]:
            self._parent[parent] = self._parent[self._parent[parent]]
            parent = self._parent[parent]
        return parent

    def join(self, a: int, b: int, score: float) -> None:
        ra, rb = self._root(a), self._root(b)
        weakest = min(score, self._weakest.get(ra, 1.0), self._weakest.get(rb, 1.0))
        if ra != rb:
            self._parent[rb] = ra
            self._weakest.pop(rb, None)
        self._weakest[ra] = weakest

    def groups(self) -> list[list[int]]:
        found: dict[int, list[int]] = {}
        for item in self._parent:
            found.setdefault(self._root(item), []).append(item)
        return [sorted(g) for g in found.values() if len(g) > 1]

    def weakest(self, group: list[int]) -> float:
        return self._weakest.get(self._root(group[0]), 1.0)


def _quietly(read, *args):
    """read(*args), or None if it raises ForestDamaged."""
    try:
        return read(*args)
    except ForestDamaged:
        return None


def _log_crawl(stats: CrawlStats) -> None:
    log.info("crawl done in %.1f s: %d found, %d new, %d changed, %d unchanged, %d embedded, %d moved, "
             "%d restored, %d deleted, %d failed", stats.elapsed, stats.found, stats.new, stats.changed,
             stats.unchanged, stats.embedded, stats.moved, stats.restored, stats.deleted, stats.failed)
    for problem in stats.problems:
        log.warning("not readable: %s: %s", problem.path, problem.error)
