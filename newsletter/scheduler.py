"""The daily schedule: APScheduler's cron trigger at `schedule.time` in `schedule.timezone`.

Jobs live in a SQLite job store, so a run missed while the machine was off or asleep is
still due when the scheduler comes back: within `schedule.misfire_grace_minutes` it goes
out once (several missed days coalesce into one run); later, it is skipped as stale and
logged. One scheduler per job store, enforced by a lock.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from pathlib import Path

from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.job import Job
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.cron import CronTrigger

from newsletter.digest import issue_date, load_inputs, run_send, send_lock
from newsletter.errors import NewsletterError
from newsletter.ledger import SqliteLedger
from newsletter.lock import ProcessLock
from newsletter.settings import ScheduleSection, load_settings

JOB_ID = "daily-digest"
log = logging.getLogger("newsletter.scheduler")
# Set by the `schedule` command on SIGTERM/SIGINT: the running job finishes the message in
# flight, records it and returns.
STOP = threading.Event()


def clock() -> dt.datetime:
    """Now, in UTC. The one place the scheduled job reads the time (tests replace it)."""
    return dt.datetime.now(dt.UTC)


class DailyTrigger(CronTrigger):
    """A cron trigger that fires at most once per local calendar day.

    On the night clocks fall back, a time such as 01:30 happens twice; plain `CronTrigger`
    fires at both, which would send the day's issue twice.
    """

    def get_next_fire_time(self, previous_fire_time: dt.datetime | None,
                           now: dt.datetime) -> dt.datetime | None:
        fire = super().get_next_fire_time(previous_fire_time, now)
        while (fire is not None and previous_fire_time is not None
               and fire.astimezone(self.timezone).date()
               == previous_fire_time.astimezone(self.timezone).date()):
            fire = super().get_next_fire_time(fire, fire + dt.timedelta(hours=1))
        return fire


def daily_trigger(schedule: ScheduleSection) -> DailyTrigger:
    """Fires at `schedule.time` local time every day; follows DST."""
    hour, minute = schedule.hour_minute
    return DailyTrigger(hour=hour, minute=minute, timezone=schedule.tz)


def next_run_times(schedule: ScheduleSection, now: dt.datetime,
                   count: int = 5) -> list[dt.datetime]:
    """The next `count` run times after `now`, in the schedule's time zone."""
    trigger = daily_trigger(schedule)
    times: list[dt.datetime] = []
    previous = None
    current = now
    for _ in range(count):
        fire = trigger.get_next_fire_time(previous, current)
        if fire is None:
            break
        times.append(fire)
        previous, current = fire, fire + dt.timedelta(seconds=1)
    return times


def job_store(schedule: ScheduleSection) -> SQLAlchemyJobStore:
    schedule.jobs.parent.mkdir(parents=True, exist_ok=True)
    return SQLAlchemyJobStore(url=f"sqlite:///{schedule.jobs}")


def scheduler_lock(schedule: ScheduleSection) -> ProcessLock:
    """Two schedulers on one job store would run each job twice, or lose it."""
    return ProcessLock(schedule.jobs.with_name(schedule.jobs.name + ".lock"), "the scheduler")


def install_daily_job(scheduler: BaseScheduler, schedule: ScheduleSection,
                      config_path: Path) -> Job:
    """Make sure the started (or paused) `scheduler` has the daily job.

    A stored job with the same schedule is kept as it is: its next run time may be a run
    that was missed while the scheduler was down, and must not be moved to tomorrow.
    """
    trigger = daily_trigger(schedule)
    args = (str(config_path.resolve()),)
    grace = schedule.misfire_grace_minutes * 60
    existing = scheduler.get_job(JOB_ID)
    if (existing is not None and repr(existing.trigger) == repr(trigger)
            and tuple(existing.args) == args and existing.misfire_grace_time == grace):
        return existing
    return scheduler.add_job(
        scheduled_send, trigger=trigger, args=args, id=JOB_ID, name="daily digest",
        replace_existing=True, misfire_grace_time=grace, coalesce=True, max_instances=1)


def watch_missed_runs(scheduler: BaseScheduler) -> None:
    """Log each run skipped as stale, with the command that sends it by hand."""
    def missed(event: JobExecutionEvent) -> None:
        when = event.scheduled_run_time
        log.warning("the digest due at %s was skipped as stale (later than the grace time); "
                    "send it by hand with: newsletter send --date %s",
                    when.isoformat(timespec="minutes"), when.date().isoformat())
    scheduler.add_listener(missed, EVENT_JOB_MISSED)


def scheduled_send(config_path: str, now: dt.datetime | None = None) -> bool:
    """The scheduled job: exactly what `newsletter send` does, for today's issue.

    Settings, subscribers and articles are read afresh, so edits apply without a restart.
    If a manual `send` holds the lock, the job waits for it (then finds its work done).
    Returns True when every delivery succeeded; problems are logged, never raised, so one
    bad morning does not stop the scheduler.
    """
    now = now or clock()
    try:
        settings = load_settings(Path(config_path))
        inputs = load_inputs(settings)
        ledger = SqliteLedger(settings.ledger)
        lock = send_lock(settings)
        try:
            lock.acquire(wait=settings.schedule.misfire_grace_minutes * 60, stop=STOP)
            try:
                reports = run_send(inputs, issue_date(settings, now), now, ledger, stop=STOP)
            finally:
                lock.release()
        finally:
            ledger.close()
    except NewsletterError as err:
        for line in str(err).splitlines():
            log.error("scheduled run failed: %s", line)
        return False
    for report in reports:
        log.info("%s: %d sent, %d sent earlier, %d skipped, %d failed, %d not attempted",
                 report.issue.id, report.sent, report.earlier, len(report.skipped),
                 len(report.failed), len(report.not_attempted))
        if report.error is not None:
            log.error("%s: %s", report.issue.id, report.error)
        if report.paused:
            log.error("%s: paused after %s", report.issue.id, report.paused)
    return all(r.ok for r in reports)
