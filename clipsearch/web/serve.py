"""`clipsearch serve`: the gallery on uvicorn, its address printed and opened."""

from __future__ import annotations

import re
import secrets
import threading
import webbrowser
from typing import Any

from ..errors import ClipsearchError
from ..library import Library
from ..viewer import reveal
from .security import is_loopback


def run(library: Library, *, host: str, port: int, token: str | None, open_browser: bool, console: Any) -> None:
    import uvicorn

    from .app import create_app

    local = is_loopback(host)
    if token is not None and not re.fullmatch(r"[A-Za-z0-9_-]{16,}", token):
        raise ClipsearchError("--token: use at least 16 letters, digits, '-' or '_' (or leave it out to get one)")
    if not local and not token:
        token = secrets.token_urlsafe(18)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}/" + (f"?token={token}" if token else "")
    # Folders open on this computer's desktop: only for its own page.
    app = create_app(library, host=host, port=port, token=token, opener=reveal if local else None)
    console.print(f"clipsearch gallery at [bold]{url}[/bold]  (Ctrl-C stops it)")
    if not local:
        console.print(f"Listening on {host}: other computers can reach it with the token in that address. "
                      "Anyone who has the address can see your photos.")
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            server_header=False, date_header=False)
    server = uvicorn.Server(config)
    if open_browser:
        def opener() -> None:
            for _ in range(100):  # wait until it listens
                if server.started:
                    webbrowser.open(url)
                    return
                threading.Event().wait(0.1)

        threading.Thread(target=opener, daemon=True).start()
    try:
        server.run()
    except (OSError, SystemExit) as exc:  # uvicorn exits (3) when it cannot bind
        if server.started:
            raise
        detail = exc.strerror if isinstance(exc, OSError) else "in use by another program? try --port"
        raise ClipsearchError(f"cannot listen on {host}:{port} ({detail})") from None
    if not server.started:
        raise ClipsearchError(f"cannot listen on {host}:{port} (in use by another program? try --port)")
