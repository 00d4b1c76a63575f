"""A run that is overdue when its job is replaced (an upgrade from the single job of older
versions, or a changed schedule) is handled as if the job had been kept: sent within the
grace time, logged as stale after it, never silently dropped. A run still to come is kept
too when the new time has already passed that day, so the day's issue is not lost.

APScheduler's real triggers and job store run under a controllable clock; nothing sleeps.
"""

from __future__ import annotations

import datetime as dt

import pytest

import newsletter.scheduler as scheduler_module
from newsletter.ledger import SqliteLedger
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


def _sent_once(project: Project, date: str) -> bool:
    """Every active reader got the `date` issue in exactly one attempt."""
    ledger = SqliteLedger(project.outbox / "newsletter.sqlite3")
    try:
        rows = ledger.deliveries(f"morning-brief/{date}").values()
        return sorted((r.status, r.attempts) for r in rows) == [
            ("sent", 1), ("sent", 1), ("sent", 1), ("skipped", 0)]
    finally:
        ledger.close()


def _ticks(scheduler: ManualScheduler, clock: Clock, *times: dt.datetime) -> None:
    for now in times:
        clock.now = now
        scheduler.tick()


def _change_before_the_morning(project: Project, clock: Clock, old: str, new: str,
                               at: dt.datetime) -> ManualScheduler:
    """A running scheduler sending at `old`; at `at`, before that morning's run, the
    schedule refresh finds `schedule.time` changed to `new`."""
    _set_schedule(project, time=f'"{old}"')
    clock.now = dt.datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    scheduler = start_scheduler(project)
    _set_schedule(project, time=f'"{new}"')
    clock.now = at
    scheduler_module.refresh_jobs(scheduler, project.settings)
    return scheduler


NEXT_ARTICLE = """\
    ---
    title: Spring tide floods the quay
    url: https://news.example.com/2026/11/tide
    published: 2026-11-25T05:00:00+00:00
    section: city
    ---
    Water reached the harbour steps overnight.
    """
TOMORROW_READERS = [s.replace("2026-11-24", "2026-11-25") for s in LONDON_READERS]


def test_a_time_moved_earlier_than_now_keeps_the_pending_morning(project: Project,
                                                                 clock: Clock) -> None:
    # At 08:00 today's 07:00 has passed: starting from now would first run tomorrow.
    scheduler = _change_before_the_morning(project, clock, "09:00", "07:00",
                                           dt.datetime(2026, 11, 24, 8, 0, tzinfo=UTC))
    try:
        job = scheduler.get_job(job_id(LONDON))
        assert job.next_run_time == dt.datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
        _ticks(scheduler, clock, dt.datetime(2026, 11, 24, 8, 30, tzinfo=UTC))
        assert _sent(project) == []
        # At 09:00 the latest 07:00 is today's: today's issue, not yesterday's.
        _ticks(scheduler, clock, dt.datetime(2026, 11, 24, 9, 0, 5, tzinfo=UTC))
        assert _sent(project) == LONDON_READERS
        assert scheduler.get_job(job_id(LONDON)).next_run_time == dt.datetime(
            2026, 11, 25, 7, 0, tzinfo=UTC)
        _ticks(scheduler, clock, dt.datetime(2026, 11, 24, 10, 0, tzinfo=UTC),
               dt.datetime(2026, 11, 24, 23, 0, tzinfo=UTC),
               dt.datetime(2026, 11, 25, 6, 59, tzinfo=UTC))
        assert _sent(project) == LONDON_READERS
        project.write("articles/2026-11-25-tide.md", NEXT_ARTICLE)
        _ticks(scheduler, clock, dt.datetime(2026, 11, 25, 7, 0, 5, tzinfo=UTC))
    finally:
        scheduler.shutdown(wait=False)
    assert _sent(project) == sorted(LONDON_READERS + TOMORROW_READERS)
    assert _sent_once(project, "2026-11-24") and _sent_once(project, "2026-11-25")


@pytest.mark.parametrize(("old", "new", "hour", "minute"), [
    ("07:00", "08:00", 8, 0),   # later
    ("09:00", "08:30", 8, 30),  # earlier, but still ahead
])
def test_a_time_changed_to_one_still_ahead_today_runs_at_the_new_time(
        project: Project, clock: Clock, old: str, new: str, hour: int, minute: int) -> None:
    scheduler = _change_before_the_morning(project, clock, old, new,
                                           dt.datetime(2026, 11, 24, 6, 30, tzinfo=UTC))
    new_run = dt.datetime(2026, 11, 24, hour, minute, tzinfo=UTC)
    try:
        assert scheduler.get_job(job_id(LONDON)).next_run_time == new_run
        _ticks(scheduler, clock, new_run - dt.timedelta(minutes=1))
        assert _sent(project) == []
        _ticks(scheduler, clock, new_run + dt.timedelta(seconds=5),
               dt.datetime(2026, 11, 24, 9, 0, 5, tzinfo=UTC),
               dt.datetime(2026, 11, 24, 23, 0, tzinfo=UTC))
        assert scheduler.get_job(job_id(LONDON)).next_run_time == (
            new_run + dt.timedelta(days=1))
    finally:
        scheduler.shutdown(wait=False)
    assert _sent(project) == LONDON_READERS
    assert _sent_once(project, "2026-11-24")
