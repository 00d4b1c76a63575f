"""A real headless Chromium for the reader pages (issue 12): Debian's `chromium`, driven by
Playwright for Python through `executable_path` (no browser download), against the real
`serve` app under uvicorn on loopback, in a project with an English and a German list.

`tests/servers/install-browser.sh` (run by `make test`) installs the browser. Without it
the tests skip with the reason, and fail under CI=true.

One Chromium serves every browser test of a run. It is stopped as soon as the next test
needs none: Playwright's sync API leaves its asyncio loop marked as running on the main
thread while it lives, and a later test's `asyncio.run()` would refuse to start.
"""

from __future__ import annotations

import email
import email.policy
import importlib.util
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from newsletter.readers.store import _COLUMNS, ReaderRow, _row
from newsletter.settings import load_settings
from newsletter.web import create_app
from tests.web_server import running

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Playwright

    from tests.conftest import Project

CHROMIUM = Path("/usr/bin/chromium")
# The test machines reach no network but loopback: without the background flags Chromium
# keeps opening connections that are refused (updates, sync, safe browsing).
FLAGS = ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
# A phone as Chrome's device list has it (iPhone SE class): headless Chromium opens no
# window narrower than 500 px, emulation gives a real 375 px layout viewport.
DEVICES: dict[str, dict[str, Any]] = {
    "phone": {"viewport": {"width": 375, "height": 667}, "device_scale_factor": 2,
              "is_mobile": True, "has_touch": True},
    "desktop": {"viewport": {"width": 1280, "height": 800}, "device_scale_factor": 1,
                "is_mobile": False, "has_touch": False},
}
TIMEOUT_MS = 10_000  # a locator waits this long for its element, then the test fails


def _issue_date() -> str:
    # tests/conftest.py imports this module (last) for its fixtures: the date is read from
    # it when needed, not at import, so either module may be imported first.
    from tests.conftest import ISSUE_DATE
    return ISSUE_DATE

SUBSCRIBERS_YAML = """\
lists:
  morning-brief:
    title: The Morning Brief
    sections: [city, culture]
    subscribers:
      - email: ada@example.com
        name: Ada Lovelace
  morgen:
    title: Der Morgen
    locale: de_DE
    sections: [city, culture]
    subscribers:
      - email: ada@example.com
"""


def unavailable() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if importlib.util.find_spec("playwright") is None:
        return "Playwright is not installed: pip install -e '.[test]'"
    if not os.access(CHROMIUM, os.X_OK):
        return (f"no {CHROMIUM}: run tests/servers/install-browser.sh as root "
                "(make test does)")
    return None


class SharedBrowser:
    """Starts Chromium on first use, stops it when told; starts it again if asked again."""

    def __init__(self) -> None:
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None

    def get(self) -> Browser:
        if self._browser is None:
            from playwright.sync_api import sync_playwright
            self._playwright = sync_playwright().start()
            # As root Chromium refuses to start without --no-sandbox (CI runs as root).
            args = FLAGS + (["--no-sandbox"] if os.geteuid() == 0 else [])
            try:
                self._browser = self._playwright.chromium.launch(
                    executable_path=str(CHROMIUM), headless=True, args=args)
            except BaseException:
                self.stop()
                raise
        return self._browser

    def stop(self) -> None:
        browser, playwright = self._browser, self._playwright
        self._browser = self._playwright = None
        try:
            if browser is not None:
                browser.close()
        finally:
            if playwright is not None:
                playwright.stop()


SHARED = SharedBrowser()


@pytest.hookimpl(trylast=True)  # after the test's own fixtures (its pages) are closed
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop the shared Chromium once the next test needs none (imported by conftest)."""
    if nextitem is None or "chromium" not in getattr(nextitem, "fixturenames", ()):
        SHARED.stop()


@pytest.fixture
def chromium() -> Browser:
    """The run's headless Chromium; skips (fails under CI=true) where it cannot run."""
    reason = unavailable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser tests: {reason}")
        pytest.skip(reason)
    return SHARED.get()


@dataclass
class Site:
    """The project, the base URL of its running `serve`, and its outbox read back."""

    project: Project
    base: str
    jobs: Any  # the app's sign-up worker (newsletter.web.background.Background)

    def url(self, path: str) -> str:
        return self.base + path

    def local(self, link: str) -> str:
        """A link from a mail (under the public base_url), pointed at the test server."""
        parts = urlsplit(link)
        return self.base + parts.path + (f"?{parts.query}" if parts.query else "")

    def reader(self, list_id: str, address: str) -> ReaderRow | None:
        """The reader's row as the database holds it now.

        Read with a plain SQLite connection, not a second `SqliteLedger`: opening one
        reads the file's header with Python's `open()`, whose close releases the POSIX
        locks SQLite holds for the server's connection in this process; the next `send`
        then deletes the WAL under the server ("disk I/O error")."""
        path = load_settings(self.project.settings).ledger
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            found = db.execute(f"SELECT {_COLUMNS} FROM readers WHERE list_id = ? AND email = ?",
                               (list_id, address.lower())).fetchone()
        finally:
            db.close()
        return None if found is None else _row(found)

    def mails_to(self, address: str) -> list[EmailMessage]:
        """Every .eml under outbox/ addressed to `address`, oldest first, once the sign-ups
        answered so far are stored and mailed (the app does that after answering)."""
        self.jobs.join()
        found = []
        for path in sorted(self.project.outbox.rglob("*.eml"), key=lambda p: p.stat().st_mtime_ns):
            msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            assert isinstance(msg, EmailMessage)
            if address.lower() in str(msg["To"] or "").lower():
                found.append(msg)
        return found

    def confirmation_link(self, address: str) -> str:
        """The confirmation link of the one confirmation mail sent to `address`."""
        links = [link for msg in self.mails_to(address)
                 for link in re.findall(r"https?://[^\s<>\"']+/confirm\?token=[^\s<>\"'&]+",
                                        body_text(msg))]
        assert len(set(links)) == 1, f"expected one confirmation link to {address}: {links}"
        return self.local(links[0])

    def issue_to(self, address: str, list_id: str = "morning-brief") -> EmailMessage | None:
        """The issue of the tests' issue date written for `address`, or None."""
        folder = self.project.outbox / "mail" / list_id / _issue_date()
        for path in folder.glob("*.eml") if folder.is_dir() else ():
            msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            assert isinstance(msg, EmailMessage)
            if address.lower() in str(msg["To"] or "").lower():
                return msg
        return None

    def send(self) -> None:
        """The real `newsletter send` of the tests' issue date, as the publisher runs it."""
        done = self.project.run("send", "--date", _issue_date())
        assert done.returncode == 0, done.stdout + done.stderr


def body_text(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    assert part is not None and isinstance(part, EmailMessage), "no text/plain part"
    return str(part.get_content())


def body_html(msg: EmailMessage) -> str:
    part = msg.get_body(("html",))
    assert part is not None and isinstance(part, EmailMessage), "no text/html part"
    return str(part.get_content())


@contextmanager
def serving(project: Project) -> Iterator[Site]:
    project.write("config/subscribers.yaml", SUBSCRIBERS_YAML)
    app = create_app(load_settings(project.settings))
    with running(app) as base:
        yield Site(project, base, app.app.state.jobs)  # type: ignore[attr-defined]


@pytest.fixture
def reader_site(project: Project) -> Iterator[Site]:
    """The real `serve` app of a project with an English and a German list, on loopback."""
    with serving(project) as site:
        yield site


@pytest.fixture(scope="module")
def shared_reader_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One such site for a module of tests that only look at pages (they change nothing
    but what a test signs up itself). The settings' paths are relative: served from its
    folder."""
    from tests.conftest import make_project
    root = tmp_path_factory.mktemp("site")
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("NEWSLETTER_"):
                patch.delenv(name)
        patch.chdir(root)
        with serving(make_project(root)) as site:
            yield site


@pytest.fixture(params=sorted(DEVICES))
def browser_device(request: pytest.FixtureRequest) -> str:
    """Each browser test runs at 375 px on a phone and at 1280 px on a desktop."""
    name: str = request.param
    return name


def new_context(browser: Browser, device: str, **options: Any) -> BrowserContext:
    context = browser.new_context(**DEVICES[device], **options)
    context.set_default_timeout(TIMEOUT_MS)
    return context


@pytest.fixture
def web_page(chromium: Browser, browser_device: str) -> Iterator[Page]:
    """A fresh page (own cookies and storage) in the device's context, light scheme."""
    context = new_context(chromium, browser_device, color_scheme="light")
    try:
        yield context.new_page()
    finally:
        context.close()
