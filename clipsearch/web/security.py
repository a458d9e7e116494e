"""The gallery's guard: who may talk to it, and from where.

- Bound to loopback (the default), only requests whose Host header names this machine's
  loopback address and port are answered: a web page elsewhere that makes its own name
  resolve to 127.0.0.1 (DNS rebinding) gets 421, not the user's photos.
- Bound to any other address, a token is required: once in the URL (`?token=`), after
  which an HttpOnly, SameSite=Strict cookie carries it. Without it: 401.
- A POST from a page of another origin (its Origin header) is refused: another site
  cannot make the gallery open folders or build ZIPs in the user's name.
- Every answer says: no sniffing, no framing, no referrer to other sites, scripts and styles
  from here only.
"""

from __future__ import annotations

import hmac
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

COOKIE = "clipsearch_token"
_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),  # no-referrer would make form posts say Origin: null
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
     b"frame-ancestors 'none'; form-action 'self'"),
]


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1", "[::1]") or host.startswith("127.")


class Guard:
    """ASGI middleware around the gallery app."""

    def __init__(self, app, host: str, port: int, token: str | None):
        self.app = app
        self.port = port
        self.token = token
        self.loopback = is_loopback(host)
        if not self.loopback and not token:
            raise ValueError("a gallery bound to a non-loopback address needs a token")
        self.names = {f"{name}:{port}" for name in ("127.0.0.1", "localhost", "[::1]")}
        if port == 80:
            self.names |= {"127.0.0.1", "localhost", "[::1]"}
        if host.startswith("127.") and host != "127.0.0.1":
            self.names.add(f"{host}:{port}")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if self.loopback and host.lower() not in self.names:
            return await _refuse(send, 421, "This page answers only at its own address on this computer "
                                            f"(http://127.0.0.1:{self.port}/).")
        set_cookie = None
        if self.token:
            given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
            cookie = SimpleCookie(headers.get("cookie", ""))
            held = cookie[COOKIE].value if COOKIE in cookie else None
            if given is not None and hmac.compare_digest(given.encode(), self.token.encode()):
                set_cookie = f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
            elif held is None or not hmac.compare_digest(held.encode(), self.token.encode()):
                return await _refuse(send, 401, "This gallery needs its token: open the address that "
                                                "`clipsearch serve` printed, with ?token=... in it.")
        if scope["method"] not in ("GET", "HEAD"):
            origin = headers.get("origin")
            if origin is not None and (origin == "null" or urlsplit(origin).netloc.lower() != host.lower()):
                return await _refuse(send, 403, "Refused: the request came from another web site.")

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", []), *_HEADERS]
                if set_cookie:
                    message["headers"].append((b"set-cookie", set_cookie.encode("latin-1")))
            await send(message)

        return await self.app(scope, receive, send_with_headers)


async def _refuse(send, status: int, text: str) -> None:
    body = text.encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), *_HEADERS]})
    await send({"type": "http.response.body", "body": body})
