"""The gallery's web app: Starlette routes over the Library facade, Jinja2 pages, plain JS.

    GET  /                         the page (with ?q=: its first results rendered in it)
    GET  /results?q=&like=&offset= a page of result cards (HTML), for the page's script
    POST /results                  the same for an image sent as the body ("photos like this")
    GET  /api/search?q=&like=&offset=&k=   results as JSON
    GET  /photo/{id}               the large view of one photo (HTML)
    GET  /thumb/{id}/{size}        a thumbnail (JPEG, cached; sizes in thumbs.SIZES)
    GET  /original/{id}            the photo itself
    POST /open-folder/{id}         show the photo's folder in the desktop's file manager
    POST /download                 the ticked photos and annotations.json as a ZIP (streamed)

It serves files from the user's disk, so (security.py): photos are named by catalog id,
never by a path from the request, and only live photos whose real path lies inside a root
are served; the Host header is checked on loopback; a token guards any other address; a
POST from another origin is refused; GETs change nothing.
"""

from __future__ import annotations

import html
import json
import os
import threading
from dataclasses import asdict
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import ClipsearchError
from ..ingest.decode import DecodeError
from ..library import Library, Photo
from ..paths import PathRule
from ..search import SearchResult
from . import export
from .security import Guard, is_loopback
from .thumbs import SIZES, Thumbnails

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
        self._search_lock = threading.Lock()  # one query at a time through the Library

    def search(self, q: str, like: int | None, offset: int, k: int, image: bytes | None = None) -> list[SearchResult]:
        with self._search_lock:
            return self.library.search(q or None, k=k, like=like, offset=offset, image_data=image)

    def photo(self, file_id: int) -> Photo | None:
        """The live photo with this id, if its file is a regular file inside a root (its real
        path: a symlink that leads out of the roots is not followed out)."""
        photo = self.library.photos([file_id]).get(file_id)
        if photo is None:
            return None
        real = os.path.realpath(photo.path)
        roots = [os.path.realpath(r.path) for r in self.library.roots() if r.online]
        if not os.path.isfile(real) or not any(self.rule.under(real, root) for root in roots):
            return None
        return photo


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

    def _query(request: Request) -> tuple[str, int | None, int, int]:
        q = request.query_params.get("q", "").strip()
        like = _number(request, "like", None, 1, 2**62)
        offset = _number(request, "offset", 0, 0, 10**6) or 0
        k = _number(request, "k", PAGE, 1, MAX_PAGE) or PAGE
        return q, like, offset, k

    def _cards(results: list[SearchResult], q: str, like: int | None, offset: int, k: int,
               notices: list[str]) -> str:
        more = None
        if len(results) == k:
            more = urlencode({key: value for key, value in (("q", q), ("like", like), ("offset", offset + k))
                              if value not in (None, "")})
        return templates.get_template("results.html").render(
            results=results, more=more, notices=notices, first=offset == 0, query=q, like=like)

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
            found = await run_in_threadpool(gallery.search, q, like, offset, k, image)
        except ClipsearchError as exc:
            return problem(str(exc), 413 if isinstance(exc, _TooLarge) else 400)
        return HTMLResponse(_cards(found, q, like, offset, k, library.take_notices()))

    async def api_search(request: Request) -> JSONResponse:
        try:
            q, like, offset, k = _query(request)
            if not q and like is None:
                raise ClipsearchError("give a query (q=...) or a photo (like=ID)")
            found = await run_in_threadpool(gallery.search, q, like, offset, k)
        except ClipsearchError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"query": q, "offset": offset, "results": [asdict(r) for r in found],
                             "notices": library.take_notices()})

    async def photo_view(request: Request) -> Response:
        photo = await run_in_threadpool(gallery.photo, _id(request))
        if photo is None:
            return problem("That photo is not in the library (any more).", 404)
        return page("photo.html", photo=photo, name=os.path.basename(photo.path),
                    folder=os.path.dirname(photo.path), can_open=gallery.opener is not None)

    async def thumb(request: Request) -> Response:
        photo = await run_in_threadpool(gallery.photo, _id(request))
        if photo is None:
            return Response("not in the library", status_code=404, media_type="text/plain")
        size = int(request.path_params["size"])
        etag = f'"{photo.hash or photo.id}-{size}"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        try:
            path = await run_in_threadpool(gallery.thumbs.get, photo.hash, photo.path, size)
        except DecodeError as exc:
            return Response(str(exc), status_code=404 if size in SIZES else 400, media_type="text/plain")
        return FileResponse(path, media_type="image/jpeg",
                            headers={"Cache-Control": "private, max-age=86400", "ETag": etag})

    async def original(request: Request) -> Response:
        photo = await run_in_threadpool(gallery.photo, _id(request))
        if photo is None:
            return Response("not in the library", status_code=404, media_type="text/plain")
        return FileResponse(photo.path, headers={"Cache-Control": "private, max-age=3600",
                                                 "Content-Disposition": _disposition("inline", photo.path)})

    async def open_folder(request: Request) -> Response:
        if gallery.opener is None:
            return problem("Opening folders is only possible on this computer's own page.", 403)
        photo = await run_in_threadpool(gallery.photo, _id(request))
        if photo is None:
            return problem("That photo is not in the library (any more).", 404)
        try:
            gallery.opener(os.path.dirname(photo.path))
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
        except ValueError:
            return problem("ids must be photo numbers separated by commas")
        if not ids:
            return problem("Tick the photos to download first.")
        if len(ids) > MAX_DOWNLOAD:
            return problem(f"At most {MAX_DOWNLOAD} photos a download.")
        query = fields.get("q", [""])[0] or None
        photos = await run_in_threadpool(lambda: [p for p in (gallery.photo(i) for i in dict.fromkeys(ids)) if p])
        if not photos:
            return problem("None of those photos is in the library now.", 404)
        chosen = [export.Exported(p.id, p.path, p.width, p.height, p.taken_at, p.camera, p.gps,
                                  _score(scores, p.id)) for p in photos]
        model = (await run_in_threadpool(library.overview)).model
        slug = "".join(c if c.isascii() and c.isalnum() else "-" for c in query or "")[:40].strip("-")
        name = f"clipsearch-{slug or 'photos'}"
        return StreamingResponse(export.zip_stream(chosen, query, model), media_type="application/zip",
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
    app = Starlette(routes=routes)
    app.add_middleware(Guard, host=host, port=port, token=token)
    app.state.gallery = gallery
    threading.Thread(target=_warm, args=(library,), name="clipsearch-warm", daemon=True).start()
    return app


class _TooLarge(ClipsearchError):
    pass


def _id(request: Request) -> int:
    return int(request.path_params["id"])


def _score(scores: dict, file_id: int) -> float | None:
    value = scores.get(str(file_id))
    return float(value) if isinstance(value, (int, float)) else None


def _disposition(kind: str, path: str) -> str:
    name = os.path.basename(path)
    ascii_name = name.encode("ascii", "replace").decode("ascii").replace('"', "_")
    from urllib.parse import quote

    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _TooLarge(f"the image sent is over {limit >> 20} MB")
    parts, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise _TooLarge(f"the image sent is over {limit >> 20} MB")
        parts.append(chunk)
    return b"".join(parts)


async def _read_upload(request: Request) -> bytes:
    return await _read_limited(request, MAX_UPLOAD)


def _warm(library: Library) -> None:
    try:
        library.warm()
    except ClipsearchError:
        pass  # the first query says what is wrong

