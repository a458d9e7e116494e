"""The web gallery over HTTP (Starlette's TestClient): pages, results, thumbnails, the ZIP,
and every security point of issue 13, on a real library of shape photos."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from starlette.testclient import TestClient

from clipsearch.catalog.lock import WriteLock
from clipsearch.config import load_settings
from clipsearch.library import Library
from clipsearch.web import export
from clipsearch.web.app import MAX_UPLOAD, create_app
from clipsearch.web.thumbs import Thumbnails

from .conftest import SHAPES_MODEL, clean_environment, make_photo
from .shapes import make_shape_folder

BASE = "http://127.0.0.1:8765"


def _camera_photo(path: Path) -> Path:
    exif = Image.Exif()
    exif[271], exif[272], exif[306] = "Canon", "Canon EOS 5D", "2021:07:04 12:30:00"
    exif[274] = 6  # stored wide, shown tall
    exif.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 24.0), 3: "W", 4: (2.0, 21.0, 3.0)})
    return make_photo(path, 77, size=(300, 200), exif=exif, quality=90)


@pytest.fixture(scope="module")
def gallery_library(tmp_path_factory):
    """A library of 120 shape photos in two folders (names repeat across them), a photo with
    camera data, a corrupt file, a deleted photo, a symlink to a photo outside the roots (not
    followed: not indexed), and a photo replaced by such a link after it was indexed."""
    base = tmp_path_factory.mktemp("gallery")
    root = base / "photos"
    make_shape_folder(root / "a", 3, 101)
    make_shape_folder(root / "b", 3, 202)  # the same names as in a/
    _camera_photo(root / "camera.jpg")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    outside = make_photo(base / "outside" / "secret.jpg", 5)
    (root / "link.jpg").symlink_to(outside)
    gone = make_photo(root / "gone.jpg", 6)
    swapped = make_photo(root / "swapped.jpg", 8)
    home = base / "home"
    with clean_environment(base / "model-cache"):
        library = Library(load_settings(home, model=SHAPES_MODEL, device="cpu"))
        library.crawl([root])
        gone.unlink()
        library.crawl([root])
        swapped.unlink()
        swapped.symlink_to(outside)
        yield library, root, base


def _ids(library: Library, *names: str) -> dict[str, int]:
    from clipsearch.catalog.store import Store

    store = Store(library.settings.catalog_path, readonly=True)
    try:
        return {name: store.file_id(str(name)) for name in names}
    finally:
        store.close()


@pytest.fixture
def client(gallery_library):
    library, _, _ = gallery_library
    opened: list[str] = []
    app = create_app(library, opener=opened.append)
    with TestClient(app, base_url=BASE) as test_client:
        test_client.opened = opened  # type: ignore[attr-defined]
        yield test_client


# --- pages and results ---------------------------------------------------------------------
def test_the_page_has_a_search_box_and_renders_results_for_q(client, gallery_library):
    empty = client.get("/")
    photos = gallery_library[0].overview().photos
    assert photos == 122  # 2 x 60 shapes, the camera photo and the swapped; not the broken, the gone, the link
    assert empty.status_code == 200 and 'id="q"' in empty.text and f"{photos} photos in 1 folder" in empty.text
    page = client.get("/", params={"q": "red circle"})
    assert page.status_code == 200
    names = [line.split('title="', 1)[1].split('"', 1)[0] for line in page.text.splitlines() if 'class="name"' in line]
    assert len(names) == 48
    assert all("red-circle" in os.path.basename(n) for n in names[:6]), names[:6]


def test_results_page_on_without_repeats_and_json_says_the_same(client):
    first = client.get("/results", params={"q": "blue square", "k": 20})
    second = client.get("/results", params={"q": "blue square", "k": 20, "offset": 20})
    ids = [int(part.split('"', 1)[0]) for part in first.text.split('data-id="')[1:]]
    more = [int(part.split('"', 1)[0]) for part in second.text.split('data-id="')[1:]]
    assert len(ids) == 20 and len(more) == 20 and not set(ids) & set(more)
    assert "offset=20" in first.text  # the "More" link
    api = client.get("/api/search", params={"q": "blue square", "k": 20}).json()
    assert [r["file_id"] for r in api["results"]] == ids
    assert all("blue-square" in r["path"] for r in api["results"][:6])


def test_the_camera_photo_shows_its_date_camera_size_and_place(client, gallery_library):
    library, root, _ = gallery_library
    photo_id = _ids(library, root / "camera.jpg")[root / "camera.jpg"]
    view = client.get(f"/photo/{photo_id}")
    assert view.status_code == 200
    for expected in ("camera.jpg", "2021-07-04 12:30:00", "Canon EOS 5D", "200 × 300", "48.85667", "-2.35083",
                     "Similar photos", "Open folder"):
        assert expected in view.text, expected
    similar = client.get("/results", params={"like": photo_id, "k": 5})
    assert f'data-id="{photo_id}"' in similar.text.split("<figure")[1]  # the photo itself comes first


def test_bad_requests_get_one_line_messages_not_tracebacks(client):
    for params, words in (({"q": ""}, "Type what you are looking for"), ({"like": "abc"}, "whole number"),
                          ({"q": "red", "k": "0"}, "between 1"), ({"q": "in:"}, "")):
        answer = client.get("/results", params=params)
        assert answer.status_code == 400, params
        assert "Traceback" not in answer.text and answer.text.startswith('<p class="message error">')
        assert words in answer.text
    assert client.get("/api/search", params={"q": ""}).json()["error"]


def test_an_image_sent_finds_photos_like_it_and_is_never_stored(client, gallery_library):
    library, root, _ = gallery_library
    before = sorted(p for p in library.settings.home.rglob("*") if "thumbs" not in p.parts)
    example = next((root / "a").glob("green-triangle-*.png")).read_bytes()
    answer = client.post("/results", content=example, headers={"content-type": "image/png"})
    assert answer.status_code == 200
    names = [part.split('"', 1)[0] for part in answer.text.split('class="name" title="')[1:]]
    assert all("green-triangle" in n for n in names[:5]), names[:5]
    after = sorted(p for p in library.settings.home.rglob("*") if "thumbs" not in p.parts)
    assert [p for p in after if p not in before and p.suffix not in (".db-wal", ".db-shm", ".log")] == []


def test_oversized_malformed_and_bomb_uploads_are_refused_in_words(client):
    too_big = client.post("/results", content=b"\0" * (MAX_UPLOAD + 1))
    assert too_big.status_code == 413 and "over 25 MB" in too_big.text
    garbage = client.post("/results", content=b"this is not an image at all")
    assert garbage.status_code == 400 and "the image sent: not an image" in garbage.text
    empty = client.post("/results", content=b"")
    assert empty.status_code == 400
    bomb = io.BytesIO()
    Image.new("1", (30_000, 30_000)).save(bomb, "PNG")  # 900 MP, a few hundred KB
    answer = client.post("/results", content=bomb.getvalue())
    assert answer.status_code == 400 and "over the 50 MP limit" in answer.text  # uploads: 50 MP at most
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    refused = client.post("/results", content=eps)
    assert refused.status_code == 400 and "not an image" in refused.text  # photo formats only


# --- thumbnails ----------------------------------------------------------------------------
def test_thumbnails_are_made_once_cached_by_content_and_upright(client, gallery_library):
    library, root, _ = gallery_library
    ids = _ids(library, root / "camera.jpg", root / "a" / "red-circle-0000.jpg", root / "b" / "red-circle-0000.jpg")
    gallery = client.app.state.gallery
    made = gallery.thumbs.made
    first = client.get(f"/thumb/{ids[root / 'camera.jpg']}/256")
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    assert "max-age" in first.headers["cache-control"] and first.headers["etag"]
    image = Image.open(io.BytesIO(first.content))
    assert image.size[0] < image.size[1] <= 256  # turned upright: stored 300x200
    again = client.get(f"/thumb/{ids[root / 'camera.jpg']}/256")
    assert again.content == first.content and gallery.thumbs.made == made + 1
    cached = client.get(f"/thumb/{ids[root / 'camera.jpg']}/256", headers={"if-none-match": first.headers["etag"]})
    assert cached.status_code == 304
    assert client.get(f"/thumb/{ids[root / 'camera.jpg']}/999").status_code == 400
    files = list((library.settings.home / "thumbs").glob("*/*.jpg"))
    assert any(f.name.startswith(gallery.library.photos([ids[root / 'camera.jpg']])[ids[root / 'camera.jpg']].hash)
               for f in files)


def test_the_thumbnail_cache_keeps_under_its_cap_dropping_the_least_recently_used(tmp_path):
    photos = [make_photo(tmp_path / f"p{i}.png", i, size=(600, 400)) for i in range(8)]
    thumbs = Thumbnails(tmp_path / "thumbs", 10**9, cap_bytes=10**9)
    sizes = []
    for i, photo in enumerate(photos):
        thumbs.jpeg(f"{i:032x}", str(photo), 256)
        sizes.append(thumbs.path_for(f"{i:032x}", str(photo), 256).stat().st_size)
    thumbs.cap_bytes = sum(sizes[:3])
    for i, photo in enumerate(photos):  # used in the order made, an hour ago and more
        os.utime(thumbs.path_for(f"{i:032x}", str(photo), 256), (time.time() - 7200 + i, time.time() - 7200 + i))
    thumbs.jpeg(f"{0:032x}", str(photos[0]), 256)  # used again: most recent
    thumbs.jpeg(f"{99:032x}", str(photos[1]), 256)  # a write over the cap: a sweep
    left = {p.name.split("-")[0] for p in (tmp_path / "thumbs").glob("*/*.jpg")}
    assert f"{0:032x}" in left and f"{99:032x}" in left
    assert f"{1:032x}" not in left and f"{2:032x}" not in left
    assert sum(p.stat().st_size for p in (tmp_path / "thumbs").glob("*/*.jpg")) <= thumbs.cap_bytes


# --- what is served, and to whom ------------------------------------------------------------
def test_only_live_photos_inside_the_roots_are_served(client, gallery_library):
    library, root, base = gallery_library
    ids = _ids(library, root / "camera.jpg", root / "broken.jpg", root / "gone.jpg", root / "link.jpg",
               root / "swapped.jpg")
    assert ids.pop(root / "link.jpg") is None  # a link out of the folder, not followed: not indexed
    assert all(ids.values()), ids  # the others are in the catalog: failed, deleted, and live but now a link
    good = client.get(f"/original/{ids[root / 'camera.jpg']}")
    assert good.status_code == 200 and good.content == (root / "camera.jpg").read_bytes()
    for name in ("broken.jpg", "gone.jpg", "swapped.jpg"):
        for url in (f"/original/{ids[root / name]}", f"/thumb/{ids[root / name]}/256", f"/photo/{ids[root / name]}"):
            assert client.get(url).status_code == 404, (name, url)
    for url in ("/original/999999", "/original/-1", "/original/..%2F..%2Fetc%2Fpasswd", "/thumb/1/..%2F..%2Fx",
                "/original/%2Fetc%2Fpasswd", "/static/..%2F..%2Fcatalog.db", "/static/../app.py",
                f"/original/{ids[root / 'camera.jpg']}/..%2F..%2F..%2Fhome%2Fcatalog.db"):
        answer = client.get(url)
        assert answer.status_code == 404, url
        assert b"secret" not in answer.content and b"SQLite" not in answer.content


def test_a_foreign_host_header_is_refused_on_loopback(client):
    assert client.get("/", headers={"host": "attacker.example:8765"}).status_code == 421
    assert client.get("/api/search?q=red", headers={"host": "127.0.0.1.attacker.example"}).status_code == 421
    assert client.get("/", headers={"host": "localhost:8765"}).status_code == 200


def test_posts_from_another_origin_are_refused_and_gets_change_nothing(client, gallery_library):
    library, root, _ = gallery_library
    photo_id = _ids(library, root / "camera.jpg")[root / "camera.jpg"]
    foreign = {"origin": "http://attacker.example"}
    assert client.post(f"/open-folder/{photo_id}", headers=foreign).status_code == 403
    assert client.post("/download", data={"ids": str(photo_id)}, headers=foreign).status_code == 403
    assert client.opened == []
    assert client.get(f"/open-folder/{photo_id}").status_code == 405
    assert client.get("/download").status_code == 405
    assert client.post(f"/open-folder/{photo_id}", headers={"origin": BASE}).status_code == 204
    assert client.opened == [str(root / "camera.jpg")]  # shown in its folder


def test_another_address_needs_the_token(gallery_library):
    library, _, _ = gallery_library
    with pytest.raises(ValueError):
        TestClient(create_app(library, host="0.0.0.0", port=8765))
    app = create_app(library, host="0.0.0.0", port=8765, token="s3cret-token")
    with TestClient(app, base_url="http://192.168.1.20:8765") as remote:
        assert remote.get("/").status_code == 401
        assert remote.get("/", params={"token": "wrong"}).status_code == 401
        assert remote.get("/api/search", params={"q": "red", "token": "s3cret-token"}).status_code == 200
        assert remote.cookies.get("clipsearch_token_8765") == "s3cret-token"  # named by port
        assert remote.get("/api/search", params={"q": "red"}).status_code == 200  # the cookie now
    with TestClient(app, base_url="http://192.168.1.20:8765") as stranger:
        assert stranger.get("/original/1").status_code == 401
        assert stranger.post("/open-folder/1", headers={"origin": "http://192.168.1.20:8765"}).status_code == 401


def test_serve_on_another_address_makes_a_token_and_says_so(tmp_path):
    home = tmp_path / "home"
    port = 18765 + os.getpid() % 1000
    server = subprocess.Popen([sys.executable, "-m", "clipsearch.cli", "--home", str(home), "serve", "--host",
                               "0.0.0.0", "--port", str(port), "--no-open"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "200"})
    try:
        first = server.stdout.readline()
        second = server.stdout.readline()
    finally:
        server.terminate()
        server.wait(10)
    assert f":{port}/?token=" in first and len(first.split("token=")[1].split()[0]) >= 20
    assert "Anyone who has the address can see your photos" in second


# --- the ZIP ---------------------------------------------------------------------------------
def test_the_zip_holds_the_originals_with_unique_names_and_coco_annotations(client, gallery_library):
    library, root, _ = gallery_library
    names = [root / "a" / "red-circle-0000.jpg", root / "b" / "red-circle-0000.jpg", root / "camera.jpg",
             root / "gone.jpg"]
    ids = _ids(library, *names)
    scores = {str(ids[names[0]]): 0.91, str(ids[names[2]]): 0.5}
    answer = client.post("/download", data={"ids": ",".join(str(ids[n]) for n in names), "q": "red circle",
                                            "scores": json.dumps(scores)}, headers={"origin": BASE})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip"
    assert 'filename="clipsearch-red-circle.zip"' in answer.headers["content-disposition"]
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    assert archive.testzip() is None
    listing = sorted(archive.namelist())
    assert listing == ["annotations/annotations.json", "images/camera.jpg", "images/red-circle-0000-2.jpg",
                       "images/red-circle-0000.jpg"]  # the deleted photo is not there
    coco = json.loads(archive.read("annotations/annotations.json"))
    assert coco["info"]["query"] == "red circle" and coco["info"]["model"] == library.status().model
    assert coco["annotations"] == [] and coco["categories"] == []
    by_path = {image["path"]: image for image in coco["images"]}
    assert set(by_path) == {str(n) for n in names[:3]}
    for image in coco["images"]:
        assert archive.read(image["file_name"]) == Path(image["path"]).read_bytes()
    camera = by_path[str(root / "camera.jpg")]
    assert (camera["width"], camera["height"], camera["camera"]) == (200, 300, "Canon EOS 5D")
    assert camera["date_captured"] == "2021-07-04T12:30:00" and camera["score"] == 0.5
    assert camera["gps"] == {"latitude": pytest.approx(48.85667), "longitude": pytest.approx(-2.350833)}
    assert by_path[str(names[0])]["score"] == 0.91 and by_path[str(names[1])]["score"] is None
    assert client.post("/download", data={"ids": ""}).status_code == 400
    assert client.post("/download", data={"ids": "a,b"}).status_code == 400


def test_the_zip_is_streamed_a_megabyte_at_a_time(tmp_path):
    big = tmp_path / "big.jpg"
    with open(big, "wb") as out:
        out.write(os.urandom(24 << 20))
    photos = [export.Exported(1, str(big), 10, 10, None, None, None), export.Exported(2, str(big), 10, 10, None,
                                                                                      None, None)]
    pieces = list(export.zip_stream(photos, "x", "m"))
    assert len(pieces) > 40 and max(len(p) for p in pieces) <= (1 << 20) + 4096
    archive = zipfile.ZipFile(io.BytesIO(b"".join(pieces)))
    assert archive.namelist() == ["images/big.jpg", "images/big-2.jpg", "annotations/annotations.json"]
    assert archive.read("images/big-2.jpg") == big.read_bytes()


# --- a library that changes under the server ------------------------------------------------
def test_photos_crawled_while_serving_appear_and_searches_answer_during_a_crawl(tmp_path):
    folder = tmp_path / "photos"
    make_shape_folder(folder, 2, 303)
    with clean_environment(tmp_path / "model-cache"):
        library = Library(load_settings(tmp_path / "home", model=SHAPES_MODEL, device="cpu"))
        library.crawl([folder])
        with TestClient(create_app(library), base_url=BASE) as client:
            before = client.get("/api/search", params={"q": "yellow star", "k": 100}).json()["results"]
            extra = tmp_path / "more"
            make_shape_folder(extra, 2, 404)
            other = Library(load_settings(tmp_path / "home", device="cpu"))
            other.crawl([extra])
            after = client.get("/api/search", params={"q": "yellow star", "k": 100}).json()["results"]
            assert len(after) == len(before) + 40
            with WriteLock(library.settings.home):  # a crawl holds the library
                during = client.get("/api/search", params={"q": "yellow star", "k": 5})
            assert during.status_code == 200 and len(during.json()["results"]) == 5


@pytest.mark.parametrize("attempt", ["../../etc/passwd", "%2e%2e/%2e%2e/etc/passwd"])
def test_static_files_are_only_the_packaged_assets(client, attempt):
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")
    assert client.get(f"/static/{attempt}").status_code == 404


def test_the_page_fetches_nothing_from_the_internet(client):
    page = client.get("/").text
    assert "http://" not in page.replace(BASE, "") and "https://" not in page
    for asset in ("/static/app.js", "/static/style.css"):
        body = client.get(asset).text
        assert "https://" not in body and "http://" not in body


def test_a_query_never_reaches_files_on_the_server(client, gallery_library):
    """On the command line a word naming a file is an image query; from a page it is text:
    a caller must learn nothing of the server's files, nor rank by one of them."""
    _, _, base = gallery_library
    for q in ("/etc/passwd", "/etc/does-not-exist", "~/.bashrc", str(base / "outside" / "secret.jpg")):
        answer = client.get("/api/search", params={"q": q, "k": 3})
        assert answer.status_code == 200, (q, answer.text)
        assert not any("secret" in r["path"] for r in answer.json()["results"])
    html_answer = client.get("/results", params={"q": "/etc/passwd"})
    assert html_answer.status_code == 200 and "not an image" not in html_answer.text


def test_odd_requests_get_messages_not_server_errors(client, gallery_library):
    library, root, _ = gallery_library
    photo_id = _ids(library, root / "camera.jpg")[root / "camera.jpg"]
    for url in ("/original/99999999999999999999", "/thumb/99999999999999999999/256", "/photo/99999999999999999999",
                "/original/0"):
        assert client.get(url).status_code == 404, url
    for form in ({"ids": "99999999999999999999"}, {"ids": str(photo_id), "scores": "[1]"},
                 {"ids": str(photo_id), "scores": "[" * 100_000}):
        answer = client.post("/download", data=form, headers={"origin": BASE})
        assert answer.status_code in (400, 404) and "Traceback" not in answer.text, form
    weird = client.post("/download", data={"ids": str(photo_id), "scores": json.dumps({str(photo_id): True})},
                        headers={"origin": BASE})
    coco = json.loads(zipfile.ZipFile(io.BytesIO(weird.content)).read("annotations/annotations.json"))
    assert coco["images"][0]["score"] is None  # not a number: no score, and still valid JSON


def test_other_sites_may_not_embed_the_gallery_and_cookies_of_others_do_not_matter(client, gallery_library):
    library, root, _ = gallery_library
    photo_id = _ids(library, root / "camera.jpg")[root / "camera.jpg"]
    embedded = client.get(f"/original/{photo_id}",
                          headers={"sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors"})
    assert embedded.status_code == 403
    followed = client.get("/", headers={"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate"})
    assert followed.status_code == 200  # a link to the gallery from elsewhere still opens it
    assert client.get(f"/original/{photo_id}").headers["cross-origin-resource-policy"] == "same-origin"
    no_origin = client.post(f"/open-folder/{photo_id}", headers={"sec-fetch-site": "cross-site"})
    assert no_origin.status_code == 403
    app = create_app(library, host="0.0.0.0", port=8765, token="s3cret-token-0123456789")
    with TestClient(app, base_url="http://192.168.1.20:8765") as remote:
        remote.get("/", params={"token": "s3cret-token-0123456789"})
        token = remote.cookies.get("clipsearch_token_8765")
        remote.cookies.clear()
        mixed = remote.get("/api/search", params={"q": "red"},
                           headers={"cookie": f'prefs={{"a":1}}; clipsearch_token_8765={token}'})
        assert mixed.status_code == 200


def test_thumbnails_are_served_where_the_cache_cannot_be_written(gallery_library, tmp_path):
    library, root, _ = gallery_library
    photo_id = _ids(library, root / "b" / "red-circle-0001.png")[root / "b" / "red-circle-0001.png"]
    app = create_app(library)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache's folder would be")
    app.state.gallery.thumbs.folder = blocked
    with TestClient(app, base_url=BASE) as client:
        answer = client.get(f"/thumb/{photo_id}/256")
        assert answer.status_code == 200 and Image.open(io.BytesIO(answer.content)).format == "JPEG"


def test_zip_dates_and_names_that_a_zip_cannot_hold_as_they_are(tmp_path):
    future = make_photo(tmp_path / "future.jpg", 3)
    os.utime(future, (5_000_000_000, 5_000_000_000))  # the year 2128: past what a ZIP can date
    photos = [export.Exported(1, str(future), 10, 10, None, None, None)]
    archive = zipfile.ZipFile(io.BytesIO(b"".join(export.zip_stream(photos, None, None))))
    assert archive.getinfo("images/future.jpg").date_time[0] == 2107
    names = export.unique_names([f"/x/{i % 3}/IMG.JPG" for i in range(2000)])
    assert len(set(n.lower() for n in names)) == 2000 and names[:3] == ["IMG.JPG", "IMG-2.JPG", "IMG-3.JPG"]
    from clipsearch.web.app import _disposition

    header = _disposition("inline", '/p/new\nline"\\\r.jpg')
    assert "\n" not in header and "\r" not in header and header.count('"') == 2


def test_a_short_token_is_refused_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "clipsearch.cli", "--home", str(tmp_path / "home"), "serve",
                             "--token", "abc", "--no-open"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "--token: use at least 16" in result.stderr
    assert "Traceback" not in result.stderr
