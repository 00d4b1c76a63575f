"""The real `serve` app under a real uvicorn server on loopback, and a plain HTTP client."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from urllib.parse import urlsplit

import uvicorn
from starlette.types import ASGIApp


@contextmanager
def running(app: ASGIApp) -> Iterator[str]:
    """Serve `app` on a loopback socket bound first (no port race); yield its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    ready = threading.Event()
    for _ in range(1000):  # wait for the server to be up, not for time to pass
        if server.started or not thread.is_alive():
            break
        ready.wait(0.01)
    try:
        assert server.started
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@dataclass
class Answer:
    status: int
    headers: Message
    body: str


def call(url: str, method: str = "GET", body: bytes | None = None,
         headers: dict[str, str] | None = None, timeout: float = 10) -> Answer:
    """One request, redirects not followed; `url` may hold any bytes a client could send."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        sent = dict(headers or {})
        if body is not None:
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        conn.request(method, target, body=body, headers=sent)
        response = conn.getresponse()
        return Answer(response.status, response.headers,
                      response.read().decode("utf-8", "replace"))
    finally:
        conn.close()


def one_click(url: str) -> Answer:
    """What a mail client sends for RFC 8058 one-click unsubscribe."""
    return call(url, "POST", b"List-Unsubscribe=One-Click")
