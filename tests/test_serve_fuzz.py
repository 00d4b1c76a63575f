"""The real `newsletter serve` (uvicorn in its own process) against a few hundred hostile
requests: each gets a 4xx, nobody is unsubscribed, and the log holds no traceback, token
or address."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

import newsletter
from newsletter.ledger import ALL_LISTS, SqliteLedger
from newsletter.unsubscribe import opaque_token, token
from tests.conftest import ISSUE_DATE, Project, clean_env

SECRET = "a-long-random-test-secret-for-the-fuzzer"
PACKAGE = Path(newsletter.__file__).resolve().parent
ADA = "ada@example.com"


@pytest.fixture
def serve(project: Project) -> Iterator[tuple[int, Callable[[], str]]]:
    """`newsletter serve` on a free loopback port after one send: its port, and a
    function that stops it and returns all it logged."""
    env = {**clean_env(), "NEWSLETTER_UNSUBSCRIBE__SECRET": SECRET}
    assert project.run("send", "--date", ISSUE_DATE, env=env).returncode == 0
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "serve"], cwd=project.root,
        env={**env, "NEWSLETTER_SERVE__PORT": str(port), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    assert server.stdout is not None
    log: list[str] = []
    # Drained all along: a full pipe would stop the server at its next log line.
    drain = threading.Thread(target=log.extend, args=(server.stdout,))

    def stop() -> str:
        server.terminate()
        server.wait(timeout=20)
        if drain.is_alive() or drain.ident is not None:
            drain.join(timeout=20)
        return "".join(log)

    try:
        for line in server.stdout:  # up when it says so, not after some time
            log.append(line)
            if "Uvicorn running on" in line:
                break
        drain.start()
        yield port, stop
    finally:
        stop()


def status_of(port: int, request: bytes) -> int:
    """Send raw bytes and read the status code (0 when the server closed without
    answering). Only the head is read, so a Content-Length lie cannot keep us waiting; no
    half-close, which uvicorn rightly takes for a client that left."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        with contextlib.suppress(OSError):  # refused mid-way: its answer still counts
            conn.sendall(request)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer and (chunk := conn.recv(65536)):
                answer += chunk
        except OSError:
            pass
    head = answer.split(b"\r\n", 1)[0].split()
    return int(head[1]) if len(head) > 1 and head[1].isdigit() else 0


def hostile_targets() -> list[str]:
    good = opaque_token(SECRET, "morning-brief", ADA)
    hmac_ada = token(SECRET, "morning-brief", ADA)
    return [
        f"/unsubscribe?t={good[:-1]}", f"/unsubscribe?t={good}A", f"/unsubscribe?t={good[4:]}",
        f"/unsubscribe?t={good}%00", f"/unsubscribe?t={good}&t=x", f"/unsubscribe?t={good}%ff",
        f"/unsubscribe?t={opaque_token('some-other-projects-secret!', 'morning-brief', ADA)}",
        f"/unsubscribe?t={opaque_token(SECRET, 'evening-brief', ADA)}",  # no such list
        f"/unsubscribe?list=morning-brief&email=linus%40example.com&token={hmac_ada}",
        f"/unsubscribe?list=evening-brief&email={quote(ADA)}&token={hmac_ada}",
        f"/unsubscribe?list=morning-brief&email={quote(ADA)}&token={hmac_ada[:-1]}",
        f"/unsubscribe?list=morning-brief&email={quote(ADA)}&token={good}",  # wrong kind
        f"/unsubscribe?token={hmac_ada}&email={quote(ADA)}",
        "/unsubscribe?t=%ff%fe", "/unsubscribe?t=%c0%ae", "/unsubscribe?%ff=%ff&t",
        "/unsubscribe?" + "t=A&" * 3000, "/unsubscribe?t=" + "A" * 8000, "/unsubscribe",
        "/unsubscribe?list=morning-brief", "/unsubscribe?list=%00&email=%00&token=%00",
        f"/unsubscribe/?t={good}", f"/unsubscribe//?t={good}", f"//unsubscribe?t={good}",
        f"/UNSUBSCRIBE?t={good[:-2]}", "/healthz/", "/healthz/..", "/",
        "/archive/%2e%2e/newsletter.sqlite3", "/archive/..%2funsubscribe.key",
        "/archive/morning-brief/%2e%2e/%2e%2e/unsubscribe.key", "/archive//etc/passwd",
        "/archive/morning-brief/%00.html", "/archive/%ff.html", "/archive/morning-brief%5c..",
        "/archive/morning-brief/..\\..\\unsubscribe.key", "/archive/.git/", "/archive/x/",
        f"/archive/morning-brief/{ISSUE_DATE}.html/", f"/archive/morning-brief/{ISSUE_DATE}",
        "/archive/" + "a/" * 2000, "/archive/" + "x" * 300 + ".html", "/mail/", "*",
        "/archive/morning-brief/ada@example.com.eml", "/outbox/unsubscribe.key",
    ]


def test_hostile_requests_get_a_4xx_and_change_nothing(project: Project, serve) -> None:
    port, stop = serve
    rng = random.Random(20261124)  # the same requests in every run
    methods = ["GET", "POST", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE", "PATCH", "FOO"]
    headers = ["", "Host: evil.example\r\n", "Host: \r\n", "X-Forwarded-Host: evil.example\r\n",
               "Content-Length: 100000\r\n", "Content-Length: -1\r\n",
               "Transfer-Encoding: chunked\r\n", "Content-Type: multipart/form-data\r\n",
               "Content-Length: 1\r\nContent-Length: 2\r\n", "X-Long: " + "a" * 8000 + "\r\n"]
    bodies = [b"", b"List-Unsubscribe=One-Click", b"t=" + b"A" * 60,
              b"\xff\xfe\x00" * 100, b"x" * 200_000]
    answers: dict[int, list[str]] = {}
    for target in hostile_targets():
        for _ in range(6):
            method, header, body = rng.choice(methods), rng.choice(headers), rng.choice(bodies)
            head = (f"{method} {target} HTTP/1.1\r\nHost: news.example.com\r\n{header}"
                    "Connection: close\r\n")
            if body and "Content-Length" not in header and "chunked" not in header:
                head += f"Content-Length: {len(body)}\r\n"
            status = status_of(port, head.encode("latin-1") + b"\r\n" + body)
            answers.setdefault(status, []).append(f"{method} {target[:60]} {header[:30]!r}")
    assert set(answers) <= set(range(400, 500)), {s: a[:40] for s, a in answers.items()
                                                   if not 400 <= s < 500}
    ledger = SqliteLedger(project.outbox / "newsletter.sqlite3")
    try:
        assert ledger.suppressed("morning-brief") == {} and ledger.suppressed(ALL_LISTS) == {}
    finally:
        ledger.close()
    text = stop()
    # uvicorn's h11 protocol itself can still log a traceback of its own ("Fatal error:
    # protocol.data_received() call failed", a 400 it cannot send); none may pass the app.
    assert "Exception in ASGI application" not in text
    # Our package's folder, not the word: a clone in a folder called newsletter has it in
    # every path of its venv, uvicorn's own tracebacks included.
    assert f"{PACKAGE}{os.sep}" not in text
    # Queries never reach the log (paths do: the .eml probe names her in its path).
    for private in (opaque_token(SECRET, "morning-brief", ADA)[:20],
                    token(SECRET, "morning-brief", ADA), "?t=", SECRET):
        assert private not in text, private


@pytest.mark.parametrize("target", ["/unsubscribe?t=AAAA", "/archive/x.html", "/healthz",
                                    "/nowhere"])
def test_a_malformed_body_arriving_late_leaves_no_traceback(serve, target: str) -> None:
    # uvicorn answers the bad chunk with its own 400 while the app is still working; the
    # app's answer that follows must not end in "Exception in ASGI application" and a
    # traceback. (uvicorn still notes that the app's answer was not completed.)
    port, stop = serve
    for method in ("POST", "GET", "PUT"):
        for _ in range(4):
            status = status_of(port, f"{method} {target} HTTP/1.1\r\nHost: a\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n".encode() + b"x" * 200_000)
            assert 400 <= status < 500 or status == 0
    text = stop()
    assert "Traceback" not in text and "Exception" not in text, text[-3000:]
