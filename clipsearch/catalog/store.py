"""The catalog: every SQL statement clipsearch runs lives in this module.

SQLite in WAL mode, so readers (search, status) never wait for the crawl's writer. The
truth is here: file metadata, status and vectors (float32 blobs). Each write batch takes
the next number of a write sequence (`seq`); the forest records the sequence it was built
at, so a search knows which rows changed after the build. Each number also gets a random
token (table `writes`) and the catalog an id (`meta.catalog_id`): a forest records both, so
it is never served against another catalog, or another history of this one.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from ..errors import NotIndexed
from ..paths import EXACT_CASE, PathRule
from ..records import (
    Embedded,
    Failed,
    FileRecord,
    FileRow,
    Filters,
    Imported,
    KnownFile,
    Renamed,
    Restored,
    Reused,
    Root,
    Twin,
    Write,
)
from ..words import fold_text
from .faults import LibraryReadOnly, is_writable, no_space_left
from .migrations import MIGRATIONS, migrate

# offline: on a folder that is not there now (a drive unplugged, a share down); kept, with its
# vector, and live again when the folder is back unchanged.
LIVE, DELETED, FAILED, OFFLINE = "live", "deleted", "failed", "offline"
_META_COLUMNS = ("width", "height", "format", "taken_at", "camera_make", "camera_model", "gps_lat", "gps_lon")
_CHUNK = 500  # SQLite's variable limit is 999 on old builds
_T = TypeVar("_T")




_MIGRATING = threading.Lock()


class _Connection:
    """sqlite3 in autocommit mode with atomic(): all the store needs at run time. sqlite-utils
    (0.1-0.2 s to import) is loaded only when a catalog needs a migration."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def execute(self, sql: str, parameters: Sequence | dict = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, parameters)

    @contextmanager
    def atomic(self):
        """One transaction (not nested: no caller needs it, and BEGIN inside one fails loudly)."""
        self.conn.execute("BEGIN")
        try:
            yield self
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


class Store:
    """One connection to the catalog. Not shared between threads: each thread opens its own."""

    def __init__(self, path: str | Path, readonly: bool = False, immutable: bool = False):
        self.path = Path(path)
        if readonly:
            # immutable: no locks and no -shm file, for a folder that cannot be written (a
            # read-only mount, another user's folder, a full disk) where no writer can run.
            uri = f"{self.path.as_uri()}?mode=ro" + ("&immutable=1" if immutable else "")
            conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.create_function("km", 4, km, deterministic=True)
        self.db = _Connection(conn)
        if not readonly:
            self.db.execute("PRAGMA journal_mode = WAL")
            # NORMAL in WAL mode: a committed batch survives a killed process; only a power
            # cut can lose the last transactions, never corrupt the file.
            self.db.execute("PRAGMA synchronous = NORMAL")
            if self.db.execute("PRAGMA user_version").fetchone()[0] != len(MIGRATIONS):
                import sqlite_utils

                # Two threads opening an old catalog at once (the gallery's warm-up and its
                # first query) must not both upgrade it: the second would find it locked.
                with _MIGRATING:
                    if self.db.execute("PRAGMA user_version").fetchone()[0] != len(MIGRATIONS):
                        migrate(sqlite_utils.Database(conn))

    @classmethod
    def open_existing(cls, path: str | Path) -> "Store | None":
        """A read-only connection, or None if there is no catalog yet (or not set up yet:
        the first crawl has only just created the file)."""
        if not Path(path).is_file():
            return None
        try:
            store = cls(path, readonly=True)
            version = store.db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.OperationalError:
            # A WAL database needs its -shm file, which a reader cannot create in a folder it
            # cannot write to, or on a full disk: read the file as it is instead.
            if is_writable(Path(path).parent) and not no_space_left(Path(path).parent):
                raise
            store = cls(path, readonly=True, immutable=True)
            version = store.db.execute("PRAGMA user_version").fetchone()[0]
        if version < 1:
            store.close()
            return None
        if version < len(MIGRATIONS):
            # Made by an older clipsearch: bring the schema up to date before reading.
            store.close()
            if not is_writable(Path(path).parent):
                raise LibraryReadOnly(f"the catalog at {path} was made by an older clipsearch and must be "
                                      "upgraded once where its folder can be written (run `clipsearch status` there)")
            cls(path).close()
            store = cls(path, readonly=True)
        return store

    @classmethod
    @contextmanager
    def reading(cls, path: str | Path) -> Iterator[Store]:
        """A read-only connection for the length of the block; NotIndexed if there is no
        catalog yet."""
        store = cls.open_existing(path)
        if store is None:
            raise NotIndexed(Path(path).parent, "empty")
        try:
            yield store
        finally:
            store.close()

    @classmethod
    def read(cls, path: str | Path, read: Callable[[Store], _T], empty: _T) -> _T:
        """read(store) on a read-only connection, or `empty` where there is no catalog yet."""
        store = cls.open_existing(path)
        if store is None:
            return empty
        try:
            return read(store)
        finally:
            store.close()

    def close(self) -> None:
        self.db.close()

    # --- meta -----------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta(key, value) VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value", [key, value])

    # --- roots ----------------------------------------------------------------------------
    def roots(self) -> list[Root]:
        rows = self.db.execute(
            "SELECT id, path, exclude, crawled_at, options, offline_since FROM roots ORDER BY path").fetchall()
        return [Root(r[0], r[1], tuple(json.loads(r[2] or "[]")), r[3], json.loads(r[4] or "{}"), r[5])
                for r in rows]

    def add_root(self, path: str, rule: PathRule = EXACT_CASE) -> None:
        """Add a root; roots inside it are folded into it (their files move over)."""
        with self.db.atomic():
            same = [r for r in self.roots() if rule.same(r.path, path)]
            if same:
                path = same[0].path  # one folder, spelt another way
            self.db.execute("INSERT INTO roots(path, added_at) VALUES (?, ?) ON CONFLICT(path) DO NOTHING",
                            [path, time.time()])
            root_id = self.db.execute("SELECT id FROM roots WHERE path = ?", [path]).fetchone()[0]
            inner = [r for r in self.roots() if r.id != root_id and rule.under(r.path, path)]
            if inner:
                # The inner roots' rules carry over: exclude patterns are whole-path globs and
                # stay right; of differing options, the first inner root's win.
                exclude = list(dict.fromkeys(p for r in inner for p in r.exclude))
                options: dict = {}
                for r in inner:
                    for key, value in r.options.items():
                        options.setdefault(key, value)
                self.set_root_rules(root_id, exclude, options)
            for r in inner:
                self.db.execute("UPDATE files SET root_id = ? WHERE root_id = ?", [root_id, r.id])
                self.db.execute("DELETE FROM roots WHERE id = ?", [r.id])
            # Imported rows of photos in the new folder become its files: the crawl that follows
            # keeps the vectors of those it finds unchanged and marks the rest deleted.
            low, high = _prefix_range(path)
            self.db.execute("UPDATE files SET root_id = ? WHERE root_id IS NULL AND status = ? AND path >= ? "
                            "AND path < ?", [root_id, LIVE, low, high])

    def set_root_rules(self, root_id: int, exclude: Sequence[str], options: dict) -> None:
        self.db.execute("UPDATE roots SET exclude = ?, options = ? WHERE id = ?",
                        [json.dumps(list(exclude)), json.dumps(options), root_id])

    def mark_crawled(self, root_id: int) -> None:
        self.db.execute("UPDATE roots SET crawled_at = ? WHERE id = ?", [time.time(), root_id])

    def set_offline(self, root_id: int) -> int:
        """The root's folder is not there: its live files go offline (kept, left out of
        searches); returns how many."""
        with self.db.atomic():
            seq = self.next_seq()
            count = self.db.execute("UPDATE files SET status = ?, seq = ? WHERE root_id = ? AND status = ?",
                                    [OFFLINE, seq, root_id, LIVE]).rowcount
            self.db.execute("UPDATE roots SET offline_since = coalesce(offline_since, ?) WHERE id = ?",
                            [time.time(), root_id])
        return count

    def set_online(self, root_id: int) -> None:
        """The root's folder is back; its offline files are restored by the crawl that follows
        (those unchanged) or marked deleted by it (those gone)."""
        self.db.execute("UPDATE roots SET offline_since = NULL WHERE id = ?", [root_id])

    def remove_root(self, root_id: int) -> int:
        """Stop indexing a root: its files leave the results (kept as deleted rows, whose
        vectors a copy elsewhere may still reuse) and the root is forgotten."""
        with self.db.atomic():
            seq = self.next_seq()
            count = self.db.execute(
                "UPDATE files SET status = ?, seq = ?, root_id = NULL WHERE root_id = ? AND status != ?",
                [DELETED, seq, root_id, DELETED]).rowcount
            self.db.execute("UPDATE files SET root_id = NULL WHERE root_id = ?", [root_id])
            self.db.execute("DELETE FROM roots WHERE id = ?", [root_id])
        return count

    # --- the crawl's reads ----------------------------------------------------------------
    def known_files(self, root_id: int, under: str | None = None,
                    rule: PathRule = EXACT_CASE) -> dict[str, KnownFile]:
        """What the catalog knows of the files of a root (under a folder of it), by path key."""
        sql = ("SELECT path, id, size, mtime_ns, status, vector IS NOT NULL FROM files WHERE root_id = ?")
        rows = self.db.execute(sql, [root_id]).fetchall()
        return {rule.key(r[0]): KnownFile(r[1], r[2], r[3], r[4], bool(r[5]), r[0]) for r in rows
                if under is None or rule.under(r[0], under)}

    def known_paths(self, paths: Sequence[str]) -> dict[str, KnownFile]:
        """What the catalog knows of these paths (exact spelling), by path."""
        found: dict[str, KnownFile] = {}
        for start in range(0, len(paths), _CHUNK):
            part = list(paths[start:start + _CHUNK])
            for r in self.db.execute(
                    "SELECT path, id, size, mtime_ns, status, vector IS NOT NULL FROM files "
                    f"WHERE path IN ({','.join('?' * len(part))})", part):
                found[r[0]] = KnownFile(r[1], r[2], r[3], r[4], bool(r[5]), r[0])
        return found

    def twin(self, hash_: str) -> Twin | None:
        """The vector and metadata of a catalogued file with these bytes, if any."""
        row = self.db.execute(
            f"SELECT vector, {', '.join(_META_COLUMNS)} FROM files WHERE hash = ? AND vector IS NOT NULL "
            "ORDER BY status = 'live' DESC LIMIT 1", [hash_]).fetchone()
        return Twin(row[0], dict(zip(_META_COLUMNS, row[1:]))) if row else None

    # --- the crawl's writes ---------------------------------------------------------------
    def next_seq(self) -> int:
        """The sequence number of the write transaction in progress, with a token of its own."""
        seq = max(self.max_seq(), self.db.execute("SELECT coalesce(max(seq), 0) FROM writes").fetchone()[0]) + 1
        self.db.execute("INSERT OR REPLACE INTO writes(seq, token) VALUES (?, ?)", [seq, secrets.token_hex(8)])
        return seq

    def write(self, items: Sequence[Write]) -> list[Reused]:
        """Write one batch in one transaction; returns the Reused items whose vector is not
        in the catalog yet (their twin is still on its way), to be offered again later."""
        now = time.time()
        waiting: list[Reused] = []
        with self.db.atomic():
            seq = self.next_seq()
            first = next((item for item in items if isinstance(item, Embedded)), None)
            if first is not None:
                # The first vector fixes the library's dimension, in the same transaction.
                self.db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('dim', ?)",
                                [str(len(first.vector))])
            for item in items:
                if isinstance(item, Embedded):
                    meta = {c: getattr(item.meta, c) for c in _META_COLUMNS}
                    self._upsert(item.record, item.hash, LIVE, None, now, seq,
                                 np.asarray(item.vector, dtype=np.float32).tobytes(), meta)
                elif isinstance(item, Reused):
                    twin = item.twin or self.twin(item.hash)
                    if twin is None:
                        waiting.append(item)
                    else:
                        self._upsert(item.record, item.hash, LIVE, None, now, seq, twin.vector, twin.meta)
                elif isinstance(item, Failed):
                    self._upsert(item.record, item.hash, FAILED, item.error, now, seq, None,
                                 dict.fromkeys(_META_COLUMNS))
                elif isinstance(item, Restored):
                    self.db.execute("UPDATE files SET status = ?, seq = ? WHERE id = ?", [LIVE, seq, item.file_id])
                elif isinstance(item, Renamed):
                    self.db.execute("UPDATE files SET path = ?, seq = ? WHERE id = ?", [item.path, seq, item.file_id])
        return waiting

    def _upsert(self, record: FileRecord, hash_: str | None, status: str, error: str | None,
                now: float, seq: int, vector: bytes | None, meta: dict) -> None:
        columns = ["path", "root_id", "size", "mtime_ns", "hash", "status", "error", "indexed_at",
                   "vector", "seq", "remote", "place_at", *meta]
        values = [record.path, record.root_id, record.size, record.mtime_ns, hash_, status, error, now,
                  vector, seq, 0, None, *meta.values()]
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
        self.db.execute(
            f"INSERT INTO files({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            f"ON CONFLICT(path) DO UPDATE SET {updates}", values)

    def failure_for_hash(self, hash_: str) -> str | None:
        row = self.db.execute("SELECT error FROM files WHERE hash = ? AND status = ? LIMIT 1",
                              [hash_, FAILED]).fetchone()
        return row[0] if row else None

    def mark_deleted(self, file_ids: Iterable[int]) -> int:
        ids = list(file_ids)
        if not ids:
            return 0
        with self.db.atomic():
            seq = self.next_seq()
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start:start + _CHUNK]
                self.db.execute(f"UPDATE files SET status = ?, seq = ? WHERE id IN ({','.join('?' * len(chunk))})",
                                [DELETED, seq, *chunk])
        return len(ids)

    def delete_paths(self, paths: Sequence[str]) -> int:
        """Mark the files at these paths deleted (they are gone from disk); returns how many."""
        ids = list(self.known_paths(paths).values())
        return self.mark_deleted(k.id for k in ids if k.status != DELETED)

    def delete_under(self, folder: str) -> int:
        """Mark every file under folder deleted (the folder is gone); returns how many."""
        low, high = _prefix_range(folder)
        ids = [r[0] for r in self.db.execute("SELECT id FROM files WHERE path >= ? AND path < ? AND status != ?",
                                             [low, high, DELETED])]
        return self.mark_deleted(ids)

    def move(self, src: str, dest: str, root_id: int, is_dir: bool) -> int:
        """A file or folder moved within the roots: its rows take the new paths and keep their
        vectors (a row already at a new path is replaced). Returns how many rows moved."""
        if is_dir:
            low, high = _prefix_range(src)
            rows = self.db.execute("SELECT id, path FROM files WHERE path >= ? AND path < ?", [low, high]).fetchall()
            moves = [(file_id, dest + path[len(src.rstrip("/\\")):]) for file_id, path in rows]
        else:
            row = self.db.execute("SELECT id FROM files WHERE path = ?", [src]).fetchone()
            moves = [(row[0], dest)] if row else []
        if not moves:
            return 0
        with self.db.atomic():
            seq = self.next_seq()
            moving = {file_id for file_id, _ in moves}
            for start in range(0, len(moves), _CHUNK):
                part = [path for _, path in moves[start:start + _CHUNK]]
                taken = self.db.execute(f"SELECT id FROM files WHERE path IN ({','.join('?' * len(part))})",
                                        part).fetchall()
                for (file_id,) in taken:
                    if file_id not in moving:
                        self.db.execute("DELETE FROM files WHERE id = ?", [file_id])
            # Through a temporary path first: rows swapping places must not collide on the way.
            self.db.conn.executemany("UPDATE files SET path = char(1) || path WHERE id = ?",
                                     [(file_id,) for file_id, _ in moves])
            self.db.conn.executemany("UPDATE files SET path = ?, root_id = ?, seq = ? WHERE id = ?",
                                     [(path, root_id, seq, file_id) for file_id, path in moves])
        return len(moves)

    def switch_model(self, model: str, dim: int) -> int:
        """Drop every vector and record the new model, in one transaction: files stay
        catalogued and the next crawl embeds them with the new model. Imported rows no crawl
        can reach (remote photos, photos outside the library's folders) are marked deleted;
        returns how many."""
        with self.db.atomic():
            seq = self.next_seq()
            dropped = self.db.execute("UPDATE files SET status = ?, seq = ? WHERE status = ? AND root_id IS NULL",
                                      [DELETED, seq, LIVE]).rowcount
            self.db.execute("UPDATE files SET vector = NULL, seq = ? WHERE vector IS NOT NULL", [seq])
            self.set_meta("model", model)
            self.set_meta("dim", str(dim))
        return dropped

    # --- reads for search and status ------------------------------------------------------
    def max_seq(self) -> int:
        return self.db.execute("SELECT coalesce(max(seq), 0) FROM files").fetchone()[0]

    def identity(self) -> tuple[str | None, int, str | None]:
        """(catalog id, last write sequence, that write's token): what a forest built now is
        tied to."""
        seq = self.max_seq()
        return self.get_meta("catalog_id"), seq, self.write_token(seq)

    def write_token(self, seq: int) -> str | None:
        row = self.db.execute("SELECT token FROM writes WHERE seq = ?", [seq]).fetchone()
        return row[0] if row else None

    def live_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM files WHERE status = ? AND vector IS NOT NULL",
                               [LIVE]).fetchone()[0]

    def iter_live_vectors(self, dim: int, chunk: int = 20_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (ids, vectors) chunks of every searchable row, in id order."""
        last = -1
        while True:
            rows = self.db.execute(
                # NOT INDEXED: walked by rowid; SQLite would pick the status index and sort every
                # live row for each chunk (2.5 s instead of 0.3 s at 100k, quadratic beyond).
                "SELECT id, vector FROM files NOT INDEXED WHERE status = ? AND vector IS NOT NULL AND id > ? "
                "ORDER BY id LIMIT ?", [LIVE, last, chunk]).fetchall()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
            yield ids, vectors
            last = int(ids[-1])

    def changed_since(self, seq: int, dim: int) -> tuple[set[int], np.ndarray, np.ndarray]:
        """Rows written after `seq`: all their ids, and the ids and vectors of the searchable ones."""
        rows = self.db.execute("SELECT id, status, vector FROM files WHERE seq > ?", [seq]).fetchall()
        changed = {r[0] for r in rows}
        live = [r for r in rows if r[1] == LIVE and r[2] is not None]
        ids = np.array([r[0] for r in live], dtype=np.int64)
        vectors = (np.frombuffer(b"".join(r[2] for r in live), dtype=np.float32).reshape(len(live), dim)
                   if live else np.zeros((0, dim), dtype=np.float32))
        return changed, ids, vectors

    # --- places and words (second passes after the crawl) ------------------------------------
    def unplaced(self, limit: int) -> list[tuple[int, float, float]]:
        """(id, latitude, longitude) of rows with a GPS position not looked up yet."""
        return self.db.execute("SELECT id, gps_lat, gps_lon FROM files INDEXED BY idx_files_unplaced "
                               "WHERE gps_lat IS NOT NULL AND place_at IS NULL LIMIT ?", [limit]).fetchall()

    def set_places(self, found: Sequence[tuple[int, tuple[str | None, str | None, str | None, str | None,
                                                          str | None] | None, Sequence[str]]]) -> None:
        """Record places: (id, (city, area, region, country, country code) or None, folded names)."""
        now = time.time()
        with self.db.atomic():
            for file_id, place, names in found:
                self.db.execute("DELETE FROM places WHERE file_id = ?", [file_id])
                self.db.execute("UPDATE files SET place_city = ?, place_area = ?, place_region = ?, "
                                "place_country = ?, place_cc = ?, place_at = ? WHERE id = ?",
                                [*(place or (None,) * 5), now, file_id])
                for name in dict.fromkeys(names):
                    self.db.execute("INSERT INTO places(file_id, name) VALUES (?, ?)", [file_id, name])

    def place_names(self) -> list[tuple[str | None, str | None, str | None, str | None, str | None]]:
        """The distinct places of the library's photos: (city, area, region, country, code),
        from their index alone (a few ms at 100k photos)."""
        return self.db.execute("SELECT DISTINCT place_city, place_area, place_region, place_country, place_cc "
                               "FROM files INDEXED BY idx_files_place WHERE place_country IS NOT NULL").fetchall()

    def places_of(self, file_ids: Sequence[int]) -> dict[int, str]:
        """"Lisbon, Lisbon, Portugal" for the photos that have a place."""
        found: dict[int, str] = {}
        ids = list(file_ids)
        for start in range(0, len(ids), _CHUNK):
            part = ids[start:start + _CHUNK]
            for file_id, *names in self.db.execute(
                    f"SELECT id, place_city, place_region, place_country FROM files WHERE id IN "
                    f"({','.join('?' * len(part))}) AND place_country IS NOT NULL", part):
                found[file_id] = ", ".join(dict.fromkeys(n for n in names if n))
        return found

    def placed_count(self) -> int:
        """Photos with a place, from its index alone (deleted ones too: a page's summary)."""
        return self.db.execute("SELECT count(*) FROM files INDEXED BY idx_files_place "
                               "WHERE place_country IS NOT NULL").fetchone()[0]

    def worded_count(self) -> int:
        """Photos with words read in them (as their content was when read: a page's summary)."""
        return self.db.execute("SELECT count(*) FROM texts WHERE text != ''").fetchone()[0]

    def place_counts(self) -> tuple[int, int]:
        """(searchable photos with a place, with a GPS position)."""
        row = self.db.execute(f"SELECT count(place_country), count(gps_lat) FROM files WHERE {self._SEARCHABLE}"
                              ).fetchone()
        return row[0], row[1]

    def unread(self, limit: int, after_id: int = 0) -> list[tuple[int, str, str | None]]:
        """(id, path, hash) of local searchable photos whose text was not read from their
        content as it is now, in id order from after_id."""
        return self.db.execute(
            f"SELECT id, path, hash FROM files WHERE {self._SEARCHABLE} AND remote = 0 AND id > ? AND NOT EXISTS "
            "(SELECT 1 FROM texts t WHERE t.file_id = files.id AND t.hash IS files.hash) ORDER BY id LIMIT ?",
            [after_id, limit]).fetchall()

    def set_texts(self, found: Sequence[tuple[int, str | None, str]]) -> None:
        """Record the text read in photos: (id, content hash it was read from, text; "" none)."""
        now = time.time()
        with self.db.atomic():
            for file_id, hash_, text in found:
                self.db.execute("DELETE FROM texts WHERE file_id = ?", [file_id])
                self.db.execute("INSERT INTO texts(file_id, hash, text, read_at) VALUES (?, ?, ?, ?)",
                                [file_id, hash_, text, now])

    def texts_of_hashes(self, hashes: Sequence[str]) -> dict[str, str]:
        """The words read in photos of these contents, where one was read (a copy need not be)."""
        found: dict[str, str] = {}
        for start in range(0, len(hashes), _CHUNK):
            part = list(hashes[start:start + _CHUNK])
            found.update(self.db.execute(
                f"SELECT hash, text FROM texts WHERE hash IN ({','.join('?' * len(part))})", part).fetchall())
        return found

    def text_counts(self) -> tuple[int, int, int]:
        """(searchable local photos read, of which with words, not read yet)."""
        read, worded = self.db.execute(
            f"SELECT count(*), count(nullif(t.text, '')) FROM files JOIN texts t ON t.file_id = files.id "
            f"AND t.hash IS files.hash WHERE {self._SEARCHABLE} AND remote = 0").fetchone()
        local = self.db.execute(f"SELECT count(*) FROM files WHERE {self._SEARCHABLE} AND remote = 0").fetchone()[0]
        return read, worded, local - read

    def texts(self, file_ids: Sequence[int]) -> dict[int, str]:
        """The words read in these photos (those with any, from their current content)."""
        found: dict[int, str] = {}
        ids = list(file_ids)
        for start in range(0, len(ids), _CHUNK):
            part = ids[start:start + _CHUNK]
            found.update(self.db.execute(
                f"SELECT t.file_id, t.text FROM texts t JOIN files f ON f.id = t.file_id AND t.hash IS f.hash "
                f"WHERE t.file_id IN ({','.join('?' * len(part))}) AND t.text != ''", part).fetchall())
        return found

    def word_frequencies(self, words: Sequence[str]) -> tuple[int, dict[str, int]]:
        """(photos with words read, {word: photos whose words hold it}) for the text index."""
        total = self.db.execute("SELECT count(*) FROM texts WHERE text != ''").fetchone()[0]
        if not words or not total:
            return total, {}
        rows = self.db.execute(f"SELECT term, doc FROM texts_vocab WHERE term IN ({','.join('?' * len(words))})",
                               list(words)).fetchall()
        return total, dict(rows)

    def word_hits(self, words: Sequence[str], limit: int) -> list[tuple[int, int]]:
        """(id, how many of words its text holds) of searchable photos holding any, most first."""
        if not words:
            return []
        match = " OR ".join(f'"{w}"' for w in words)
        ids = [r[0] for r in self.db.execute(
            "SELECT rowid FROM texts_fts WHERE texts_fts MATCH ? ORDER BY rank LIMIT ?", [match, limit * 4])]
        texts = self.texts(ids)
        hits = []
        for file_id in ids:
            held = set(re.findall(r"\w+", fold_text(texts.get(file_id, ""))))
            count = sum(w in held for w in words)
            if count:
                hits.append((file_id, count))
        hits.sort(key=lambda hit: -hit[1])
        return hits[:limit]

    # --- query filters --------------------------------------------------------------------
    # The searchable rows are named with the literal 'live' here: it matches the partial
    # index of migration 5, which holds every filtered column. SQLite's planner would pick
    # the status index instead and read every row (0.4 s at 100k): the index is named.
    _SEARCHABLE = "status = 'live' AND vector IS NOT NULL"
    _FILTERED = "files INDEXED BY idx_files_live_filter"
    # Rows looked up by id: the unary + keeps SQLite off the status index, which it would walk
    # over every live row (11 ms for 40 ids at 100k, against 0.3 ms by rowid).
    _BY_ID = "+status = 'live' AND vector IS NOT NULL"

    def searchable_count(self) -> int:
        """live_count() from the filter index alone: a few ms at 100k photos."""
        return self.db.execute(f"SELECT count(*) FROM {self._FILTERED} WHERE {self._SEARCHABLE}").fetchone()[0]

    def sample_vectors(self, dim: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of up to count searchable rows spread over the id range."""
        high = self.db.execute("SELECT coalesce(max(id), 0) FROM files").fetchone()[0]
        step = max(1, high // max(count, 1))
        ids = [r[0] for r in self.db.execute(
            f"SELECT id FROM files WHERE {self._SEARCHABLE} AND id % ? = 0 LIMIT ?", [step, count])]
        return self.vectors(ids, dim)

    def matching_ids(self, filters: Filters) -> list[int]:
        """Ids of the searchable rows that pass filters, in id order."""
        where, params = _filter_sql(filters)
        return sorted(r[0] for r in self.db.execute(
            f"SELECT id FROM {self._FILTERED} WHERE {self._SEARCHABLE} AND {where}", params))

    def iter_vectors(self, file_ids: Sequence[int], dim: int,
                     chunk: int = 20_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (ids, vectors) chunks of those of file_ids that are searchable."""
        for start in range(0, len(file_ids), chunk):
            yield self.vectors(file_ids[start:start + chunk], dim)

    def vectors(self, file_ids: Sequence[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of those of file_ids that are searchable, in the order given."""
        found: dict[int, bytes] = {}
        ids = list(file_ids)
        for start in range(0, len(ids), _CHUNK):
            part = ids[start:start + _CHUNK]
            found.update(self.db.execute(
                f"SELECT id, vector FROM files WHERE id IN ({','.join('?' * len(part))}) AND {self._BY_ID}",
                part).fetchall())
        kept = [i for i in ids if i in found]
        vectors = (np.frombuffer(b"".join(found[i] for i in kept), dtype=np.float32).reshape(len(kept), dim)
                   if kept else np.zeros((0, dim), dtype=np.float32))
        return np.array(kept, dtype=np.int64), vectors

    def passing(self, file_ids: Sequence[int], filters: Filters) -> set[int]:
        """Those of file_ids that are searchable and pass filters."""
        where, params = _filter_sql(filters)
        passed: set[int] = set()
        ids = list(file_ids)
        for start in range(0, len(ids), _CHUNK):
            part = ids[start:start + _CHUNK]
            passed.update(r[0] for r in self.db.execute(
                f"SELECT id FROM files WHERE id IN ({','.join('?' * len(part))}) AND {self._BY_ID} "
                f"AND {where}", [*part, *params]))
        return passed

    def newest(self, filters: Filters, limit: int, offset: int = 0) -> list[int]:
        """Ids of the searchable photos that pass filters, newest (date taken, else file date) first."""
        where, params = _filter_sql(filters)
        return [r[0] for r in self.db.execute(
            f"SELECT id FROM {self._FILTERED} WHERE {self._SEARCHABLE} AND {where} ORDER BY {_DATE} DESC, id DESC "
            "LIMIT ? OFFSET ?", [*params, limit, offset])]

    def count_changed_since(self, seq: int) -> int:
        return self.db.execute("SELECT count(*) FROM files WHERE seq > ?", [seq]).fetchone()[0]

    def rows(self, file_ids: Sequence[int]) -> dict[int, FileRow]:
        found: dict[int, FileRow] = {}
        ids = list(file_ids)
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            cursor = self.db.execute(
                "SELECT id, path, size, mtime_ns, width, height, format, taken_at, status, error, "
                f"camera_make, camera_model, gps_lat, gps_lon, hash, remote FROM files "
                f"WHERE id IN ({','.join('?' * len(chunk))})", chunk)
            for r in cursor:
                extra = {k: v for k, v in zip(("camera_make", "camera_model", "gps_lat", "gps_lon"), r[10:14])
                         if v is not None}
                found[r[0]] = FileRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], extra=extra,
                                      hash=r[14], remote=bool(r[15]))
        return found

    def counts_by_status(self) -> dict[str, int]:
        counts = {LIVE: 0, DELETED: 0, FAILED: 0, OFFLINE: 0}
        for status, count in self.db.execute("SELECT status, count(*) FROM files GROUP BY status"):
            counts[status] = count
        counts["unembedded"] = self.db.execute(
            "SELECT count(*) FROM files WHERE status = ? AND vector IS NULL", [LIVE]).fetchone()[0]
        counts["remote"] = self.db.execute(
            "SELECT count(*) FROM files WHERE status = ? AND remote = 1", [LIVE]).fetchone()[0]
        return counts

    def root_counts(self) -> dict[int, dict[str, int]]:
        """{root id: {status: files}} for live and offline files."""
        counts: dict[int, dict[str, int]] = {}
        for root_id, status, count in self.db.execute(
                "SELECT root_id, status, count(*) FROM files WHERE status IN (?, ?) GROUP BY root_id, status",
                [LIVE, OFFLINE]):
            counts.setdefault(root_id, {})[status] = count
        return counts

    def has_files(self, root_id: int) -> bool:
        """Whether the root has live or offline files (an empty folder then means an outage)."""
        return self.db.execute("SELECT 1 FROM files WHERE root_id = ? AND status IN (?, ?) LIMIT 1",
                               [root_id, LIVE, OFFLINE]).fetchone() is not None

    def offline_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM files WHERE status = ?", [OFFLINE]).fetchone()[0]

    def failed_count(self, error_ending: str) -> int:
        """Failed files whose error ends with error_ending."""
        return self.db.execute("SELECT count(*) FROM files WHERE status = ? AND substr(error, -?) = ?",
                               [FAILED, len(error_ending), error_ending]).fetchone()[0]

    def failed_files(self, limit: int | None = None) -> list[FileRow]:
        ids = [r[0] for r in self.db.execute(
            "SELECT id FROM files WHERE status = ? ORDER BY path LIMIT ?", [FAILED, limit or -1])]
        rows = self.rows(ids)
        return [rows[i] for i in ids]

    # --- export, import and duplicates ---------------------------------------------------
    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read transaction: every read inside sees the catalog as it was at its start,
        whatever a writer commits meanwhile (WAL)."""
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            self.db.execute("COMMIT")

    def _exported(self, live_only: bool) -> str:
        return f"status = '{LIVE}' AND vector IS NOT NULL" if live_only else "vector IS NOT NULL"

    def export_sizes(self, live_only: bool) -> tuple[int, int, int, int]:
        """(rows, longest path, longest hash, longest taken_at) of what an export writes (the
        live photos', or every row with a vector: offline and deleted ones too); lengths in
        characters."""
        row = self.db.execute("SELECT count(*), coalesce(max(length(path)), 0), coalesce(max(length(hash)), 0), "
                              f"coalesce(max(length(taken_at)), 0) FROM files WHERE {self._exported(live_only)}"
                              ).fetchone()
        return row[0], row[1], row[2], row[3]

    _EXPORTED_COLUMNS = ("vector", "path", "hash", "taken_at", "width", "height")

    def export_column(self, live_only: bool, column: str, chunk: int = 20_000) -> Iterator[list]:
        """One column of the rows export_sizes() counts, in id order, in lists of chunk values."""
        if column not in self._EXPORTED_COLUMNS:
            raise ValueError(column)
        last = -1
        while True:
            rows = self.db.execute(f"SELECT id, {column} FROM files NOT INDEXED WHERE {self._exported(live_only)} "
                                   "AND id > ? "
                                   "ORDER BY id LIMIT ?", [last, chunk]).fetchall()
            if not rows:
                return
            yield [r[1] for r in rows]
            last = rows[-1][0]

    def import_rows(self, items: Sequence[Imported], overwrite: bool,
                    binding: tuple[str, int] | None = None) -> tuple[int, int, int, int]:
        """Write imported vectors in one transaction: (added, replaced, kept, of those written
        the remote ones). A photo that
        already has a vector (live or offline) keeps it unless `overwrite`. `binding` (model,
        dim) is recorded with them where the library has no model yet."""
        added = replaced = kept = remote = 0
        now = time.time()
        with self.db.atomic():
            seq = self.next_seq()
            if binding and items and self.get_meta("dim") is None:
                self.set_meta("model", binding[0])
                self.set_meta("dim", str(binding[1]))
            known = self.known_paths([item.path for item in items])
            for item in items:
                before = known.get(item.path)
                if before is not None and before.has_vector and before.status in (LIVE, OFFLINE) and not overwrite:
                    kept += 1
                    continue
                # A photo of an offline folder stays offline (its folder's return restores it).
                away = before is not None and before.status == OFFLINE
                columns = {"path": item.path, "root_id": item.root_id, "size": item.size, "mtime_ns": item.mtime_ns,
                           "hash": item.hash, "width": item.width, "height": item.height, "taken_at": item.taken_at,
                           "status": OFFLINE if away else LIVE, "error": None, "indexed_at": now,
                           "vector": item.vector, "seq": seq, "remote": int(item.remote and not away)}
                remote += item.remote and not away
                if before is None:
                    added += 1
                else:
                    replaced += 1
                    # What a crawl read of the file stays where the import knows nothing better.
                    for name in ("root_id", "size", "mtime_ns", "hash", "width", "height", "taken_at"):
                        if columns[name] is None:
                            del columns[name]
                updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != "path")
                self.db.execute(f"INSERT INTO files({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
                                f"ON CONFLICT(path) DO UPDATE SET {updates}", list(columns.values()))
        return added, replaced, kept, remote

    def exact_duplicates(self) -> list[list[int]]:
        """Ids of the searchable photos that share their bytes (the content hash), in groups of
        two or more, each in id order."""
        groups: dict[str, list[int]] = {}
        for file_id, hash_ in self.db.execute(
                f"SELECT id, hash FROM files WHERE {self._SEARCHABLE} AND hash IN (SELECT hash FROM files "
                f"WHERE {self._SEARCHABLE} AND hash IS NOT NULL GROUP BY hash HAVING count(*) > 1) ORDER BY id"):
            groups.setdefault(hash_, []).append(file_id)
        return list(groups.values())

    def file_id(self, path: str) -> int | None:
        row = self.db.execute("SELECT id FROM files WHERE path = ?", [path]).fetchone()
        return row[0] if row else None


# The date a filter or `sort:` uses: the one the camera recorded, else the file's (local time).
_DATE = "coalesce(taken_at, strftime('%Y-%m-%dT%H:%M:%S', mtime_ns / 1000000000, 'unixepoch', 'localtime'))"


def _filter_sql(filters: Filters) -> tuple[str, list]:
    """A WHERE condition and its parameters for filters ("1" when there are none)."""
    import os

    clauses: list[str] = []
    params: list = []

    def any_of(parts: list[str]) -> None:
        clauses.append("(" + " OR ".join(parts) + ")")

    if filters.folders:
        parts = []
        for folder in filters.folders:
            collate = " COLLATE NOCASE" if filters.fold_case else ""
            parts.append(f"(path >= ?{collate} AND path < ?{collate})")
            params.extend(_prefix_range(folder))
        any_of(parts)
    if filters.folder_names:
        parts = []
        for name in filters.folder_names:
            parts.append("instr(lower(path), ?) > 0")
            params.append(f"{os.sep}{name}{os.sep}".lower())
        any_of(parts)
    if filters.after:
        clauses.append(f"{_DATE} >= ?")
        params.append(filters.after)
    if filters.before:
        clauses.append(f"{_DATE} < ?")
        params.append(filters.before)
    if filters.extensions:
        any_of(["path LIKE ?"] * len(filters.extensions))
        params.extend(f"%.{ext}" for ext in filters.extensions)
    if filters.cameras:
        any_of(["instr(lower(coalesce(camera_make, '') || ' ' || coalesce(camera_model, '')), ?) > 0"]
               * len(filters.cameras))
        params.extend(filters.cameras)
    if filters.places:
        clauses.append(f"id IN (SELECT file_id FROM places WHERE name IN ({', '.join('?' * len(filters.places))}))")
        params.extend(filters.places)
    for words in filters.words:  # each in order: an FTS5 phrase
        clauses.append("id IN (SELECT rowid FROM texts_fts WHERE texts_fts MATCH ?)")
        params.append(fts_phrase(words))
    if filters.near:
        lat, lon, km = filters.near
        dlat = km / 111.2
        dlon = km / max(1e-6, 111.32 * math.cos(math.radians(lat)))
        clauses.append("gps_lat BETWEEN ? AND ? AND (gps_lon BETWEEN ? AND ? OR ? > 180 OR ? < -180) "
                       "AND km(gps_lat, gps_lon, ?, ?) <= ?")
        params.extend([lat - dlat, lat + dlat, lon - dlon, lon + dlon, lon + dlon, lon - dlon, lat, lon, km])
    return (" AND ".join(clauses) or "1"), params


def fts_phrase(words: str) -> str:
    """An FTS5 query for words in this order: a phrase of the words alone (letters and digits),
    so that nothing typed is read as FTS5 syntax."""
    return '"' + " ".join(re.findall(r"\w+", words)) + '"'


def km(lat1: float | None, lon1: float | None, lat2: float, lon2: float) -> float | None:
    """Great-circle distance in km (haversine), registered in SQLite for near:."""
    if lat1 is None or lon1 is None:
        return None
    p1, p2 = math.radians(lat1), math.radians(lat2)
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 12742.0 * math.asin(min(1.0, math.sqrt(h)))


def _prefix_range(folder: str) -> tuple[str, str]:
    """The range of the path index that holds exactly the paths under folder ('0' follows '/')."""
    import os

    folder = folder.rstrip("/\\") or folder
    prefix = folder if folder.endswith(("/", "\\")) else folder + os.sep
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)
