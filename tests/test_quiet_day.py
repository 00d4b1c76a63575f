"""A day with nothing new is not a failure: one line, exit 0, and other lists still get
their issue; `articles.min_new` and `articles.quiet_day: error` for those who want more."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

import newsletter.scheduler as scheduler_module
from tests.conftest import ISSUE_DATE, Project

QUIET = "2026-12-30"  # the newest article is from 2026-11-24, max_age_days is 2
LINE = f"nothing new for morning-brief on {QUIET}; no issue sent"

TWO_LISTS = """\
lists:
  morning-brief:
    title: The Morning Brief
    subscribers:
      - ada@example.com
  evening-brief:
    title: The Evening Brief
    subscribers:
      - linus@example.com
"""


@pytest.mark.parametrize("command", ["send", "compose", "preview", "check"])
def test_a_quiet_day_is_one_line_and_exit_0(project: Project, command: str) -> None:
    result = project.run(command, "--date", QUIET)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith(LINE)
    assert "error" not in result.stdout + result.stderr
    assert not list(project.outbox.rglob("*.eml"))
    assert not list(project.outbox.rglob("*.html"))


def test_compose_json_keeps_stdout_json_on_a_quiet_day(project: Project) -> None:
    result = project.run("compose", "--date", QUIET, "--json")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]" and result.stderr.startswith(LINE)


def test_a_quiet_list_does_not_stop_the_others(project: Project) -> None:
    project.write("config/subscribers.yaml", TWO_LISTS)
    first = project.run("send", "--date", ISSUE_DATE, "--list", "morning-brief")
    assert first.returncode == 0, first.stderr
    # The next morning the morning list has had every recent article; the evening list
    # has had none of them.
    result = project.run("send", "--date", "2026-11-25")
    assert result.returncode == 0, result.stderr
    assert ("nothing new for morning-brief on 2026-11-25; no issue sent (the 3 recent "
            "article(s) were all in earlier issues)") in result.stdout
    assert "evening-brief/2026-11-25 [file]: 1 sent" in result.stdout
    assert [p.parent.name for p in project.outbox.rglob("*.eml")].count("2026-11-25") == 1


def test_min_new_makes_a_thin_day_quiet(project: Project) -> None:
    env = {"NEWSLETTER_ARTICLES__MIN_NEW": "4"}  # the day has 3 new articles
    result = project.run("send", "--date", ISSUE_DATE, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        f"nothing new for morning-brief on {ISSUE_DATE}; no issue sent (3 new article(s), "
        "fewer than articles.min_new (4))")
    assert not list(project.outbox.rglob("*.eml"))
    enough = project.run("send", "--date", ISSUE_DATE, env={"NEWSLETTER_ARTICLES__MIN_NEW": "3"})
    assert enough.returncode == 0 and len(list(project.outbox.rglob("*.eml"))) == 3


@pytest.mark.parametrize(("env", "message"), [
    ({}, "error: articles.max_age_days: no articles for 2026-12-30: the newest (2026-11-24) "
         "is older than max_age_days (2)"),
    ({"NEWSLETTER_ARTICLES__MIN_NEW": "9"}, "error: articles.min_new: only 3 new article(s) "
                                           "for 2026-11-24"),
])
def test_quiet_day_error_brings_the_error_back(project: Project, env: dict[str, str],
                                               message: str) -> None:
    date = QUIET if not env else ISSUE_DATE
    result = project.run("send", "--date", date,
                         env={"NEWSLETTER_ARTICLES__QUIET_DAY": "error", **env})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(message), result.stderr


def test_a_scheduled_quiet_day_is_logged_as_info_and_is_a_success(
        project: Project, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=scheduler_module.log.name)
    now = dt.datetime(2026, 12, 30, 7, 0, tzinfo=dt.UTC)
    assert scheduler_module.scheduled_send(str(project.settings), now=now) is True
    quiet = [r for r in caplog.records if LINE in r.getMessage()]
    assert [r.levelno for r in quiet] == [logging.INFO]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not list(project.outbox.rglob("*.eml"))
