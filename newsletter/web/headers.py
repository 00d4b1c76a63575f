"""Security headers on every answer of `serve`, error pages included.

The app is wrapped from the outside, around Starlette's own error handling, so that a 404,
a 405 or even a 500 carries them too. A response that sets its own Content-Security-Policy
(the archive pages) keeps it.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The archive pages are our own HTML with inline CSS and remote images: no script, no
# plugin, no form, no base, no frame, nothing else loaded.
ARCHIVE_CSP = ("default-src 'none'; img-src https: data:; style-src 'unsafe-inline'; "
               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
# The unsubscribe pages post their form to themselves.
PAGE_CSP = ("default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'")

_ALWAYS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Unsubscribe URLs carry a reader's token: never pass them on to another site.
    "Referrer-Policy": "no-referrer",
}


class _ConnectionGone(Exception):
    """The server could not take our answer: it already answered the client itself (a 400
    for a malformed body that arrived while we were working) or the client left."""


class SecurityHeaders:
    """ASGI middleware: nosniff, no framing, no referrer, and a CSP unless one is set.

    Outermost, it also ends a request quietly when the server refuses the answer: the
    client already has one, and a traceback in the log would be a client's doing.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _ALWAYS.items():
                    headers[name] = value
                if "content-security-policy" not in headers:
                    headers["Content-Security-Policy"] = PAGE_CSP
            try:
                await send(message)
            except Exception as err:  # the server's own error, whatever its HTTP library
                raise _ConnectionGone from err

        try:
            await self.app(scope, receive, with_headers)
        except _ConnectionGone:
            return
