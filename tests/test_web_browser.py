"""The gallery in a real browser: Debian's Chromium, headless, driven by Selenium through
chromedriver, against the real server (uvicorn) on a real library.

Without Chromium and chromedriver these tests skip and say why; `.ci/run` installs them
and sets CLIPSEARCH_REQUIRE_BROWSER=1, under which a missing browser fails instead. The
screenshots go to CLIPSEARCH_TEST_ARTIFACTS (default: the test's temporary folder).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import threading
import time
import zipfile
from pathlib import Path

import pytest

from clipsearch.config import load_settings
from clipsearch.library import Library

from .conftest import SHAPES_MODEL, clean_environment
from .shapes import make_shape_folder

REQUIRED = os.environ.get("CLIPSEARCH_REQUIRE_BROWSER") == "1"
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
DRIVER = shutil.which("chromedriver")

if not (CHROMIUM and DRIVER):
    reason = "no Chromium and chromedriver here (Debian: apt install chromium chromium-driver)"
    if REQUIRED:
        raise RuntimeError(f"CLIPSEARCH_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason, allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The gallery of 60 shape photos, served by uvicorn in a thread, as `clipsearch serve` does."""
    import uvicorn

    from clipsearch.web.app import create_app

    base = tmp_path_factory.mktemp("browser")
    folder = base / "photos"
    make_shape_folder(folder, 3, 505)
    with clean_environment(base / "model-cache"):
        library = Library(load_settings(base / "home", model=SHAPES_MODEL, device="cpu"))
        library.crawl([folder])
        port = _free_port()
        opened: list[str] = []
        app = create_app(library, port=port, opener=opened.append)
        uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=uv.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not uv.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert uv.started, "the server did not start"
        yield f"http://127.0.0.1:{port}", folder, opened
        uv.should_exit = True
        thread.join(10)


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000"):
        options.add_argument(argument)
    options.binary_location = CHROMIUM
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


def _artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("CLIPSEARCH_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _cards(driver) -> list:
    return driver.find_elements(By.CSS_SELECTOR, "#results .card")


def _names(driver) -> list[str]:
    return [c.find_element(By.CSS_SELECTOR, ".name").text for c in _cards(driver)]


def test_search_look_similar_pick_and_download(server, browser, tmp_path):
    url, folder, opened = server
    wait = WebDriverWait(browser, 30)
    browser.get(url)
    box = browser.find_element(By.ID, "q")
    box.send_keys("green square\n")
    wait.until(lambda d: len(_cards(d)) >= 10)
    wait.until(lambda d: all(img.get_property("naturalWidth") > 0
                             for img in d.find_elements(By.CSS_SELECTOR, "#results .card img")[:6]))
    assert all(name.startswith("green-square") for name in _names(browser)[:3]), _names(browser)[:6]
    assert "q=green+square" in browser.current_url
    shots = _artifacts(tmp_path)
    browser.save_screenshot(str(shots / "gallery-results.png"))

    # The large view: facts, then "similar photos".
    first = _cards(browser)[0]
    first_name = first.find_element(By.CSS_SELECTOR, ".name").text
    first.find_element(By.CSS_SELECTOR, "a.open").click()
    wait.until(lambda d: d.find_element(By.ID, "viewer").get_attribute("open") is not None)
    facts = browser.find_element(By.CSS_SELECTOR, "#viewer .facts").text
    assert first_name in facts and str(folder) in facts
    browser.save_screenshot(str(shots / "gallery-photo.png"))
    browser.find_element(By.CSS_SELECTOR, "#viewer .open-folder").click()
    wait.until(lambda d: opened == [str(folder / first_name)])
    browser.find_element(By.CSS_SELECTOR, "#viewer .similar").click()
    wait.until(lambda d: "Photos like" in d.find_element(By.ID, "results").text)
    wait.until(lambda d: len(_cards(d)) >= 10)
    similar = _names(browser)
    assert similar[0] == first_name and all(n.startswith("green-square") for n in similar[:3]), similar[:6]

    # Pick three and download the ZIP.
    assert not browser.find_element(By.ID, "selection").is_displayed()
    for card in _cards(browser)[:3]:
        card.find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()
    assert browser.find_element(By.ID, "picked").text == "3 selected"
    browser.find_element(By.CSS_SELECTOR, "#download button").click()
    deadline = time.monotonic() + 30
    zips: list[Path] = []
    while time.monotonic() < deadline and not zips:
        zips = [p for p in browser.downloads.glob("*.zip")]
        time.sleep(0.2)
    assert zips, list(browser.downloads.iterdir())
    archive = zipfile.ZipFile(io.BytesIO(zips[0].read_bytes()))
    images = sorted(n for n in archive.namelist() if n.startswith("images/"))
    assert images == sorted(f"images/{n}" for n in similar[:3])
    coco = json.loads(archive.read("annotations/annotations.json"))
    assert len(coco["images"]) == 3 and all(i["score"] is not None for i in coco["images"])
    for image in coco["images"]:
        assert archive.read(image["file_name"]) == (folder / Path(image["file_name"]).name).read_bytes()


def test_more_results_arrive_on_scroll_and_errors_are_messages(server, browser):
    url, _, _ = server
    wait = WebDriverWait(browser, 30)
    browser.get(url + "/?q=red")
    wait.until(lambda d: len(_cards(d)) == 48)
    browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    wait.until(lambda d: len(_cards(d)) == 60)  # all 60 photos, no repeats
    assert len(set(_names(browser))) == 60
    box = browser.find_element(By.ID, "q")
    box.clear()
    box.send_keys("red k:0 in:\n")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results .message.error"))
    text = browser.find_element(By.CSS_SELECTOR, "#results .message.error").text
    assert text and "Traceback" not in browser.page_source
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "/results" not in e["message"]] == []


def test_a_photo_dropped_on_the_page_finds_photos_like_it(server, browser):
    url, folder, _ = server
    wait = WebDriverWait(browser, 30)
    browser.get(url)
    example = sorted(folder.glob("blue-triangle-*.png"))[0]
    # A real drop event carrying a File, as the desktop's drag and drop delivers it.
    browser.execute_script("""
        const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));
        const data = new DataTransfer();
        data.items.add(new File([bytes], "example.png", {type: "image/png"}));
        window.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
    """, base64.b64encode(example.read_bytes()).decode("ascii"))
    wait.until(lambda d: len(_cards(d)) >= 10)
    names = _names(browser)
    assert names[0] == example.name and all(n.startswith("blue-triangle") for n in names[:3]), names[:6]


def test_a_photo_whose_picture_is_not_served_says_so(server, browser):
    url, folder, _ = server
    victim = sorted(folder.glob("red-square-*.jpg"))[0]
    moved = victim.with_name("elsewhere.bin")
    victim.rename(moved)  # gone since the crawl: still in the catalog, no picture to give
    try:
        browser.get(url + "/?q=red+square")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: len(_cards(d)) >= 10)
        card = next(c for c in _cards(browser) if c.find_element(By.CSS_SELECTOR, ".name").text == victim.name)
        wait.until(lambda d: "missing" in card.get_attribute("class"))
        assert "picture not available" in browser.execute_script(
            "return getComputedStyle(arguments[0], '::after').content", card.find_element(By.CSS_SELECTOR, ".open"))
    finally:
        moved.rename(victim)


def test_a_box_dragged_over_the_large_view_finds_photos_like_that_part(server, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    url, folder, _ = server
    wait = WebDriverWait(browser, 30)
    browser.get(url + "/?q=yellow+star")
    wait.until(lambda d: len(_cards(d)) >= 10)
    _cards(browser)[0].find_element(By.CSS_SELECTOR, "a.open").click()
    image = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#viewer .frame img"))
    wait.until(lambda d: image.get_property("naturalWidth") > 0)
    assert not browser.find_element(By.CSS_SELECTOR, "#viewer .similar-part").is_displayed()
    # A box over the middle half of the picture (the shapes sit in its central square).
    size = image.size
    ActionChains(browser).move_to_element_with_offset(image, -size["width"] // 4, -size["height"] // 4) \
        .click_and_hold().move_by_offset(size["width"] // 2, size["height"] // 2).release().perform()
    button = browser.find_element(By.CSS_SELECTOR, "#viewer .similar-part")
    wait.until(lambda d: button.is_displayed())
    assert browser.find_element(By.CSS_SELECTOR, "#viewer .box").is_displayed()
    browser.save_screenshot(str(_artifacts(tmp_path) / "gallery-region.png"))
    button.click()
    wait.until(lambda d: "Photos like a part of" in d.find_element(By.ID, "results").text)
    wait.until(lambda d: len(_cards(d)) >= 10)
    # The box holds part of the star: photos of its colour come first (measured: three yellow
    # triangles, whose points look like the star's cut-off tip).
    assert all(name.startswith("yellow-") for name in _names(browser)[:3]), _names(browser)[:6]
