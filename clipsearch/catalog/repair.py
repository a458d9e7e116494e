"""Checking a catalog, and recovering what can be read from a damaged one into a new one.

SQLite's `.recover` lives in its command-line shell, not in the library Python links, so
the rows are read the careful way: each table in rowid order until a read fails, then
ahead in doubling steps to the next readable row (and back by halving to the first one),
so an unreadable page costs the rows on it and nothing more. Every value is checked
before it goes into the new catalog: a vector of the wrong length or with NaNs is dropped
(that photo is embedded again by the next crawl).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from pathlib import Path
from typing import Iterator

from ..records import Recovery

_FILE_COLUMNS = ("id", "path", "root_id", "size", "mtime_ns", "hash", "width", "height", "format", "taken_at",
                 "camera_make", "camera_model", "gps_lat", "gps_lon", "status", "error", "indexed_at", "vector")
_LATER_FILE_COLUMNS = ("remote",)  # added by migrations: read where the damaged catalog has them
_ROOT_COLUMNS = ("id", "path", "exclude", "added_at", "crawled_at", "options")
_STATUSES = ("live", "deleted", "failed", "offline")
_BATCH = 2000


def check(path: Path) -> list[str]:
    """SQLite's integrity check of the catalog at path: [] if it is sound, else what is wrong
    (at most 10 lines)."""
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            lines = [row[0] for row in conn.execute("PRAGMA integrity_check(10)")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    return [] if lines == ["ok"] else lines


def set_aside(path: Path) -> Path:
    """Rename the catalog and its -wal/-shm files to catalog.damaged-<time>.db*, keeping them
    together (SQLite finds a WAL by name); returns the new path of the database file."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kept = path.with_name(f"{path.stem}.damaged-{stamp}{path.suffix}")
    for suffix in ("-wal", "-shm", ""):
        source = Path(f"{path}{suffix}")
        if source.exists():
            os.replace(source, f"{kept}{suffix}")
    return kept


def recover(damaged: Path, store, fallback_model: tuple[str, int] | None = None) -> Recovery:
    """Copy every readable, valid row of the catalog at `damaged` into `store` (a new, empty
    Store). `fallback_model` (model, dim) is used when the damaged catalog's own record of
    its model cannot be read."""
    result = Recovery()
    try:
        conn = sqlite3.connect(f"{damaged.as_uri()}?mode=ro", uri=True)
        # A file shorter than its header says (truncated) is refused whole unless the schema
        # is "writable"; on a read-only connection that only lifts the check.
        conn.execute("PRAGMA writable_schema = ON")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        result.problems.append(f"nothing could be read: {exc}")
        conn = None
    try:
        meta = dict(_rows(conn, "meta", ("key", "value"), result)) if conn else {}
        result.model = meta.get("model") or (fallback_model[0] if fallback_model else None)
        dim = meta.get("dim") or (fallback_model[1] if fallback_model else None)
        result.dim = int(dim) if dim and str(dim).isdigit() else None
        with store.db.atomic():
            store.next_seq()
            if result.model:
                store.set_meta("model", result.model)
            if result.dim:
                store.set_meta("dim", str(result.dim))
        if conn is not None:
            _copy_roots(conn, store, result)
            _copy_files(conn, store, result)
    finally:
        if conn is not None:
            conn.close()
    return result


def _copy_roots(conn: sqlite3.Connection, store, result: Recovery) -> None:
    rows = []
    for row in _rows(conn, "roots", _ROOT_COLUMNS, result):
        record = dict(zip(_ROOT_COLUMNS, row))
        if not isinstance(record["path"], str) or not isinstance(record["id"], int):
            continue
        record["exclude"] = _json_or(record["exclude"], "[]")
        record["options"] = _json_or(record["options"], "{}")
        rows.append(record)
    with store.db.atomic():
        for record in rows:
            store.db.execute(f"INSERT OR IGNORE INTO roots({', '.join(_ROOT_COLUMNS)}) "
                             f"VALUES ({', '.join('?' * len(_ROOT_COLUMNS))})", list(record.values()))
    result.roots = len(rows)


def _copy_files(conn: sqlite3.Connection, store, result: Recovery) -> None:
    nbytes = result.dim * 4 if result.dim else None
    columns = _FILE_COLUMNS + tuple(c for c in _LATER_FILE_COLUMNS if _has_column(conn, "files", c))
    batch: list[list] = []
    highest = 0

    def flush() -> None:
        with store.db.atomic():
            seq = store.next_seq()  # every recovered row is new to the new catalog's forest
            for values in batch:
                store.db.execute(f"INSERT OR IGNORE INTO files({', '.join(columns)}, seq) "
                                 f"VALUES ({', '.join('?' * (len(columns) + 1))})", [*values, seq])
        batch.clear()

    for row in _rows(conn, "files", columns, result):
        record = dict(zip(columns, row))
        # Imported photos outside the library's folders have no root.
        if not (isinstance(record["id"], int) and isinstance(record["path"], str)
                and (isinstance(record["root_id"], int) or (record["root_id"] is None and record["status"] == "live"))
                and record["status"] in _STATUSES):
            continue
        if "remote" in record and record["remote"] not in (0, 1):
            record["remote"] = 0
        highest = max(highest, record["id"])
        if record["vector"] is not None and not _usable_vector(record["vector"], nbytes):
            record["vector"] = None
            result.vectors_dropped += 1
        result.files += 1
        result.with_vector += record["status"] == "live" and record["vector"] is not None
        batch.append(list(record.values()))
        if len(batch) >= _BATCH:
            flush()
    if batch:
        flush()
    # Rows are never deleted, so ids run 1..highest without gaps: each missing one was lost.
    # The path index, if it can still be read, knows of the rows above the highest as well.
    try:
        catalogued = conn.execute("SELECT count(path) FROM files INDEXED BY idx_files_path").fetchone()[0]
    except sqlite3.DatabaseError:
        catalogued = highest
    result.unreadable = max(0, highest - result.files, catalogued - result.files)


def _has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    try:
        conn.execute(f"SELECT {column} FROM {table} LIMIT 0")
        return True
    except sqlite3.DatabaseError:
        return False


def _usable_vector(blob, nbytes: int | None) -> bool:
    import numpy as np

    if not isinstance(blob, bytes) or nbytes is None or len(blob) != nbytes:
        return False
    vector = np.frombuffer(blob, dtype=np.float32)
    norm = float(np.linalg.norm(vector)) if np.isfinite(vector).all() else math.nan
    return abs(norm - 1.0) < 1e-2


def _json_or(value, default: str) -> str:
    try:
        json.loads(value)
        return value
    except (TypeError, ValueError):
        return default


def _rows(conn: sqlite3.Connection, table: str, columns: tuple[str, ...], result: Recovery) -> Iterator[tuple]:
    """The readable rows of table in rowid order, skipping unreadable stretches."""
    select = f"SELECT {', '.join(columns)}, rowid FROM {table} WHERE rowid > ? ORDER BY rowid"
    after = -(1 << 62)
    try:
        bound = conn.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0]
    except sqlite3.DatabaseError:
        bound = None
    if bound is None:
        # The right edge of the table is unreadable: no id is above the rows the file could hold.
        bound = 1 + os.path.getsize(conn.execute("PRAGMA database_list").fetchone()[2]) // 32
    while True:
        try:
            for row in conn.execute(select, [after]):
                after = row[-1]
                yield row[:-1]
            return
        except sqlite3.DatabaseError as exc:
            if len(result.problems) < 10:
                result.problems.append(f"{table}: rows after id {after} unreadable ({exc})")
            following = _next_readable(conn, table, columns, after, bound)
            if following is None:
                return
            after = max(following - 1, after + 1)  # always onwards, whatever the probe said


def _next_readable(conn: sqlite3.Connection, table: str, columns: tuple[str, ...], after: int,
                   bound: int) -> int | None:
    """The smallest rowid above `after` from which whole rows can be read again, or None."""
    probe = f"SELECT {', '.join(columns)} FROM {table} WHERE rowid >= ? ORDER BY rowid LIMIT 1"

    def readable(start: int) -> bool:
        try:
            conn.execute(probe, [start]).fetchone()
            return True
        except sqlite3.DatabaseError:
            return False

    low, step = max(after, 0) + 1, 1
    while not readable(low + step):  # doubling: past the unreadable stretch
        step *= 2
        if low + step > bound:
            return None
    bad, good = low + step // 2, low + step  # halving: back to its first readable id
    if step == 1:
        bad = low
    while good - bad > 1:
        middle = (bad + good) // 2
        bad, good = (bad, middle) if readable(middle) else (middle, good)
    return good if not readable(bad) else bad
