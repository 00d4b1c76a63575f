"""The daily schedule, with APScheduler's real cron trigger and a controllable clock."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import newsletter.scheduler as scheduler_module
from newsletter.digest import due_date
from newsletter.ledger import SqliteLedger
from newsletter.scheduler import job_id, next_run_times
from newsletter.settings import ScheduleSection
from tests.conftest import Clock, Project, clean_env, start_scheduler

UTC = dt.UTC


def test_next_runs_follow_spring_forward_in_london() -> None:
    schedule = ScheduleSection(time="07:00", timezone="Europe/London")
    runs = next_run_times(schedule, dt.datetime(2026, 3, 27, 12, 0, tzinfo=UTC), count=3)
    assert [r.astimezone(UTC).isoformat() for r in runs] == [
        "2026-03-28T07:00:00+00:00",  # GMT
        "2026-03-29T06:00:00+00:00",  # BST begins at 01:00 UTC that morning
        "2026-03-30T06:00:00+00:00",
    ]
    assert all((r.hour, r.minute) == (7, 0) for r in runs)
    assert all(r.tzinfo == ZoneInfo("Europe/London") for r in runs)


def test_next_runs_follow_fall_back_in_new_york() -> None:
    schedule = ScheduleSection(time="06:30", timezone="America/New_York")
    runs = next_run_times(schedule, dt.datetime(2026, 10, 31, 12, 0, tzinfo=UTC), count=3)
    assert [r.astimezone(UTC).strftime("%m-%d %H:%M") for r in runs] == [
        "11-01 11:30",  # EST from 02:00 local on 1 November
        "11-02 11:30",
        "11-03 11:30",
    ]


def test_a_time_skipped_by_spring_forward_still_runs_that_day() -> None:
    schedule = ScheduleSection(time="01:30", timezone="Europe/London")
    runs = next_run_times(schedule, dt.datetime(2026, 3, 28, 12, 0, tzinfo=UTC), count=2)
    assert [r.astimezone(UTC).strftime("%m-%d %H:%M") for r in runs] == [
        "03-29 01:30",  # 01:30 local does not exist; it goes out at 02:30 BST
        "03-30 00:30",
    ]


def test_a_time_repeated_by_fall_back_runs_once() -> None:
    schedule = ScheduleSection(time="01:30", timezone="Europe/London")
    runs = next_run_times(schedule, dt.datetime(2026, 10, 24, 12, 0, tzinfo=UTC), count=3)
    assert [r.astimezone(UTC).strftime("%m-%d %H:%M") for r in runs] == [
        "10-25 00:30",  # the first 01:30 (BST); the second (GMT) is not a second issue
        "10-26 01:30",
        "10-27 01:30",
    ]


def _missing(zone: str, wall: str) -> bool:
    """True if the local time `wall` does not exist in `zone` (clocks jump over it)."""
    naive = dt.datetime.fromisoformat(wall)
    there = naive.replace(tzinfo=ZoneInfo(zone))
    return there.astimezone(UTC).astimezone(ZoneInfo(zone)).replace(tzinfo=None) != naive


# (zone, schedule.time, local time that does not exist, its run, the runs the day before
# and after). Where clocks spring forward at midnight, CronTrigger used to skip the day.
SPRING_FORWARD = [
    # Last Friday of April: 00:00 EET → 01:00 EEST.
    ("Africa/Cairo", "00:30", "2026-04-24T00:30",
     ["2026-04-23T00:30:00+02:00", "2026-04-24T01:30:00+03:00", "2026-04-25T00:30:00+03:00"]),
    # Last Sunday of March: 00:00 EET → 01:00 EEST.
    ("Asia/Beirut", "00:30", "2026-03-29T00:30",
     ["2026-03-28T00:30:00+02:00", "2026-03-29T01:30:00+03:00", "2026-03-30T00:30:00+03:00"]),
    # First Sunday of September: 00:00 −04 → 01:00 −03.
    ("America/Santiago", "00:00", "2026-09-06T00:00",
     ["2026-09-05T00:00:00-04:00", "2026-09-06T01:00:00-03:00", "2026-09-07T00:00:00-03:00"]),
    # Second Sunday of March: 00:00 CST → 01:00 CDT.
    ("America/Havana", "00:30", "2026-03-08T00:30",
     ["2026-03-07T00:30:00-05:00", "2026-03-08T01:30:00-04:00", "2026-03-09T00:30:00-04:00"]),
    # Gaps after midnight, which CronTrigger always handled: the same rule.
    ("America/New_York", "02:30", "2026-03-08T02:30",
     ["2026-03-07T02:30:00-05:00", "2026-03-08T03:30:00-04:00", "2026-03-09T02:30:00-04:00"]),
    ("Europe/London", "01:30", "2026-03-29T01:30",
     ["2026-03-28T01:30:00+00:00", "2026-03-29T02:30:00+01:00", "2026-03-30T01:30:00+01:00"]),
    # A gap just before midnight (23:00 −02 → 00:00 −01) moves the 28th's run to the 29th,
    # which still has its own.
    ("America/Nuuk", "23:00", "2026-03-28T23:00",
     ["2026-03-27T23:00:00-02:00", "2026-03-29T00:00:00-01:00", "2026-03-29T23:00:00-01:00"]),
]


@pytest.mark.parametrize(("zone", "time", "missing", "expected"), SPRING_FORWARD)
def test_a_time_skipped_by_spring_forward_runs_once_that_day_an_hour_later(
        zone: str, time: str, missing: str, expected: list[str]) -> None:
    assert _missing(zone, missing)  # the zone data has the gap this test is about
    schedule = ScheduleSection(time=time, timezone=zone)
    start = dt.datetime.fromisoformat(expected[0]) - dt.timedelta(hours=1)
    runs = next_run_times(schedule, start, count=5, zone=zone)
    assert [r.isoformat() for r in runs[:3]] == expected
    # One run for each day, sending that day's issue.
    days = [due_date(schedule, zone, r) for r in runs]
    assert days == [days[0] + dt.timedelta(days=n) for n in range(5)]
    assert days[1].isoformat() == missing[:10]
    assert all(r.tzinfo == ZoneInfo(zone) for r in runs)


def _jump(zone: str, after: dt.datetime) -> dt.datetime:
    """The moment before `after` when the clocks in `zone` last changed."""
    offset = after.astimezone(ZoneInfo(zone)).utcoffset()
    while (after - dt.timedelta(minutes=1)).astimezone(ZoneInfo(zone)).utcoffset() == offset:
        after -= dt.timedelta(minutes=1)
    return after


@pytest.mark.parametrize(("zone", "time", "missing", "expected"), SPRING_FORWARD)
def test_a_scheduler_started_in_the_gap_still_runs_that_day(
        zone: str, time: str, missing: str, expected: list[str]) -> None:
    trigger = scheduler_module.daily_trigger(ScheduleSection(time=time, timezone=zone))
    gap_run = dt.datetime.fromisoformat(expected[1])
    for now in (_jump(zone, gap_run), gap_run):
        assert trigger.get_next_fire_time(None, now) == gap_run
    assert trigger.get_next_fire_time(None, gap_run + dt.timedelta(seconds=1)) == (
        dt.datetime.fromisoformat(expected[2]))


@pytest.mark.parametrize(("zone", "time", "start", "expected"), [
    # Clocks fall back at midnight, 00:00 → 23:00 the evening before, which happens twice.
    ("Africa/Cairo", "23:30", "2026-10-28T12:00:00+00:00",
     ["2026-10-28T23:30:00+03:00", "2026-10-29T23:30:00+03:00", "2026-10-30T23:30:00+02:00"]),
    ("America/Santiago", "23:30", "2026-04-03T12:00:00+00:00",
     ["2026-04-03T23:30:00-03:00", "2026-04-04T23:30:00-03:00", "2026-04-05T23:30:00-04:00"]),
    # Havana falls back 01:00 → 00:00: 00:30 on 1 November happens twice.
    ("America/Havana", "00:30", "2026-10-30T12:00:00+00:00",
     ["2026-10-31T00:30:00-04:00", "2026-11-01T00:30:00-04:00", "2026-11-02T00:30:00-05:00"]),
    ("America/New_York", "01:30", "2026-10-30T12:00:00+00:00",
     ["2026-10-31T01:30:00-04:00", "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]),
])
def test_a_time_repeated_by_fall_back_at_midnight_runs_once(zone: str, time: str, start: str,
                                                             expected: list[str]) -> None:
    schedule = ScheduleSection(time=time, timezone=zone)
    runs = next_run_times(schedule, dt.datetime.fromisoformat(start), count=3, zone=zone)
    assert [r.isoformat() for r in runs] == expected


@pytest.mark.parametrize(("zone", "time", "now", "expected"), [
    # Between the first 01:30 (EDT) and the second (EST): that day's run is done.
    ("America/New_York", "01:30", "2026-11-01T01:45:00-04:00", "2026-11-02T01:30:00-05:00"),
    ("America/New_York", "01:30", "2026-11-01T01:30:00-05:00", "2026-11-02T01:30:00-05:00"),
    ("America/New_York", "01:30", "2026-11-01T01:30:00-04:00", "2026-11-01T01:30:00-04:00"),
    ("America/New_York", "01:30", "2026-11-01T01:15:00-05:00", "2026-11-02T01:30:00-05:00"),
    # Cairo repeats 23:00-24:00 on its fall-back night.
    ("Africa/Cairo", "23:30", "2026-10-29T23:45:00+03:00", "2026-10-30T23:30:00+02:00"),
    ("Africa/Cairo", "23:30", "2026-10-29T23:10:00+02:00", "2026-10-30T23:30:00+02:00"),
    ("Africa/Cairo", "23:30", "2026-10-29T23:10:00+03:00", "2026-10-29T23:30:00+03:00"),
])
def test_a_scheduler_started_between_a_repeated_time_waits_for_the_next_day(
        zone: str, time: str, now: str, expected: str) -> None:
    trigger = scheduler_module.daily_trigger(ScheduleSection(time=time, timezone=zone))
    fire = trigger.get_next_fire_time(None, dt.datetime.fromisoformat(now))
    assert fire is not None and fire.isoformat() == expected


def test_list_jobs_prints_times_in_the_schedule_timezone(project: Project) -> None:
    text = project.settings.read_text().replace("Europe/London", "Asia/Kolkata")
    project.settings.write_text(text.replace('"07:00"', '"06:15"'))
    result = project.run("schedule", "--list-jobs")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "daily digest at 06:15 Asia/Kolkata; next runs:"
    assert len(lines) == 6 and all(line.endswith("06:15 IST (+0530)") for line in lines[1:])


def _emls(project: Project, date: str | None = None) -> list[Path]:
    return sorted(p for p in project.outbox.rglob("*.eml") if date is None or p.parent.name == date)


def test_scheduled_job_sends_at_seven_once_a_day(project: Project, clock: Clock) -> None:
    scheduler = start_scheduler(project)
    try:
        clock.now = dt.datetime(2026, 11, 24, 6, 59, 59, tzinfo=UTC)
        scheduler.tick()
        assert _emls(project) == []
        clock.now = dt.datetime(2026, 11, 24, 7, 0, 3, tzinfo=UTC)
        scheduler.tick()
        sent = _emls(project)
        assert [p.parent.name for p in sent] == ["2026-11-24"] * 3
        clock.now = dt.datetime(2026, 11, 24, 7, 20, tzinfo=UTC)
        scheduler.tick()
        assert _emls(project) == sent  # once a day, not once a tick
        job = scheduler.get_job(job_id("Europe/London"))
        assert job.next_run_time == dt.datetime(2026, 11, 25, 7, 0, tzinfo=ZoneInfo(
            "Europe/London"))
        assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, 3600)
    finally:
        scheduler.shutdown(wait=False)


def test_a_run_missed_while_down_is_sent_once_on_restart_within_grace(
        project: Project, clock: Clock) -> None:
    clock.now = dt.datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    start_scheduler(project).shutdown(wait=False)  # the machine goes to sleep before 07:00
    clock.now = dt.datetime(2026, 11, 24, 7, 40, tzinfo=UTC)  # and wakes 40 minutes late
    scheduler = start_scheduler(project)
    try:
        scheduler.tick()
        assert len(_emls(project, "2026-11-24")) == 3
        scheduler.tick()
    finally:
        scheduler.shutdown(wait=False)
    ledger = SqliteLedger(project.outbox / "newsletter.sqlite3")
    rows = ledger.deliveries("morning-brief/2026-11-24").values()
    assert sorted((r.status, r.attempts) for r in rows) == [
        ("sent", 1), ("sent", 1), ("sent", 1), ("skipped", 0)]


def test_several_missed_days_coalesce_into_one_run(project: Project, clock: Clock) -> None:
    clock.now = dt.datetime(2026, 11, 21, 6, 0, tzinfo=UTC)
    start_scheduler(project).shutdown(wait=False)
    clock.now = dt.datetime(2026, 11, 24, 7, 30, tzinfo=UTC)  # down for three mornings
    scheduler = start_scheduler(project)
    try:
        scheduler.tick()
    finally:
        scheduler.shutdown(wait=False)
    assert {p.parent.name for p in _emls(project)} == {"2026-11-24"}
    assert len(_emls(project)) == 3


def test_a_run_later_than_the_grace_time_is_skipped_and_logged(
        project: Project, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    clock.now = dt.datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    start_scheduler(project).shutdown(wait=False)
    clock.now = dt.datetime(2026, 11, 24, 9, 5, tzinfo=UTC)  # two hours late: stale
    scheduler = start_scheduler(project)
    try:
        scheduler.tick()
    finally:
        scheduler.shutdown(wait=False)
    assert _emls(project) == []
    assert "skipped as stale" in caplog.text
    assert "newsletter send --date 2026-11-24" in caplog.text


def test_scheduled_run_within_grace_time_still_sends(project: Project, clock: Clock) -> None:
    scheduler = start_scheduler(project)
    try:
        clock.now = dt.datetime(2026, 11, 24, 7, 25, tzinfo=UTC)  # busy machine, 25 min late
        scheduler.tick()
        assert len(_emls(project)) == 3
    finally:
        scheduler.shutdown(wait=False)


def test_scheduled_send_is_the_send_command(project: Project) -> None:
    now = dt.datetime(2026, 11, 24, 7, 0, tzinfo=UTC)
    assert scheduler_module.scheduled_send(str(project.settings), now=now) is True
    scheduled = {p.name: p.read_bytes() for p in _emls(project)}
    again = project.run("send", "--date", "2026-11-24")
    assert again.returncode == 0 and "nothing to do" in again.stdout  # the ledger knows
    for path in [*_emls(project), *project.outbox.glob("newsletter.sqlite3*")]:
        path.unlink()
    result = project.run("send", "--date", "2026-11-24")
    assert result.returncode == 0, result.stderr
    by_hand = {p.name: p.read_bytes() for p in _emls(project)}
    assert scheduled.keys() == by_hand.keys()

    def body(data: bytes) -> bytes:  # Date and MIME boundaries differ between runs
        return b"\n".join(line for line in data.splitlines()
                          if not line.startswith((b"Date:", b"--=", b" boundary")))

    assert {k: body(v) for k, v in scheduled.items()} == {k: body(v) for k, v in by_hand.items()}


def test_scheduled_send_logs_errors_instead_of_raising(project: Project,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    project.subscribers.write_text("lists: [oops")
    now = dt.datetime(2026, 11, 24, 7, 0, tzinfo=UTC)
    assert scheduler_module.scheduled_send(str(project.settings), now=now) is False
    assert "subscribers.yaml:2: invalid YAML" in caplog.text
    assert "flow sequence that starts on line 1" in caplog.text


def test_a_second_scheduler_refuses_to_start_and_sigterm_stops_the_first(
        project: Project) -> None:
    first = subprocess.Popen([sys.executable, "-m", "newsletter", "schedule"], cwd=project.root,
                             env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        line = first.stdout.readline()
        assert line.startswith("scheduler running: daily digest at 07:00 Europe/London"), line
        second = project.run("schedule")
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"the scheduler is locked by pid {first.pid}" in second.stderr
        first.send_signal(signal.SIGTERM)
        out, _ = first.communicate(timeout=30)
        assert first.returncode == 0 and "scheduler stopped" in out
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    # The job is in the persistent store, for the next start to pick up.
    assert (project.outbox / "scheduler.sqlite3").exists()
