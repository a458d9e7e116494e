"""Talking to a library's watch daemon from other commands: is it running, what does it say
of itself, hand it a request and wait for the answer, start and stop it.

The daemon's files in the library folder: `watch.pid`, `watch.log` (a detached daemon's
output) and `watch/`: `state.json` (for `clipsearch status`), `requests/` and `answers/`.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from .._files import write_whole
from ..catalog.lock import DAEMON_PID_FILE, is_held, recorded_daemon_pid
from ..errors import ClipsearchError, DaemonError, LibraryBusy
from ..records import DaemonState
from . import protocol

PID_FILE, LOG_FILE, STATE_DIR = DAEMON_PID_FILE, "watch.log", "watch"
_T = TypeVar("_T")
_W = TypeVar("_W")


def _write_json(path: Path, value: dict) -> None:
    """Written whole or not at all (readers never see half a file); messages and state, not
    worth a flush to disk."""
    write_whole(path, json.dumps(value), durable=False)


def daemon_pid(home: Path) -> int | None:
    """The pid of the watch daemon of this library, if one runs (its pid file, and the write
    lock held)."""
    try:
        pid = int(recorded_daemon_pid(Path(home)) or "")
    except ValueError:
        return None
    return pid if is_held(Path(home)) else None


def daemon_state(home: Path) -> DaemonState | None:
    """What the running daemon last said of itself, or None if none runs."""
    pid = daemon_pid(home)
    if pid is None:
        return None
    try:
        data = json.loads((Path(home) / STATE_DIR / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    return DaemonState(pid, data.get("state", "starting"), data.get("started_at") or time.time(),
                       data.get("backlog", 0), data.get("offline", []), data.get("polled", []), data.get("error"),
                       data.get("indexed", 0), data.get("deleted", 0))


def ask_daemon(home: Path, request: protocol.Request, timeout: float | None = None) -> protocol.Answer:
    """Hand a request to the running daemon and wait for its answer. Raises DaemonError if
    the daemon refuses it (with its reason) or stops first."""
    home = Path(home)
    name = f"{time.time():.6f}-{secrets.token_hex(4)}.json"
    requests = home / STATE_DIR / "requests"
    requests.mkdir(parents=True, exist_ok=True)
    _write_json(requests / name, protocol.encode(request))
    answer_path = home / STATE_DIR / "answers" / name
    deadline = None if timeout is None else time.monotonic() + timeout
    while not answer_path.exists():
        if daemon_pid(home) is None:
            (requests / name).unlink(missing_ok=True)
            raise DaemonError("the watch daemon stopped before it answered; run the command again")
        if deadline is not None and time.monotonic() > deadline:
            raise DaemonError("the watch daemon did not answer in time; it carries on with the request")
        time.sleep(0.1)
    try:
        data = json.loads(answer_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DaemonError(f"the watch daemon's answer cannot be read ({exc})") from None
    finally:
        answer_path.unlink(missing_ok=True)
    answer = protocol.decode_answer(data)
    if isinstance(answer, protocol.Refused):
        raise DaemonError(answer.error)
    return answer


def write_or_hand_over(home: Path, open_writer: Callable[[], _W], work: Callable[[_W], _T],
                       request: protocol.Request, on_handover: Callable[[int], None] | None = None
                       ) -> _T | protocol.Answer:
    """work(writer) under the library's write lock; while the watch daemon holds the lock, the
    request is handed to the daemon instead (`on_handover(pid)` is told) and its answer
    returned. LibraryBusy if another command holds the lock."""
    try:
        writer = open_writer()
    except LibraryBusy:
        pid = daemon_pid(home)
        if pid is None:
            raise
        if on_handover:
            on_handover(pid)
        return ask_daemon(home, request)
    with writer:  # type: ignore[attr-defined]
        return work(writer)


def start_detached(home: Path, arguments: Sequence[str], timeout: float = 60.0) -> int:
    """Start `clipsearch watch ARGUMENTS` in the background (output to HOME/watch.log) and
    wait until it watches; returns its pid."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    running = daemon_pid(home)
    if running is not None:
        raise ClipsearchError(f"the watch daemon already runs (process {running}); `clipsearch watch --stop` stops it")
    logfile = open(home / LOG_FILE, "ab")
    options: dict[str, Any] = {}
    if sys.platform == "win32":  # pragma: no cover - Windows only
        options["creationflags"] = subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP
    else:
        options["start_new_session"] = True
    with logfile:
        child = subprocess.Popen([sys.executable, "-m", "clipsearch.cli", "--home", str(home), "watch", *arguments],
                                 stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT, **options)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            tail = (home / LOG_FILE).read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
            raise ClipsearchError("the watch daemon did not start: " + (" / ".join(tail) or f"exit {child.returncode}"))
        if daemon_pid(home) == child.pid:
            return child.pid
        time.sleep(0.1)
    return child.pid  # still starting (a large library's first reconcile): it carries on


def stop_daemon(home: Path, timeout: float = 60.0) -> int | None:
    """Ask the running daemon to stop and wait until it has; its pid, or None if none ran."""
    home = Path(home)
    pid = daemon_pid(home)
    if pid is None:
        return None
    requests = home / STATE_DIR / "requests"
    requests.mkdir(parents=True, exist_ok=True)
    request = requests / f"{time.time():.6f}-stop.json"
    _write_json(request, protocol.encode(protocol.StopRequest()))
    if sys.platform != "win32":
        import signal

        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + timeout
    while is_held(home):
        if time.monotonic() > deadline:
            raise ClipsearchError(f"the watch daemon (process {pid}) has not stopped yet; it finishes the batch in "
                                  "hand first")
        time.sleep(0.1)
    request.unlink(missing_ok=True)
    return pid
