"""The sign-up side of `serve` for tests: a real uvicorn, a clock the test moves, the
mails read back from the outbox with `email`, and the reader rows from the database."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest

from newsletter.ledger import SqliteLedger
from newsletter.readers.store import _COLUMNS, ReaderRow, _row
from newsletter.settings import load_settings
from newsletter.web import create_app
from newsletter.web.background import Background
from tests.conftest import SUBSCRIBERS_YAML, Project
from tests.web_server import Answer, call, running

SECRET = "a-long-random-test-secret-for-signups"
START = 1_800_000_000.0  # 2027-01-15, Unix seconds
LISTS = SUBSCRIBERS_YAML + """\
  abendblatt:
    title: Das Abendblatt
    locale: de_DE
    sections: [city, culture]
    subscribers: []
  open-door:
    title: The Open Door
    double_opt_in: false
    subscribers: []
"""
GENEROUS = "signup:\n  per_client_hour: 10000\n  per_address_hour: 1000\n"


class Clock:
    """Unix seconds, moved by the test."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def prepare(project: Project, signup: str = GENEROUS) -> None:
    """The project with a German list (with sections) and a single opt-in list."""
    project.write("config/subscribers.yaml", LISTS)
    settings = project.settings.read_text(encoding="utf-8")
    project.settings.write_text(settings + signup, encoding="utf-8")


@dataclass
class Site:
    base: str
    jobs: Background
    project: Project
    clock: Clock

    def form(self, list_id: str = "morning-brief") -> Answer:
        return call(f"{self.base}/subscribe/{list_id}")

    def post(self, list_id: str = "morning-brief", fields: dict | list | None = None,
             headers: dict[str, str] | None = None, **values: str) -> Answer:
        body = urlencode(fields if fields is not None else values, doseq=True).encode()
        return call(f"{self.base}/subscribe/{list_id}", "POST", body, headers)

    def settle(self) -> None:
        """Wait until the sign-ups answered so far are stored and mailed."""
        self.jobs.join()

    def mail_path(self, email: str, list_id: str = "morning-brief") -> Path:
        return self.project.outbox / "confirmations" / list_id / f"{email}.eml"

    def mail(self, email: str, list_id: str = "morning-brief") -> EmailMessage | None:
        self.settle()
        path = self.mail_path(email, list_id)
        if not path.exists():
            return None
        return message_from_bytes(path.read_bytes(), policy=policy.default)  # type: ignore[return-value]

    def local(self, url: str) -> str:
        parts = urlsplit(url)
        return f"{self.base}{parts.path}?{parts.query}"

    def confirm_link(self, email: str, list_id: str = "morning-brief") -> str:
        msg = self.mail(email, list_id)
        assert msg is not None, f"no mail to {email}"
        return self.local(link_in(msg, "/confirm?token="))

    def confirm(self, link: str, headers: dict[str, str] | None = None) -> Answer:
        """What a reader does: open the link, press the button."""
        page = call(link)
        assert page.status == 200, page.body
        return call(link, "POST", urlencode({"form": form_field(page.body)}).encode(), headers)

    def row(self, email: str, list_id: str = "morning-brief") -> ReaderRow | None:
        self.settle()  # sign-ups are stored after the answer, by the background thread
        return reader_row(self.project, list_id, email)


def text_of(msg: EmailMessage) -> tuple[str, str]:
    """(plain text, HTML) of a multipart/alternative message, checking the order."""
    parts = [p for p in msg.walk() if not p.is_multipart()]
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    return parts[0].get_content(), parts[1].get_content()


def link_in(msg: EmailMessage, marker: str) -> str:
    text, html = text_of(msg)
    found = re.search(r"https?://\S+" + re.escape(marker) + r"[A-Za-z0-9_-]+", text)
    assert found, text
    assert found.group() in html
    return found.group()


def form_field(body: str) -> str:
    found = re.search(r'name="form" value="([^"]+)"', body)
    assert found, body
    return found.group(1)


def reader_row(project: Project, list_id: str, email: str) -> ReaderRow | None:
    """A reader's row, read while `serve` has the database open. Not through a second
    `SqliteLedger`: opening one reads the file's header with Python's `open()`, and closing
    that releases the POSIX locks SQLite holds for the server's connection in this process
    (the next writer in another process, `newsletter send`, then corrupts the file)."""
    uri = (project.outbox / "newsletter.sqlite3").resolve().as_uri()
    db = sqlite3.connect(f"{uri}?mode=ro", uri=True)
    try:
        found = db.execute(f"SELECT {_COLUMNS} FROM readers WHERE list_id = ? AND email = ?",
                           (list_id, email.lower())).fetchone()
    finally:
        db.close()
    return _row(found) if found else None


@contextmanager
def ledger(project: Project) -> Iterator[SqliteLedger]:
    """The database, for a test to set up before `serve` starts (see `reader_row`)."""
    db = SqliteLedger(project.outbox / "newsletter.sqlite3")
    try:
        yield db
    finally:
        db.close()


@contextmanager
def serving(project: Project, clock: Clock | None = None) -> Iterator[Site]:
    """`serve` for the project (its settings as they are now) on loopback."""
    clock = clock or Clock()
    app = create_app(load_settings(project.settings), clock=clock)
    with running(app) as base:
        yield Site(base, app.app.state.jobs, project, clock)  # type: ignore[attr-defined]


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """The project secret the tests sign and read tokens with."""
    monkeypatch.setenv("NEWSLETTER_UNSUBSCRIBE__SECRET", SECRET)


@pytest.fixture
def site(project: Project, secret: None) -> Iterator[Site]:
    """`serve` for the prepared project (see `prepare`), on loopback."""
    prepare(project)
    with serving(project) as running_site:
        yield running_site
