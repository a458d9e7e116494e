"""The `clipsearch` command: parse, call the Library, render. Nothing else lives here."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import sys

import click

from . import __version__
from .config import load_settings
from .errors import BadArgument, ClipsearchError, NothingToSearch, NotIndexed
from .query import HELP as QUERY_HELP

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# The library's argument names, as this command line spells them.
_FLAGS = {"k": "-k", "min_score": "--min-score", "format": "--format", "threshold": "--threshold", "paths": "--paths",
          "device": "--device", "model": "--model", "extensions": "--ext"}


def phrase(exc: ClipsearchError) -> str:
    """An error of the library in the command line's words: its flags, its commands."""
    if isinstance(exc, BadArgument):
        flag = _FLAGS.get(exc.name, "--" + exc.name.replace("_", "-"))
        return f"{flag} {exc.rule}" if exc.value is None else f"{flag} {exc.value}: {exc.rule}"
    if isinstance(exc, NotIndexed):
        return f"{exc}: run `clipsearch crawl FOLDER` first"
    if isinstance(exc, NothingToSearch):
        return "give a text query or --image PATH"
    return str(exc)


class _Group(click.Group):
    """Turns ClipsearchError into one line on stderr and Ctrl-C into a calm exit."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ClipsearchError as exc:
            click.secho(f"error: {phrase(exc)}", fg="red", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted: what was committed is kept; run the same command again to resume",
                       err=True)
            sys.exit(130)


def _library(ctx: click.Context, log: bool = False, **flags):
    """The Library for this command, which leaves a trace in HOME/clipsearch.log: of what it
    changes if `log`, of problems always."""
    from .library import Library

    library = Library(load_settings(ctx.obj["home"], **flags))
    _log_to_home(library, "INFO" if log else "WARNING")
    return library


def _log_to_home(library, level: str) -> None:
    import logging
    from logging.handlers import RotatingFileHandler

    class QuietHandler(RotatingFileHandler):
        def handleError(self, record):  # noqa: N802 - a read-only or full library folder: no log, no noise
            pass

    # delay: the file is created on the first message, so a refused command writes nothing.
    handler = QuietHandler(library.settings.home / "clipsearch.log", maxBytes=2_000_000, backupCount=2,
                           encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("clipsearch")
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def _crop(value: str | None) -> tuple[int, int, int, int] | None:
    if value is None:
        return None
    try:
        x, y, width, height = (int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: write X,Y,WIDTH,HEIGHT in pixels, e.g. 120,80,400,300") from None
    if width < 1 or height < 1 or x < 0 or y < 0:
        raise click.BadParameter(f"{value!r}: the region needs x, y from 0 and a width and height above 0")
    return x, y, width, height


def _notices(library) -> None:
    for notice in library.take_notices():
        click.secho(f"note: {notice}", fg="yellow", err=True)


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr)


def _remember_home(ctx: click.Context, _param, value: str | None) -> None:
    if value:
        ctx.ensure_object(dict)["home"] = value


# Accepted after the command name too (`clipsearch crawl --home DIR`), as users type it.
home_option = click.option("--home", type=click.Path(file_okay=False), expose_value=False, is_eager=True,
                           callback=_remember_home, help="Library folder (same as before the command).")


device_option = click.option("--device", help="auto (default), cpu, cuda, cuda:N or mps.")
preset_option = click.option("--preset", help="A bundle of settings: fast, default, high_accuracy, vpr "
                                              "(`clipsearch presets` describes them).")
batch_size_option = click.option("--batch-size", type=int,
                                 help="Images per model call (default: 16 on CPU, 256 on CUDA).")


@click.group(cls=_Group, context_settings=CONTEXT)
@click.option("--home", type=click.Path(file_okay=False), envvar="CLIPSEARCH_HOME",
              help="Library folder (catalog, index, config.toml). Default: your user data folder; "
                   "also CLIPSEARCH_HOME.")
@click.version_option(__version__, prog_name="clipsearch")
@click.pass_context
def cli(ctx: click.Context, home: str | None) -> None:
    """Find photos on your own disks by what is in them.

    \b
    clipsearch crawl ~/Pictures          index a folder (again: only what changed)
    clipsearch search "a dog on a beach"  the best matches, as a table
    clipsearch search --image IMG.jpg    photos that look like IMG.jpg
    clipsearch query                     an interactive prompt
    clipsearch watch --detach            keep the library current in the background
    clipsearch status                    folders, counts, model, index, daemon
    """
    ctx.ensure_object(dict).setdefault("home", home)


@cli.command()
@click.argument("folders", nargs=-1, type=click.Path(file_okay=True, dir_okay=True))
@click.option("--exclude", multiple=True, metavar="GLOB",
              help="Skip paths matching this glob (repeatable), e.g. '*/thumbnails/*'.")
@click.option("--ext", "extensions", multiple=True, metavar="EXT",
              help="Extensions to index, instead of the default (repeatable, or comma-separated: "
                   "--ext jpg,heic). Default: every photo format: jpg jpeg png webp bmp tif tiff gif, "
                   "heic heif hif avif, and camera RAW (dng cr2 cr3 nef nrw arw raf orf rw2 pef srw; "
                   "a RAW with a JPEG or HEIC of the same name beside it is skipped, see the `raw` setting).")
@click.option("--hidden/--no-hidden", "include_hidden", default=None, help="Include hidden files and folders.")
@click.option("--follow-symlinks/--no-follow-symlinks", default=None,
              help="Follow symlinked folders (loops are never followed). These four scan flags are "
                   "remembered for the folder: later crawls walk it the same way.")
@click.option("--model", help="Model for a new library: default (SigLIP 2 B/32), accurate (SigLIP 2 B/16), "
                              "datacomp, openai, mobileclip, ARCH:PRETRAINED, ViT-B/32, or "
                              "ARCH:/path/to/open_clip_model.safetensors. An existing library keeps its own.")
@preset_option
@device_option
@batch_size_option
@click.option("--workers", type=int,
              help="Images decoded side by side, in threads or worker processes (default: one per core).")
@click.option("--max-pixels", type=int, help="Refuse images larger than this many pixels (default 200000000).")
@click.option("--retry-failed", is_flag=True, help="Try files that failed before even if they did not change.")
@click.option("--engine", type=click.Choice(["local", "ray"]),
              help="Where new photos are decoded and embedded: this machine (default) or a Ray cluster.")
@click.option("--address", "ray_address", metavar="HOST:PORT",
              help="With --engine ray: the cluster's head (default: a local Ray started for this crawl).")
@home_option
@click.pass_context
def crawl(ctx, folders, exclude, extensions, include_hidden, follow_symlinks, model, retry_failed, **flags):
    """Index FOLDERS (or every folder already in the library).

    New and changed photos are embedded; unchanged ones are skipped without being read;
    moved, renamed and copied photos keep their vectors; vanished ones leave the results.
    Unreadable files are recorded (see `clipsearch errors`) and the crawl goes on.
    """
    from .render import CrawlProgress, crawl_summary

    library = _library(ctx, log=True, **flags)
    extensions = tuple(ext for given in extensions for ext in given.replace(",", " ").split())
    console, err_console = _console(), _console(stderr=True)
    with CrawlProgress(err_console) as progress:
        report = library.crawl(folders, model=model, exclude=exclude or None, extensions=extensions or None,
                               include_hidden=include_hidden, follow_symlinks=follow_symlinks,
                               retry_failed=retry_failed, on_progress=progress.crawl, on_index=progress.index,
                               on_handover=progress.handover, on_text=progress.text)
    console.print(crawl_summary(report))
    for folder in report.stats.offline:
        err_console.print(f"[yellow]offline:[/] {folder} is not there: its photos are kept and left out of "
                          "results until it is back (`clipsearch roots remove` forgets it)")
    for problem in report.stats.problems[:10]:
        err_console.print(f"[yellow]not readable:[/] {problem.path}: {problem.error}")
    if report.stats.failed:
        console.print(f"{report.stats.failed} files could not be indexed: `clipsearch errors` lists them.")
    _notices(library)


@cli.command()
@click.argument("query", required=False)
@click.option("--image", "image", type=click.Path(dir_okay=False), help="Find photos that look like this one.")
@click.option("-k", "--limit", "k", type=click.IntRange(min=1), default=10, show_default=True,
              help="How many results.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per result and line.")
@click.option("--paths-only", is_flag=True, help="Only the paths, one per line (for piping).")
@click.option("--exact", is_flag=True, help="Score every photo exactly instead of using the index.")
@click.option("--crop", metavar="X,Y,W,H", callback=lambda ctx, param, value: _crop(value),
              help="Only this region of --image is the query (pixels: left, top, width, height).")
@click.option("--rerank/--no-rerank", default=None, help="Re-rank the best 100 by their neighbourhoods (rerank:on).")
@click.option("--qe/--no-qe", default=None, help="Search again with the query averaged with its best results (qe:on).")
@click.option("--tuned/--no-tuned", default=None, help="Rank image queries with the head `clipsearch tune` trained.")
@click.option("--tta/--no-tta", default=None, help="Also search with the mirror image of --image.")
@preset_option
@device_option
@home_option
@click.pass_context
def search(ctx, query, image, k, as_json, paths_only, exact, crop, preset, device, **switches):
    """Photos that match QUERY, look like --image, or both.

    \b
    clipsearch search "a red car in the snow"
    clipsearch search "sunset + beach - people  in:2021 after:2021-06"
    clipsearch search "2*cat + ~/refs/my_cat.jpg" -k 20 --paths-only
    clipsearch search --image holiday/IMG_0042.jpg
    clipsearch search "red car" | grep 2019 | cut -f3

    In a terminal the results are a table; piped into another program they are
    tab-separated lines (rank, score, path, date, bytes, place, words read in the photo)
    under a header line, each path whole on its line.

    The query language, the same in `clipsearch query`:
    """
    library = _library(ctx, device=device, preset=preset)
    if crop is not None and image is None:
        raise click.UsageError("--crop is a region of --image: give --image too")
    results = library.search(query, image=image, k=k, exact=exact, crop=crop, switches=switches)
    if as_json:
        for result in results:
            click.echo(json.dumps(dataclasses.asdict(result), ensure_ascii=False))
    elif paths_only:
        for result in results:
            click.echo(result.path)
    else:
        from .render import results_lines, results_table

        console = _console()
        floor = library.judge(query, results) if console.is_terminal and image is None else None
        if floor is not None:  # a person reading: noise is not shown (scripts get what they asked for)
            from .render import nothing_close

            _console(stderr=True).print(f"[yellow]{nothing_close(results, floor)}[/]", highlight=False)
        elif console.is_terminal:
            console.print(results_table(results, query))
        else:  # piped: one result a line, paths whole (tab-separated: rank, score, path, date, bytes, ...)
            click.echo(results_lines(results))
    _notices(library)


search.help = f"{inspect.cleandoc(search.help or '')}\n\n\b\n{QUERY_HELP}"


@cli.command()
@preset_option
@device_option
@home_option
@click.pass_context
def query(ctx, preset, device):
    """An interactive prompt: type a query, look, refine, repeat.

    Queries use the query language of `clipsearch search` (:help in the prompt shows it).
    The model and the index stay loaded between queries, and photos crawled meanwhile
    appear in the next one. History is kept in the library folder.

    \b
    › dog on the beach
    › :show         a contact sheet of the results
    › :similar 2    photos like result 2
    › :open 3  :more  :k 30  :history  :help  exit
    """
    from .prompt import run

    run(_library(ctx, device=device, preset=preset), _console())


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Any but this computer's own (127.0.0.1, localhost, ::1) needs a token.")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True, help="Port to listen on.")
@click.option("--token", help="The secret other computers must give (?token=...); made up and printed "
                              "when --host is not loopback and none is given.")
@click.option("--no-open", is_flag=True, help="Do not open the page in the web browser.")
@preset_option
@device_option
@home_option
@click.pass_context
def serve(ctx, host, port, token, no_open, preset, device):
    """A web gallery of the library: search, look, pick, download as a ZIP.

    \b
    clipsearch serve                  # http://127.0.0.1:8765, opened in the browser
    clipsearch serve --port 9000 --no-open
    clipsearch serve --host 0.0.0.0   # other computers too: with a token

    The page takes the query language of `clipsearch search`; drop a photo on it to find
    photos like it; tick photos and "Download ZIP" gives them with annotations.json
    (COCO's layout). Photos crawled while it runs appear in the next query.
    """
    from .web.serve import run

    run(_library(ctx, log=True, device=device, preset=preset), host=host, port=port, token=token,
        open_browser=not no_open, console=_console())


@cli.command("eval")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--captions", type=click.Path(dir_okay=False),
              help="A CSV of image,caption: also text → image R@1/5/10 (images relative to the CSV).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Also write each pipeline's mAP, R@k and per-query AP to this JSON file.")
@click.option("--library", "current", is_flag=True,
              help="Crawl into and search this library, not a throw-away one (its tuned head joins in).")
@click.option("--model", help="The model of the throw-away library (default: this library's).")
@device_option
@home_option
@click.pass_context
def evaluate(ctx, folder, captions, json_path, current, model, device):
    """How well each search pipeline finds photos of the same class in FOLDER.

    \b
    FOLDER/query/<class>/*.jpg and FOLDER/gallery/<class>/*.jpg
    (or FOLDER/query.csv and FOLDER/gallery.csv with the columns path,label)

    Each query photo is searched for among the gallery photos once per pipeline (plain,
    + TTA, + QE, + rerank, + tuned head where the library has one, all): mAP, R@1, R@5,
    R@10 (a hit in the first k) and the time a query took. The photos are crawled into a
    throw-away library of this library's model unless --library is given.
    """
    from .evaluation import TITLES, run, throwaway
    from .render import CrawlProgress, WorkProgress, eval_table

    library = _library(ctx, device=device)
    err = _console(stderr=True)
    with contextlib.ExitStack() as stack:
        if not current:
            library = stack.enter_context(throwaway(library.settings, model))
        with CrawlProgress(err) as crawling, WorkProgress(err) as progress:
            rows, skipped = run(library, folder, captions, on_progress=crawling.crawl,
                                on_query=lambda done, total: progress.update("queries", done, total))
    for label in skipped:
        err.print(f"[yellow]skipped:[/] query class {label!r} has no gallery photos", highlight=False)
    _console().print(eval_table(rows, TITLES, f"eval: {folder}"))
    if json_path:
        _write_json(json_path, {row.pipeline: dataclasses.asdict(row) for row in rows})
    _notices(library)


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--holdout", type=click.FloatRange(0.05, 0.5), default=0.2, show_default=True,
              help="The share of each class held out to measure the head.")
@device_option
@home_option
@click.pass_context
def tune(ctx, folder, holdout, device):
    """Train a head for image queries on the photos in FOLDER's class subfolders.

    \b
    clipsearch tune ~/Pictures/dogs       # dogs/rex/*.jpg, dogs/fido/*.jpg, ...

    The photos are crawled into the library (new ones embedded), then a linear head with
    batch norm learns, on the CPU, to bring photos of one class together (circle loss); the
    CLIP model itself stays as it is. The head is saved with the library, for its model
    only. Image queries rank with it once it beats the plain vectors on the held-out
    photos (--tuned / --no-tuned or tuned:on / tuned:off choose); text queries never do.
    """
    from .render import CrawlProgress, WorkProgress, tune_summary

    library = _library(ctx, log=True, device=device)
    err = _console(stderr=True)
    with CrawlProgress(err) as crawling, WorkProgress(err) as progress:
        report = library.tune(folder, share=holdout, on_progress=crawling.crawl,
                              on_step=lambda step, total, loss: progress.update("training", step, total))
    click.echo(tune_summary(report))
    _notices(library)


def _write_json(path: str, data) -> None:
    from ._files import write_whole

    write_whole(path, json.dumps(data, indent=1), policy="user")


@cli.command()
@click.argument("queries", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the results (written whole at the end, never half).")
@click.option("-k", "--limit", "k", type=click.IntRange(min=1), default=5, show_default=True,
              help="References (results) per query.")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]),
              help="csv or jsonl (default: from the output's suffix; .jsonl is JSON lines).")
@click.option("--min-score", type=float, help="Leave out references scoring below this (written as nan).")
@preset_option
@device_option
@home_option
@click.pass_context
def batch(ctx, queries, output, k, fmt, min_score, preset, device):
    """Run every query of the CSV file QUERIES; write the top k photos of each.

    \b
    clipsearch batch queries.csv -o results.csv -k 5
    clipsearch batch queries.csv -o results.jsonl
    clipsearch batch places.csv -o found.csv --preset vpr

    QUERIES has the columns image_path and description (others are passed through). A
    description is a query in the language of `clipsearch search`; a row without one is an
    image query: photos like image_path (relative to the CSV's folder), never itself.
    The CSV written has query_image_path, utm_east, utm_north, then for each reference N
    reference_N_path, reference_N_distance (1 - cosine similarity), reference_N_utm_east,
    reference_N_utm_north, then description and the other columns. UTM coordinates are read
    from file names like @0543256.96@4178906.70@img.jpg; otherwise, and for a query that
    failed, they are nan. Failed queries are named on stderr; their rows are still written.
    """
    from .interop.batch import run
    from .render import WorkProgress

    library = _library(ctx, device=device, preset=preset)
    err = _console(stderr=True)
    with WorkProgress(err) as progress:
        summary = run(library.search_many, queries, output, k=k, fmt=fmt, min_score=min_score,
                      on_progress=lambda done, total: progress.update("queries", done, total),
                      on_failure=lambda line, why: err.print(f"[yellow]line {line}:[/] {why}", markup=True,
                                                             highlight=False, soft_wrap=True))
    _notices(library)
    failed = f"; {summary.failed} failed (named above, written with nan)" if summary.failed else ""
    click.echo(f"{summary.queries} queries answered into {summary.output}{failed}", err=True)


@cli.command()
@click.argument("output", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["npz", "npy"]),
              help="npz: one file (default); npy: the folder OUTPUT with embeddings.npy and paths.npy.")
@click.option("--live-only/--all", default=True, show_default=True,
              help="Only the searchable photos, or also those kept while away (offline folders, deleted files).")
@home_option
@click.pass_context
def export(ctx, output, fmt, live_only):
    """Write the library's vectors, with their paths, to OUTPUT.

    \b
    clipsearch export library.npz
    clipsearch export vectors/ --format npy

    The .npz holds vectors (float32, L2-normalised), paths, hashes, taken_at, width, height
    and model: `numpy.load(OUTPUT)` reads it, and `clipsearch import` brings it into another
    library without embedding anything. The file is written whole or not at all.
    """
    import os

    from .render import WorkProgress

    fmt = fmt or ("npy" if output.endswith(("/", "\\")) or os.path.isdir(output) else "npz")
    library = _library(ctx)
    with WorkProgress(_console(stderr=True)) as progress:
        report = library.export_vectors(output, fmt, live_only,
                                        on_progress=lambda done, total: progress.update("writing", done, total))
    click.echo(f"{report.count} vectors of model {report.model} ({report.dim} numbers each) written to "
               f"{', '.join(str(f) for f in report.files)}")


@cli.command("import")
@click.argument("source", type=click.Path(exists=True))
@click.option("--paths", type=click.Path(dir_okay=False, exists=True),
              help="The .npy of the paths of an .npy of vectors (default: paths.npy beside it).")
@click.option("--model", help="The model that made the vectors (needed where the file does not say, "
                              "for a new library; see `crawl --model`).")
@click.option("--base", type=click.Path(file_okay=False),
              help="The folder relative paths are in (default: the current folder).")
@click.option("--overwrite", is_flag=True, help="Replace the vectors of photos the library has already embedded.")
@home_option
@click.pass_context
def import_(ctx, source, paths, model, base, overwrite):
    """Bring vectors made elsewhere into the library, without embedding anything.

    \b
    clipsearch import library.npz                     from `clipsearch export`
    clipsearch import vectors.npz --model ViT-B-32:openai
    clipsearch import embeddings.npy --paths filenames.npy --model ViT-B/32
    clipsearch import clip_out/   clip-retrieval's img_emb/ and metadata/ (pip install pyarrow)

    The vectors must be of the library's model (for a new library: the one named, or the
    one the file records). Photos not on this computer stay searchable, shown as remote;
    a later crawl of their folder takes them over. Rows with NaN or infinite vectors and
    repeated paths are refused and counted; photos already embedded keep their vectors
    unless --overwrite.
    """
    from .render import CrawlProgress, import_summary

    library = _library(ctx, log=True)
    with CrawlProgress(_console(stderr=True)) as progress:
        report = library.import_vectors(source, paths=paths, model=model, base=base, overwrite=overwrite,
                                        on_progress=lambda done, total: progress.step("importing", done, total),
                                        on_index=progress.index)
    _console().print(import_summary(report))


@cli.command()
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True), default=0.95, show_default=True,
              help="How alike (cosine similarity of the vectors) two photos must be to count as near duplicates.")
@click.option("--exact-only", is_flag=True, help="Only copies with the same bytes.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per group and line.")
@home_option
@click.pass_context
def dupes(ctx, threshold, exact_only, as_json):
    """Groups of duplicate photos: exact copies and near ones (resized, re-saved, edited).

    \b
    clipsearch dupes
    clipsearch dupes --threshold 0.97 --json

    Largest groups first, each photo with its size, pixels and date, so you can see which
    copy to keep. clipsearch never deletes or moves a file: that is yours to do.
    """
    from .render import WorkProgress

    library = _library(ctx)
    with WorkProgress(_console(stderr=True)) as progress:
        groups = library.duplicates(threshold, near=not exact_only,
                                    on_progress=lambda done, total: progress.update("comparing", done, total))
    if as_json:
        for group in groups:
            click.echo(json.dumps({"kind": "exact" if group.exact else "near", "similarity": round(group.similarity, 4),
                                   "photos": [dataclasses.asdict(p) for p in group.photos]}, ensure_ascii=False))
        return
    from .render import duplicates_view

    _console().print(duplicates_view(groups))
    _notices(library)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per preset and line.")
def presets(as_json):
    """The presets: named bundles of a model and search settings.

    Choose one with --preset NAME, or `preset = "NAME"` in config.toml (settings named beside
    it win). A library keeps the model it was crawled with: `crawl --preset` naming another
    model is refused; otherwise such a preset only lends its search settings, with a note
    (a preset in config.toml chooses the model of new libraries only, like `model`).
    """
    from .config import PRESETS

    if as_json:
        from .model.spec import model_facts

        for preset in PRESETS.values():
            facts = model_facts(preset.values["model"])
            click.echo(json.dumps({"name": preset.name, "summary": preset.summary, **preset.values,
                                   "model_spec": facts.spec, "coco_r1": facts.coco_r1, "licence": facts.licence,
                                   "download_mb": facts.weights_mb, "ms_per_image": preset.ms_per_image}))
        return
    from .render import presets_table

    _console().print(presets_table(list(PRESETS.values())))


@cli.command()
@click.option("--detach", is_flag=True, help="Run in the background (pid in HOME/watch.pid, output in HOME/watch.log).")
@click.option("--stop", is_flag=True, help="Stop the daemon running in the background.")
@click.option("--polling", is_flag=True,
              help="Look for changes by polling instead of file system events (network shares).")
@click.option("--debounce", type=click.FloatRange(min=0), metavar="SECONDS",
              help="How long a new file must keep still before it is read (default 0.5; setting watch_debounce).")
@device_option
@home_option
@click.pass_context
def watch(ctx, detach, stop, polling, debounce, device):
    """Keep the library current while photos come and go.

    Watches every folder of the library: new and changed photos are embedded moments after
    they are written, moved ones keep their vectors, deleted ones leave the results. A folder
    that goes away (a drive unplugged) goes offline: its photos are kept and come back with
    it. On start it catches up with what changed while it was stopped. It is the library's
    one writer: `clipsearch crawl` meanwhile hands the work to it. Ctrl-C stops it.

    \b
    clipsearch watch              in the foreground, logging each change
    clipsearch watch --detach     in the background
    clipsearch watch --stop
    """
    from .daemon import client as watch_mod

    library = _library(ctx, log=True, device=device, watch_debounce=debounce)
    home = library.settings.home
    if stop:
        pid = watch_mod.stop_daemon(home)
        click.echo(f"watch daemon (process {pid}) stopped" if pid else "no watch daemon is running")
        return
    if detach:
        arguments = ["--polling"] if polling else []
        arguments += ["--debounce", str(debounce)] if debounce is not None else []
        arguments += ["--device", device] if device else []
        pid = watch_mod.start_detached(home, arguments)
        click.echo(f"watch daemon started (process {pid}); log: {home / watch_mod.LOG_FILE}; "
                   "`clipsearch watch --stop` stops it")
        return
    _watch_in_foreground(library, polling)


def _watch_in_foreground(library, polling: bool) -> None:
    import logging
    import signal
    import threading

    class Console(logging.StreamHandler):
        def emit(self, record):
            # sys.stderr as it is now: while the crawl's stages run, descriptor 2 is a pipe
            # into the log (_quiet.py) and sys.stderr a copy of the terminal.
            self.stream = sys.stderr
            super().emit(record)

    console = Console(sys.stderr)
    console.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logging.getLogger("clipsearch").addHandler(console)
    stop = threading.Event()

    def request_stop(signum, _frame):
        stop.set()  # the batch in hand is finished first; a second Ctrl-C interrupts it
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    library.watch(stop, polling=polling)


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per folder and line.")
@home_option
@click.pass_context
def roots(ctx, as_json):
    """The library's folders: their scan rules, online or offline, photo counts.

    \b
    clipsearch roots
    clipsearch roots remove E:/old     stop indexing a folder
    """
    if ctx.invoked_subcommand is not None:
        return
    infos = _library(ctx).roots()
    if as_json:
        for info in infos:
            click.echo(json.dumps(dataclasses.asdict(info), ensure_ascii=False))
        return
    from .render import roots_table

    _console().print(roots_table(infos))


@roots.command("remove")
@click.argument("folder", type=click.Path(file_okay=False))
@home_option
@click.pass_context
def roots_remove(ctx, folder):
    """Stop indexing FOLDER: its photos leave the results (the files are not touched)."""
    path, count = _library(ctx, log=True).remove_root(folder)
    click.echo(f"removed {path}: {count} photos left the results")


@cli.command()
@home_option
@click.pass_context
def status(ctx):
    """Folders, photo counts, model and index state of the library."""
    from .render import status_view

    _console().print(status_view(_library(ctx).status()))


@cli.command()
@click.option("--limit", type=click.IntRange(min=1), help="Show at most this many.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file and line.")
@home_option
@click.pass_context
def errors(ctx, limit, as_json):
    """Files that could not be indexed, with the reason."""
    rows = _library(ctx).errors(limit)
    if as_json:
        for row in rows:
            click.echo(json.dumps({"path": row.path, "error": row.error}, ensure_ascii=False))
        return
    from .render import errors_lines, errors_table

    console = _console()
    if not console.is_terminal:
        if rows:
            click.echo(errors_lines(rows))  # piped: path and error, tab-separated, a file a line
        return
    for missing in _library(ctx).missing_readers():
        console.print(missing.line(), style="yellow")
    console.print(errors_table(rows))
    if rows:
        # A fix that leaves the file itself untouched (chmod, remounting a drive) changes
        # neither its size nor its mtime, so say how to try again.
        console.print("Failed files are tried again when they change, or now with "
                      "`clipsearch crawl --retry-failed`.")


@cli.command()
@home_option
@click.pass_context
def rebuild(ctx):
    """Rebuild the search index from the catalog (crawl does this by itself)."""
    from .render import CrawlProgress

    library = _library(ctx, log=True)
    with CrawlProgress(_console(stderr=True)) as progress:
        manifest = library.rebuild_index(on_index=progress.index)
    click.echo(f"index generation {manifest.generation}: {manifest.count} photos")


@cli.command()
@click.option("--model", required=True, help="The model to switch to (see `crawl --model`).")
@device_option
@batch_size_option
@home_option
@click.pass_context
def reembed(ctx, model, **flags):
    """Switch the library to another model and embed every photo again.

    Interrupted, it resumes with `clipsearch crawl`; until it finishes, searches only see
    the photos already embedded with the new model.
    """
    from .render import CrawlProgress, crawl_summary

    library = _library(ctx, log=True, **flags)
    with CrawlProgress(_console(stderr=True), loading="loading the model") as progress:
        report = library.reembed(model, on_progress=progress.crawl, on_index=progress.index)
    _console().print(crawl_summary(report))


@cli.command()
@home_option
@click.pass_context
def repair(ctx):
    """Check the catalog and recover a damaged one.

    A sound catalog only gets its search index checked (and rebuilt if need be). A damaged
    one is set aside as catalog.damaged-TIME.db and what can be read of it (folders, the
    model, photos and their vectors) goes into a new catalog; `clipsearch crawl` then
    embeds the photos that were lost.
    """
    from .render import CrawlProgress, repair_summary

    library = _library(ctx, log=True)
    with CrawlProgress(_console(stderr=True)) as progress:
        report = library.repair(on_index=progress.index)
    _console().print(repair_summary(report))


def main() -> None:
    cli(prog_name="clipsearch")


if __name__ == "__main__":
    main()
