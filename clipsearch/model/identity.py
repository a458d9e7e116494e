"""Model identity: a spec and a fingerprint of the weights behind it.

A spec names weights, but a local file can change under the same name (a checkpoint
retrained in place, a config edited). The fingerprint is a SHA-256 over the local files a
spec names (the config and the checkpoint; named hub weights have none: their name is their
identity). Hashing a 600 MB checkpoint takes about half a second, so each file's hash is kept
in the model cache (`weights.json`), keyed by its real path, size, mtime and inode: a file
is hashed again only when one of those changes, and a file touched but not changed keeps
its fingerprint.

The catalog records the fingerprint of the weights its vectors were made with (meta
`model_weights`, migration 8); ModelPolicy compares it with the weights there now before a
crawl, the daemon or a search uses them. The saved towers record it too.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from .._files import write_whole
from .spec import parse_spec

CACHE_FILE = "weights.json"
UNRECORDED = "unrecorded"  # a catalog made before fingerprints: the next writer records what it finds
_KEEP = 200  # files remembered in the cache
_lock = threading.Lock()
_memo: dict[tuple[str, tuple[int, int, int]], str] = {}


def weight_files(spec: str) -> list[str]:
    """The local files a spec names (config, checkpoint), absolute; [] for named weights."""
    parsed = parse_spec(spec)
    return [path for path in (parsed.arch, parsed.pretrained) if path and os.path.isfile(path)]


def fingerprint(spec: str, cache: str | os.PathLike | None = None) -> str:
    """The fingerprint of the weights spec names now: "" for named weights, else the hex
    SHA-256 of the files' own hashes."""
    files = weight_files(spec)
    if not files:
        return ""
    digest = hashlib.sha256()
    for path in files:
        digest.update(file_hash(path, cache).encode())
    return digest.hexdigest()


def file_hash(path: str, cache: str | os.PathLike | None = None) -> str:
    """SHA-256 of a file's bytes, computed once for each (size, mtime, inode) it has had."""
    real = os.path.realpath(path)
    st = os.stat(real)
    stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
    with _lock:
        known = _memo.get((real, stamp))
    if known is not None:
        return known
    entries = _read_cache(cache)
    entry = entries.get(real)
    if entry and tuple(entry.get("stamp", ())) == stamp and isinstance(entry.get("sha256"), str):
        digest = entry["sha256"]
    else:
        hasher = hashlib.sha256()
        with open(real, "rb") as handle:
            while block := handle.read(1 << 22):
                hasher.update(block)
        digest = hasher.hexdigest()
        entries.pop(real, None)
        entries[real] = {"stamp": list(stamp), "sha256": digest}
        _write_cache(cache, dict(list(entries.items())[-_KEEP:]))
    with _lock:
        _memo[(real, stamp)] = digest
    return digest


def _read_cache(cache: str | os.PathLike | None) -> dict:
    if cache is None:
        return {}
    try:
        data = json.loads((Path(cache) / CACHE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(cache: str | os.PathLike | None, entries: dict) -> None:
    if cache is None:
        return
    try:
        Path(cache).mkdir(parents=True, exist_ok=True)
        write_whole(Path(cache) / CACHE_FILE, json.dumps(entries, indent=1), durable=False)
    except OSError:
        pass  # a read-only cache: the file is hashed again next time, nothing worse


def describe(spec: str) -> str:
    """The files behind a spec, as a message names them."""
    files = weight_files(spec)
    if len(files) == 1:
        return f"the file {files[0]}"
    return "the files " + ", ".join(files) if files else f"the weights of {spec}"
