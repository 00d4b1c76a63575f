"""The `newsletter` command: the only place that prints or exits."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import json
import logging
import math
import os
import re
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml

from newsletter.addresses import InvalidAddress, normalize_address
from newsletter.check import Finding
from newsletter.delivery import BACKENDS
from newsletter.delivery.file import write_atomically
from newsletter.digest import (
    DeliveryReport,
    Inputs,
    compose_lists,
    due_date,
    issue_date,
    list_zone,
    load_inputs,
    reader_zone,
    render_edition,
    run_send,
    send_lock,
    variant_audience,
)
from newsletter.errors import ConfigError, NewsletterError, NothingNew
from newsletter.ledger import ALL_LISTS, SqliteLedger
from newsletter.message import personal_fields
from newsletter.models import Article, Edition, Issue, Subscriber, SubscriberList
from newsletter.progress import SendProgress
from newsletter.render import PersonalFields, Renderer, page_name
from newsletter.secret import existing_secret, unsubscribe_secret
from newsletter.settings import (
    CONFIG_VARIABLE,
    DEFAULT_CONFIG,
    ScheduleSection,
    Settings,
    check_timezone,
    load_settings,
)
from newsletter.subscribers import load_roster
from newsletter.unsubscribe import read_request, read_token

F = TypeVar("F", bound=Callable[..., Any])
EXIT_FAILED_DELIVERIES = 1
# Where `dkim keygen` puts keys by default: a folder the project's .gitignore covers.
DKIM_KEY_DIR = Path("config/dkim")


class _IssueDate(click.DateTime):
    """A YYYY-MM-DD date within the years articles may carry (1970–2999): outside them,
    date arithmetic (max_age_days back, a day forward) would overflow."""

    FIRST, LAST = dt.datetime(1970, 1, 1), dt.datetime(2999, 12, 31)

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        when = super().convert(value, param, ctx)
        if not self.FIRST <= when <= self.LAST:
            self.fail(f"{when.date().isoformat()} is out of range: an issue date is between "
                      f"{self.FIRST.date()} and {self.LAST.date()}", param, ctx)
        return when


class _Seconds(click.ParamType):
    """A finite, non-negative number of seconds up to `most` (no nan, no inf)."""

    name = "seconds"

    def __init__(self, most: float) -> None:
        self.most = most

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not (math.isfinite(seconds) and 0 <= seconds <= self.most):
            self.fail(f"{value!r} is not a number of seconds from 0 to {self.most:g}",
                      param, ctx)
        return seconds


DATE = _IssueDate(formats=["%Y-%m-%d"])


def _user_errors(command: F) -> F:
    """Turn a `NewsletterError` into `error: …` lines on stderr and its exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except NewsletterError as err:
            for problem in err.problems:
                click.echo(f"error: {problem}", err=True)
            sys.exit(err.exit_code)

    return wrapper  # type: ignore[return-value]


class _App:
    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self._settings: Settings | None = None
        self._ledger: SqliteLedger | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings

    def ledger(self, create: bool = True) -> SqliteLedger | None:
        """The delivery ledger; None if it does not exist and `create` is False."""
        # lexists: a link to a ledger that is not there (a mount gone) is refused when
        # opened, never taken for "no ledger yet" (which would compose sent articles again).
        if self._ledger is None and create:
            self._ledger = SqliteLedger(self.settings.ledger)
        elif self._ledger is None and os.path.lexists(self.settings.ledger):
            # Only read: a ledger that cannot be written (read-only, a full disk) still is.
            self._ledger = SqliteLedger.for_reading(self.settings.ledger)
        return self._ledger

    def inputs(self) -> Inputs:
        inputs = load_inputs(self.settings)
        _warn(inputs.warnings)
        return inputs

    def date(self, value: dt.datetime | None) -> dt.date:
        return value.date() if value else issue_date(self.settings, _now())


pass_app = click.make_pass_decorator(_App)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _warn(warnings: list[Any]) -> None:
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              envvar=CONFIG_VARIABLE,
              default=DEFAULT_CONFIG, show_default=True,
              help="Settings file (also NEWSLETTER_CONFIG).")
@click.version_option(package_name="newsletter")
@click.pass_context
def cli(ctx: click.Context, config_path: Path) -> None:
    """Compose a daily digest from your articles and deliver it to your subscriber lists.

    Dates are YYYY-MM-DD and default to today in the schedule's time zone. Without --list,
    a command acts on every list in the subscriber file. Exit status: 0 success, 1 some
    deliveries failed, 2 a mistake in the input (the message says where and how to fix it).
    """
    ctx.obj = _App(config_path)


@cli.command()
@click.option("--date", "date", type=DATE, help="Issue date (YYYY-MM-DD).")
@click.option("--list", "list_id", metavar="LIST", help="Only this list.")
@click.option("--subscriber", metavar="EMAIL", help="Personalise the preview for this subscriber.")
@pass_app
@_user_errors
def preview(app: _App, date: dt.datetime | None, list_id: str | None,
            subscriber: str | None) -> None:
    """Render the issue to outbox/preview/ as .html and .txt files; send nothing."""
    inputs = app.inputs()
    day = app.date(date)
    newsletter = app.settings.newsletter
    lists = inputs.roster.select(list_id)
    if subscriber is not None:
        wanted = _address(subscriber, "--subscriber").lower()
        readers = {lst.id: s for lst in lists for s in lst.subscribers
                   if s.email.lower() == wanted}
        if not readers:
            where = f"list {list_id!r}" if list_id else "any list"
            raise ConfigError(f"{subscriber} is not on {where}", file=inputs.roster.path,
                              field="--subscriber", fix="pick an address from the subscriber file")
        lists = [lst for lst in lists if lst.id in readers]
    renderer = Renderer.from_settings(app.settings)
    outbox = app.settings.delivery.outbox / "preview"
    for lst, composed in compose_lists(inputs, lists, day, app.ledger(create=False),
                                       _print_quiet):
        edition = render_edition(renderer, composed, lst.locale, list_zone(lst, app.settings))
        if subscriber is not None:
            reader = readers[lst.id]
            personal = personal_fields(newsletter, lst.id, reader,
                                       unsubscribe_secret(app.settings))
            # Its own file: the general preview next to it stays fit to show colleagues.
            copies = [(edition.for_reader(reader), _reader_page(day, reader.email))]
        else:  # neutral copies, fit to show colleagues: the general issue and each variant
            personal = PersonalFields(email=f"reader@{newsletter.sender_domain}",
                                      unsubscribe_url=f"{newsletter.base_url}/unsubscribe")
            copies = [(variant, page_name(variant.issue))
                      for variant in edition.variants.values()]
        for rendered, name in copies:
            for suffix, part in ((".html", rendered.html), (".txt", rendered.text)):
                path = outbox / lst.id / f"{name}{suffix}"
                write_atomically(path, part.fill(personal).encode("utf-8"))
                click.echo(str(path))


def _reader_page(day: dt.date, email: str) -> str:
    """`2026-11-24.ada@example.com`: a personal preview's file name. The `@` keeps it apart
    from the general and topic pages; characters a file name should not hold become `_`,
    and then a hash of the address keeps two readers apart."""
    safe = re.sub(r"[^A-Za-z0-9._+@-]", "_", email)[:100]
    if safe != email:
        safe += "." + hashlib.sha256(email.encode()).hexdigest()[:8]
    return f"{day.isoformat()}.{safe}"


@cli.command()
@click.option("--date", "date", type=DATE, help="Issue date (YYYY-MM-DD).")
@click.option("--list", "list_id", metavar="LIST", help="Only this list.")
@click.option("--backend", metavar="NAME",
              help=f"Override delivery.backend ({' | '.join(BACKENDS)}).")
@click.option("--to", "to", metavar="EMAIL",
              help="Test send: only this address gets a copy, marked [TEST] in the subject; "
                   "not recorded as the issue's delivery.")
@click.option("--dry-run", is_flag=True,
              help="Build every message still to send and print them; deliver nothing.")
@click.option("--resend", is_flag=True,
              help="Send the issue again to everyone, including those who already have it.")
@click.option("--wait", "wait", type=_Seconds(most=24 * 3600), default=0, metavar="SECONDS",
              help="If another process is sending, wait this long for it to finish "
                   "(at most a day).")
@click.option("--force", is_flag=True, help="Send even if `check` finds errors.")
@click.option("--timezone", "zone", metavar="ZONE",
              help="Only readers whose morning is in this time zone (IANA name), as the "
                   "scheduler does at that zone's schedule.time.")
@pass_app
@_user_errors
def send(app: _App, date: dt.datetime | None, list_id: str | None, backend: str | None,
         to: str | None, dry_run: bool, resend: bool, wait: float, force: bool,
         zone: str | None) -> None:
    """Deliver the issue to every active subscriber who has not had it yet.

    Every delivery is recorded in the ledger as the server answers, so running the same
    command again resumes an interrupted or partly failed send and never mails anyone
    twice; a fully sent issue is left alone. Exits 0 only if every subscriber has the issue.
    """
    # `is not None`: an empty --to "$TEST_ADDRESS" (unset) is a mistake, not a real send.
    test_reader = Subscriber(email=_address(to, "--to")) if to is not None else None
    if zone is not None:
        try:
            check_timezone(zone)
        except ValueError as err:
            raise ConfigError(f"{zone!r}: {err}", field="--timezone") from err
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"unknown delivery backend {backend!r}", field="--backend",
                          fix="use one of: " + ", ".join(BACKENDS))
    inputs = app.inputs()
    if zone is not None and test_reader is None:
        lists = inputs.roster.select(list_id)
        in_use = sorted({reader_zone(s, lst, app.settings) for lst in lists
                         for s in lst.subscribers if s.status == "active"})
        if zone not in in_use:
            # Not an error (a scheduler may ask for a zone its last reader just left), but
            # a typo such as US/Pacific for America/Los_Angeles must not pass in silence.
            click.echo(f"nothing to send: no active reader's time zone is {zone} (in use: "
                       + (", ".join(in_use) or "none") + ")", err=True)
            return
    if date is None and zone is not None:  # that zone's morning, as its scheduled run
        day = due_date(app.settings.schedule, zone, _now())
    else:
        day = app.date(date)
    backend_name = "console" if dry_run else (backend or app.settings.delivery.backend)
    # The console only prints: like a dry run, it records nothing (run_send sees to that).
    dry_run = dry_run or not BACKENDS[backend_name].delivers
    recorded = not dry_run and test_reader is None
    ledger = app.ledger(create=recorded)
    stop = threading.Event()
    lock = send_lock(app.settings)
    seen: set[tuple[str, str, str]] = set()

    def on_finding(issue_id: str, finding: Finding) -> None:
        # Every topic variant is checked, and a warning about the settings (no DKIM key)
        # is the same for each of them: say it once per issue.
        if (key := (issue_id, finding.level, finding.what)) not in seen:
            seen.add(key)
            _print_finding(issue_id, finding)

    with _stop_on_signals(stop), SendProgress(sys.stderr) as progress:
        if recorded:
            lock.acquire(wait=wait, stop=stop)
        try:
            reports = run_send(inputs, day, _now(), ledger,
                               list_id=list_id, zone=zone, backend_name=backend_name,
                               to=test_reader,
                               resend=resend, dry_run=dry_run, force=force,
                               stream=sys.stdout, stop=stop, on_start=progress.start,
                               on_result=progress.advance, on_finding=on_finding,
                               on_quiet=_print_quiet)
        finally:
            lock.release()
    for report in reports:
        _summarise(report, backend_name, dry_run)
    error = next((r.error for r in reports if r.error is not None), None)
    waiting = sum(len(r.not_attempted) for r in reports)
    if error is not None:
        for problem in error.problems:
            click.echo(f"error: {problem}", err=True)
    if waiting:
        click.echo(f"{waiting} message(s) not sent yet: run the same command again to send "
                   "them (readers who have it already are not sent it again)", err=True)
    if error is not None:
        sys.exit(error.exit_code)
    if not all(r.ok for r in reports):
        sys.exit(EXIT_FAILED_DELIVERIES)


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and Ctrl-C finish the message in flight, record it, then stop the run."""
    def handler(signum: int, frame: object) -> None:
        if stop.is_set():  # a second Ctrl-C: the user really means it
            raise KeyboardInterrupt
        click.echo(f"{signal.Signals(signum).name}: finishing the message in flight, then "
                   "stopping", err=True)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _summarise(report: DeliveryReport, backend: str, dry_run: bool) -> None:
    label = "test send" if report.test else ("dry run" if dry_run else backend)
    verb = "to send" if dry_run else "sent"
    parts = [f"{report.sent} {verb}"]
    if report.earlier:
        parts.append(f"{report.earlier} sent earlier")
    unsubscribed = sum(reason == "unsubscribed" for _, reason in report.skipped)
    if unsubscribed:
        parts.append(f"{unsubscribed} skipped (unsubscribed)")
    if len(report.skipped) > unsubscribed:
        parts.append(f"{len(report.skipped) - unsubscribed} suppressed")
    parts.append(f"{len(report.failed)} failed")
    if report.not_attempted:
        parts.append(f"{len(report.not_attempted)} not attempted")
    if report.later:
        parts.append(f"{report.later} waiting for their time zone's run")
    click.echo(f"{report.issue.id} [{label}]: {', '.join(parts)}")
    if (not report.test and not dry_run and not report.sent and not report.failed
            and not report.not_attempted and not report.later
            and report.earlier):
        click.echo("  already sent to every subscriber; nothing to do (--resend sends it again)")
    for result in report.failed:
        kind = "will retry" if result.status == "failed-temporary" else "permanent"
        click.echo(f"  failed ({kind}): {result.recipient}: {result.reply}")
    if report.paused:
        click.echo(f"  paused after {report.paused}; run send again to resume")
    if report.stopped:
        click.echo("  stopped on request; run send again to resume")


@cli.command()
@click.option("--date", "date", type=DATE, help="Issue date (YYYY-MM-DD).")
@click.option("--list", "list_id", metavar="LIST", help="Only this list.")
@click.option("--explain", is_flag=True, help="Show every article's score and why it was "
                                               "chosen or dropped.")
@click.option("--json", "as_json", is_flag=True, help="Print the issue as JSON.")
@pass_app
@_user_errors
def compose(app: _App, date: dt.datetime | None, list_id: str | None, explain: bool,
            as_json: bool) -> None:
    """Show the lead article and related headlines the issue would carry."""
    inputs = app.inputs()
    day = app.date(date)
    ledger = app.ledger(create=False)
    lists = inputs.roster.select(list_id)
    editions = compose_lists(inputs, lists, day, ledger,
                             functools.partial(_print_quiet, err=as_json))
    if as_json:  # one list: its issue; several: a list of them (quiet ones left out)
        data = [_edition_json(edition, lst, explain) for lst, edition in editions]
        click.echo(json.dumps(data[0] if len(data) == 1 and len(lists) == 1 else data,
                              indent=2, ensure_ascii=False))
        return
    for lst, edition in editions:
        _print_edition(edition, lst, explain)


def _article_json(article: Article) -> dict[str, Any]:
    return article.model_dump(mode="json", exclude={"related_to", "related_position"})


def _issue_json(issue: Issue, explain: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": issue.id, "list": issue.list_id, "date": issue.date.isoformat(),
        "lead": _article_json(issue.lead),
        "headlines": [_article_json(a) for a in issue.headlines],
    }
    if explain:
        data["decisions"] = [d.model_dump(mode="json") for d in issue.decisions]
    return data


def _edition_json(edition: Edition, lst: SubscriberList, explain: bool) -> dict[str, Any]:
    """The general issue at the top level (as before topics existed), plus `variants`."""
    data = _issue_json(edition.general, explain)
    data["variants"] = [
        {"general": a.general, "subscribers": a.readers,
         "topics": [list(t) for t in a.topic_sets if t],
         **{k: v for k, v in _issue_json(a.issue, explain).items()
            if k not in ("id", "list", "date")}}
        for a in variant_audience(edition, lst)]
    return data


def _print_edition(edition: Edition, lst: SubscriberList, explain: bool) -> None:
    audience = variant_audience(edition, lst)
    general = edition.general
    click.echo(f"{general.id} — {general.list_title}")
    several = len(audience) > 1 or bool(edition.by_topics)
    if several:
        click.echo(f"  {len(audience)} variant(s) rendered for {lst.id}: "
                   + "; ".join(f"{a.label} ({a.readers} reader{'s' if a.readers != 1 else ''})"
                               for a in audience))
    for a in audience:
        if several:
            click.echo(f"  ── {a.label}: {a.readers} reader(s)")
        _print_issue(a.issue, explain)
    for key, issue in sorted(edition.by_topics.items()):
        if issue.fallback:
            click.echo(f"  topics {key.replace(',', ', ')}: no new article on them for "
                       f"{general.date}; those readers get the general issue")
    click.echo()


def _print_issue(issue: Issue, explain: bool) -> None:
    lead = issue.lead
    click.echo(f"  lead: {lead.title}" + (f" ({lead.author})" if lead.author else ""))
    for n, article in enumerate(issue.headlines, start=1):
        section = f" [{article.section}]" if article.section else ""
        click.echo(f"  {n:>2}. {article.title}{section}")
    if explain:
        click.echo("  why:")
        for d in issue.decisions:
            score = f"{d.score:5.2f}" if d.score is not None else "    -"
            click.echo(f"    {d.role:<8} {score}  {d.title}")
            for reason in d.reasons:
                click.echo(f"                    · {reason}")


def _print_quiet(quiet: NothingNew, err: bool = False) -> None:
    """A quiet day is news, not a mistake: said once, and the command still exits 0."""
    click.echo(quiet.quiet_line, err=err)


def _print_finding(issue_id: str, finding: Finding) -> None:
    if finding.level == "warning":
        click.echo(f"warning: {issue_id}: {finding.what}"
                   + (f" — {finding.fix}" if finding.fix else ""), err=True)


@cli.command()
@click.option("--date", "date", type=DATE, help="Issue date (YYYY-MM-DD).")
@click.option("--list", "list_id", metavar="LIST", help="Only this list.")
@pass_app
@_user_errors
def check(app: _App, date: dt.datetime | None, list_id: str | None) -> None:
    """Render the issue and report what inboxes punish; exit 1 on errors.

    Size against Gmail's clipping, links, images, preheader, subject, the plain-text part,
    the unsubscribe link and headers, and the DKIM signature. `send` runs it first.
    """
    from newsletter.check import check_issue
    from newsletter.dkim import load_signer

    inputs = app.inputs()
    day = app.date(date)
    signer = load_signer(app.settings.dkim)
    renderer = Renderer.from_settings(app.settings)
    ledger = app.ledger(create=False)
    errors = 0
    for lst, composed in compose_lists(inputs, inputs.roster.select(list_id), day, ledger,
                                       _print_quiet):
        edition = render_edition(renderer, composed, lst.locale, list_zone(lst, app.settings))
        labels = {a.issue.article_ids: a.label
                  for a in variant_audience(edition.edition, lst)}
        for ids, rendered in edition.variants.items():
            findings = check_issue(rendered, lst, app.settings, signer, _now())
            errors += sum(f.level == "error" for f in findings)
            label = "" if len(edition.variants) == 1 else f" ({labels[ids]})"
            click.echo(f"{rendered.issue.id}{label}: "
                       + (f"{len(findings)} problem(s)" if findings else "no problems found"))
            for finding in findings:
                click.echo(f"  {finding}")
    if errors:
        sys.exit(EXIT_FAILED_DELIVERIES)


@cli.command()
@click.option("--list-jobs", is_flag=True, help="Print the next run times and exit.")
@pass_app
@_user_errors
def schedule(app: _App, list_jobs: bool) -> None:
    """Send the daily digest at schedule.time in each reader's time zone, until stopped.

    A reader's zone is their `timezone:` in the subscriber file, else their list's, else
    schedule.timezone. Runs missed while the machine was off are sent once when it is
    back, within schedule.misfire_grace_minutes. SIGTERM or Ctrl-C stops it cleanly.
    """
    from apscheduler.jobstores.memory import MemoryJobStore
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.interval import IntervalTrigger
    from sqlalchemy.exc import SQLAlchemyError

    from newsletter import scheduler as daily

    s = app.settings.schedule
    roster = load_roster(app.settings.subscribers)
    zones = daily.delivery_zones(roster, app.settings)
    if list_jobs:
        _print_next_runs(s, zones)
        return
    _warn(roster.warnings)
    load_inputs(app.settings)  # refuse to start on a broken subscriber file or articles
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with daily.scheduler_lock(s), _stop_on_signals(daily.STOP):
        scheduler = BackgroundScheduler(timezone=s.tz, jobstores={
            "default": daily.job_store(s), "memory": MemoryJobStore()})
        daily.watch_missed_runs(scheduler)
        try:
            scheduler.start(paused=True)
            jobs = daily.install_jobs(scheduler, s, list(zones), app.config_path)
        except SQLAlchemyError as err:  # a job store that is read-only, full or broken
            if scheduler.running:
                scheduler.shutdown(wait=False)
            raise daily.store_failure(s.jobs, err) from err
        scheduler.add_job(daily.refresh_jobs, IntervalTrigger(minutes=daily.REFRESH_MINUTES),
                          args=(scheduler, app.config_path), jobstore="memory",
                          id="refresh", name="re-read subscribers for new time zones")
        scheduler.resume()
        first = min(jobs, key=lambda job: job.next_run_time)
        click.echo(f"scheduler running: daily digest at {s.time} {_zones_label(zones)}; "
                   f"next at {first.next_run_time:%Y-%m-%d %H:%M %Z} "
                   f"({first.id.removeprefix(daily.JOB_PREFIX)}); stop with Ctrl-C or SIGTERM")
        daily.STOP.wait()
        scheduler.shutdown(wait=True)
    click.echo("scheduler stopped")


def _zones_label(zones: dict[str, int]) -> str:
    if len(zones) == 1:
        return next(iter(zones))
    return f"local time in {len(zones)} time zones (" + ", ".join(
        f"{zone}: {n} reader{'s' if n != 1 else ''}" for zone, n in zones.items()) + ")"


def _print_next_runs(s: ScheduleSection, zones: dict[str, int], count: int = 5) -> None:
    from newsletter import scheduler as daily

    now = _now()
    if len(zones) == 1:
        click.echo(f"daily digest at {s.time} {next(iter(zones))}; next runs:")
        for when in daily.next_run_times(s, now, count, next(iter(zones))):
            click.echo(f"  {when:%Y-%m-%d %H:%M %Z (%z)}")
        return
    click.echo(f"daily digest at {s.time} {_zones_label(zones)}; next runs:")
    runs = sorted((when, zone) for zone in zones
                  for when in daily.next_run_times(s, now, count, zone))
    for when, zone in runs[:count]:
        click.echo(f"  {when:%Y-%m-%d %H:%M %Z (%z)} {zone} "
                   f"= {when.astimezone(dt.UTC):%H:%M} UTC")


@cli.command()
@click.option("--date", "date", type=DATE, help="Only issues of this date (YYYY-MM-DD).")
@click.option("--list", "list_id", metavar="LIST", help="Only this list.")
@pass_app
@_user_errors
def status(app: _App, date: dt.datetime | None, list_id: str | None) -> None:
    """Per-issue delivery counts from the ledger, and each failure with the server's reply."""
    ledger = app.ledger(create=False)
    records = ledger.issues(list_id, date.date() if date else None) if ledger else []
    if not records:
        click.echo(f"no issues recorded in {app.settings.ledger}"
                   + (" for that date or list" if ledger else " yet"))
        return
    for record in records:
        rows = ledger.deliveries(record.issue_id).values()  # type: ignore[union-attr]
        counts = Counter(row.status for row in rows)
        failed = counts["failed-temporary"] + counts["failed-permanent"]
        note = f" ({record.note})" if record.note else ""
        click.echo(f"{record.issue_id} [{record.state}{note}]: {counts['sent']} sent, "
                   f"{counts['pending']} pending, {failed} failed, {counts['skipped']} skipped")
        for row in sorted(rows, key=lambda r: r.email):
            if row.status.startswith("failed"):
                click.echo(f"  {row.status}: {row.email} after {row.attempts} attempt(s): "
                           f"{row.reply}")


@cli.command()
@click.argument("email", metavar="EMAIL|TOKEN")
@click.option("--list", "list_id", metavar="LIST", help="Only this list (default: every list).")
@pass_app
@_user_errors
def unsubscribe(app: _App, email: str, list_id: str | None) -> None:
    """Stop sending to EMAIL, even while the subscriber file still lists it.

    Instead of an address, give what a reader's unsubscribe mail carries: its subject
    ("unsubscribe TOKEN", quoted) or the token alone; that reader is unsubscribed from
    the list the token names.
    """
    address, list_id = _unsubscribe_target(app, email, list_id)
    if list_id is not None:
        load_roster(app.settings.subscribers).select(list_id)  # the list must exist
    ledger = app.ledger()
    assert ledger is not None
    target = list_id or ALL_LISTS
    added = ledger.suppress(target, address, "unsubscribed with newsletter unsubscribe")
    where = f"list {list_id!r}" if list_id else "any list"
    click.echo(f"{address} will get no more issues of {where}" if added
               else f"{address} was already unsubscribed from {where}")


def _unsubscribe_target(app: _App, value: str, list_id: str | None) -> tuple[str, str | None]:
    """The address and list that `newsletter unsubscribe VALUE [--list L]` means."""
    request = read_request(value)
    shown = value if len(value) <= 80 else f"{value[:77]}..."
    if request is None:
        raise ConfigError(f"{shown!r} is neither an address nor an unsubscribe token",
                          field="EMAIL|TOKEN",
                          fix="give the reader's address, or the subject of their "
                              "unsubscribe mail in quotes")
    named = request.list_id
    if request.token is not None:
        secret = existing_secret(app.settings)
        found = read_token(secret, request.token) if secret is not None else None
        if found is None:
            raise ConfigError(f"{shown!r} is not an unsubscribe token of this project",
                              field="EMAIL|TOKEN",
                              fix="copy the whole token from the mail's subject; a token "
                                  "made with another secret cannot be read, so unsubscribe "
                                  "the mail's sender by address")
        named, email = found
    else:
        assert request.email is not None
        email = request.email
    if named is not None and list_id is not None and named != list_id:
        raise ConfigError(f"the request is for list {named!r}, not {list_id!r}",
                          field="--list", fix=f"leave out --list, or give --list {named}")
    return _address(email, "EMAIL"), named or list_id


@cli.command()
@pass_app
@_user_errors
def serve(app: _App) -> None:
    """Serve one-click unsubscribe and a health check on serve.host:serve.port.

    Put it behind your web server (see README) so that base_url/unsubscribe reaches it.
    """
    import uvicorn

    from newsletter.web import create_app

    web = create_app(app.settings)
    s = app.settings.serve
    click.echo(f"serving on http://{s.host}:{s.port} (unsubscribe, healthz); Ctrl-C stops")
    uvicorn.run(web, host=s.host, port=s.port, log_level="info", proxy_headers=True,
                server_header=False)


@cli.group()
def dkim() -> None:
    """DKIM signing keys."""


@dkim.command("keygen")
@click.option("--selector", required=True, help="The DKIM selector, e.g. brief2026.")
@click.option("--domain", help="Signing domain (default: dkim.domain, else the sender's).")
@click.option("--out", "out", type=click.Path(path_type=Path),
              help=f"Where to write the private key (default: {DKIM_KEY_DIR}/SELECTOR.pem, "
                   "which .gitignore keeps out of git).")
@click.option("--bits", type=click.Choice(["1024", "2048", "4096"]), default="2048",
              show_default=True, help="RSA key size.")
@click.option("--overwrite", is_flag=True,
              help="Replace a key file that is already there (its DNS record stops working).")
@pass_app
@_user_errors
def dkim_keygen(app: _App, selector: str, domain: str | None, out: Path | None,
                bits: str, overwrite: bool) -> None:
    """Write a new DKIM key pair and print the DNS TXT record to publish."""
    from newsletter.dkim import dns_record, generate_key

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}", selector):
        raise ConfigError(f"selector {selector!r} is not a DNS label", field="--selector",
                          fix="use letters, digits and '-', e.g. brief2026")
    domain = domain or app.settings.dkim.domain or app.settings.newsletter.sender_domain
    path = out or DKIM_KEY_DIR / f"{selector}.pem"
    if path.is_dir():
        raise ConfigError("is a folder", file=path, field="--out",
                          fix="give the key file's path, e.g. --out keys/brief.pem")
    public = generate_key(path, int(bits), overwrite=overwrite)
    click.echo(f"private key written to {path} (keep it secret; mode 600)")
    click.echo("\npublish this DNS record:\n")
    click.echo(dns_record(domain, selector, public))
    click.echo(f"\nthen set in {app.config_path}:\n\ndkim:\n  domain: {domain}\n"
               f"  selector: {selector}\n  private_key: {path}")


@cli.group()
def subscribers() -> None:
    """Subscriber lists."""


@subscribers.command("check")
@pass_app
@_user_errors
def subscribers_check(app: _App) -> None:
    """Validate the subscriber file and print counts per list."""
    roster = load_roster(app.settings.subscribers)
    _warn(roster.warnings)
    for lst in roster.lists.values():
        active = len(lst.active)
        click.echo(f"{lst.id}: {len(lst.subscribers)} subscribers ({active} active, "
                   f"{len(lst.subscribers) - active} unsubscribed)")
    click.echo(f"{roster.path}: OK")


@cli.group("config")
def config_group() -> None:
    """Settings."""


@config_group.command("show")
@pass_app
@_user_errors
def config_show(app: _App) -> None:
    """Print the effective settings (file + environment + .env), secrets masked."""
    click.echo(f"# {app.config_path}, overridden by NEWSLETTER_* variables and .env")
    click.echo(yaml.safe_dump(app.settings.masked(), sort_keys=False, allow_unicode=True),
               nl=False)


def _address(value: str, option: str) -> str:
    try:
        return normalize_address(value)
    except InvalidAddress as err:
        raise ConfigError(f"invalid address {value!r}: {err}", field=option) from err


def main() -> None:
    cli(prog_name="newsletter")
