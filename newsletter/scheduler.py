"""The daily schedule: APScheduler's cron trigger at `schedule.time` in `schedule.timezone`."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.cron import CronTrigger

from newsletter.digest import issue_date, load_inputs, run_send
from newsletter.errors import NewsletterError
from newsletter.settings import ScheduleSection, load_settings

JOB_ID = "daily-digest"
# A run delayed this long (machine busy or asleep) still goes out; later than that it is
# skipped and `send --date` sends it by hand.
MISFIRE_GRACE = dt.timedelta(minutes=30)

log = logging.getLogger("newsletter.scheduler")


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


def add_daily_job(scheduler: BaseScheduler, schedule: ScheduleSection, config_path: Path) -> None:
    """Register the daily digest on `scheduler` (which the caller starts)."""
    scheduler.add_job(
        scheduled_send,
        trigger=daily_trigger(schedule),
        args=[str(config_path)],
        id=JOB_ID,
        name="daily digest",
        replace_existing=True,
        misfire_grace_time=int(MISFIRE_GRACE.total_seconds()),
        coalesce=True,
        max_instances=1,
    )


def scheduled_send(config_path: str, now: dt.datetime | None = None) -> bool:
    """The scheduled job: exactly what `newsletter send` does, for today's issue.

    Settings, subscribers and articles are read afresh, so edits apply without a restart.
    Returns True when every delivery succeeded; problems are logged, never raised, so one
    bad morning does not stop the scheduler.
    """
    now = now or clock()
    try:
        settings = load_settings(Path(config_path))
        inputs = load_inputs(settings)
        reports = run_send(inputs, issue_date(settings, now), now)
    except NewsletterError as err:
        for line in str(err).splitlines():
            log.error("scheduled run failed: %s", line)
        return False
    for report in reports:
        log.info("%s: %d sent, %d skipped, %d failed, %d not attempted", report.issue.id,
                 report.sent, len(report.skipped), len(report.failed), len(report.not_attempted))
        if report.error is not None:
            log.error("%s: %s", report.issue.id, report.error)
    return all(r.ok for r in reports)
