"""Schema versions of the catalog: numbered migration functions, applied in order.

The version lives in SQLite's own `PRAGMA user_version`, so a catalog says by itself which
migrations it has had. Add a function `mNNN_what_it_does(db)` to MIGRATIONS to change the
schema; never edit one that has shipped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite_utils


def m001_create_tables(db: sqlite_utils.Database) -> None:
    db.table("meta").create({"key": str, "value": str}, pk="key", not_null={"value"})
    db.table("roots").create(
        {"id": int, "path": str, "exclude": str, "added_at": float, "crawled_at": float},
        pk="id", not_null={"path"}, defaults={"exclude": "[]"},
    )
    db.table("roots").create_index(["path"], unique=True)
    db.table("files").create(
        {
            "id": int, "path": str, "root_id": int, "size": int, "mtime_ns": int, "hash": str,
            "width": int, "height": int, "format": str, "taken_at": str,
            "camera_make": str, "camera_model": str, "gps_lat": float, "gps_lon": float,
            # live: searchable; deleted: vanished from disk; failed: could not be read or decoded.
            "status": str, "error": str, "indexed_at": float, "vector": bytes,
            # Write sequence: rows written after the forest was built have a higher seq.
            "seq": int,
        },
        pk="id", not_null={"path", "status", "seq"}, foreign_keys=[("root_id", "roots", "id")],
    )
    db.table("files").create_index(["path"], unique=True)
    for column in ("hash", "seq", "root_id", "status"):
        db.table("files").create_index([column])


def m002_root_options(db: sqlite_utils.Database) -> None:
    # Scan flags given when a folder was crawled (extensions, hidden files, symlinks), so
    # that a later plain `clipsearch crawl` walks it the same way.
    db.table("roots").add_column("options", str, not_null_default="{}")


def m003_status_indexes(db: sqlite_utils.Database) -> None:
    # `status` counts photos per folder and files not embedded yet. With vectors inline, rows
    # span pages, and visiting 100k of them took 0.3 s; these indexes answer both alone.
    db.execute("DROP INDEX IF EXISTS idx_files_status")
    db.execute("CREATE INDEX idx_files_status_root ON files(status, root_id)")
    db.execute("CREATE INDEX idx_files_unembedded ON files(status) WHERE vector IS NULL")


def m004_catalog_identity(db: sqlite_utils.Database) -> None:
    # A forest is served only against the catalog, and the write, it was built from: the
    # catalog gets an id of its own, and every write sequence number a random token (a
    # catalog made anew, or restored from a backup, reuses numbers but not tokens).
    import secrets

    db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('catalog_id', ?)", [secrets.token_hex(16)])
    db.execute("CREATE TABLE writes (seq INTEGER PRIMARY KEY, token TEXT NOT NULL)")
    db.execute("INSERT INTO writes(seq, token) SELECT coalesce(max(seq), 0), ? FROM files",
               [secrets.token_hex(8)])


def m005_filter_index(db: sqlite_utils.Database) -> None:
    # Query filters (in:, after:, before:, ext:, camera:) are counted and evaluated over the
    # searchable rows. The rows hold their vectors inline, so a scan of the table reads all of
    # them (0.3 s at 100k); this index holds every filtered column and is read instead (the
    # literal 'live' matches the queries in store.py, so SQLite can use the partial index).
    db.execute("CREATE INDEX idx_files_live_filter ON files(path, taken_at, mtime_ns, camera_make, camera_model) "
               "WHERE status = 'live' AND vector IS NOT NULL")


def m006_offline_roots(db: sqlite_utils.Database) -> None:
    # A root whose folder is missing (a drive unplugged) is offline, not emptied: its files get
    # status 'offline' and the root the time it went.
    db.table("roots").add_column("offline_since", float)


def m007_remote_rows(db: sqlite_utils.Database) -> None:
    # Vectors imported for photos that are not on this computer (`clipsearch import`): their
    # rows are searchable and shown as remote; a crawl that finds the file makes it local.
    db.execute("ALTER TABLE files ADD COLUMN remote INTEGER NOT NULL DEFAULT 0")


def m008_model_identity(db: sqlite_utils.Database) -> None:
    # The fingerprint of the weights the vectors were made with (model/identity.py), beside the
    # model's spec: a checkpoint changed under the same name is never mixed in. Catalogs made
    # before it get "unrecorded": the next writer records the weights it finds.
    db.execute("INSERT OR IGNORE INTO meta(key, value) SELECT 'model_weights', 'unrecorded' "
               "WHERE EXISTS (SELECT 1 FROM meta WHERE key = 'dim')")


def m009_words_and_places(db: sqlite_utils.Database) -> None:
    # What a CLIP vector does not hold (issue 24). Places: from each photo's GPS position, its
    # city, region and country (places.py), looked up by a pass after the crawl (place_at:
    # when; NULL: to do, and reset by every write of the row); `places` holds the folded names
    # a place: filter or a query word matches, one row each, so that a filter is an index
    # lookup. Words: the text read in a photo (ingest/ocr.py) by a second pass, kept with the
    # hash of the content it was read from (a changed photo is read again), and searched
    # through an FTS5 index over it (`texts_fts`, kept in step by triggers).
    for column in ("place_city", "place_area", "place_region", "place_country", "place_cc"):
        db.execute(f"ALTER TABLE files ADD COLUMN {column} TEXT")
    db.execute("ALTER TABLE files ADD COLUMN place_at REAL")
    db.execute("CREATE INDEX idx_files_unplaced ON files(id) WHERE gps_lat IS NOT NULL AND place_at IS NULL")
    # The library's distinct places, read by every query with words (is a word a place here?).
    db.execute("CREATE INDEX idx_files_place ON files(place_country, place_region, place_city, place_area, place_cc) "
               "WHERE place_country IS NOT NULL")
    db.execute("CREATE TABLE places (file_id INTEGER NOT NULL, name TEXT NOT NULL)")
    db.execute("CREATE INDEX idx_places_name ON places(name, file_id)")
    db.execute("CREATE INDEX idx_places_file ON places(file_id)")
    db.execute("CREATE TABLE texts (file_id INTEGER PRIMARY KEY, hash TEXT, text TEXT NOT NULL, read_at REAL)")
    db.execute("CREATE VIRTUAL TABLE texts_fts USING fts5(text, content='texts', content_rowid='file_id', "
               "tokenize='unicode61 remove_diacritics 2')")
    db.execute("CREATE VIRTUAL TABLE texts_vocab USING fts5vocab(texts_fts, 'row')")
    db.execute("CREATE TRIGGER texts_ai AFTER INSERT ON texts BEGIN "
               "INSERT INTO texts_fts(rowid, text) VALUES (new.file_id, new.text); END")
    db.execute("CREATE TRIGGER texts_ad AFTER DELETE ON texts BEGIN "
               "INSERT INTO texts_fts(texts_fts, rowid, text) VALUES ('delete', old.file_id, old.text); END")
    db.execute("CREATE TRIGGER texts_au AFTER UPDATE ON texts BEGIN "
               "INSERT INTO texts_fts(texts_fts, rowid, text) VALUES ('delete', old.file_id, old.text); "
               "INSERT INTO texts_fts(rowid, text) VALUES (new.file_id, new.text); END")


MIGRATIONS = [m001_create_tables, m002_root_options, m003_status_indexes, m004_catalog_identity,
              m005_filter_index, m006_offline_roots, m007_remote_rows, m008_model_identity,
              m009_words_and_places]


def migrate(db: sqlite_utils.Database) -> int:
    """Apply every migration the catalog has not had yet; returns the schema version."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        from ..errors import ClipsearchError

        raise ClipsearchError(
            f"this catalog has schema version {version}, newer than this clipsearch "
            f"understands ({len(MIGRATIONS)}); upgrade clipsearch")
    for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
        with db.atomic():
            step(db)
            db.execute(f"PRAGMA user_version = {number}")
    return len(MIGRATIONS)
