"""The commands around the issues: schedule, status, unsubscribe, serve, dkim,
subscribers, config."""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections import Counter
from pathlib import Path

import click
import yaml

from newsletter import rates
from newsletter.cli.common import (
    DATE,
    DKIM_KEY_DIR,
    App,
    cli,
    parse_address,
    pass_app,
    stop_on_signals,
    user_errors,
    utcnow,
    warn,
)
from newsletter.cli.readers import count_lines
from newsletter.digest import (
    load_inputs,
)
from newsletter.errors import ConfigError
from newsletter.inbound.settings import BouncesSection
from newsletter.ledger import ALL_LISTS, SqliteLedger
from newsletter.readers.roster import load_readers
from newsletter.secret import existing_secret
from newsletter.settings import (
    ScheduleSection,
)
from newsletter.subscribers import load_roster
from newsletter.unsubscribe import read_request, read_token


@cli.command()
@click.option("--list-jobs", is_flag=True, help="Print the next run times and exit.")
@pass_app
@user_errors
def schedule(app: App, list_jobs: bool) -> None:
    """Send the daily digest at schedule.time in each reader's time zone, until stopped.

    A reader's zone is their `timezone:` in the subscriber file, else their list's, else
    schedule.timezone. Runs missed while the machine was off are sent once when it is
    back, within schedule.misfire_grace_minutes. With a bounce mailbox (bounces.imap or
    bounces.maildir) it also runs `bounces fetch` every bounces.poll_minutes, logging the
    counts. SIGTERM or Ctrl-C stops it cleanly.
    """
    from apscheduler.jobstores.memory import MemoryJobStore
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.interval import IntervalTrigger
    from sqlalchemy.exc import SQLAlchemyError

    from newsletter import scheduler as daily

    s = app.settings.schedule
    # The file merged with the database: confirmed sign-ups in a zone of their own get
    # their run too.
    roster = load_readers(app.settings)
    zones = daily.delivery_zones(roster, app.settings)
    if list_jobs:
        _print_next_runs(s, zones)
        _print_fetch_job(app.settings.bounces)
        return
    warn(roster.warnings)
    load_inputs(app.settings)  # refuse to start on a broken subscriber file or articles
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    database = app.settings.database_config
    with stop_on_signals(daily.STOP), daily.one_scheduler(
            app.settings, lambda why: click.echo(
                f"scheduler standing by: {why}; it takes over when that one stops")) as leader:
        if daily.STOP.is_set():
            click.echo("scheduler stopped")
            return
        scheduler = BackgroundScheduler(timezone=s.tz, jobstores={
            "default": daily.job_store(s, database), "memory": MemoryJobStore()})
        daily.watch_missed_runs(scheduler)
        try:
            scheduler.start(paused=True)
            jobs = daily.install_jobs(scheduler, s, list(zones), app.config_path)
            fetching = daily.install_fetch_job(scheduler, app.settings.bounces,
                                               app.config_path)
            # A new leader sends what a dead one may have left of the morning.
            caught = daily.catch_up(scheduler, s) if leader is not None else []
        except SQLAlchemyError as err:  # a job store that is read-only, full or broken
            if scheduler.running:
                scheduler.shutdown(wait=False)
            raise daily.store_failure(s.jobs, err, database) from err
        scheduler.add_job(daily.refresh_jobs, IntervalTrigger(minutes=daily.REFRESH_MINUTES),
                          args=(scheduler, app.config_path), jobstore="memory",
                          id="refresh", name="re-read subscribers for new time zones")
        if leader is not None:
            daily.stop_when_lost(leader, scheduler)
        scheduler.resume()
        first = min(jobs, key=lambda job: job.next_run_time)
        click.echo(f"scheduler running: daily digest at {s.time} {_zones_label(zones)}; "
                   f"next at {first.next_run_time:%Y-%m-%d %H:%M %Z} "
                   f"({first.id.removeprefix(daily.JOB_PREFIX)})"
                   + (f"; bounces fetched every {app.settings.bounces.poll_minutes} min"
                      if fetching else "")
                   + ("; leading (other schedulers stand by)" if leader is not None else "")
                   + (f"; catching up on {', '.join(caught)}" if caught else "")
                   + "; stop with Ctrl-C or SIGTERM")
        daily.STOP.wait()
        scheduler.shutdown(wait=True)
        if leader is not None and leader.lost.is_set():
            raise daily.LeadershipLost(
                "the scheduler lost its lock on the database and stopped scheduling",
                fix="start it again (systemd's Restart=always does): it stands by until "
                    "it leads again")
    click.echo("scheduler stopped")


def _print_fetch_job(bounces: BouncesSection) -> None:
    if bounces.imap is not None:
        where = f"{bounces.imap.folder} on {bounces.imap.host}:{bounces.imap.effective_port}"
    elif bounces.maildir is not None:
        where = f"the Maildir {bounces.maildir}"
    else:
        return  # no bounce mailbox: no job
    click.echo(f"bounces fetch every {bounces.poll_minutes} minutes from {where} "
               "(the first one interval after the scheduler starts)")


def _zones_label(zones: dict[str, int]) -> str:
    if len(zones) == 1:
        return next(iter(zones))
    return f"local time in {len(zones)} time zones (" + ", ".join(
        f"{zone}: {n} reader{'s' if n != 1 else ''}" for zone, n in zones.items()) + ")"


def _print_next_runs(s: ScheduleSection, zones: dict[str, int], count: int = 5) -> None:
    from newsletter import scheduler as daily

    now = utcnow()
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
@user_errors
def status(app: App, date: dt.datetime | None, list_id: str | None) -> None:
    """Per-issue delivery counts from the ledger, and each failure with the server's reply.

    Below each issue: its bounces and complaints (and unsubscribes) as counts and as rates,
    against the mailbox providers' thresholds (Gmail and Yahoo: complaints under 0.3 %;
    Amazon SES: bounces under 5 %, advised under 2 %).
    """
    ledger = app.ledger(create=False)
    for line in count_lines(app):
        if list_id is None or line.startswith(f"{list_id}: "):
            click.echo(line)
    records = ledger.issues(list_id, date.date() if date else None) if ledger else []
    if not records:
        click.echo(f"no issues recorded in {app.settings.database_config.display()}"
                   + (" for that date or list" if ledger else " yet"))
        return
    for record in records:
        rows = ledger.deliveries(record.issue_id).values()  # type: ignore[union-attr]
        counts = Counter(row.status for row in rows)
        failed = counts["failed-temporary"] + counts["failed-permanent"]
        note = f" ({record.note})" if record.note else ""
        click.echo(f"{record.issue_id} [{record.state}{note}]: {counts['sent']} sent, "
                   f"{counts['pending']} pending, {failed} failed, {counts['skipped']} skipped")
        back = _came_back(ledger, record.issue_id, counts)  # type: ignore[arg-type]
        if back.anything or app.settings.bounces.address:
            for line in rates.lines(back):
                click.echo(f"  {line}")
        for row in sorted(rows, key=lambda r: r.email):
            if row.status.startswith("failed"):
                click.echo(f"  {row.status}: {row.email} after {row.attempts} attempt(s): "
                           f"{row.reply}")


def _came_back(ledger: SqliteLedger, issue_id: str, counts: Counter[str]) -> rates.CameBack:
    events = ledger.event_counts(issue_id)
    # A refusal at RCPT is a failed-permanent row (and a `refused` suppression of the
    # issue, unless the reader was suppressed already or has been resubscribed since).
    return rates.CameBack(sent=counts["sent"], refused=counts["failed-permanent"],
                          hard=events.get("bounce-hard", 0), soft=events.get("bounce-soft", 0),
                          complaints=events.get("complaint", 0),
                          unsubscribed=events.get("unsubscribed", 0))


class _TokenArgument(click.Command):
    """A token is URL-safe base64 and starts with '-' one time in 64: click would take it
    for options (`-M8Uh…` holds -h). Everything but --list and help is the argument."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        options: list[str] = []
        rest: list[str] = []
        items = iter(args)
        for arg in items:
            if arg == "--":
                rest.extend(items)
            elif arg == "--list":
                options += [arg, next(items, "")]
            elif arg.startswith("--list=") or arg in ("-h", "--help"):
                options.append(arg)
            else:
                rest.append(arg)
        return super().parse_args(ctx, [*options, "--", *rest])


@cli.command(cls=_TokenArgument)
@click.argument("email", metavar="EMAIL|TOKEN")
@click.option("--list", "list_id", metavar="LIST", help="Only this list (default: every list).")
@pass_app
@user_errors
def unsubscribe(app: App, email: str, list_id: str | None) -> None:
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
    added = ledger.suppress(target, address, "unsubscribed",
                            {"via": "newsletter unsubscribe"})
    where = f"list {list_id!r}" if list_id else "any list"
    click.echo(f"{address} will get no more issues of {where}" if added
               else f"{address} was already unsubscribed from {where}")


def _unsubscribe_target(app: App, value: str, list_id: str | None) -> tuple[str, str | None]:
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
    return parse_address(email, "EMAIL"), named or list_id


@cli.command()
@pass_app
@user_errors
def serve(app: App) -> None:
    """Serve one-click unsubscribe, the sign-up form and its confirmation, the preference
    page, the archive, providers' webhooks and a health check on serve.host:serve.port.

    Put it behind your web server (see README) so that base_url/unsubscribe reaches it.
    """
    import uvicorn

    from newsletter.web import create_app
    from newsletter.web.webhooks import enabled

    web = create_app(app.settings)
    s = app.settings.serve
    hooks = ", ".join(enabled(app.settings)) or "none"
    click.echo(f"serving on http://{s.host}:{s.port} (unsubscribe, subscribe, confirm, "
               f"preferences, archive, healthz; webhooks: {hooks}); Ctrl-C stops")
    # No proxy_headers: uvicorn would believe X-Forwarded-For from 127.0.0.1 whatever
    # `signup.trusted_proxies` says, and a proxy that passes the client's own header on
    # would let every client choose the address its rate limit counts.
    # `newsletter.web.forms.client_address` reads the header, from trusted proxies only.
    uvicorn.run(web, host=s.host, port=s.port, log_level="info", proxy_headers=False,
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
@user_errors
def dkim_keygen(app: App, selector: str, domain: str | None, out: Path | None,
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


@cli.group("config")
def config_group() -> None:
    """Settings."""


@config_group.command("show")
@pass_app
@user_errors
def config_show(app: App) -> None:
    """Print the effective settings (file + environment + .env), secrets masked."""
    click.echo(f"# {app.config_path}, overridden by NEWSLETTER_* variables and .env")
    click.echo(yaml.safe_dump(app.settings.masked(), sort_keys=False, allow_unicode=True),
               nl=False)

