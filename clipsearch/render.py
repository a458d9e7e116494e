"""Everything the user sees in the terminal: rich tables and progress bars.

The only module that imports rich. Progress goes to stderr, so stdout stays clean for
`--json` and `--paths-only`.
"""

from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from rich.console import Console
from rich.style import Style
from rich.table import Table
from rich.text import Text

from .errors import ClipsearchError

if TYPE_CHECKING:  # `status` and `search` should not pay for importing the crawl's modules
    from rich.progress import TaskID

    from .config import Preset
    from .records import (
        CrawlReport,
        CrawlSummary,
        DuplicateGroup,
        EvalRow,
        FailedFile,
        ImportReport,
        LibraryStatus,
        Overview,
        RepairReport,
        RootInfo,
        SearchResult,
        TuneReport,
    )


def human_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def _date(taken_at: str | None, mtime_ns: int | None) -> str:
    if taken_at:
        return taken_at.replace("T", " ")[:16]
    if mtime_ns:
        return _dt.datetime.fromtimestamp(mtime_ns / 1e9).strftime("%Y-%m-%d %H:%M")
    return "-"


class CrawlProgress:
    """A live progress bar for a crawl and the index build after it; use as a context manager."""

    def __init__(self, console: Console, loading: str | None = None):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        self.console = console
        self._loading_text = loading
        self._progress = Progress(
            SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), TextColumn("{task.fields[counts]}"),
            console=console, transient=False, refresh_per_second=8,
            # Piped or redirected: no bar (it would print truncated frames); the summary says it all.
            disable=not console.is_terminal)
        self._crawl: TaskID | None = None
        self._index: TaskID | None = None
        self._text: TaskID | None = None
        self._text_started = 0.0

    def __enter__(self) -> "CrawlProgress":
        self._progress.__enter__()
        self._loading = (self._progress.add_task(self._loading_text, total=None, rate="", counts="")
                         if self._loading_text else None)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and issubclass(exc_type, ClipsearchError):
            # The one-line error says it all; a half-drawn bar above it would only confuse.
            self._progress.live.transient = True
        self._progress.__exit__(exc_type, exc, tb)

    def crawl(self, stats: CrawlSummary) -> None:
        if self._crawl is None:
            if self._loading is not None:
                self._progress.remove_task(self._loading)
            self._crawl = self._progress.add_task("scanning", total=None, rate="", counts="")
        counts = (f"new {stats.new}  changed {stats.changed}  unchanged {stats.unchanged}  "
                  f"moved/copied {stats.moved}  failed {stats.failed}")
        stage = "loading the model" if stats.loading_model else "scanning" if stats.scanning else "indexing"
        self._progress.update(self._crawl, description=stage,
                              total=None if stats.scanning else stats.found, completed=stats.processed,
                              rate=f"{stats.images_per_second:5.1f} img/s", counts=counts)

    def handover(self, pid: int) -> None:
        """The watch daemon does the crawl: say so, and wait with a spinner."""
        self.console.print(f"the watch daemon (process {pid}) is this library's writer: the crawl is handed to it; "
                           "waiting for its report (Ctrl-C stops waiting, the daemon carries on)")
        if self._loading is None:
            self._loading = self._progress.add_task("the watch daemon is crawling", total=None, rate="", counts="")

    def step(self, label: str, done: int, total: int) -> None:
        """Work of known size before the index build (an import)."""
        if self._crawl is None:
            if self._loading is not None:
                self._progress.remove_task(self._loading)
                self._loading = None
            self._crawl = self._progress.add_task(label, total=total, rate="", counts="")
        self._progress.update(self._crawl, completed=done, total=total)

    def index(self, done: int, total: int) -> None:
        if self._index is None:
            self._index = self._progress.add_task("building index", total=total, rate="", counts="")
        self._progress.update(self._index, completed=done, total=total)

    def text(self, done: int, total: int) -> None:
        """The second pass: the words in the photos read (they are searchable already)."""
        if self._text is None:
            self._text = self._progress.add_task("reading words in photos", total=total, rate="", counts="")
            self._text_started = time.monotonic()
        rate = done / max(time.monotonic() - self._text_started, 1e-6)
        self._progress.update(self._text, completed=done, total=total, rate=f"{rate:5.1f} img/s")


class WorkProgress:
    """Progress bars for work of known size (batch queries, export, import), one per label;
    use as a context manager and call update(label, done, total)."""

    def __init__(self, console: Console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeRemainingColumn(), console=console, refresh_per_second=8,
                                  disable=not console.is_terminal)
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> "WorkProgress":
        self._progress.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and issubclass(exc_type, ClipsearchError):
            self._progress.live.transient = True
        self._progress.__exit__(exc_type, exc, tb)

    def update(self, label: str, done: int, total: int | None) -> None:
        if label not in self._tasks:
            self._tasks[label] = self._progress.add_task(label, total=total)
        self._progress.update(self._tasks[label], completed=done, total=total)


def crawl_summary(report: CrawlReport) -> Table:
    s = report.stats
    table = Table(title="crawl finished", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("count", justify="right")
    rows = [("files found", s.found), ("new", s.new), ("changed", s.changed), ("unchanged", s.unchanged),
            ("embedded", s.embedded), ("moved, renamed or copied (vector reused)", s.moved),
            ("back again (restored)", s.restored), ("vanished (marked deleted)", s.deleted),
            ("failed", s.failed)]
    for name, value in rows:
        style = "red" if name == "failed" and value else None
        table.add_row(name, str(value), style=style)
    table.add_row("time", f"{s.elapsed:.1f} s")
    if s.embedded:
        table.add_row("images per second", f"{s.images_per_second:.1f} (model loading not counted)")
    if report.index:
        state = "rebuilt" if report.rebuilt else "up to date"
        table.add_row("index", f"{report.index.count} photos, {state}")
    if report.placed:
        table.add_row("places looked up (GPS)", str(report.placed))
    if report.texts is not None and report.texts.problem:
        table.add_row("words in photos", report.texts.problem, style="yellow")
    elif report.texts is not None and report.texts.total:
        t = report.texts
        table.add_row("words read in photos", f"{t.read} photos in {t.seconds:.1f} s, {t.with_words} with words"
                      + (f" ({t.total - t.read} left: the next crawl goes on)" if t.read < t.total else ""))
    if s.problems:
        table.add_row("folders or files not readable", str(len(s.problems)), style="yellow")
    if s.decoder_messages:
        table.add_row("image decoder warnings (in clipsearch.log)", str(s.decoder_messages))
    return table


def eval_table(rows: Sequence[EvalRow], titles: dict[str, str], title: str) -> Table:
    """`clipsearch eval`'s scores, one row a pipeline; the best of each column in bold."""
    table = Table(title=title, title_justify="left")
    table.add_column("pipeline", style="bold")
    for name in ("mAP", "R@1", "R@5", "R@10", "ms / query"):
        table.add_column(name, justify="right")
    best: dict[int, float | None] = {}
    for column in range(4):
        values = [v for v in (_eval_cells(r)[column] for r in rows) if v is not None]
        best[column] = max(values, default=None)
    for row in rows:
        cells = _eval_cells(row)
        shown = [("" if v is None else f"[bold]{v:.3f}[/]" if v == best[c] and len(rows) > 1 else f"{v:.3f}")
                 for c, v in cells.items()]
        table.add_row(titles.get(row.pipeline, row.pipeline), *shown, f"{row.ms_per_query:.1f}")
    return table


def _eval_cells(row: EvalRow) -> dict[int, float | None]:
    return {0: row.mean_ap, 1: row.recall.get(1), 2: row.recall.get(5), 3: row.recall.get(10)}


def tune_summary(report: TuneReport) -> str:
    lines = [f"trained a head on {report.photos} photos of {report.classes} classes in {report.seconds:.1f} s "
             f"({report.steps} steps), saved as {report.path}"]
    if report.missing:
        lines.append(f"{report.missing} photos of the folder have no vector (`clipsearch errors` says why)")
    if report.head_map is not None and report.plain_map is not None:
        lines.append(f"held-out photos ({report.held_out}): mAP {report.plain_map:.3f} with the plain vectors, "
                     f"{report.head_map:.3f} with the head")
        lines.append("image queries now rank with the head (--no-tuned or tuned:off to compare)" if report.better
                     else "the head did not beat the plain vectors: image queries use it only with --tuned or "
                          "tuned:on")
    return "\n".join(lines)


def repair_summary(report: RepairReport) -> str:
    index = (f"index: {report.index.count} photos, {'rebuilt' if report.rebuilt else 'sound'}"
             if report.index else "index: nothing to index yet")
    r = report.recovery
    if r is None:
        return f"the catalog is sound (integrity check: ok); {index}"
    lines = [f"the catalog was damaged ({report.problems[0]}); it is kept as {report.kept}",
             f"recovered: {r.files} files ({r.with_vector} searchable photos with their vectors) "
             f"in {r.roots} folders, model {r.model or 'unknown'}"]
    lost = max(r.unreadable, (report.photos_before or 0) - r.with_vector) + r.vectors_dropped
    if lost:
        before = f" of the {report.photos_before} the old index held" if report.photos_before else ""
        lines.append(f"lost: about {lost} photos{before}: run `clipsearch crawl` to index them again")
    if not r.roots:
        lines.append("the list of folders was lost: run `clipsearch crawl FOLDER` for each of your folders")
    lines.append(index)
    return "\n".join(lines)


def _file_link(path: str) -> Text:
    """The path, as a link terminals that know OSC 8 open with a click."""
    try:
        return Text(path, style=Style(link=Path(path).as_uri()))
    except ValueError:  # not absolute: no link
        return Text(path)


def results_table(results: Sequence[SearchResult], query: str | None = None) -> Table:
    """Results as a table; the place and the words read in the photos where any has them,
    the words of `query` marked in those."""
    table = Table(show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("path", overflow="fold")
    table.add_column("date")
    table.add_column("size", justify="right")
    places, texts = any(r.place for r in results), any(r.text for r in results)
    if places:
        table.add_column("place", overflow="fold")
    if texts:
        table.add_column("words in the photo", overflow="fold", max_width=40)
    for r in results:
        path = Text.assemble(r.path, (" (remote)", "dim")) if r.remote else _file_link(r.path)
        row: list[str | Text] = [str(r.rank), "-" if r.score is None else f"{r.score:.3f}", path,
                                 _date(r.taken_at, r.mtime_ns), human_size(r.size)]
        if places:
            row.append(r.place or "")
        if texts:
            row.append(marked(" / ".join((r.text or "").splitlines()), query))
        table.add_row(*row)
    return table


def marked(text: str, query: str | None) -> Text:
    """text with the words of query in it marked (compared without case and accents)."""
    from .words import marked_parts

    out = Text()
    for part, hit in marked_parts(text, query or ""):
        out.append(part, style="bold yellow" if hit else None)
    return out


def results_lines(results: Sequence[SearchResult]) -> str:
    """Results as tab-separated lines (a header first) for a pipe: every path whole on its
    own line, whatever its length, so that grep, cut and sort work. The place and the words
    read in the photo come last (their lines joined by " / ")."""
    lines = ["rank\tscore\tpath\tdate\tsize\tplace\twords"]
    for r in results:
        score = "" if r.score is None else f"{r.score:.4f}"
        path = r.path.replace("\t", " ").replace("\n", " ")
        words = " / ".join(" ".join(line.split()) for line in (r.text or "").splitlines())
        lines.append(f"{r.rank}\t{score}\t{path}{' (remote)' if r.remote else ''}\t{_date(r.taken_at, r.mtime_ns)}"
                     f"\t{'' if r.size is None else r.size}\t{r.place or ''}\t{words}")
    return "\n".join(lines)


def errors_lines(rows: Sequence[FailedFile]) -> str:
    """Failed files as tab-separated lines (path, error) for a pipe."""
    return "\n".join(f"{row.path}\t{' '.join(row.error.split())}" for row in rows)


def nothing_close(results: Sequence[SearchResult], floor: float) -> str:
    """Why a query's results are not shown: the best falls short of a real match."""
    best = max(r.score for r in results if r.score is not None)
    return (f"nothing close: the best score is {best:.3f}, and real matches for this model score above "
            f"{floor:.3f}. Add min:-1 to the query to see the results anyway.")


def status_view(status: LibraryStatus) -> Table:
    table = Table(show_header=False, title=f"clipsearch library at {status.home}", title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    if status.model is None and not status.roots:
        table.add_row("state", "empty: run `clipsearch crawl FOLDER`")
        return table
    table.add_row("model", (status.model or "none yet") + (f" ({status.dim}-d)" if status.dim else ""))
    for root in status.roots:
        crawled = (_dt.datetime.fromtimestamp(root.crawled_at).strftime("%Y-%m-%d %H:%M")
                   if root.crawled_at else "never finished")
        excluded = f", excluding {', '.join(root.exclude)}" if root.exclude else ""
        if root.offline_since is not None:
            table.add_row("folder", f"{root.path}  (offline since {_when(root.offline_since)}: its photos are kept "
                                    "and left out of results)", style="yellow")
        else:
            table.add_row("folder", f"{root.path}  ({root.photos} photos, crawled {crawled}{excluded})")
    c = status.counts
    table.add_row("photos", f"{c.get('live', 0)} live, {c.get('failed', 0)} failed, {c.get('deleted', 0)} deleted"
                  + (f", {c['offline']} offline" if c.get("offline") else "")
                  + (f", {c['unembedded']} waiting to be embedded" if c.get("unembedded") else "")
                  + (f", {c['remote']} of them remote (imported, not on this computer)" if c.get("remote") else ""))
    for missing in status.missing:
        table.add_row("not read", missing.line(), style="yellow")
    placed, located = status.places
    if located:
        far = f"; {located - placed} at sea or far from towns" if located > placed else ""
        table.add_row("places", f"{placed} photos with a place (city, region, country) of {located} with a GPS "
                                f"position{far}")
    read, worded, unread = status.texts
    if not status.read_text:
        table.add_row("words in photos",
                      f"not read (setting read_text = false); {read} read before, {worded} with words")
    elif read or unread:
        table.add_row("words in photos", f"{read} photos read, {worded} with words"
                      + (f"; {unread} to read (the next crawl or the watch daemon reads them)" if unread else ""))
    d = status.daemon
    if d is None:
        table.add_row("watch daemon", "not running (`clipsearch watch --detach` keeps the library current)")
    else:
        state = f"running (process {d.pid}) since {_when(d.started_at)}, {d.state}"
        if d.backlog:
            state += f", {d.backlog} changes waiting"
        state += f"; {d.indexed} indexed, {d.deleted} deleted since it started"
        if d.polled:
            state += f"; polling {', '.join(d.polled)}"
        table.add_row("watch daemon", state, style="red" if d.error else None)
        if d.error:
            table.add_row("daemon error", d.error, style="red")
    m = status.index
    if status.index_problem:
        table.add_row("index", f"not used: {status.index_problem} (searches score every photo exactly; "
                               "the next crawl or `clipsearch rebuild` replaces it)", style="yellow")
    elif m is None:
        table.add_row("index", "not built yet (searches score every photo exactly)")
    else:
        built = _dt.datetime.fromtimestamp(m.built_at).strftime("%Y-%m-%d %H:%M")
        table.add_row("index", f"generation {m.generation}: {m.count} photos, {m.trees} trees, built {built}")
        if status.pending:
            until = "the watch daemon rebuilds the index" if status.daemon else "the next crawl"
            table.add_row("changed since", f"{status.pending} files (scored exactly until {until})")
    table.add_row("catalog size", human_size(status.catalog_bytes))
    return table


def _when(timestamp: float) -> str:
    return _dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def roots_table(infos: Sequence[RootInfo]) -> Table | str:
    if not infos:
        return "no folders in this library yet: run `clipsearch crawl FOLDER`"
    table = Table(title=f"{len(infos)} folder" + ("s" if len(infos) != 1 else ""), title_justify="left")
    table.add_column("folder", overflow="fold")
    table.add_column("state")
    table.add_column("photos", justify="right")
    table.add_column("rules", overflow="fold")
    for info in infos:
        rules = [" ".join(info.extensions)]
        if info.exclude:
            rules.append("excluding " + ", ".join(info.exclude))
        if info.include_hidden:
            rules.append("hidden files too")
        if info.follow_symlinks:
            rules.append("following symlinks")
        if info.online:
            table.add_row(info.path, "online", str(info.photos), "; ".join(rules))
        else:
            since = f" since {_when(info.offline_since)}" if info.offline_since else ""
            table.add_row(info.path, f"offline{since}", f"{info.offline_photos} kept", "; ".join(rules), style="yellow")
    return table


def errors_table(rows: Sequence[FailedFile]) -> Table | str:
    if not rows:
        return "no files failed"
    table = Table(title=f"{len(rows)} files could not be indexed", title_justify="left")
    table.add_column("path", overflow="fold")
    table.add_column("error", overflow="fold")
    for row in rows:
        table.add_row(row.path, row.error or "")
    return table


# --- the prompt (prompt.py) -------------------------------------------------------------------
def prompt_banner(overview: Overview) -> Text:
    if not overview.photos:
        return Text.assemble(("clipsearch", "bold"), " · no photos indexed yet: run ",
                             ("clipsearch crawl FOLDER", "bold"), " first · :help for help")
    folders = f"{overview.folders} folder" + ("s" if overview.folders != 1 else "")
    return Text.assemble(("clipsearch", "bold"), f" · {overview.photos:,} photos in {folders} · "
                         f"{overview.model} · :help for help")


def prompt_error(message: str) -> Text:
    return Text.assemble(("error: ", "red"), message)


def prompt_note(message: str) -> Text:
    return Text(message, style="dim")


def prompt_help(commands: dict[str, str], query_help: str) -> Table:
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column("command", style="bold")
    table.add_column("what")
    for command, what in commands.items():
        table.add_row(command, what)
    table.add_row("", "")
    table.add_row("queries", Text(query_help))
    return table


def prompt_history(lines: Sequence[str]) -> Text:
    return Text("\n".join(lines) if lines else "no queries yet", style="" if lines else "dim")


def presets_table(presets: Sequence[Preset]) -> Table:
    """Each preset: its name; its model, what the model finds (COCO text-to-image R@1, as
    published), its cost here, its download and licence; the search settings; what it is for."""
    from .model.spec import model_facts

    table = Table(show_header=False, box=None, padding=(0, 2, 1, 0))
    table.add_column("preset", style="bold", no_wrap=True)
    table.add_column("what", overflow="fold")
    for preset in presets:
        values = preset.values
        facts = model_facts(values["model"])
        search = ("every photo scored exactly" if values["exact_search"] else
                  f"the index, {values['search_k']:,} candidates" if values["search_k"] else "the index")
        model = facts.spec + (" (int8 on a CPU)" if values["image_precision"] == "int8" else "")
        mirrored = "example photos also mirrored" if values["tta"] == "flip" else "example photos as they are"
        about = " · ".join(part for part in (
            f"COCO R@1 {facts.coco_r1:g}" if facts.coco_r1 else "",
            f"{preset.ms_per_image:.0f} ms an image on 2 cores" if preset.ms_per_image else "",
            f"{facts.weights_mb / 1000:.1f} GB download" if facts.weights_mb else "", facts.licence) if part)
        table.add_row(preset.name, Text.assemble(f"{model}\n{about}\n{search} · {mirrored}\n",
                                                 (preset.summary, "dim")))
    return table


def import_summary(report: ImportReport) -> Table:
    table = Table(show_header=False, title=f"imported {report.source}", title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    table.add_row("model", report.model + (" (assumed: the file does not say; --model checks it)"
                                           if report.model_assumed else ""))
    table.add_row("rows in the file", str(report.rows))
    table.add_row("added", str(report.added))
    if report.replaced:
        table.add_row("replaced", str(report.replaced))
    if report.kept:
        table.add_row("already embedded, kept (--overwrite replaces them)", str(report.kept))
    if report.remote:
        table.add_row("of those written, not on this computer (remote)", str(report.remote))
    for count, why in ((report.not_finite, "refused: NaN, infinite or zero vectors"),
                       (report.duplicates, "refused: a path seen earlier in the file"),
                       (report.no_path, "refused: no path, or one that is not valid text")):
        if count:
            table.add_row(why, str(count), style="yellow")
    if report.index:
        table.add_row("index", f"{report.index.count} photos, {'rebuilt' if report.rebuilt else 'up to date'}")
    return table


def duplicates_view(groups: Sequence[DuplicateGroup]) -> Table | str:
    if not groups:
        return "no duplicates found"
    groups_word = "group" if len(groups) == 1 else "groups"
    table = Table(title=f"{len(groups)} {groups_word} of duplicates, {sum(len(g.photos) for g in groups)} photos "
                        "(nothing is deleted: that is yours to do)", title_justify="left")
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("path", overflow="fold", ratio=1)
    table.add_column("pixels", justify="right", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("date", no_wrap=True)
    for number, group in enumerate(groups, start=1):
        kind = "same bytes" if group.exact else f"≥ {group.similarity:.3f}"
        for i, photo in enumerate(group.photos):
            pixels = f"{photo.width}x{photo.height}" if photo.width and photo.height else "-"
            path = Text.assemble(photo.path, (" (remote)", "dim")) if photo.remote else _file_link(photo.path)
            table.add_row(str(number) if i == 0 else "", kind if i == 0 else "", path, pixels, human_size(photo.size),
                          _date(photo.taken_at, photo.mtime_ns), end_section=i == len(group.photos) - 1)
    return table
