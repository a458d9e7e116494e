"""`clipsearch eval`: how well the library's model and each search pipeline find what they
should, measured on the user's own labelled photos.

    DIR/query/<class>/*  DIR/gallery/<class>/*   photos like a query photo: mAP, R@1, R@5, R@10
    (or DIR/query.csv and DIR/gallery.csv: path,label; paths relative to DIR)
    --captions FILE (image,caption)             the photo a caption describes: R@1, R@5, R@10

The photos are crawled into a library (a throw-away one, or the current one), then every
query is searched for with Library.search, once per pipeline (the planner's own stages, not
copies of them), among the gallery's photos only. A query photo is embedded at search time,
as `clipsearch search --image` does, so ms / query is what a user waits for. AP is taken over
the best DEPTH results; a relevant photo below them counts as missed.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Hashable, Iterator, Sequence

from .errors import BadArgument
from .filetypes import format_for
from .metrics import evaluate as scores_of
from .metrics import recall_at_k
from .query import Query, Term, switched
from .records import EvalRow, Filters

if TYPE_CHECKING:
    from .config import Settings
    from .library import Library
    from .records import CrawlSummary

DEPTH = 1000  # AP over the best 1,000 results: a gallery's relevant photos sit far above that
KS = (1, 5, 10)

# The pipelines compared, by the names --json keys them with. Each sets every switch, so that
# the library's own defaults (config.toml) do not leak into a row.
PIPELINES: dict[str, dict[str, bool]] = {
    "plain": {},
    "tta": {"tta": True},
    "qe": {"qe": True},
    "rerank": {"rerank": True},
    "tuned": {"tuned": True},
    "all": {"tta": True, "qe": True, "rerank": True, "tuned": True},
}
TITLES = {"plain": "plain", "tta": "+ TTA", "qe": "+ QE", "rerank": "+ rerank", "tuned": "+ tuned head",
          "all": "all", "captions": "text → image"}


@dataclasses.dataclass
class Split:
    """Labelled photos: queries and the gallery they are searched in (absolute paths)."""

    queries: list[tuple[str, str]]
    gallery: list[tuple[str, str]]
    gallery_folders: tuple[str, ...]  # what the searches are limited to
    skipped: list[str]  # query classes with no gallery photo (reported, not searched)


def read_split(folder: str | os.PathLike) -> Split:
    """The query/gallery split of folder: subfolders query/ and gallery/ of class folders, or
    query.csv and gallery.csv (path,label). BadArgument if it has neither, or no queries."""
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise BadArgument("folder", str(folder), "is not a folder")
    if (root / "query.csv").is_file() and (root / "gallery.csv").is_file():
        queries, gallery = (_pairs(root / f"{side}.csv", root, ("path", "label"), "folder")
                            for side in ("query", "gallery"))
        folders = tuple(sorted({os.path.dirname(path) for path, _ in gallery}))
    elif (root / "query").is_dir() and (root / "gallery").is_dir():
        queries, gallery = _from_folders(root / "query"), _from_folders(root / "gallery")
        folders = (str(root / "gallery"),)
    else:
        raise BadArgument("folder", str(folder), "needs query/ and gallery/ folders of class folders "
                          "(query/dog/1.jpg, gallery/dog/2.jpg), or query.csv and gallery.csv (path,label)")
    labels = {label for _, label in gallery}
    skipped = sorted({label for _, label in queries if label not in labels})
    queries = [(path, label) for path, label in queries if label in labels]
    if not queries:
        raise BadArgument("folder", str(folder), "has no query photo whose class has gallery photos")
    return Split(queries, gallery, folders, skipped)


def read_captions(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(image path, caption) pairs of a CSV file with columns image,caption (a header line
    optional); image paths relative to the file's folder."""
    source = Path(path).expanduser().resolve()
    pairs = _pairs(source, source.parent, ("image", "caption"), "captions")
    if not pairs:
        raise BadArgument("captions", str(path), "holds no image,caption lines")
    return pairs


@contextlib.contextmanager
def throwaway(settings: Settings, model: str | None = None) -> Iterator[Library]:
    """A Library in a temporary home, removed afterwards, of `model`, else of the model of the
    library at settings.home (its towers come from the model cache: they are not made again)."""
    from .library import Library

    model = model or Library(settings).overview().model or settings.model
    with tempfile.TemporaryDirectory(prefix="clipsearch-eval-") as home:
        yield Library(dataclasses.replace(settings, home=Path(home), model=model))


def run(library: Library, folder: str | os.PathLike, captions: str | os.PathLike | None = None, *,
        on_progress: Callable[[CrawlSummary], None] | None = None,
        on_query: Callable[[int, int], None] | None = None) -> tuple[list[EvalRow], list[str]]:
    """`clipsearch eval`: crawl the split's folders (and the captions' photos) into library,
    then measure every pipeline that applies; (rows, query classes skipped)."""
    split = read_split(folder)
    pairs = read_captions(captions) if captions else []
    folders = photo_folders(split) + sorted({os.path.dirname(image) for image, _ in pairs})
    library.crawl(sorted(set(folders)), on_progress=on_progress)
    rows = evaluate(library, split, pipelines_for(library.tuned()), on_query)
    if pairs:
        rows.append(evaluate_captions(library, pairs, sorted({os.path.dirname(image) for image, _ in pairs}),
                                      on_query))
    return rows, split.skipped


def pipelines_for(tuned: bool) -> list[str]:
    """The rows to measure: the tuned head's only where the library has one for its model."""
    return [name for name in PIPELINES if tuned or name != "tuned"]


def evaluate(library: Library, split: Split, pipelines: Sequence[str],
             on_query: Callable[[int, int], None] | None = None) -> list[EvalRow]:
    """One row per pipeline: each query photo searched for among the gallery's photos."""
    label_of = {_key(path): label for path, label in split.gallery}
    counts: dict[Hashable, int] = {}
    for _, label in split.gallery:
        counts[label] = counts.get(label, 0) + 1
    depth = min(DEPTH, len(split.gallery))
    total, done = len(split.queries) * len(pipelines), 0
    rows = []
    for name in pipelines:
        switches = {switch: PIPELINES[name].get(switch, False) for switch in ("tta", "qe", "rerank", "tuned")}
        if name == "all" and "tuned" not in pipelines:
            switches["tuned"] = False
        rankings, seconds = [], 0.0
        for path, _ in split.queries:
            query = switched(Query(terms=(Term(1.0, image=path),), filters=Filters(folders=split.gallery_folders)),
                             switches)
            started = time.perf_counter()
            results = library.search(query, k=depth)
            seconds += time.perf_counter() - started
            rankings.append([label_of.get(_key(result.path)) for result in results])
            done += 1
            if on_query:
                on_query(done, total)
        scores = scores_of(rankings, [label for _, label in split.queries], counts, KS)
        rows.append(EvalRow(name, scores.mean_ap, scores.recall, 1000 * seconds / len(split.queries), scores.ap))
    return rows


def evaluate_captions(library: Library, pairs: Sequence[tuple[str, str]], folders: Sequence[str],
                      on_query: Callable[[int, int], None] | None = None) -> EvalRow:
    """Text → image: for each caption, is its photo among the first 1, 5, 10 results?"""
    hits: dict[int, list[float]] = {k: [] for k in KS}
    seconds = 0.0
    for done, (image, caption) in enumerate(pairs, 1):
        query = Query(terms=(Term(1.0, text=caption),), filters=Filters(folders=tuple(folders)),
                      tta=False, qe=False, rerank=False, tuned=False)
        started = time.perf_counter()
        results = library.search(query, k=max(KS))
        seconds += time.perf_counter() - started
        relevant = [_key(result.path) == _key(image) for result in results]
        for k in KS:
            hits[k].append(recall_at_k(relevant, k))
        if on_query:
            on_query(done, len(pairs))
    return EvalRow("captions", None, {k: sum(v) / len(v) for k, v in hits.items()},
                   1000 * seconds / len(pairs), [])


def photo_folders(split: Split) -> list[str]:
    """The folders to crawl for a split: the query and gallery photos' common folders."""
    return sorted({os.path.dirname(path) for path, _ in [*split.queries, *split.gallery]})


def _from_folders(folder: Path) -> list[tuple[str, str]]:
    photos = []
    for label_folder in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(label_folder.rglob("*")):
            if path.is_file() and format_for(path.name) is not None:
                photos.append((str(path), label_folder.name))
    return photos


def _pairs(path: Path, base: Path, columns: tuple[str, str], what: str) -> list[tuple[str, str]]:
    """The rows of a two-column CSV file (path, and a label or caption), paths made absolute
    from base; a header line naming the columns is skipped. BadArgument for a row that is
    not two values, or a file that cannot be read."""
    pairs = []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            for number, row in enumerate(csv.reader(handle), 1):
                if not row or (number == 1 and tuple(c.strip().lower() for c in row[:2]) == columns):
                    continue
                if len(row) < 2 or not row[0].strip() or not row[1].strip():
                    raise BadArgument(what, str(path), f"line {number} is not {','.join(columns)}")
                pairs.append((str((base / row[0].strip()).resolve()), row[1].strip()))
    except (OSError, UnicodeDecodeError) as exc:
        raise BadArgument(what, str(path), f"cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    return pairs


@functools.lru_cache(maxsize=1 << 16)
def _key(path: str) -> str:
    """A path as compared (links resolved): each gallery path comes back once per query and
    pipeline, and realpath stats every part of it."""
    return os.path.normcase(os.path.realpath(path))
