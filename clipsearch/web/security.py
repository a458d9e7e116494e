"""The gallery's guard: who may talk to it, and from where.

- Bound to loopback (the default), only requests whose Host header names this machine's
  loopback address and port are answered: a web page elsewhere that makes its own name
  resolve to 127.0.0.1 (DNS rebinding) gets 421, not the user's photos.
- Bound to any other address, a token is required: once in the URL (`?token=`), after
  which an HttpOnly, SameSite=Strict cookie carries it. Without it: 401.
- A POST from a page of another origin (its Origin header, or the browser's
  Sec-Fetch-Site) is refused: another site cannot make the gallery open folders or build
  ZIPs in the user's name; nor may it use the gallery's pages and pictures in its own
  (Sec-Fetch-Site: cross-site is answered only for the user's own navigation to a page).
- Every answer says: no sniffing, no framing, no referrer to other sites, scripts and styles
  from here only, not to be embedded by another site (Cross-Origin-Resource-Policy).
- Only HTTP: no websockets.
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import parse_qs, urlsplit

COOKIE = "clipsearch_token"  # with the port: cookies are shared by every port of a host
_HEADERS = [
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),  # no-referrer would make form posts say Origin: null
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
     b"frame-ancestors 'none'; form-action 'self'"),
]


def is_loopback(host: str) -> bool:
    """Whether host names this computer only: localhost, 127.x.x.x or ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def cookie_value(header: str, name: str) -> str | None:
    """The value of cookie `name` in a Cookie header, read leniently: another application's
    malformed cookie on the same host must not hide ours (http.cookies gives up on all)."""
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value.strip().strip('"')
    return None


class Guard:
    """ASGI middleware around the gallery app."""

    def __init__(self, app, host: str, port: int, token: str | None):
        self.app = app
        self.port = port
        self.token = token
        self.loopback = is_loopback(host)
        if not self.loopback and not token:
            raise ValueError("a gallery bound to a non-loopback address needs a token")
        self.cookie = f"{COOKIE}_{port}"
        self.names = {f"{name}:{port}" for name in ("127.0.0.1", "localhost", "[::1]")}
        if port == 80:
            self.names |= {"127.0.0.1", "localhost", "[::1]"}
        if host.startswith("127.") and host != "127.0.0.1":
            self.names.add(f"{host}:{port}")

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        if scope["type"] != "http":
            return None  # websockets: not served (the connection is closed unanswered)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if self.loopback and host.lower() not in self.names:
            return await _refuse(send, 421, "This page answers only at its own address on this computer "
                                            f"(http://127.0.0.1:{self.port}/).")
        set_cookie = None
        if self.token:
            given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
            held = cookie_value(headers.get("cookie", ""), self.cookie)
            if given is not None and hmac.compare_digest(given.encode(), self.token.encode()):
                set_cookie = f"{self.cookie}={self.token}; HttpOnly; SameSite=Strict; Path=/"
            elif held is None or not hmac.compare_digest(held.encode(), self.token.encode()):
                return await _refuse(send, 401, "This gallery needs its token: open the address that "
                                                "`clipsearch serve` printed, with ?token=... in it.")
        site = headers.get("sec-fetch-site", "")
        if scope["method"] not in ("GET", "HEAD"):
            origin = headers.get("origin")
            if origin is not None and (origin == "null" or urlsplit(origin).netloc.lower() != host.lower()):
                return await _refuse(send, 403, "Refused: the request came from another web site.")
            if site in ("cross-site", "same-site"):
                return await _refuse(send, 403, "Refused: the request came from another web site.")
        elif site == "cross-site" and headers.get("sec-fetch-mode") != "navigate":
            return await _refuse(send, 403, "Refused: another web site may not use this gallery's pictures.")

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
