"""The watch daemon on real folders: a real watchdog observer, real files copied, renamed and
deleted under it, the real catalog. No fixed sleeps: every wait is for a condition."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from clipsearch.catalog.store import PathRule, Store
from clipsearch.daemon.client import daemon_pid
from clipsearch.daemon.watcher import Changes
from clipsearch.ingest.decode import file_hash

from .conftest import TINY_MODEL, make_photo, make_photos, run_cli


def wait_for(condition, what: str, timeout: float = 30.0) -> None:
    """Poll condition until it is true; fail naming `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.05)


def rows(home: Path) -> dict[str, tuple[int, str, str | None, bytes | None]]:
    """path -> (id, status, hash, vector) of every catalogued file."""
    store = Store.open_existing(home / "catalog.db")
    assert store is not None
    try:
        return {r[0]: (r[1], r[2], r[3], r[4])
                for r in store.db.execute("SELECT path, id, status, hash, vector FROM files")}
    finally:
        store.close()


def live_count(home: Path) -> int:
    store = Store.open_existing(home / "catalog.db")
    if store is None:
        return 0
    try:
        return store.live_count()
    finally:
        store.close()


def status_of(home: Path, path: Path | str) -> str | None:
    row = rows(home).get(str(path))
    return row[1] if row else None


@contextmanager
def watching(library, **options):
    """The daemon in a thread of this process, with short times; stopped (and checked for
    errors) on the way out."""
    options = {"debounce": 0.2, "check_every": 0.2, "retry_after": 0.3, "quiet_rebuild": 30.0, **options}
    watcher = library.watcher(**options)
    stop = threading.Event()
    failures: list[BaseException] = []

    def run():
        try:
            watcher.run(stop)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failures.append(exc)
            watcher.ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert watcher.ready.wait(60), "the daemon did not start"
    assert not failures, failures
    try:
        yield watcher
    finally:
        stop.set()
        watcher.changes.wake.set()
        thread.join(60)
        assert not thread.is_alive(), "the daemon did not stop"
        assert not failures, failures


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    make_photos(folder / "trip", 6)
    make_photos(folder, 2, start_seed=50)
    return folder


def test_a_photo_copied_in_is_searchable_moments_later(library, photos, tmp_path, embedder):
    library.crawl([photos])
    before = embedder.images
    new = make_photo(tmp_path / "outside" / "new.jpg", 900)
    with watching(library):
        shutil.copy(new, photos / "new.jpg")
        wait_for(lambda: status_of(library.settings.home, photos / "new.jpg") == "live", "the copy indexed")
        found = [r.path for r in library.search("anything", k=20)]
    assert str(photos / "new.jpg") in found
    assert embedder.images == before + 1


def test_a_file_replaced_by_another_image_under_the_same_name_is_embedded_again(library, photos, tmp_path):
    library.crawl([photos])
    target = photos / "trip" / "photo_0001.jpg"
    old = rows(library.settings.home)[str(target)]
    replacement = make_photo(tmp_path / "other.jpg", 777)
    with watching(library):
        shutil.copy(replacement, target)
        wait_for(lambda: rows(library.settings.home)[str(target)][2] == file_hash(str(target)), "re-embedded")
    new = rows(library.settings.home)[str(target)]
    assert new[0] == old[0] and new[1] == "live"
    assert new[3] != old[3]  # a new vector


def test_a_renamed_folder_and_a_moved_file_keep_their_vectors(library, photos, embedder):
    library.crawl([photos])
    home = library.settings.home
    before, embedded = rows(home), embedder.images
    with watching(library):
        (photos / "trip").rename(photos / "holiday")
        (photos / "photo_0000.jpg").rename(photos / "holiday" / "first.jpg")
        wait_for(lambda: status_of(home, photos / "holiday" / "first.jpg") == "live", "the moved file")
        wait_for(lambda: all(status_of(home, photos / "holiday" / f"photo_{i:04d}.jpg") == "live" for i in range(6)),
                 "the renamed folder")
    after = rows(home)
    assert embedder.images == embedded  # nothing embedded again
    for i in range(6):
        old = before[str(photos / "trip" / f"photo_{i:04d}.jpg")]
        assert after[str(photos / "holiday" / f"photo_{i:04d}.jpg")][::3] == old[::3]  # same row, same vector
    assert after[str(photos / "holiday" / "first.jpg")][0] == before[str(photos / "photo_0000.jpg")][0]
    assert not any(path.startswith(str(photos / "trip")) for path in after)


def test_a_file_or_folder_moved_where_the_rules_do_not_look_leaves_the_results(library, photos, tmp_path):
    library.crawl([photos])
    home = library.settings.home
    with watching(library):
        (photos / ".hidden").mkdir()
        (photos / "photo_0000.jpg").rename(photos / ".hidden" / "photo_0000.jpg")
        (photos / "trip").rename(tmp_path / "elsewhere")  # out of the library
        wait_for(lambda: status_of(home, photos / "photo_0000.jpg") == "deleted", "the file hidden away")
        wait_for(lambda: status_of(home, photos / "trip" / "photo_0003.jpg") == "deleted", "the folder moved out")
    assert not any(".hidden" in p or "elsewhere" in p for p in rows(home))


def test_a_folder_replaced_by_another_of_the_same_name_leaves_no_ghosts(library, photos, tmp_path):
    library.crawl([photos])
    home = library.settings.home
    make_photos(tmp_path / "new-trip", 2, start_seed=300)
    with watching(library):
        shutil.rmtree(photos / "trip")
        (tmp_path / "new-trip").rename(photos / "trip")
        wait_for(lambda: status_of(home, photos / "trip" / "photo_0005.jpg") == "deleted", "the old files gone")
        wait_for(lambda: status_of(home, photos / "trip" / "photo_0001.jpg") == "live"
                 and rows(home)[str(photos / "trip" / "photo_0001.jpg")][2] == file_hash(str(photos / "trip" /
                                                                                          "photo_0001.jpg")),
                 "the new files indexed")
    live = {p for p, (_, s, _, _) in rows(home).items() if s == "live" and "/trip/" in p}
    assert live == {str(photos / "trip" / "photo_0000.jpg"), str(photos / "trip" / "photo_0001.jpg")}


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="file names there are always valid Unicode")
def test_a_file_name_that_is_not_utf8_is_skipped_and_the_daemon_goes_on(library, photos, tmp_path):
    library.crawl([photos])
    home = library.settings.home
    with watching(library):
        with open(os.path.join(os.fsencode(photos), b"caf\xe9.jpg"), "wb") as handle:
            handle.write(make_photo(tmp_path / "latin1.jpg", 920).read_bytes())
        shutil.copy(make_photo(tmp_path / "after.jpg", 921), photos / "after.jpg")
        wait_for(lambda: status_of(home, photos / "after.jpg") == "live", "the next photo indexed")


def test_a_deleted_folder_marks_its_files_deleted(library, photos):
    library.crawl([photos])
    home = library.settings.home
    with watching(library):
        shutil.rmtree(photos / "trip")
        wait_for(lambda: all(status_of(home, photos / "trip" / f"photo_{i:04d}.jpg") == "deleted" for i in range(6)),
                 "the folder's files deleted")
        assert {r.path for r in library.search("x", k=20)} == {str(photos / "photo_0000.jpg"),
                                                            str(photos / "photo_0001.jpg")}


def test_a_root_renamed_away_and_back_goes_offline_and_returns_untouched(library, photos, tmp_path, embedder):
    library.crawl([photos])
    home = library.settings.home
    before, embedded = rows(home), embedder.images
    with watching(library):
        photos.rename(tmp_path / "unplugged")
        wait_for(lambda: set(s for _, s, _, _ in rows(home).values()) == {"offline"}, "the root offline")
        assert library.search("x", k=20) == []
        assert any("offline" in n for n in library.take_notices())
        (tmp_path / "unplugged").rename(photos)
        wait_for(lambda: set(s for _, s, _, _ in rows(home).values()) == {"live"}, "the root back")
    after = rows(home)
    assert {p: (r[0], r[3]) for p, r in after.items()} == {p: (r[0], r[3]) for p, r in before.items()}
    assert embedder.images == embedded


def test_a_corrupt_file_is_recorded_as_failed_and_the_daemon_goes_on(library, photos, tmp_path):
    library.crawl([photos])
    home = library.settings.home
    with watching(library):
        (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
        wait_for(lambda: status_of(home, photos / "broken.jpg") == "failed", "the corrupt file recorded")
        shutil.copy(make_photo(tmp_path / "good.jpg", 901), photos / "good.jpg")
        wait_for(lambda: status_of(home, photos / "good.jpg") == "live", "the next photo indexed")


def test_partial_and_temporary_files_are_ignored_until_renamed_into_place(library, photos, tmp_path):
    library.crawl([photos])
    home = library.settings.home
    source = make_photo(tmp_path / "download.jpg", 902)
    with watching(library):
        shutil.copy(source, photos / "download.jpg.part")
        shutil.copy(source, photos / "~$lock.jpg")
        shutil.copy(make_photo(tmp_path / "marker.jpg", 903), photos / "marker.jpg")
        wait_for(lambda: status_of(home, photos / "marker.jpg") == "live", "a photo after them indexed")
        assert not any(p.endswith((".part", "~$lock.jpg")) for p in rows(home))
        (photos / "download.jpg.part").rename(photos / "download.jpg")
        wait_for(lambda: status_of(home, photos / "download.jpg") == "live", "the download in place")


def test_a_file_written_slowly_is_embedded_once_it_is_whole(library, photos, tmp_path, embedder):
    library.crawl([photos])
    home = library.settings.home
    data = make_photo(tmp_path / "big.png", 904, size=(400, 300)).read_bytes()
    embedded = embedder.images
    target = photos / "camera.png"
    with watching(library, debounce=0.4) as watcher:
        with open(target, "wb") as handle:
            for start in range(0, len(data), len(data) // 8):
                handle.write(data[start:start + len(data) // 8])
                handle.flush()
                wait_for(lambda: len(watcher.changes) > 0, "the write seen")
                time.sleep(0.1)  # a slow card reader: a pause shorter than the debounce
        wait_for(lambda: status_of(home, target) == "live", "the whole file indexed")
    assert rows(home)[str(target)][2] == file_hash(str(target))
    assert embedder.images == embedded + 1  # never a half-written version


def test_the_crawl_marks_a_missing_root_offline_and_restores_it_untouched(library, photos, tmp_path, embedder):
    library.crawl([photos])
    home = library.settings.home
    before, embedded = rows(home), embedder.images
    photos.rename(tmp_path / "away")
    report = library.crawl()
    assert report.stats.offline == (str(photos),) and report.stats.deleted == 0
    assert {s for _, s, _, _ in rows(home).values()} == {"offline"}
    assert library.search("x") == []
    [root] = library.roots()
    assert not root.online and root.offline_photos == 8
    (tmp_path / "away").rename(photos)
    report = library.crawl()
    assert report.stats.restored == 8 and report.stats.offline == ()
    assert {p: (r[0], r[1], r[3]) for p, r in rows(home).items()} == \
        {p: (r[0], r[1], r[3]) for p, r in before.items()}
    assert embedder.images == embedded


def test_an_empty_mount_point_is_offline_but_deleting_every_photo_is_not(library, photos, embedder):
    library.crawl([photos])
    home = library.settings.home
    shutil.rmtree(photos)
    photos.mkdir()  # what an unplugged drive leaves behind
    assert library.crawl().stats.offline == (str(photos),)
    library.remove_root(photos)
    assert library.roots() == []
    make_photos(photos, 2)
    library.crawl([photos])
    with watching(library):
        for path in list(photos.iterdir()):
            path.unlink()
        wait_for(lambda: {s for p, (_, s, _, _) in rows(home).items() if p.startswith(str(photos))} == {"deleted"},
                 "every photo deleted")
    assert library.roots()[0].online


def test_a_case_only_rename_is_a_move_where_the_file_system_ignores_case(make_library, tmp_path, embedder):
    library = make_library(path_case="insensitive")
    folder = tmp_path / "Photos"
    make_photos(folder, 3)
    library.crawl([folder])
    home = library.settings.home
    before, embedded = rows(home), embedder.images
    (folder / "photo_0000.jpg").rename(folder / "PHOTO_0000.JPG")
    library.crawl()
    after = rows(home)
    assert after[str(folder / "PHOTO_0000.JPG")][0] == before[str(folder / "photo_0000.jpg")][0]
    assert str(folder / "photo_0000.jpg") not in after
    with watching(library):
        (folder / "photo_0001.jpg").rename(folder / "Photo_0001.jpg")
        wait_for(lambda: status_of(home, folder / "Photo_0001.jpg") == "live", "the case rename")
    assert rows(home)[str(folder / "Photo_0001.jpg")][0] == before[str(folder / "photo_0001.jpg")][0]
    assert embedder.images == embedded


def test_one_folder_spelt_in_two_cases_is_one_root_where_case_is_ignored(tmp_path):
    store = Store(tmp_path / "catalog.db")
    rule = PathRule(case_sensitive=False)
    store.add_root("/MEDIA/D/PHOTOS/2020", rule)
    store.add_root("/media/D/Photos", rule)  # the folder above it: folds it in
    store.add_root("/media/d/photos", rule)
    assert [r.path for r in store.roots()] == ["/media/D/Photos"]
    store.add_root("/media/d/photos", PathRule(case_sensitive=True))
    assert len(store.roots()) == 2
    store.close()


def test_the_inotify_limit_falls_back_to_polling_with_the_sysctl_named(library, photos, tmp_path, monkeypatch,
                                                                       caplog):
    from watchdog.observers import Observer

    library.crawl([photos])

    def refuse(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    monkeypatch.setattr(type(Observer()), "schedule", refuse)
    with caplog.at_level(logging.WARNING, logger="clipsearch"):
        with watching(library, poll_interval=0.2) as watcher:
            assert watcher._polled == {str(photos)}
            shutil.copy(make_photo(tmp_path / "p.jpg", 905), photos / "polled.jpg")
            wait_for(lambda: status_of(library.settings.home, photos / "polled.jpg") == "live", "found by polling")
    assert "fs.inotify.max_user_watches" in caplog.text


def test_polling_finds_changes_without_file_system_events(library, photos, tmp_path):
    library.crawl([photos])
    with watching(library, polling=True, poll_interval=0.2):
        shutil.copy(make_photo(tmp_path / "p.jpg", 906), photos / "polled.jpg")
        (photos / "photo_0000.jpg").unlink()
        wait_for(lambda: status_of(library.settings.home, photos / "polled.jpg") == "live", "the new photo")
        wait_for(lambda: status_of(library.settings.home, photos / "photo_0000.jpg") == "deleted", "the deletion")


def test_the_model_is_released_when_idle_and_loaded_again_for_new_photos(home, photos, tmp_path):
    from clipsearch.config import load_settings
    from clipsearch.library import Library

    library = Library(load_settings(home, model=TINY_MODEL, device="cpu"))
    library.crawl([photos])
    with watching(library, idle_release=0.5):
        shutil.copy(make_photo(tmp_path / "a.jpg", 930), photos / "a.jpg")
        wait_for(lambda: status_of(home, photos / "a.jpg") == "live", "the first photo")
        wait_for(lambda: not library.model_loaded, "the model released")
        shutil.copy(make_photo(tmp_path / "b.jpg", 931), photos / "b.jpg")
        wait_for(lambda: status_of(home, photos / "b.jpg") == "live", "a photo after the release")


def test_changes_wait_until_the_file_keeps_still():
    now = [0.0]
    changes = Changes(debounce=1.0, clock=lambda: now[0])
    changes.touch("/nowhere/a.jpg")
    assert changes.take().ready == []
    now[0] = 0.5
    changes.touch("/nowhere/a.jpg")  # written again
    now[0] = 1.2
    assert changes.take().ready == []
    now[0] = 1.6
    assert changes.take().ready == ["/nowhere/a.jpg"]
    changes.touch("/r/x/b.jpg")
    changes.move("/r/x", "/r/y", is_dir=True)
    batch = changes.take()
    assert batch.ops == [("move", "/r/x", "/r/y", True)]
    now[0] = 3.0
    assert changes.take().ready == ["/r/y/b.jpg"]


def test_the_write_lock_is_held_while_watching_and_a_crawl_is_refused_in_process(library, photos):
    library.crawl([photos])
    with watching(library):
        from clipsearch.catalog.lock import is_held

        assert is_held(library.settings.home)
    assert not is_held(library.settings.home)


@pytest.fixture
def tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("a full disk is made with a small tmpfs, which needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)


def test_a_full_library_disk_is_logged_and_the_daemon_catches_up_when_space_returns(tmpfs, embedder, tmp_path,
                                                                                   caplog):
    from clipsearch.config import load_settings
    from clipsearch.library import Library

    library = Library(load_settings(tmpfs / "home"), embedder=embedder)
    photos = tmp_path / "photos"
    make_photos(photos, 3)
    library.crawl([photos])
    home = library.settings.home
    with caplog.at_level(logging.ERROR, logger="clipsearch"), watching(library) as watcher:
        ballast = tmpfs / "ballast"
        with open(ballast, "wb") as handle:
            try:
                while True:
                    handle.write(b"\0" * (64 << 10))
                    handle.flush()
            except OSError:
                pass
        new = [make_photo(tmp_path / "new" / f"n{i}.jpg", 910 + i, size=(300, 200)) for i in range(20)]
        for path in new:
            shutil.copy(path, photos / path.name)
        wait_for(lambda: watcher.error is not None, "the full disk noticed")
        assert "full" in watcher.error.lower()
        ballast.unlink()
        wait_for(lambda: all(status_of(home, photos / p.name) == "live" for p in new), "caught up", timeout=60)
        assert watcher.error is None
    assert "full" in caplog.text.lower()


def test_a_watch_whose_reader_thread_died_is_watched_again(library, photos, tmp_path):
    library.crawl([photos])
    with watching(library) as watcher:
        [(observer, watch, _)] = watcher._watches.values()
        [emitter] = [e for e in observer.emitters if e.watch == watch]
        emitter.stop()
        emitter.join(10)
        shutil.copy(make_photo(tmp_path / "x.jpg", 941), photos / "after-restart.jpg")
        wait_for(lambda: status_of(library.settings.home, photos / "after-restart.jpg") == "live",
                 "the photo found by the new watch (or its reconcile)")


# --- the daemon as a user runs it ------------------------------------------------------------
def _env(home: Path) -> dict:
    return {"CLIPSEARCH_HOME": str(home), "CLIPSEARCH_DEVICE": "cpu"}


def _start(home: Path, *args: str) -> subprocess.Popen:
    """`clipsearch watch` in the foreground, its log lines going to HOME/../watch-output.txt."""
    env = {**os.environ, **_env(home)}
    with open(home.parent / "watch-output.txt", "ab") as output:
        return subprocess.Popen([sys.executable, "-m", "clipsearch.cli", "watch", "--debounce", "0.2", *args],
                                env=env, stdout=subprocess.DEVNULL, stderr=output)


def test_kill_9_mid_batch_loses_nothing_and_duplicates_nothing(tmp_path, home):
    photos = tmp_path / "photos"
    make_photos(photos, 2)
    assert run_cli("crawl", str(photos), "--model", TINY_MODEL, "--device", "cpu", env=_env(home)).returncode == 0
    incoming = make_photos(tmp_path / "incoming", 300, start_seed=1000)
    daemon = _start(home)
    try:
        wait_for(lambda: daemon_pid(home) == daemon.pid, "the daemon running")
        shutil.copytree(tmp_path / "incoming", photos / "incoming")
        wait_for(lambda: sum(p.startswith(str(photos / "incoming")) for p in rows(home)) > 0, "a first batch")
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
    finally:
        daemon.kill()
    at_kill = sum(p.startswith(str(photos / "incoming")) for p in rows(home))
    daemon = _start(home)
    try:
        wait_for(lambda: live_count(home) == 302, "everything indexed", timeout=120)
    finally:
        daemon.terminate()
        assert daemon.wait(30) == 0, (home.parent / "watch-output.txt").read_text()
    catalogued = rows(home)
    assert len(catalogued) == 302 and at_kill <= 300
    assert {str(p) for p in incoming} == {p.replace(str(photos / "incoming"), str(tmp_path / "incoming"))
                                          for p in catalogued if "incoming" in p}
    assert len({h for _, _, h, _ in catalogued.values()}) == 302


def test_detach_status_handover_and_stop_through_the_cli(tmp_path, home):
    photos, more = tmp_path / "photos", tmp_path / "more"
    make_photos(photos, 2)
    make_photos(more, 2, start_seed=60)
    env = _env(home)
    assert run_cli("crawl", str(photos), "--model", TINY_MODEL, "--device", "cpu", env=env).returncode == 0
    started = run_cli("watch", "--detach", "--debounce", "0.2", env=env)
    assert started.returncode == 0, started.stderr
    try:
        pid = daemon_pid(home)
        assert pid is not None and f"process {pid}" in started.stdout
        assert f"running (process {pid})" in run_cli("status", env=env).stdout
        busy = run_cli("reembed", "--model", TINY_MODEL, env=env)
        assert busy.returncode == 1 and "watch --stop" in busy.stderr and "Traceback" not in busy.stderr
        crawl = run_cli("crawl", str(more), env=env)
        assert crawl.returncode == 0, crawl.stderr
        assert "handed to it" in crawl.stdout + crawl.stderr
        assert status_of(home, more / "photo_0000.jpg") == "live"
        assert "online" in run_cli("roots", env=env).stdout
        removed = run_cli("roots", "remove", str(more), env=env)
        assert removed.returncode == 0 and "2 photos left the results" in removed.stdout
        assert str(more) not in run_cli("roots", env=env).stdout
    finally:
        stopped = run_cli("watch", "--stop", env=env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert daemon_pid(home) is None and not (home / "watch.pid").exists()
    assert "not running" in run_cli("status", env=env).stdout
    assert "no watch daemon" in run_cli("watch", "--stop", env=env).stdout


def test_ten_thousand_files_copied_at_once_are_all_indexed_in_bounded_memory(tmp_path, home):
    photos = tmp_path / "photos"
    make_photos(photos, 1)
    assert run_cli("crawl", str(photos), "--model", TINY_MODEL, "--device", "cpu", env=_env(home)).returncode == 0
    # 10,000 distinct files (a trailing byte string each: nothing is a twin) from 50 photos.
    bases = [p.read_bytes() for p in make_photos(tmp_path / "bases", 50, start_seed=2000)]
    storm = tmp_path / "storm"
    for i in range(10_000):
        folder = storm / f"card{i // 1000}"
        if i % 1000 == 0:
            folder.mkdir(parents=True)
        (folder / f"IMG_{i:05d}.jpg").write_bytes(bases[i % 50] + i.to_bytes(4, "little"))
    daemon = _start(home)
    try:
        wait_for(lambda: daemon_pid(home) == daemon.pid, "the daemon running")
        shutil.copytree(storm, photos / "storm")
        started = time.monotonic()
        wait_for(lambda: live_count(home) == 10_001, "the storm indexed", timeout=400)
        print(f"10,000 files indexed {time.monotonic() - started:.1f} s after the copy")
        peak_kib = int(next(line.split()[1] for line in Path(f"/proc/{daemon.pid}/status").read_text().splitlines()
                            if line.startswith("VmHWM")))
    finally:
        daemon.terminate()
        daemon.wait(30)
    assert peak_kib < 1_500_000, f"peak RSS {peak_kib // 1024} MiB"


def test_a_folder_filter_ignores_case_where_the_file_system_does(make_library, tmp_path):
    folder = tmp_path / "Photos"
    make_photos(folder / "Trip", 3)
    make_photos(folder / "Home", 2, start_seed=40)
    insensitive = make_library(path_case="insensitive")
    insensitive.crawl([folder])
    spelt_otherwise = str(folder / "Trip").upper()
    found = insensitive.search(f"x in:{spelt_otherwise}", k=10)
    assert sorted(r.path for r in found) == sorted(str(p) for p in (folder / "Trip").iterdir())
    sensitive = make_library(path_case="sensitive")
    assert sensitive.search(f"x in:{spelt_otherwise}", k=10) == []
