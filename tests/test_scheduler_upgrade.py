"""A run that is overdue when its job is replaced (an upgrade from the single job of older
versions, or a changed schedule) is handled as if the job had been kept: sent within the
grace time, logged as stale after it, never silently dropped.

APScheduler's real triggers and job store run under a controllable clock; nothing sleeps.
"""

from __future__ import annotations

import datetime as dt

import pytest

import newsletter.scheduler as scheduler_module
from newsletter.scheduler import job_id
from newsletter.settings import load_settings
from tests.conftest import SUBSCRIBERS_YAML, Clock, ManualScheduler, Project, start_scheduler

UTC = dt.UTC
LONDON = "Europe/London"  # the schedule's zone: three active readers
# 07:00 in Tokyo is 22:00 UTC the day before: long past when London's morning is overdue.
TOKYO_READER = "      - email: kenji@example.jp\n        timezone: Asia/Tokyo\n"


@pytest.fixture
def two_zones(project: Project) -> Project:
    project.write("config/subscribers.yaml", SUBSCRIBERS_YAML + TOKYO_READER)
    return project


def _sent(project: Project) -> list[str]:
    """`<issue date>/<address>` of every message in the outbox."""
    return sorted(f"{p.parent.name}/{p.stem}" for p in project.outbox.rglob("*.eml"))


def _set_schedule(project: Project, **values: str | int) -> None:
    text = project.settings.read_text()
    head, _, _ = text.partition("schedule:\n")
    project.settings.write_text(head + "schedule:\n" + "".join(
        f"  {key}: {value}\n" for key, value in {
            "time": '"07:00"', "timezone": LONDON, **values}.items()))


def _store_legacy_job(project: Project) -> None:
    """Leave the job store as the single-job version left it when stopped at `clock.now`."""
    schedule = load_settings(project.settings).schedule
    old = ManualScheduler(timezone=schedule.tz,
                          jobstores={"default": scheduler_module.job_store(schedule)})
    old.start(paused=True)
    old.add_job(scheduler_module.scheduled_send, trigger=scheduler_module.daily_trigger(schedule),
                args=(str(project.settings.resolve()),), id=scheduler_module.LEGACY_JOB_ID,
                misfire_grace_time=schedule.misfire_grace_minutes * 60, coalesce=True)
    old.shutdown(wait=False)


def _restart(project: Project, ticks: int = 2) -> ManualScheduler:
    scheduler = start_scheduler(project)
    try:
        for _ in range(ticks):
            scheduler.tick()
    finally:
        scheduler.shutdown(wait=False)
    return scheduler


LONDON_READERS = ["2026-11-24/ada@example.com", "2026-11-24/linus@example.com",
                  "2026-11-24/zoe@example.org"]


def test_upgrading_within_the_grace_time_sends_the_overdue_morning_once(
        two_zones: Project, clock: Clock) -> None:
    clock.now = dt.datetime(2026, 11, 24, 6, 0, tzinfo=UTC)  # old version stops; due 07:00
    _store_legacy_job(two_zones)
    clock.now = dt.datetime(2026, 11, 24, 7, 40, tzinfo=UTC)  # upgraded, back 40 min late
    scheduler = start_scheduler(two_zones)
    try:
        jobs = {job.id: job.next_run_time for job in scheduler.get_jobs()}
        assert jobs[job_id(LONDON)] == dt.datetime(2026, 11, 24, 7, 0, tzinfo=UTC)
        assert jobs[job_id("Asia/Tokyo")] == dt.datetime(2026, 11, 24, 22, 0, tzinfo=UTC)
        assert scheduler_module.LEGACY_JOB_ID not in jobs
        scheduler.tick()
        scheduler.tick()
        assert scheduler.get_job(job_id(LONDON)).next_run_time == dt.datetime(
            2026, 11, 25, 7, 0, tzinfo=UTC)
    finally:
        scheduler.shutdown(wait=False)
    assert _sent(two_zones) == LONDON_READERS  # the schedule's zone only, once each


def test_upgrading_after_the_grace_time_logs_the_morning_as_stale(
        two_zones: Project, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    clock.now = dt.datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    _store_legacy_job(two_zones)
    clock.now = dt.datetime(2026, 11, 24, 9, 30, tzinfo=UTC)  # 2½ hours late; grace is 1 hour
    _restart(two_zones)
    assert _sent(two_zones) == []
    assert ("the digest due at 2026-11-24T07:00+00:00 was skipped as stale" in caplog.text
            and "newsletter send --date 2026-11-24 --timezone Europe/London" in caplog.text)


def test_upgrading_before_the_morning_keeps_it_due(two_zones: Project, clock: Clock) -> None:
    clock.now = dt.datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    _store_legacy_job(two_zones)
    scheduler = start_scheduler(two_zones)
    try:
        assert scheduler.get_job(job_id(LONDON)).next_run_time == dt.datetime(
            2026, 11, 24, 7, 0, tzinfo=UTC)
        clock.now = dt.datetime(2026, 11, 24, 7, 0, 5, tzinfo=UTC)
        scheduler.tick()
    finally:
        scheduler.shutdown(wait=False)
    assert _sent(two_zones) == LONDON_READERS


def test_a_longer_grace_time_applies_to_the_run_overdue_when_it_changed(
        project: Project, clock: Clock) -> None:
    clock.now = dt.datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    start_scheduler(project).shutdown(wait=False)
    _set_schedule(project, misfire_grace_minutes=180)  # the job is replaced on restart
    clock.now = dt.datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
    _restart(project)
    assert _sent(project) == LONDON_READERS


def test_a_shorter_grace_time_makes_the_overdue_run_stale_and_logged(
        project: Project, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    clock.now = dt.datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    start_scheduler(project).shutdown(wait=False)
    _set_schedule(project, misfire_grace_minutes=30)
    clock.now = dt.datetime(2026, 11, 24, 7, 40, tzinfo=UTC)
    _restart(project)
    assert _sent(project) == []
    assert "newsletter send --date 2026-11-24 --timezone Europe/London" in caplog.text


def _refresh_after_waking(project: Project, clock: Clock, new_time: str) -> ManualScheduler:
    """A running scheduler, asleep over 07:00; on waking the schedule refresh runs first
    and finds `schedule.time` changed to `new_time`."""
    clock.now = dt.datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    scheduler = start_scheduler(project)
    _set_schedule(project, time=f'"{new_time}"')
    clock.now = dt.datetime(2026, 11, 24, 7, 40, tzinfo=UTC)
    scheduler_module.refresh_jobs(scheduler, project.settings)
    return scheduler


def test_a_time_moved_earlier_keeps_the_overdue_morning(project: Project, clock: Clock) -> None:
    scheduler = _refresh_after_waking(project, clock, "06:30")
    try:
        scheduler.tick()
        assert _sent(project) == LONDON_READERS
        assert scheduler.get_job(job_id(LONDON)).next_run_time == dt.datetime(
            2026, 11, 25, 6, 30, tzinfo=UTC)
    finally:
        scheduler.shutdown(wait=False)


def test_a_time_moved_later_sends_the_morning_at_the_new_time(project: Project,
                                                              clock: Clock) -> None:
    # Keeping the 07:00 run would send at 07:40 the issue due before 08:00 (yesterday's)
    # and then skip 08:00 as a second run the same day: today's issue would be lost.
    scheduler = _refresh_after_waking(project, clock, "08:00")
    try:
        scheduler.tick()
        assert _sent(project) == []
        assert scheduler.get_job(job_id(LONDON)).next_run_time == dt.datetime(
            2026, 11, 24, 8, 0, tzinfo=UTC)
        clock.now = dt.datetime(2026, 11, 24, 8, 0, 5, tzinfo=UTC)
        scheduler.tick()
        clock.now = dt.datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
        scheduler.tick()
    finally:
        scheduler.shutdown(wait=False)
    assert _sent(project) == LONDON_READERS


def test_jobs_not_overdue_are_rescheduled_from_now(project: Project, clock: Clock) -> None:
    clock.now = dt.datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    start_scheduler(project).shutdown(wait=False)
    _set_schedule(project, time='"06:30"')
    scheduler = start_scheduler(project)
    try:
        assert scheduler.get_job(job_id(LONDON)).next_run_time == dt.datetime(
            2026, 11, 24, 6, 30, tzinfo=UTC)
    finally:
        scheduler.shutdown(wait=False)
