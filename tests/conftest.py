"""Shared fixtures: a throw-away project folder and a way to run the real CLI in it."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import apscheduler.executors.base as executors_base
import apscheduler.schedulers.base as schedulers_base
import pytest
from apscheduler.executors.debug import DebugExecutor
from apscheduler.schedulers.base import BaseScheduler

import newsletter.scheduler as scheduler_module

# The real Postfix and Dovecot of the bounce tests (issue 11), as fixtures.
from tests.mailservers import mail_servers, mail_servers_session  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
SHARED_SAMPLE = REPO.parent / "shared" / "samples" / "the-week-article-page.txt"
ISSUE_DATE = "2026-11-24"

SETTINGS_YAML = """\
newsletter:
  title: The Test Brief
  sender: "The Test Brief <brief@example.com>"
  base_url: https://news.example.com
  unsubscribe_mailto: unsubscribe@example.com
articles:
  paths: [articles]
  headlines: 8
  max_age_days: 2
subscribers: config/subscribers.yaml
templates: templates
delivery:
  backend: file
  outbox: outbox
smtp:
  host: 127.0.0.1
  port: 2525
  security: none
  timeout: 5
schedule:
  time: "07:00"
  timezone: Europe/London
"""

SUBSCRIBERS_YAML = """\
lists:
  morning-brief:
    title: The Morning Brief
    subscribers:
      - email: ada@example.com
        name: Ada Lovelace
      - email: grace@example.com
        name: Grace Hopper
        status: unsubscribed
      - linus@example.com
      - email: zoe@example.org
        name: Zoë Ångström
"""

ARTICLES = {
    "2026-11-24-bridge.md": """\
        ---
        title: Harbour bridge reopens after repairs
        url: https://news.example.com/2026/11/bridge
        summary: The swing bridge is back in service after six weeks of repairs.
        author: Ann Writer
        published: 2026-11-24T06:00:00+00:00
        section: city
        tags: [harbour, transport]
        image: https://news.example.com/img/bridge.jpg
        image_alt: The swing bridge open to boats at dawn
        ---
        The swing bridge reopened at dawn, **ahead of schedule**.

        Engineers replaced the gears and the control cabin.
        """,
    "2026-11-24-ferry.md": """\
        ---
        title: Ferry timetable changes from Monday
        url: https://news.example.com/2026/11/ferry
        summary: Fewer crossings in winter, but a new late boat on Fridays.
        published: 2026-11-24T05:00:00+00:00
        section: city
        tags: [harbour]
        ---
        The ferry company published its winter timetable.
        """,
    "2026-11-23-museum.md": """\
        ---
        title: Museum opens a gallery of ship models
        url: https://news.example.com/2026/11/museum
        summary: Two hundred models, some three centuries old, go on show.
        published: 2026-11-23T09:00:00+00:00
        section: culture
        tags: [museums]
        ---
        The maritime museum opened its new gallery on Sunday.
        """,
    "2026-11-15-old.md": """\
        ---
        title: An old story
        url: https://news.example.com/2026/11/old
        published: 2026-11-15
        section: city
        ---
        Long ago.
        """,
}


@dataclass
class Project:
    root: Path

    @property
    def settings(self) -> Path:
        return self.root / "config" / "newsletter.yaml"

    @property
    def subscribers(self) -> Path:
        return self.root / "config" / "subscribers.yaml"

    @property
    def articles(self) -> Path:
        return self.root / "articles"

    @property
    def templates(self) -> Path:
        return self.root / "templates"

    @property
    def outbox(self) -> Path:
        return self.root / "outbox"

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run the real `newsletter` command in this project, as a user would."""
        return subprocess.run(
            [sys.executable, "-m", "newsletter", *args],
            cwd=self.root, env={**clean_env(), **(env or {})},
            capture_output=True, text=True, timeout=60,
        )


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    """A complete project (settings, two-list-ready subscriber file, templates, articles)."""
    for name in list(os.environ):
        if name.startswith("NEWSLETTER_"):
            monkeypatch.delenv(name)
    made = make_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    return made


def make_project(root: Path) -> Project:
    """The files of the `project` fixture in `root` (for fixtures of a wider scope)."""
    made = Project(root)
    shutil.copytree(REPO / "templates", made.templates)
    made.write("config/newsletter.yaml", SETTINGS_YAML)
    made.write("config/subscribers.yaml", SUBSCRIBERS_YAML)
    for name, text in ARTICLES.items():
        made.write(f"articles/{name}", text)
    return made


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def datetime_class(self) -> type[dt.datetime]:
        clock = self

        class FakeDatetime(dt.datetime):
            @classmethod
            def now(cls, tz=None):  # type: ignore[override]
                return clock.now.astimezone(tz) if tz else clock.now.replace(tzinfo=None)

        return FakeDatetime


class ManualScheduler(BaseScheduler):
    """Runs due jobs only when the test calls `tick()`, in the test's thread."""

    def wakeup(self) -> None:
        pass

    def shutdown(self, wait: bool = True) -> None:
        super().shutdown(wait)

    def _create_default_executor(self) -> DebugExecutor:
        return DebugExecutor()

    def tick(self) -> None:
        self._process_jobs()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock(dt.datetime(2026, 11, 24, 6, 0, tzinfo=dt.UTC))
    monkeypatch.setattr(schedulers_base, "datetime", fake.datetime_class())
    monkeypatch.setattr(executors_base, "datetime", fake.datetime_class())
    monkeypatch.setattr(scheduler_module, "clock", lambda: fake.now)
    return fake


def start_scheduler(project: Project) -> ManualScheduler:
    """A scheduler process starting up on the project's persistent job store, as
    `newsletter schedule` does (one job per readers' time zone)."""
    from newsletter.settings import load_settings
    from newsletter.subscribers import load_roster

    settings = load_settings(project.settings)
    schedule = settings.schedule
    scheduler = ManualScheduler(timezone=schedule.tz,
                                jobstores={"default": scheduler_module.job_store(schedule)})
    scheduler_module.watch_missed_runs(scheduler)
    scheduler.start(paused=True)
    zones = scheduler_module.delivery_zones(load_roster(settings.subscribers), settings)
    scheduler_module.install_jobs(scheduler, schedule, list(zones), project.settings)
    scheduler.resume()
    return scheduler


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """`folder` (made here) as a tmpfs of `size` of its own, for full-disk tests (root)."""
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                   check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


# Headless Chromium for the reader pages (issue 12): its fixtures, and the hook that stops it
# when no more test needs it. Imported last: tests.browser uses this module's names.
from tests.browser import (  # noqa: E402,F401
    browser_device,
    chromium,
    pytest_runtest_teardown,
    reader_site,
    shared_reader_site,
    web_page,
)

# A PostgreSQL database of its own per test (issue 13): NEWSLETTER_TEST_DATABASE_URL, else
# the server on 127.0.0.1:5432; skips without one (fails under CI=true).
from tests.pg import pg_url  # noqa: E402,F401

# The reader-side tests' shared fixtures (issue 12): a sign-up site, its secret, and a
# project whose list has sections. A module's own fixture of the same name wins.
from tests.readers_project import proj  # noqa: E402,F401
from tests.signup_site import secret, site  # noqa: E402,F401
from tests.stores import new_ledger  # noqa: E402,F401
