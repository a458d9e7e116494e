"""Faults: a crawl killed mid-way, two crawls at once, readers during a crawl."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from clipsearch.catalog.lock import WriteLock
from clipsearch.errors import LibraryBusy

from .conftest import TINY_MODEL, make_photo, run_cli

TOTAL = 240


@pytest.fixture
def many_photos(tmp_path):
    folder = tmp_path / "photos"
    for i in range(TOTAL):
        make_photo(folder / f"p{i:04d}.jpg", 10_000 + i, size=(256, 192))
    return folder


def _committed(home, wait: float = 5) -> int:
    """Rows with a vector, read the way any reader would while the crawl writes."""
    try:
        conn = sqlite3.connect(f"file:{home / 'catalog.db'}?mode=ro", uri=True, timeout=wait)
        try:
            return conn.execute("SELECT count(*) FROM files WHERE vector IS NOT NULL").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0  # not created yet


def _start_crawl(home, folder) -> subprocess.Popen:
    """A real crawl in another process, in small batches so that it commits often."""
    # A process inherits an ignored SIGINT (pytest run as a background job, `cmd &`, has it
    # ignored) and Python then never raises KeyboardInterrupt: give the child the default.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "clipsearch.cli", "--home", str(home), "crawl", str(folder),
             "--model", TINY_MODEL, "--batch-size", "4", "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)


def _wait_for_commits(child, home, at_least: int = 1) -> None:
    deadline = time.monotonic() + 90
    # Polled without waiting on locks: a poll stuck behind the writer for seconds would see
    # its first commit only after the crawl had ended.
    while _committed(home, wait=0.02) < at_least:
        assert child.poll() is None, f"crawl ended early: {child.stderr.read()}"
        assert time.monotonic() < deadline, "crawl committed nothing in time"
        time.sleep(0.005)


def test_a_crawl_killed_mid_way_resumes_without_loss_or_duplicates(many_photos, home, make_library, embedder):
    child = _start_crawl(home, many_photos)
    _wait_for_commits(child, home)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    committed = _committed(home)
    assert 0 < committed < TOTAL, "the kill did not land mid-crawl"

    report = make_library().crawl()  # no folders: every known root, as a user would
    assert embedder.images == TOTAL - committed  # only what the first run did not commit
    assert report.stats.unchanged == committed
    conn = sqlite3.connect(home / "catalog.db")
    paths = [row[0] for row in conn.execute("SELECT path FROM files WHERE status = 'live' AND vector IS NOT NULL")]
    conn.close()
    assert len(paths) == len(set(paths)) == TOTAL
    assert report.index.count == TOTAL


def test_a_second_crawl_is_refused_while_readers_carry_on(many_photos, home, make_library):
    child = _start_crawl(home, many_photos)
    try:
        _wait_for_commits(child, home)
        library = make_library()
        with pytest.raises(LibraryBusy, match="busy"):
            library.crawl([many_photos])
        # Searching while the crawl writes: readers are never blocked.
        results = library.search(image=many_photos / "p0000.jpg", k=3, exact=True)
        assert 1 <= len(results) <= 3
        assert library.status().counts["live"] >= 1
    finally:
        child.wait(timeout=120)
    assert child.returncode == 0, child.stderr.read()


def test_the_cli_says_busy_in_one_line_and_exits_non_zero(home, tmp_path):
    make_photo(tmp_path / "photos" / "a.jpg", 1)
    with WriteLock(home):
        result = run_cli("--home", str(home), "crawl", str(tmp_path / "photos"), "--model", TINY_MODEL)
    assert result.returncode == 1
    assert "busy" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_ctrl_c_mid_crawl_exits_130_keeps_what_was_committed_and_resumes(many_photos, home, make_library,
                                                                          embedder):
    child = _start_crawl(home, many_photos)
    _wait_for_commits(child, home)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 130, f"exit {child.returncode}, {_committed(home)} committed: {stderr[-1500:]}"
    assert "interrupted" in stderr and "Traceback" not in stderr
    committed = _committed(home)
    assert 0 < committed < TOTAL, "the interrupt did not land mid-crawl"
    report = make_library().crawl()
    assert embedder.images == TOTAL - committed
    assert report.index.count == TOTAL
