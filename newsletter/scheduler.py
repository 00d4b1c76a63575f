"""The daily schedule: APScheduler's cron trigger at `schedule.time` in each reader's zone.

One job per time zone the readers live in (a reader's `timezone:`, else their list's, else
`schedule.timezone`); the job for a zone sends the issue of that zone's local date to
the readers there. Every zone's readers share one issue per list and date, recorded in
the ledger by the first zone to send it, so nobody gets a date twice. Jobs live in a
SQLite job store, so a run missed while the machine was off or asleep is
still due when the scheduler comes back: within `schedule.misfire_grace_minutes` it goes
out once (several missed days coalesce into one run); later, it is skipped as stale and
logged. One scheduler per job store, enforced by a lock.

With a PostgreSQL database the jobs live in it (APScheduler's table), and `schedule` may
run on several machines: one leads (newsletter.workers.leader's advisory lock), the
others stand by and the first to get the lock when the leader dies takes over. It runs
again each zone's last run within the grace time (`catch_up`): whatever the old leader
did not send of that morning goes out, and the ledger's rows keep what it sent from
going out twice.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.job import Job
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from newsletter.db import Database, open_ledger
from newsletter.digest import (
    due_date,
    issue_date,
    load_inputs,
    reader_zone,
    run_day,
    run_send,
    send_lock,
)
from newsletter.errors import ConfigError, NewsletterError
from newsletter.inbound.settings import BouncesSection
from newsletter.lock import ProcessLock
from newsletter.readers.roster import load_readers
from newsletter.settings import ScheduleSection, Settings, load_settings
from newsletter.sqlitefile import failure
from newsletter.subscribers import Roster
from newsletter.workers.leader import Leadership

JOB_PREFIX = "digest@"
LEGACY_JOB_ID = "daily-digest"  # the one job of versions before local-time delivery
FETCH_JOB_ID = "bounces-fetch"  # `bounces fetch` every bounces.poll_minutes
# How often a running scheduler re-reads the subscriber file for new time zones.
REFRESH_MINUTES = 5
# How long a scheduled run waits for another run to finish. Long, because giving up
# skips that zone's readers for the day; a run that takes longer than this is stuck.
LOCK_WAIT_SECONDS = 12 * 3600
log = logging.getLogger("newsletter.scheduler")
# Set by the `schedule` command on SIGTERM/SIGINT: the running job finishes the message in
# flight, records it and returns.
STOP = threading.Event()
# The lock this process leads by, with a PostgreSQL database; each run confirms it first.
LEADER: Leadership | None = None


def clock() -> dt.datetime:
    """Now, in UTC. The one place the scheduled job reads the time (tests replace it)."""
    return dt.datetime.now(dt.UTC)


def wall_time(trigger: object) -> dt.time | None:
    """The time of day a stored daily cron trigger fires at; None for any other trigger."""
    if not isinstance(trigger, CronTrigger):
        return None
    fields = {field.name: str(field) for field in trigger.fields}
    try:
        return dt.time(int(fields["hour"]), int(fields["minute"]), int(fields["second"]))
    except (KeyError, ValueError):  # a range, a list or a step: not a once-a-day time
        return None


class DailyTrigger(CronTrigger):
    """A cron trigger that fires exactly once for each day.

    Plain `CronTrigger` gets two DST nights wrong. When clocks fall back, a time such as
    01:30 happens twice and it fires at both, which would send the day's issue twice. When
    they spring forward at midnight (Cairo, Beirut, Santiago, Havana), it moves to the next
    day by adding 24 hours to midnight, lands after a time in the missing hour such as
    00:30, and skips the whole day.

    A time the clocks jump over fires as far after the jump as it was due after the hour
    before it: 00:30 in Cairo at 01:30 EEST, as 02:30 in New York fires at 03:30 EDT. Fire
    times are in the zone's real offset (03:30 EDT, not the nonexistent 02:30 EST).
    """

    def get_next_fire_time(self, previous_fire_time: dt.datetime | None,
                           now: dt.datetime) -> dt.datetime | None:
        fire = super().get_next_fire_time(previous_fire_time, now)
        if fire is None:
            return None
        # CronTrigger builds fire times from the wall time of day. fold=0, as the second
        # of a repeated time has fold=1, and combine() below must mean the first.
        at = fire.time().replace(fold=0)
        done = previous_fire_time
        if done is None:
            # Between the two occurrences of a repeated time CronTrigger offers the second,
            # but the first, already past, was that day's run.
            first = dt.datetime.combine(fire.date(), at, tzinfo=self.timezone)
            if first.astimezone(dt.UTC) < min(fire.astimezone(dt.UTC), now.astimezone(dt.UTC)):
                done = first
        while fire is not None and self._same_day(fire, done, at):
            fire = super().get_next_fire_time(fire, fire + dt.timedelta(hours=1))
        if fire is None:
            return None
        # The same wall time the day before is the run CronTrigger skips when that day's
        # midnight does not exist; without a gap it is the previous run, or before `now`.
        # (fold=0 reads a nonexistent time with the offset before the jump: 00:30 EET is
        # 01:30 EEST.)
        day_before = dt.datetime.combine(fire.date() - dt.timedelta(days=1), at,
                                         tzinfo=self.timezone)
        if (day_before.astimezone(dt.UTC) >= self._search_start(previous_fire_time, now)
                and not self._same_day(day_before, done, at)):
            fire = day_before
        return self._local(fire)

    def _local(self, moment: dt.datetime) -> dt.datetime:
        # Through UTC: astimezone() to the same zone changes nothing, not even a wall time
        # that does not exist.
        return moment.astimezone(dt.UTC).astimezone(self.timezone)

    def _day(self, fire: dt.datetime, at: dt.time) -> dt.date:
        return run_day(fire, at, self.timezone)

    def _same_day(self, fire: dt.datetime, previous: dt.datetime | None, at: dt.time) -> bool:
        return previous is not None and self._day(fire, at) == self._day(previous, at)

    def _search_start(self, previous_fire_time: dt.datetime | None,
                      now: dt.datetime) -> dt.datetime:
        """The earliest time CronTrigger.get_next_fire_time may return, in UTC."""
        if previous_fire_time is not None:
            return min(now.astimezone(dt.UTC),
                       previous_fire_time.astimezone(dt.UTC) + dt.timedelta(microseconds=1))
        start: dt.datetime = now.astimezone(dt.UTC)
        return max(start, self.start_date.astimezone(dt.UTC)) if self.start_date else start


def daily_trigger(schedule: ScheduleSection, zone: str | None = None) -> DailyTrigger:
    """Fires at `schedule.time` local time in `zone` (default the schedule's) every day;
    follows DST."""
    hour, minute = schedule.hour_minute
    return DailyTrigger(hour=hour, minute=minute, timezone=ZoneInfo(zone or schedule.timezone))


def job_id(zone: str) -> str:
    return JOB_PREFIX + zone


def delivery_zones(roster: Roster, settings: Settings) -> dict[str, int]:
    """Each time zone with active readers, and how many; the schedule's zone if none."""
    zones: dict[str, int] = {}
    for lst in roster.lists.values():
        for s in lst.subscribers:
            if s.status == "active":
                zone = reader_zone(s, lst, settings)
                zones[zone] = zones.get(zone, 0) + 1
    return dict(sorted(zones.items())) or {settings.schedule.timezone: 0}


def next_run_times(schedule: ScheduleSection, now: dt.datetime, count: int = 5,
                   zone: str | None = None) -> list[dt.datetime]:
    """The next `count` run times after `now`, in `zone` (default the schedule's)."""
    trigger = daily_trigger(schedule, zone)
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


def job_store(schedule: ScheduleSection,
              database: Database | None = None) -> SQLAlchemyJobStore:
    """The scheduler's persistent jobs: in a PostgreSQL `database`, else in
    `schedule.jobs` (an SQLite file it makes)."""
    if database is not None and database.is_postgres:
        from newsletter.db import engine

        return SQLAlchemyJobStore(engine=engine(database))
    path = schedule.jobs
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _jobs_error(path, f"its folder cannot be made ({err.strerror})") from err
    if os.path.lexists(path):
        if path.is_dir():
            raise _jobs_error(path, "is a folder")
        if not path.is_file():
            raise _jobs_error(path, "is not a regular file")
        try:
            with open(path, "rb") as f:
                head = f.read(16)
        except OSError as err:
            raise _jobs_error(path, f"cannot be read ({err.strerror})") from err
        if head and head != b"SQLite format 3\x00":
            raise _jobs_error(path, "is not an SQLite database")
    return SQLAlchemyJobStore(url=f"sqlite:///{path}")


def _jobs_error(path: Path, why: str) -> ConfigError:
    return ConfigError(f"the scheduler's job store {why}", file=path, field="schedule.jobs",
                       fix="point schedule.jobs at a file the scheduler may create (the "
                           "default is outbox/scheduler.sqlite3), or move this one away")


def store_failure(path: Path, err: Exception, database: Database | None = None) -> ConfigError:
    """The job store could not be read or written (SQLAlchemy's error): one line."""
    if database is not None and database.is_postgres:
        why = " ".join(str(getattr(err, "orig", None) or err).split())
        return ConfigError(f"cannot use the scheduler's job store in {database.display()}: "
                           f"{why}", field="database",
                           fix="check the server is up and `newsletter db upgrade` was run")
    why, fix = failure(path, getattr(err, "orig", None) or err)
    return ConfigError(f"cannot use the scheduler's job store: {why}", file=path,
                       field="schedule.jobs", fix=fix)


def scheduler_lock(schedule: ScheduleSection) -> ProcessLock:
    """Two schedulers on one job store would run each job twice, or lose it."""
    return ProcessLock(schedule.jobs.with_name(schedule.jobs.name + ".lock"), "the scheduler")


class LeadershipLost(NewsletterError):
    """The leader lost its lock (the database out of reach): it stopped scheduling."""

    exit_code = 1


@contextlib.contextmanager
def one_scheduler(settings: Settings,
                  on_standby: Callable[[str], None]) -> Iterator[Leadership | None]:
    """Only one scheduler runs the jobs. SQLite: a file lock, and a second scheduler
    refuses to start. PostgreSQL: stand by (telling `on_standby` who leads) until this
    one leads, or until STOP (then the caller finds STOP set and stops); yields the lock,
    which `LEADER` holds while leading."""
    global LEADER
    database = settings.database_config
    if not database.is_postgres:
        with scheduler_lock(settings.schedule):
            yield None
        return
    leadership = Leadership(database)
    try:
        if leadership.wait(STOP, on_standby):
            LEADER = leadership
            # The tables at this program's revision (an empty database gets them all)
            # before APScheduler would make its own.
            open_ledger(settings).close()
        yield leadership
    finally:
        LEADER = None
        leadership.close()


def stop_when_lost(leader: Leadership, scheduler: BaseScheduler) -> None:
    """When `leader` loses its lock no new run starts, and the one running stops after
    the message in flight (STOP); `schedule` then exits, to stand by again on restart."""
    def lost(_: str) -> None:
        scheduler.pause()
        STOP.set()
    leader.on_lost(lost)
    if leader.lost.is_set():
        lost("")


def catch_up(scheduler: BaseScheduler, schedule: ScheduleSection,
             now: dt.datetime | None = None) -> list[str]:
    """Taking over from a scheduler that died: each zone's last run within the grace time
    runs again (its job may already point at tomorrow if the old leader died mid-run).
    What was sent is in the ledger and goes out nothing twice. Returns the zones."""
    now = now or clock()
    grace = dt.timedelta(minutes=schedule.misfire_grace_minutes)
    zones = []
    for job in scheduler.get_jobs(jobstore="default"):
        if not job.id.startswith(JOB_PREFIX) or job.next_run_time is None:
            continue
        last = None
        fire = job.trigger.get_next_fire_time(None, now - grace)
        while fire is not None and fire <= now:
            last = fire
            fire = job.trigger.get_next_fire_time(fire, fire + dt.timedelta(seconds=1))
        if last is not None and job.next_run_time > last:
            job.modify(next_run_time=last)
            zones.append(job.id.removeprefix(JOB_PREFIX))
    return zones


def install_jobs(scheduler: BaseScheduler, schedule: ScheduleSection, zones: list[str],
                 config_path: Path, now: dt.datetime | None = None) -> list[Job]:
    """Make sure the started (or paused) `scheduler` has one daily job per zone, and no
    others.

    A stored job with the same schedule is kept as it is: its next run time may be a run
    that was missed while the scheduler was down, and must not be moved to tomorrow. A job
    that is replaced keeps its next run time too, overdue or still to come, when the new
    schedule's first run would be for a later day (see `_kept_run`); so does the job of
    `schedule.timezone` when it takes over from the single job of older versions. An
    overdue run kept goes out, or is logged as stale, by the grace time, as for a kept job.
    """
    now = now or clock()
    config = str(config_path.resolve())
    grace = schedule.misfire_grace_minutes * 60
    legacy = scheduler.get_job(LEGACY_JOB_ID)
    jobs = []
    for zone in zones:
        trigger = daily_trigger(schedule, zone)
        args = (config, zone)
        existing = scheduler.get_job(job_id(zone))
        if (existing is not None and repr(existing.trigger) == repr(trigger)
                and tuple(existing.args) == args and existing.misfire_grace_time == grace):
            jobs.append(existing)
            continue
        kept = _kept_run(existing, trigger, now) or (
            _kept_run(legacy, trigger, now) if zone == schedule.timezone else None)
        # add_job reads next_run_time=None as "paused": leave it out to start from now.
        when = {"next_run_time": kept} if kept is not None else {}
        jobs.append(scheduler.add_job(
            scheduled_send, trigger=trigger, args=args, id=job_id(zone),
            name=f"daily digest, {zone}", replace_existing=True, misfire_grace_time=grace,
            coalesce=True, max_instances=1, **when))
    wanted = {job_id(zone) for zone in zones}
    for job in scheduler.get_jobs(jobstore="default"):
        if job.id == LEGACY_JOB_ID or (job.id.startswith(JOB_PREFIX) and job.id not in wanted):
            job.remove()
    return jobs


def _kept_run(job: Job | None, trigger: DailyTrigger,
              now: dt.datetime) -> dt.datetime | None:
    """The stored `job`'s next run time if `trigger`, which replaces the job's, would
    first run for a later day than that run is for; else None.

    Starting from now would then lose that day's issue: 09:00 moved to 07:00 at 08:00
    would first run tomorrow at 07:00. The run kept sends the day's issue, as the
    latest new time before it is that day's. When the new time comes first (or instead,
    on the same day), that run sends the issue: the old one would send, early, the issue
    due before the new time (yesterday's), and then the new time would be skipped as a
    second run that day.
    """
    if job is None or job.next_run_time is None:
        return None
    run: dt.datetime = job.next_run_time
    upcoming = trigger.get_next_fire_time(None, now)
    if upcoming is not None and _day_of(trigger, upcoming) <= _day_of(job.trigger, run):
        return None
    return run.astimezone(dt.UTC).astimezone(trigger.timezone)


def _day_of(trigger: object, run: dt.datetime) -> dt.date:
    """The day whose issue `run`, a run time of the daily `trigger`, is for (`run_day`).
    Plain dates in UTC for a trigger of any other kind, which no version stored."""
    zone = getattr(trigger, "timezone", dt.UTC)
    return run_day(run, wall_time(trigger) or dt.time.min, zone)


def install_fetch_job(scheduler: BaseScheduler, bounces: BouncesSection, config_path: Path,
                      now: dt.datetime | None = None) -> Job | None:
    """A `bounces fetch` every `bounces.poll_minutes` when a bounce mailbox is configured;
    no such job otherwise. A stored job of the same interval is kept (its next run stays)."""
    existing = scheduler.get_job(FETCH_JOB_ID)
    if bounces.source is None:
        if existing is not None:
            existing.remove()
        return None
    interval = dt.timedelta(minutes=bounces.poll_minutes)
    args = (str(config_path.resolve()),)
    if (existing is not None and isinstance(existing.trigger, IntervalTrigger)
            and existing.trigger.interval == interval and tuple(existing.args) == args):
        return existing
    # The first run one interval from now, by the clock the tests control.
    trigger = IntervalTrigger(minutes=bounces.poll_minutes,
                              start_date=(now or clock()) + interval, timezone=dt.UTC)
    # A run later than one interval is skipped: the next one reads the same mail anyway.
    return scheduler.add_job(
        scheduled_fetch, trigger=trigger, args=args, id=FETCH_JOB_ID,
        name=f"bounces fetch every {bounces.poll_minutes} min", replace_existing=True,
        misfire_grace_time=int(interval.total_seconds()), coalesce=True, max_instances=1)


def refresh_jobs(scheduler: BaseScheduler, config_path: Path) -> None:
    """Re-read settings and subscribers; add jobs for new time zones, drop unused ones.

    Runs every few minutes inside `newsletter schedule`; a broken file keeps the jobs
    as they are (and is logged), so a typo does not stop tomorrow's digest.
    """
    try:
        settings = load_settings(config_path)
        zones = delivery_zones(load_readers(settings), settings)
    except NewsletterError as err:
        for line in str(err).splitlines():
            log.error("could not refresh the schedule: %s", line)
        return
    before = {job.id for job in scheduler.get_jobs(jobstore="default")}
    install_jobs(scheduler, settings.schedule, list(zones), config_path)
    install_fetch_job(scheduler, settings.bounces, config_path)
    after = {job.id for job in scheduler.get_jobs(jobstore="default")}
    for added in sorted(after - before - {FETCH_JOB_ID}):
        log.info("now also sending at %s in %s", settings.schedule.time,
                 added.removeprefix(JOB_PREFIX))
    for removed in sorted(before - after - {FETCH_JOB_ID}):
        log.info("no readers left in %s: its daily job is removed",
                 removed.removeprefix(JOB_PREFIX))
    if FETCH_JOB_ID in after - before:
        log.info("now fetching bounces every %d minutes", settings.bounces.poll_minutes)
    if FETCH_JOB_ID in before - after:
        log.info("no bounce mailbox configured any more: bounces are no longer fetched")


def watch_missed_runs(scheduler: BaseScheduler) -> None:
    """Log each run skipped as stale, with the command that sends it by hand."""
    def missed(event: JobExecutionEvent) -> None:
        when = event.scheduled_run_time
        if event.job_id == FETCH_JOB_ID:
            log.info("the bounces fetch due at %s was skipped (the scheduler was busy or "
                     "down); the next one reads all the mail waiting",
                     when.isoformat(timespec="minutes"))
            return
        zone = event.job_id.removeprefix(JOB_PREFIX) if event.job_id.startswith(
            JOB_PREFIX) else None
        by_hand = f"newsletter send --date {when.date().isoformat()}" + (
            f" --timezone {zone}" if zone else "")
        log.warning("the digest due at %s was skipped as stale (later than the grace time); "
                    "send it by hand with: %s", when.isoformat(timespec="minutes"), by_hand)
    scheduler.add_listener(missed, EVENT_JOB_MISSED)


def scheduled_send(config_path: str, zone: str | None = None,
                   now: dt.datetime | None = None) -> bool:
    """The scheduled job: exactly what `newsletter send --timezone ZONE` does, for the
    issue of that zone's morning (without a zone: `newsletter send`, for today's issue).

    Settings, subscribers and articles are read afresh, so edits apply without a restart.
    If another run holds the lock (a manual `send`, or the job of a zone whose morning is
    at the same instant, such as Paris and Berlin), the job waits its turn.
    Returns True when every delivery succeeded; problems are logged, never raised, so one
    bad morning does not stop the scheduler.
    """
    sent_now = now is None
    now = now or clock()
    if LEADER is not None and not LEADER.confirm():
        log.error("the run of %s was not started: this scheduler no longer leads",
                  zone or "the day")
        return False
    try:
        settings = load_settings(Path(config_path))
        inputs = load_inputs(settings)
        for warning in inputs.warnings:
            log.warning("%s", warning)
        ledger = open_ledger(settings)
        lock = send_lock(settings)
        try:
            lock.acquire(wait=LOCK_WAIT_SECONDS, stop=STOP)
            try:
                date = (due_date(settings.schedule, zone, now) if zone
                        else issue_date(settings, now))
                # The morning's issue, stamped with the time it actually leaves.
                # With PostgreSQL and `workers:` set, the morning goes to the workers as
                # `send` hands it over; an in-process run leases its rows as a worker does.
                from newsletter.cli.workers import hold_for_send, queue_for_workers

                reports = run_send(inputs, date, clock() if sent_now else now, ledger,
                                   zone=zone, stop=STOP,
                                   on_quiet=lambda quiet: log.info("%s", quiet.quiet_line),
                                   enqueue=queue_for_workers(settings, None),
                                   hold=hold_for_send(settings))
            finally:
                lock.release()
        finally:
            ledger.close()
    except NewsletterError as err:
        for line in str(err).splitlines():
            log.error("scheduled run failed: %s", line)
        return False
    for report in reports:
        if report.queued is not None:
            log.info("%s%s: %d reader(s) handed to the workers", report.issue.id,
                     f" ({zone})" if zone else "", report.queued)
        log.info("%s%s: %d sent, %d sent earlier, %d skipped, %d failed, %d not attempted, "
                 "%d in other time zones", report.issue.id, f" ({zone})" if zone else "",
                 report.sent, report.earlier, len(report.skipped), len(report.failed),
                 len(report.not_attempted), report.later)
        if report.error is not None:
            log.error("%s: %s", report.issue.id, report.error)
        if report.paused:
            log.error("%s: paused after %s", report.issue.id, report.paused)
    return all(r.ok for r in reports)


def scheduled_fetch(config_path: str) -> bool:
    """The scheduled job: exactly what `newsletter bounces fetch` does, logged.

    Settings are read afresh. Counts are logged each run; mail left in the mailbox is
    logged when first seen, not again every few minutes. Problems are logged, never raised.
    Returns True when the mailbox was read.
    """
    from newsletter.inbound.fetch import LEFT_LOGGED, run_fetch
    from newsletter.lock import LockHeld

    try:
        report = run_fetch(load_settings(Path(config_path)), stop=STOP)
    except LockHeld as err:
        log.info("bounces fetch skipped: %s", str(err).splitlines()[0])
        return False
    except NewsletterError as err:
        for line in str(err).splitlines():
            log.error("bounces fetch failed: %s", line)
        return False
    for warning in report.warnings:
        log.warning("%s", warning)
    log.info("bounces fetch: %s", report.summary())
    for line in LEFT_LOGGED.new(config_path, report):
        log.warning("%s (listed once; it stays until moved or deleted)", line)
    return True
