"""The Library facade: what the faces (the command line, the prompt, the web page) call.

A Library is one home folder. It composes the services (the model policy, the forest
keeper, the query planner, the writer, the watch daemon and its client, the read models)
and offers their work as public methods that take and return plain values (records.py);
nothing here prints, and no method holds logic of its own beyond choosing the service.
Storage failures leave every method as one typed error (errors.py) with the detail logged.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import sqlite3
from typing import TYPE_CHECKING, Callable, Mapping, Sequence, TypeVar

from .catalog.faults import storage_error
from .catalog.store import Store
from .config import Settings
from .errors import BadArgument, NotIndexed
from .filetypes import refused_extensions
from .keeper import ForestKeeper, index_info
from .notices import Notices
from .paths import PathRule, absolute
from .planner import HEAD_FILE, Planner
from .policy import ModelPolicy
from .query import Crop, Query, Term, switched
from .query import parse as parse_query
from .records import (
    BatchAnswer,
    BatchQuery,
    CrawlReport,
    CrawlSummary,
    DuplicateGroup,
    ExportReport,
    FailedFile,
    FileRow,
    ImportReport,
    IndexInfo,
    LibraryStatus,
    MissingReader,
    Overview,
    Photo,
    RepairReport,
    Root,
    RootInfo,
    SearchResult,
    TuneReport,
)

if TYPE_CHECKING:
    import threading

    from .daemon.watcher import Watcher
    from .model.spec import Embedder
    from .writer import Writer

log = logging.getLogger("clipsearch")
_T = TypeVar("_T")


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

    def __init__(self, settings: Settings, embedder: Embedder | None = None):
        self.settings = settings
        self._notices = Notices()
        self._policy = ModelPolicy(settings, self._notices, embedder)
        self._keeper = ForestKeeper(settings, self._notices)
        self._planner = Planner(settings, self._policy, self._keeper, self._notices)

    # --- the one writer, or the daemon that holds it ------------------------------------------
    def writer(self) -> Writer:
        """The library's one writer (the write lock and a catalog connection) until closed;
        raises LibraryBusy while another process holds it."""
        from .writer import Writer  # the write path's modules: not loaded by searches (9 ms)

        return Writer(self.settings, self._policy, self._keeper)

    # --- crawl and folders --------------------------------------------------------------------
    @_storage_guard
    def crawl(self, folders: Sequence[str | os.PathLike] = (), *, model: str | None = None,
              exclude: Sequence[str] | None = None, extensions: Sequence[str] | None = None,
              include_hidden: bool | None = None, follow_symlinks: bool | None = None,
              retry_failed: bool = False, on_progress: Callable[[CrawlSummary], None] | None = None,
              on_index: Callable[[int, int], None] | None = None,
              on_handover: Callable[[int], None] | None = None,
              on_text: Callable[[int, int], None] | None = None) -> CrawlReport:
        """Index folders (all known folders if none): new and changed files, moves, deletions;
        then rebuild the forest if anything changed. Scan flags left as None come from what
        the folder was last crawled with, then from the settings; flags given for a whole
        folder are remembered for it. A folder that is missing goes offline (its photos are
        kept and left out of results until it is back). While the watch daemon runs, the crawl
        is handed to it (`on_handover(pid)` is told) and this waits for its report."""
        given = {name: value for name, value in (("exclude", exclude), ("extensions", extensions),
                                                 ("include_hidden", include_hidden),
                                                 ("follow_symlinks", follow_symlinks)) if value is not None}
        why = refused_extensions(extensions or ())
        if why:
            raise BadArgument("extensions", None, why)
        rule = PathRule.for_setting(self.settings.path_case)

        def roots() -> list[Root]:
            return Store.read(self.settings.catalog_path, Store.roots, [])

        for folder in folders:  # a missing folder or a file is refused before anything is written
            _folder_to_crawl(folder, roots, rule)
        if self.settings.engine == "ray":  # Ray installed, its cluster there: also before any write
            from .ingest.cluster import preflight

            preflight(self.settings.ray_address)
        if model is None and self.settings.preset_from == "--preset":
            model = self._policy.preset_model()  # a preset asked for now asks for its model
        from .daemon import client, protocol

        request = protocol.CrawlRequest(tuple(absolute(f) for f in folders), model, given, retry_failed)
        answer = client.write_or_hand_over(
            self.settings.home, self.writer, lambda writer: writer.crawl(
                folders, model=model, given=given, retry_failed=retry_failed, on_progress=on_progress,
                on_index=on_index, on_text=on_text), request, on_handover)
        if isinstance(answer, protocol.Crawled):
            return CrawlReport(answer.stats, index_info(self._keeper.manifest()), answer.rebuilt)
        return answer  # type: ignore[return-value]

    @_storage_guard
    def remove_root(self, folder: str | os.PathLike) -> tuple[str, int]:
        """Stop indexing a folder: its photos leave the results. Returns (the folder as the
        library knows it, how many photos left). Handed to the watch daemon while it runs."""
        def work(writer: Writer) -> tuple[str, int]:
            root, count = writer.remove_root(folder)
            writer.refresh_index()
            return root.path, count

        from .daemon import client, protocol

        request = protocol.RemoveRootRequest(absolute(folder))
        answer = client.write_or_hand_over(self.settings.home, self.writer, work, request)
        if isinstance(answer, protocol.RootRemoved):
            return answer.folder, answer.count
        return answer  # type: ignore[return-value]

    @_storage_guard
    def roots(self) -> list[RootInfo]:
        """The library's folders: their rules, whether they are there, their photo counts."""
        from . import views

        return Store.read(self.settings.catalog_path, lambda store: views.root_infos(self.settings, store), [])

    @_storage_guard
    def folders(self) -> list[str]:
        """The library's root folders that are online (no counting: a few milliseconds)."""
        return [path for path, _ in self.folders_and_links()]

    @_storage_guard
    def folders_and_links(self) -> list[tuple[str, bool]]:
        """The online root folders, each with whether its walks follow symbolic links (then a
        photo reached through a link out of the folder belongs to it)."""
        roots: list[Root] = Store.read(self.settings.catalog_path, Store.roots, [])
        return [(r.path, bool(r.options.get("follow_symlinks", self.settings.follow_symlinks)))
                for r in roots if r.offline_since is None]

    @_storage_guard
    def watch(self, stop: threading.Event, **options) -> None:
        """Run the watch daemon (daemon/watcher.py) until `stop` (a threading.Event) is set."""
        self.watcher(**options).run(stop)

    def watcher(self, **options) -> Watcher:
        """The watch daemon of this library, not started (`run(stop)` blocks until stop is set)."""
        from .daemon.watcher import Watcher

        return Watcher(self.settings, self.writer, self._keeper, self._policy, **options)

    @property
    def model_loaded(self) -> bool:
        """Whether the model is in memory now (a crawl with nothing new never loads it)."""
        return self._policy.loaded

    def release_model(self) -> bool:
        """Forget the loaded model; True if one was held (an injected embedder is kept)."""
        return self._policy.release()

    # --- the index, the model, the catalog itself ---------------------------------------------
    @_storage_guard
    def rebuild_index(self, on_index: Callable[[int, int], None] | None = None) -> IndexInfo:
        """Build the forest again from the catalog's live vectors."""
        with Store.reading(self.settings.catalog_path):
            pass  # an empty library says so before the lock is taken
        with self.writer() as writer:
            return writer.rebuild_index(on_index)

    @_storage_guard
    def reembed(self, model: str, on_progress=None, on_index=None) -> CrawlReport:
        """Switch the library to another model: forget every vector and embed every photo again."""
        with self.writer() as writer:
            report, dropped = writer.reembed(model, on_progress, on_index)
        if dropped:
            self._notices.say(f"{dropped} imported photos that no crawl can reach (remote, or outside the library's "
                              "folders) left the library: their vectors were of the old model")
        return report

    @_storage_guard
    def repair(self, on_index: Callable[[int, int], None] | None = None) -> RepairReport:
        """Check the catalog; if it is damaged, set it aside and recover what can be read into a
        new one (the same model, folders and vectors, less what was lost), then make the index
        match. A sound catalog only gets its index checked (and rebuilt if need be)."""
        with self.writer() as writer:
            return writer.repair(on_index)

    # --- queries -------------------------------------------------------------------------------
    @staticmethod
    def parse(text: str | None, files: bool = True) -> Query:
        """The query language (query.py): a Query, or a QueryError naming the wrong part.
        files=False: no word is taken for an image file's path."""
        return parse_query(text or "", files=files)

    @_storage_guard
    def search(self, text: str | Query | None = None, image: str | os.PathLike | None = None, k: int = 10,
               exact: bool = False, *, like: int | None = None, offset: int = 0,
               image_data: bytes | None = None, files: bool = True, crop: Crop | None = None,
               switches: Mapping[str, bool | None] | None = None) -> list[SearchResult]:
        """Results offset+1 .. offset+k for a query in the query language (query.py), plus an
        example image (a file, or `image_data`: an image's bytes, decoded in memory with the
        crawl's guards and never stored) and the vector of the photo with id `like`, if given;
        all the parts' vectors are added with their weights. A query of only filters lists
        the newest photos that pass them (score None). files=False: the query's words are
        never taken for image files on this computer (a web page's queries). `crop`: only this
        region of the image (x, y, width, height) is the query; `switches`: tta, qe, rerank,
        tuned on or off (None: as the query says, else the settings)."""
        query = self.parse(text, files) if isinstance(text, str) or text is None else text
        if crop is not None and image is None:
            raise BadArgument("crop", None, "needs an image to take the region of")
        if image is not None:
            query = dataclasses.replace(query, terms=(*query.terms, Term(1.0, image=absolute(image), crop=crop)))
        if switches:
            query = switched(query, switches)
        plan = self._planner.plan(query, k, offset=offset, like=like, image_data=image_data, exact=exact)
        with Store.reading(self.settings.catalog_path) as store:
            return self._planner.search(store, plan)

    @_storage_guard
    def judge(self, text: str | Query | None, results: Sequence[SearchResult], *, like: int | None = None,
              offset: int = 0, files: bool = True) -> float | None:
        """The score the best of these results (of this query) falls short of, if it is no real
        match: "nothing close" (Planner.judge); None if it is one, or cannot be known. For a
        sigmoid model (the default) scores are match probabilities and the bar is 1%."""
        query = self.parse(text, files) if isinstance(text, str) or text is None else text
        if query.is_empty and like is None:
            return None
        plan = self._planner.plan(query, max(len(results), 1), offset=offset, like=like)
        try:
            with Store.reading(self.settings.catalog_path) as store:
                return self._planner.judge(store, plan, results)
        except NotIndexed:
            return None

    @_storage_guard
    def search_many(self, queries: Sequence[BatchQuery], k: int = 5,
                    min_score: float | None = None) -> list[BatchAnswer]:
        """Answers for many queries at once (`clipsearch batch`): their texts go to the model in
        one call, their images in another, and with exact_search every photo is scored for
        all of them in one pass. A query that fails gets its error and the others go on. An
        image query never finds its own file. References scoring below min_score (or the
        query's `min:`) are left out."""
        with Store.reading(self.settings.catalog_path) as store:
            return self._planner.search_many(store, queries, k, min_score)

    @_storage_guard
    def warm(self) -> None:
        """Load what a text search needs (the text tower, the forest), so that the first query
        is answered as fast as the next ones; and measure the relevance floor."""
        with Store.reading(self.settings.catalog_path) as store:
            if not store.get_meta("dim"):
                return
            spec = self._policy.spec_for(store)
            self._keeper.current(store)
            self._planner.relevance_floor(store, spec)

    def relevance_floor(self) -> float | None:
        """The score below which a text query's best result is not a real match for this model
        and library (Planner.relevance_floor), or None if it cannot be known."""
        current = self._policy.held_spec
        known = self._planner.known_floor(current)
        if known is not None:
            return known  # no catalog read on the prompt's hot path
        try:
            with Store.reading(self.settings.catalog_path) as store:
                return self._planner.relevance_floor(store)
        except NotIndexed:
            return None

    @_storage_guard
    def tune(self, folder: str | os.PathLike, *, share: float = 0.2,
             on_progress: Callable[[CrawlSummary], None] | None = None,
             on_step: Callable[[int, int, float], None] | None = None) -> TuneReport:
        """Train a head on the library's vectors of the photos in folder's class subfolders
        (crawled first: new ones are embedded) and save it with the library, for image
        queries (tuning.py); a share of each class is held out to measure it."""
        from .tuning import labelled_photos, tune

        photos = labelled_photos(folder)
        self.crawl([folder], on_progress=on_progress)
        with Store.reading(self.settings.catalog_path) as store:
            _, dim = self._planner.searchable(store)
            return tune(store, self._policy, photos, self.settings.home / HEAD_FILE, dim=dim, share=share,
                        on_step=on_step)

    def tuned(self) -> bool:
        """Whether the library has a tuned head for its model (`tuned:on` can be asked for)."""
        try:
            with Store.reading(self.settings.catalog_path) as store:
                return self._planner.head(store) is not None
        except NotIndexed:
            return False

    def take_notices(self) -> list[str]:
        """Things worth telling the user (an index not used, and why), each once."""
        return self._notices.take()

    # --- read models ---------------------------------------------------------------------------
    @_storage_guard
    def status(self) -> LibraryStatus:
        from . import views

        store = Store.open_existing(self.settings.catalog_path)
        try:
            return views.status(self.settings, store, self._keeper)
        finally:
            if store is not None:
                store.close()

    @_storage_guard
    def overview(self) -> Overview:
        """Photos, folders and model in a few milliseconds (for the prompt's first line)."""
        def overview(store: Store) -> Overview:
            return Overview(store.searchable_count(), len(store.roots()), store.get_meta("model"),
                            store.placed_count(), store.worded_count())

        return Store.read(self.settings.catalog_path, overview, Overview(0, 0, None))

    @_storage_guard
    def photos(self, file_ids: Sequence[int]) -> dict[int, Photo]:
        """The photos among file_ids that are in the library now (live: not deleted, failed
        or offline), by id. What a page may show or hand out: nothing else."""
        from . import views

        ids = [int(i) for i in file_ids]

        def read(store: Store) -> dict[int, Photo]:
            rows, texts, places = store.rows(ids), store.texts(ids), store.places_of(ids)
            return {i: views.photo(r, places.get(i), texts.get(i)) for i, r in rows.items() if r.status == "live"}

        return Store.read(self.settings.catalog_path, read, {})

    @_storage_guard
    def missing_readers(self) -> list[MissingReader]:
        """Formats of photos in the folders that this install has no package to read."""
        from . import views

        return Store.read(self.settings.catalog_path, views.missing_readers, [])

    @_storage_guard
    def errors(self, limit: int | None = None) -> list[FailedFile]:
        """Files that could not be indexed, with the reason, by path."""
        rows: list[FileRow] = Store.read(self.settings.catalog_path, lambda store: store.failed_files(limit), [])
        return [FailedFile(row.path, row.error or "") for row in rows]

    @_storage_guard
    def duplicates(self, threshold: float = 0.95, near: bool = True,
                   on_progress: Callable[[int, int], None] | None = None) -> list[DuplicateGroup]:
        """Groups of photos that are copies of one another, largest first: the same bytes and,
        with `near`, vectors at least `threshold` alike (cosine), joined transitively."""
        from . import views

        if not 0 < threshold <= 1:
            raise BadArgument("threshold", threshold, "must be above 0 and at most 1 (cosine similarity, e.g. 0.95)")
        with Store.reading(self.settings.catalog_path) as store:
            _, dim = self._planner.searchable(store)
            return views.duplicates(store, self._keeper, dim, threshold, near, on_progress)

    # --- vectors in and out --------------------------------------------------------------------
    @_storage_guard
    def export_vectors(self, output: str | os.PathLike, fmt: str = "npz", live_only: bool = True,
                       on_progress: Callable[[int, int], None] | None = None) -> ExportReport:
        """Write the library's vectors with their paths (interop/vectors.py): an .npz, or with
        fmt "npy" the folder `output` with embeddings.npy and paths.npy. live_only False adds
        the rows kept with a vector while their photos are away (offline, deleted)."""
        from .interop import vectors

        with Store.reading(self.settings.catalog_path) as store:
            return vectors.export(store, absolute(output), fmt, live_only, on_progress)

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
        from .daemon import client, protocol

        request = protocol.ImportRequest(source, paths, model, base, overwrite)
        answer = client.write_or_hand_over(
            self.settings.home, self.writer,
            lambda writer: writer.import_file(source, paths, model, base, overwrite, on_progress, on_index), request)
        if isinstance(answer, protocol.Imported):
            answer = dataclasses.replace(answer.report, index=index_info(self._keeper.manifest()))
        self._keeper.forget()
        return answer  # type: ignore[return-value]


def _folder_to_crawl(folder: str | os.PathLike, roots: Callable[[], Sequence[Root]], rule: PathRule) -> str:
    from .writer import folder_to_crawl

    return folder_to_crawl(folder, roots, rule)
