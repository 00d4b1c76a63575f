"""Sign-ups are answered before they are stored (signup.py): what a stopping `serve`, a
mail server that hangs, a second request and a proxy header do to them."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest

from newsletter.readers.store import NewReader
from tests.conftest import Project, clean_env
from tests.signup_site import SECRET, prepare, reader_row, serving
from tests.web_server import call


@pytest.fixture
def hanging_smtp() -> Iterator[int]:
    """A mail server that takes the connection and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    done.set()
    server.close()
    for conn in held:
        conn.close()


def test_sign_ups_answered_before_serve_stops_are_all_stored_though_mail_hangs(
        project: Project, hanging_smtp: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_UNSUBSCRIBE__SECRET", SECRET)
    prepare(project, "signup:\n  per_client_hour: 1000\n  per_address_hour: 100\n")
    text = project.settings.read_text(encoding="utf-8").replace(
        "port: 2525", f"port: {hanging_smtp}").replace("timeout: 5", "timeout: 3").replace(
        "backend: file", "backend: smtp")
    project.settings.write_text(text, encoding="utf-8")
    addresses = [f"reader{n}@example.net" for n in range(12)]
    with serving(project) as site:
        for address in addresses:
            assert site.post(email=address).status == 200
    # The first mail waited its 3 s timeout; the rest were stored without waiting.
    assert all(reader_row(project, "morning-brief", a) is not None for a in addresses)


def test_the_latest_request_of_a_pending_sign_up_is_what_gets_confirmed(
        tmp_path: object) -> None:
    from pathlib import Path

    from newsletter.ledger import SqliteLedger

    ledger = SqliteLedger(Path(str(tmp_path)) / "l.sqlite3")
    ledger.sign_up(NewReader("l", "victim@example.com", "You won! Call +1 555"))
    result, row = ledger.sign_up(NewReader("l", "victim@example.com", "Vic Tim", ("city",)))
    assert result == "pending" and row is not None
    assert (row.name, row.topics) == ("Vic Tim", ("city",))


def test_serve_counts_the_peer_not_a_forwarded_header_it_has_no_reason_to_believe(
        project: Project) -> None:
    """uvicorn's proxy_headers believe X-Forwarded-For from 127.0.0.1 by default: every
    client behind a pass-through proxy (or on this machine) could pick the address its
    rate limit counts. Without `signup.trusted_proxies` the peer is the client."""
    prepare(project, "signup:\n  per_client_hour: 3\n  per_address_hour: 100\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**clean_env(), "NEWSLETTER_UNSUBSCRIBE__SECRET": SECRET,
           "NEWSLETTER_SERVE__PORT": str(port), "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen([sys.executable, "-m", "newsletter", "serve"], cwd=project.root,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, errors="replace")
    try:
        assert server.stdout is not None
        for line in server.stdout:
            if "Uvicorn running on" in line:
                break
        threading.Thread(target=server.stdout.read, daemon=True).start()
        statuses = [call(f"http://127.0.0.1:{port}/subscribe/morning-brief", "POST",
                         urlencode({"email": f"r{n}@example.net"}).encode(),
                         {"X-Forwarded-For": f"198.51.100.{n}"}).status for n in range(5)]
    finally:
        server.terminate()
        server.wait(timeout=20)
    assert statuses == [200, 200, 200, 429, 429]


def test_the_confirm_page_shows_its_owner_the_name_and_topics_a_stranger_may_have_typed(
        project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """The form's name is anyone's text and the mail does not carry it: the page behind
    the mailbox owner's link shows what the button confirms, escaped."""
    monkeypatch.setenv("NEWSLETTER_UNSUBSCRIBE__SECRET", SECRET)
    prepare(project)
    with serving(project) as site:
        site.post("abendblatt", {"email": "leser@example.de",
                                 "name": "<b>Gewinn</b> 0800", "topics": ["culture"]})
        page = call(site.confirm_link("leser@example.de", "abendblatt"))
    assert page.status == 200
    assert "Anmeldung als &lt;b&gt;Gewinn&lt;/b&gt; 0800." in page.body
    assert "Themen: Culture." in page.body and "<b>Gewinn" not in page.body
