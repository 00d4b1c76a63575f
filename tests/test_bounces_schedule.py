"""The scheduler's `bounces fetch` job: every bounces.poll_minutes, with APScheduler's real
interval trigger and a controllable clock (no sleeps)."""

from __future__ import annotations

import datetime as dt
import logging
import shutil

import pytest

import newsletter.scheduler as scheduler_module
from newsletter.ledger import ALL_LISTS
from newsletter.settings import load_settings
from tests import bounce_mail
from tests.conftest import Clock, ManualScheduler, Project
from tests.test_bounces_fetch import (
    BASE,
    SECRET,
    deliver,
    names,
    return_path,
    sent,  # noqa: F401  (the fixture)
    suppressions,
)

UTC = dt.UTC


def start(project: Project) -> ManualScheduler:
    """A scheduler starting up as `newsletter schedule` does: the daily jobs and the
    fetch job, on the project's persistent job store."""
    settings = load_settings(project.settings)
    scheduler = ManualScheduler(timezone=settings.schedule.tz, jobstores={
        "default": scheduler_module.job_store(settings.schedule)})
    scheduler_module.watch_missed_runs(scheduler)
    scheduler.start(paused=True)
    scheduler_module.install_jobs(scheduler, settings.schedule, ["Europe/London"],
                                  project.settings)
    scheduler_module.install_fetch_job(scheduler, settings.bounces, project.settings)
    scheduler.resume()
    return scheduler


@pytest.fixture
def polled(sent: Project, clock: Clock, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
           caplog: pytest.LogCaptureFixture) -> Project:
    monkeypatch.setenv("NEWSLETTER_UNSUBSCRIBE__SECRET", SECRET)
    caplog.set_level(logging.INFO)
    clock.now = dt.datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    return sent


def test_the_fetch_runs_every_poll_minutes(polled: Project, clock: Clock,
                                           caplog: pytest.LogCaptureFixture) -> None:
    scheduler = start(polled)
    try:
        job = scheduler.get_job(scheduler_module.FETCH_JOB_ID)
        assert job.next_run_time == dt.datetime(2026, 11, 24, 6, 10, tzinfo=UTC)
        assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, 600)
        [key] = deliver(polled, bounce_mail.dsn(return_path("linus@example.com"),
                                                "linus@example.com"))
        clock.now = dt.datetime(2026, 11, 24, 6, 9, 59, tzinfo=UTC)
        scheduler.tick()
        assert names(polled.root / "mail" / "bounces") == {key}  # not yet
        clock.now = dt.datetime(2026, 11, 24, 6, 10, 1, tzinfo=UTC)
        scheduler.tick()
        assert names(polled.root / "mail" / "bounces") == set()
        assert names(polled.root / "mail" / "bounces" / ".Processed") == {key}
        assert suppressions(polled)[(ALL_LISTS, "linus@example.com")][0] == "hard-bounce"
        assert "bounces fetch: 1 mail in Maildir mail/bounces: 1 hard bounce" in caplog.text
        job = scheduler.get_job(scheduler_module.FETCH_JOB_ID)
        assert job.next_run_time == dt.datetime(2026, 11, 24, 6, 20, tzinfo=UTC)
    finally:
        scheduler.shutdown(wait=False)


def test_mail_left_in_place_is_logged_once(polled: Project, clock: Clock,
                                           caplog: pytest.LogCaptureFixture) -> None:
    deliver(polled, bounce_mail.mail(BASE, "someone@elsewhere.test", "Are you hiring?"))
    scheduler = start(polled)
    try:
        for minute in (10, 20, 30):
            clock.now = dt.datetime(2026, 11, 24, 6, minute, 1, tzinfo=UTC)
            scheduler.tick()
    finally:
        scheduler.shutdown(wait=False)
    assert caplog.text.count("1 left in mail/bounces (1 not understood)") == 3
    assert caplog.text.count("'Are you hiring?'") == 1


def test_a_failing_fetch_is_logged_and_the_scheduler_goes_on(
        polled: Project, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    scheduler = start(polled)
    try:
        shutil.rmtree(polled.root / "mail" / "bounces")
        clock.now = dt.datetime(2026, 11, 24, 6, 10, 1, tzinfo=UTC)
        scheduler.tick()
        assert "bounces fetch failed: mail/bounces: bounces.maildir: the bounce Maildir does " \
               "not exist" in caplog.text
        assert "Traceback" not in caplog.text
        clock.now = dt.datetime(2026, 11, 24, 7, 0, 1, tzinfo=UTC)
        scheduler.tick()  # the morning's issue still goes out
        assert scheduler.running
        job = scheduler.get_job(scheduler_module.FETCH_JOB_ID)
        assert job.next_run_time > clock.now
    finally:
        scheduler.shutdown(wait=False)
    assert (polled.outbox / "mail" / "morning-brief" / "2026-11-24").is_dir()


def test_the_job_follows_the_settings(polled: Project, clock: Clock,
                                      caplog: pytest.LogCaptureFixture) -> None:
    scheduler = start(polled)
    try:
        job = scheduler.get_job(scheduler_module.FETCH_JOB_ID)
        assert job.next_run_time == dt.datetime(2026, 11, 24, 6, 10, tzinfo=UTC)
        clock.now = dt.datetime(2026, 11, 24, 6, 3, tzinfo=UTC)
        scheduler_module.refresh_jobs(scheduler, polled.settings)  # unchanged: kept
        assert scheduler.get_job(scheduler_module.FETCH_JOB_ID).next_run_time == (
            job.next_run_time)
        polled.settings.write_text(polled.settings.read_text() + "  poll_minutes: 2\n")
        scheduler_module.refresh_jobs(scheduler, polled.settings)
        job = scheduler.get_job(scheduler_module.FETCH_JOB_ID)
        assert job.next_run_time == dt.datetime(2026, 11, 24, 6, 5, tzinfo=UTC)
        polled.settings.write_text(polled.settings.read_text().replace(
            "  maildir: mail/bounces\n", ""))
        scheduler_module.refresh_jobs(scheduler, polled.settings)
        assert scheduler.get_job(scheduler_module.FETCH_JOB_ID) is None
        assert "bounces are no longer fetched" in caplog.text
    finally:
        scheduler.shutdown(wait=False)


def test_the_job_survives_a_restart(polled: Project, clock: Clock) -> None:
    start(polled).shutdown(wait=False)
    clock.now = dt.datetime(2026, 11, 24, 6, 4, tzinfo=UTC)
    scheduler = start(polled)
    try:
        job = scheduler.get_job(scheduler_module.FETCH_JOB_ID)
        assert job.next_run_time == dt.datetime(2026, 11, 24, 6, 10, tzinfo=UTC)
    finally:
        scheduler.shutdown(wait=False)


def test_list_jobs_shows_the_fetch(polled: Project) -> None:
    result = polled.run("schedule", "--list-jobs")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (
        "bounces fetch every 10 minutes from the Maildir mail/bounces (the first one "
        "interval after the scheduler starts)")


def test_list_jobs_without_a_mailbox_shows_no_fetch(project: Project) -> None:
    result = project.run("schedule", "--list-jobs")
    assert result.returncode == 0, result.stderr
    assert "bounces" not in result.stdout


def test_the_schedule_command_runs_the_fetch_job(sent: Project) -> None:  # noqa: F811
    import signal
    import subprocess
    import sys

    from tests.conftest import clean_env

    process = subprocess.Popen([sys.executable, "-m", "newsletter", "schedule"],
                               cwd=sent.root, env={**clean_env(), "NEWSLETTER_UNSUBSCRIBE__SECRET":
                                                   SECRET},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert "; bounces fetched every 10 min; stop with Ctrl-C" in line, line
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 0 and "scheduler stopped" in out, err
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
