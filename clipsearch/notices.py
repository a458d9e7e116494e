"""Things worth telling the user that are not errors (an index not used and why, offline
folders left out): said by the services, shown by whichever face asks, each once."""

from __future__ import annotations

import threading


class Notices:
    """A queue of notices; the same text is queued once for the life of the holder."""

    def __init__(self) -> None:
        self._pending: list[str] = []
        self._said: set[str] = set()
        self._lock = threading.Lock()

    def say(self, text: str) -> None:
        with self._lock:
            if text not in self._said:
                self._said.add(text)
                self._pending.append(text)

    def tell(self, text: str) -> None:
        """Queue text even if it was said before (what this search's words were read as)."""
        with self._lock:
            self._pending.append(text)

    def take(self) -> list[str]:
        """The notices not shown yet."""
        with self._lock:
            pending, self._pending = self._pending, []
        return pending
