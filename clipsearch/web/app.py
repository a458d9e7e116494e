"""The gallery's web app: Starlette routes over the Library facade, Jinja2 pages, plain JS.

    GET  /                         the page (with ?q=: its first results rendered in it)
    GET  /results?q=&like=&offset= a page of result cards (HTML), for the page's script
    POST /results                  the same for an image sent as the body ("photos like this")
    GET  /api/search?q=&like=&offset=&k=   results as JSON
    GET  /photo/{id}               the large view of one photo (HTML)
    GET  /thumb/{id}/{size}        a thumbnail (JPEG, cached; sizes in thumbs.SIZES)
    GET  /original/{id}            the photo itself
    POST /open-folder/{id}         show the photo in its folder, in the desktop's file manager
    POST /download                 the ticked photos and annotations.json as a ZIP (streamed)

It serves files from the user's disk, so (security.py): photos are named by catalog id,
never by a path from the request, and only live photos whose real path lies inside a root
are served; the Host header is checked on loopback; a token guards any other address; a
POST from another origin is refused; GETs change nothing.
"""

from __future__ import annotations

import html
import json
import logging
import math
import mimetypes
import os
import stat
import threading
import time
from dataclasses import asdict
from urllib.parse import parse_qs, quote, urlencode

import anyio
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import BadArgument, ClipsearchError, NotFound, NothingToSearch, NotIndexed
from ..filetypes import shows_in_browser
from ..ingest.decode import DecodeError
from ..library import Library
from ..paths import PathRule
from ..query import Crop
from ..records import Photo, SearchResult
from ..words import marked_parts
from . import export
from .security import Guard, is_loopback
from .thumbs import SIZES, Thumbnails

log = logging.getLogger("clipsearch")
PAGE = 48  # results a page
MAX_PAGE = 500
MAX_UPLOAD = 25 << 20  # bytes of an image sent for "photos like this"
MAX_DOWNLOAD = 10_000  # photos in one ZIP


class Gallery:
    """What the routes share: the Library (warm between queries), thumbnails, the roots."""

    def __init__(self, library: Library, opener=None):
        self.library = library
        self.thumbs = Thumbnails(library.settings.home / "thumbs", library.settings.max_pixels)
        self.rule = PathRule.for_setting(library.settings.path_case)
        self.opener = opener
        self.lock = threading.Lock()  # one query (or the warm-up) at a time through the Library
        # Thumbnails decode in a few threads of their own: a huge PNG must not take every
        # thread the server has (the page, the large view and originals need some too).
        self.thumb_threads = anyio.CapacityLimiter(4)
        self._roots: tuple[float, list[tuple[str, str | None]]] = (0.0, [])

    def search(self, q: str, like: int | None, offset: int, k: int, image: bytes | None = None,
               part: Crop | None = None) -> tuple[list[SearchResult], list[str], float | None]:
        """(results, notices, the score the best result falls short of if it is "nothing
        close" — the cut the command line and the prompt make too). `part`: a region of the
        photo `like` (shares of its width and height) is the query instead of all of it."""
        with self.lock:
            if part is not None and like is not None:
                found_photo = self.photo(like)
                if found_photo is None:
                    raise NotFound("that photo is not in the library (any more)")
                found = self.library.search(q or None, image=found_photo[1], crop=part, k=k, offset=offset,
                                            files=False)
                return found, self.library.take_notices(), None
            found = self.library.search(q or None, k=k, like=like, offset=offset, image_data=image, files=False)
            floor = None if image is not None else self.library.judge(q or None, found, like=like, offset=offset,
                                                                       files=False)
            return found, self.library.take_notices(), floor

    def warm(self) -> None:
        with self.lock:
            try:
                self.library.warm()
            except ClipsearchError:
                pass  # the first query says what is wrong

    def roots(self) -> list[tuple[str, str | None]]:
        """The online roots as (real path, the path as crawled where its walks follow
        symbolic links, else None), looked up at most every 5 s."""
        when, roots = self._roots
        if time.monotonic() - when > 5:
            roots = [(os.path.realpath(path), path if follows else None)
                     for path, follows in self.library.folders_and_links()]
            self._roots = (time.monotonic(), roots)
        return roots

    def servable(self, photos: dict[int, Photo]) -> dict[int, tuple[Photo, str]]:
        """Of live photos, those whose file is a regular file inside a root, with its real
        path: what is served is the real path, checked again when opened (open_checked).
        Inside means its real path lies in a root's, or, for a root whose walks follow
        symbolic links (the crawl indexed it through one), its path as crawled lies in the
        root's: the crawl, the daemon and the gallery follow a link out of a folder only
        where the folder's rules say so."""
        roots = self.roots()
        out = {}
        for file_id, photo in photos.items():
            real = os.path.realpath(photo.path)
            if os.path.isfile(real) and any(self.rule.under(real, root) or
                                             (crawled is not None and self.rule.under(photo.path, crawled))
                                             for root, crawled in roots):
                out[file_id] = (photo, real)
        return out

    def photo(self, file_id: int) -> tuple[Photo, str] | None:
        if not 0 < file_id < 2**63:
            return None
        return self.servable(self.library.photos([file_id])).get(file_id)


def open_checked(real: str):
    """The file at real, opened; None if what was opened is no longer what was checked
    (replaced meanwhile by a link or another file)."""
    try:
        handle = open(real, "rb", buffering=0)
    except OSError:
        return None
    try:
        opened, now = os.fstat(handle.fileno()), os.stat(os.path.realpath(real))
        if (opened.st_dev, opened.st_ino) == (now.st_dev, now.st_ino) and stat.S_ISREG(opened.st_mode):
            return handle
    except OSError:
        pass
    handle.close()
    return None


def create_app(library: Library, *, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
               opener=None) -> Starlette:
    if not is_loopback(host) and not token:
        raise ValueError("a gallery bound to a non-loopback address needs a token")
    gallery = Gallery(library, opener)
    templates = Environment(loader=PackageLoader("clipsearch.web", "templates"),
                            autoescape=select_autoescape(["html"]))

    def page(template: str, status: int = 200, **context) -> HTMLResponse:
        return HTMLResponse(templates.get_template(template).render(**context), status_code=status)

    def problem(message: str, status: int = 400) -> HTMLResponse:
        return HTMLResponse(f'<p class="message error">{html.escape(message)}</p>', status_code=status)

    def _number(request: Request, name: str, default: int | None, low: int, high: int) -> int | None:
        raw = request.query_params.get(name)
        if raw in (None, ""):
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ClipsearchError(f"{name} must be a whole number, not {raw!r}") from None
        if not low <= value <= high:
            raise ClipsearchError(f"{name} must be between {low} and {high}")
        return value

    def _part(request: Request) -> Crop | None:
        raw = request.query_params.get("part")
        if not raw:
            return None
        try:
            x, y, width, height = (float(v) for v in raw.split(","))
        except ValueError:
            raise ClipsearchError("part must be x,y,width,height as shares of the photo (0 to 1)") from None
        if not (0 <= x < 1 and 0 <= y < 1 and 0 < width <= 1 - x + 1e-6 and 0 < height <= 1 - y + 1e-6):
            raise ClipsearchError("part must be a region inside the photo: x,y,width,height between 0 and 1")
        return x, y, min(width, 1 - x), min(height, 1 - y)

    def _query(request: Request) -> tuple[str, int | None, int, int]:
        q = request.query_params.get("q", "").strip()
        like = _number(request, "like", None, 1, 2**62)
        offset = _number(request, "offset", 0, 0, 10**6) or 0
        k = _number(request, "k", PAGE, 1, MAX_PAGE) or PAGE
        return q, like, offset, k

    def _cards(results: list[SearchResult], q: str, like: int | None, offset: int, k: int,
               notices: list[str], floor: float | None = None, part: str | None = None) -> str:
        more = None
        if len(results) == k:
            more = urlencode({key: value for key, value in (("q", q), ("like", like), ("part", part),
                                                            ("offset", offset + k)) if value not in (None, "")})
        best = max((r.score for r in results if r.score is not None), default=None)
        anyway = urlencode({key: value for key, value in (("q", f"{q} min:-1"), ("like", like)) if value})
        return templates.get_template("results.html").render(
            results=results, more=more, notices=notices, first=offset == 0, query=q, like=like, part=part,
            nothing_close=floor, best=best, anyway=anyway)

    async def index(request: Request) -> Response:
        q = request.query_params.get("q", "").strip()
        status = await run_in_threadpool(library.overview)
        first = ""
        if q:
            first = bytes((await results(request)).body).decode("utf-8")
        return page("index.html", query=q, first=first, overview=status, sizes=SIZES)

    async def results(request: Request) -> HTMLResponse:
        try:
            q, like, offset, k = _query(request)
            image = None
            if request.method == "POST":
                image = await _read_upload(request)
            if not q and like is None and image is None:
                return problem("Type what you are looking for, or drop a photo on the page.")
            part = _part(request)
            found, notices, floor = await run_in_threadpool(gallery.search, q, like, offset, k, image, part)
        except ClipsearchError as exc:
            return problem(phrase(exc), 413 if isinstance(exc, _TooLarge) else 400)
        return HTMLResponse(_cards(found, q, like, offset, k, notices, floor, request.query_params.get("part")))

    async def api_search(request: Request) -> JSONResponse:
        try:
            q, like, offset, k = _query(request)
            if not q and like is None:
                raise ClipsearchError("give a query (q=...) or a photo (like=ID)")
            found, notices, floor = await run_in_threadpool(gallery.search, q, like, offset, k)
        except ClipsearchError as exc:
            return JSONResponse({"error": phrase(exc)}, status_code=400)
        return JSONResponse({"query": q, "offset": offset, "results": [asdict(r) for r in found],
                             "notices": notices, "nothing_close": floor})

    async def photo_view(request: Request) -> Response:
        found = await run_in_threadpool(gallery.photo, _id(request))
        if found is None:
            return problem("That photo is not in the library (any more).", 404)
        photo, _ = found
        return page("photo.html", photo=photo, name=os.path.basename(photo.path),
                    folder=os.path.dirname(photo.path), can_open=gallery.opener is not None,
                    inline=shows_in_browser(photo.path),
                    kind=os.path.splitext(photo.path)[1][1:].upper(),
                    words=marked_parts(photo.text or "", request.query_params.get("q", "")[:1000]))

    async def thumb(request: Request) -> Response:
        size = int(request.path_params["size"])
        if size not in SIZES:
            return Response(f"no thumbnails of {size} px", status_code=400, media_type="text/plain")
        found = await run_in_threadpool(gallery.photo, _id(request))
        if found is None:
            return Response("not in the library", status_code=404, media_type="text/plain")
        photo, real = found
        etag = f'"{photo.hash or photo.id}-{size}"'
        headers = {"Cache-Control": "private, max-age=86400", "ETag": etag}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        try:
            data = await anyio.to_thread.run_sync(gallery.thumbs.jpeg, photo.hash, real, size,
                                                  limiter=gallery.thumb_threads)
        except DecodeError as exc:
            return Response(str(exc), status_code=404, media_type="text/plain")
        return Response(data, media_type="image/jpeg", headers=headers)

    async def original(request: Request) -> Response:
        found = await run_in_threadpool(gallery.photo, _id(request))
        handle = None if found is None else await run_in_threadpool(open_checked, found[1])
        if found is None or handle is None:
            return Response("not in the library", status_code=404, media_type="text/plain")
        photo, real = found
        size = os.fstat(handle.fileno()).st_size
        # HEIC, TIFF and camera RAW files: browsers do not show them, so they are downloads.
        inline = shows_in_browser(photo.path)
        media = (mimetypes.guess_type(real)[0] if inline else None) or "application/octet-stream"
        return StreamingResponse(_chunks(handle), media_type=media, headers={
            "Cache-Control": "private, max-age=3600", "Content-Length": str(size),
            "Content-Disposition": _disposition("inline" if inline else "attachment", photo.path)})

    async def open_folder(request: Request) -> Response:
        if gallery.opener is None:
            return problem("Opening folders is only possible on this computer's own page.", 403)
        found = await run_in_threadpool(gallery.photo, _id(request))
        if found is None:
            return problem("That photo is not in the library (any more).", 404)
        try:
            gallery.opener(found[0].path)  # shown in its folder
        except ClipsearchError as exc:
            return problem(str(exc), 500)
        return Response(status_code=204)

    async def download(request: Request) -> Response:
        try:
            body = await _read_limited(request, 1 << 20)
        except ClipsearchError as exc:
            return problem(str(exc), 413)
        fields = parse_qs(body.decode("utf-8", "replace"))
        try:
            ids = [int(i) for raw in fields.get("ids", []) for i in raw.split(",") if i.strip()]
            scores = json.loads(fields.get("scores", ["{}"])[0] or "{}")
        except (ValueError, RecursionError):
            return problem("ids must be photo numbers separated by commas, scores an object")
        if not isinstance(scores, dict):
            return problem("scores must be an object of photo numbers and scores")
        if not ids:
            return problem("Tick the photos to download first.")
        if len(ids) > MAX_DOWNLOAD:
            return problem(f"At most {MAX_DOWNLOAD} photos a download.")
        wanted = [i for i in dict.fromkeys(ids) if 0 < i < 2**63]
        found = await run_in_threadpool(lambda: gallery.servable(library.photos(wanted)))
        if not found:
            return problem("None of those photos is in the library now.", 404)
        chosen = [export.Exported(p.id, real, p.width, p.height, p.taken_at, p.camera, p.gps, _score(scores, p.id),
                                  shown=p.path)
                  for p, real in (found[i] for i in wanted if i in found)]
        model = (await run_in_threadpool(library.overview)).model
        query = fields.get("q", [""])[0] or None
        slug = "".join(c if c.isascii() and c.isalnum() else "-" for c in query or "")[:40].strip("-")
        name = f"clipsearch-{slug or 'photos'}"
        return StreamingResponse(export.zip_stream(chosen, query, model, opener=open_checked),
                                 media_type="application/zip",
                                 headers={"Content-Disposition": f'attachment; filename="{name}.zip"'})

    routes = [
        Route("/", index),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/results", results, methods=["GET", "POST"]),
        Route("/api/search", api_search),
        Route("/photo/{id:int}", photo_view),
        Route("/thumb/{id:int}/{size:int}", thumb),
        Route("/original/{id:int}", original),
        Route("/open-folder/{id:int}", open_folder, methods=["POST"]),
        Route("/download", download, methods=["POST"]),
        Mount("/static", StaticFiles(packages=[("clipsearch.web", "static")]), name="static"),
    ]
    async def failed(request: Request, exc: Exception) -> Response:
        if isinstance(exc, ClipsearchError):
            return problem(phrase(exc), 503)
        log.exception("the gallery failed on %s", request.url.path)
        return problem("Something went wrong on the server; the log (clipsearch.log) says what.", 500)

    app = Starlette(routes=routes, exception_handlers={Exception: failed, ClipsearchError: failed})
    app.add_middleware(Guard, host=host, port=port, token=token)
    app.state.gallery = gallery
    threading.Thread(target=gallery.warm, name="clipsearch-warm", daemon=True).start()
    return app


class _TooLarge(ClipsearchError):
    pass


def phrase(exc: ClipsearchError) -> str:
    """An error of the library in the page's words: its fields, not the command line's flags."""
    if isinstance(exc, BadArgument):
        return f"{exc.name}={exc.value}: {exc.rule}" if exc.value is not None else f"{exc.name} {exc.rule}"
    if isinstance(exc, NotIndexed):
        return (f"{str(exc)[0].upper()}{str(exc)[1:]}: index a folder first "
                "(on this computer: clipsearch crawl FOLDER), then search again.")
    if isinstance(exc, NothingToSearch):
        return "Type what you are looking for, or drop a photo on the page."
    return str(exc)


def _id(request: Request) -> int:
    return int(request.path_params["id"])


def _score(scores: dict, file_id: int) -> float | None:
    value = scores.get(str(file_id))
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _disposition(kind: str, path: str) -> str:
    name = os.path.basename(path)
    ascii_name = "".join(c if " " <= c < "\x7f" and c not in '"\\' else "_" for c in name)
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def _chunks(handle, size: int = 1 << 20):
    with handle:
        while chunk := handle.read(size):
            yield chunk


async def _read_limited(request: Request, limit: int, what: str = "the request") -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _TooLarge(f"{what} is over {limit >> 20} MB")
    parts, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise _TooLarge(f"{what} is over {limit >> 20} MB")
        parts.append(chunk)
    return b"".join(parts)


async def _read_upload(request: Request) -> bytes:
    return await _read_limited(request, MAX_UPLOAD, "the image sent")


def _warm(library: Library) -> None:
    try:
        library.warm()
    except ClipsearchError:
        pass  # the first query says what is wrong

