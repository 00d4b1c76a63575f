"""The commands about one issue: preview, send, compose, check."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import re
import sys
import threading
from typing import Any

import click

from newsletter.check import Finding
from newsletter.cli.common import (
    DATE,
    EXIT_FAILED_DELIVERIES,
    App,
    Seconds,
    cli,
    parse_address,
    pass_app,
    stop_on_signals,
    user_errors,
    utcnow,
)
from newsletter.cli.workers import hold_for_send, queue_for_workers
from newsletter.delivery import BACKENDS
from newsletter.delivery.file import write_atomically
from newsletter.digest import (
    DeliveryReport,
    compose_lists,
    due_date,
    list_zone,
    reader_zone,
    render_edition,
    run_send,
    send_lock,
    variant_audience,
)
from newsletter.errors import ConfigError, NothingNew
from newsletter.message import personal_fields
from newsletter.models import Article, Edition, Issue, Subscriber, SubscriberList
from newsletter.progress import SendProgress
from newsletter.render import PersonalFields, Renderer, page_name
from newsletter.secret import unsubscribe_secret
from newsletter.settings import (
    check_timezone,
)


@cli.command()
@click.option("--date", "date", type=DATE, help="Issue date (YYYY-MM-DD).")
@click.option("--list", "list_id", metavar="LIST", help="Only this list.")
@click.option("--subscriber", metavar="EMAIL", help="Personalise the preview for this subscriber.")
@pass_app
@user_errors
def preview(app: App, date: dt.datetime | None, list_id: str | None,
            subscriber: str | None) -> None:
    """Render the issue to outbox/preview/ as .html and .txt files; send nothing."""
    inputs = app.inputs()
    day = app.date(date)
    newsletter = app.settings.newsletter
    lists = inputs.roster.select(list_id)
    if subscriber is not None:
        wanted = parse_address(subscriber, "--subscriber").lower()
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
                                      unsubscribe_url=f"{newsletter.base_url}/unsubscribe",
                                      preferences_url=f"{newsletter.base_url}/preferences")
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
@click.option("--wait", "wait", type=Seconds(most=24 * 3600), default=0, metavar="SECONDS",
              help="If another process is sending, wait this long for it to finish "
                   "(at most a day).")
@click.option("--force", is_flag=True, help="Send even if `check` finds errors.")
@click.option("--timezone", "zone", metavar="ZONE",
              help="Only readers whose morning is in this time zone (IANA name), as the "
                   "scheduler does at that zone's schedule.time.")
@click.option("--queue/--no-queue", "queue", default=None,
              help="Plan the issue and hand it to `newsletter worker`s instead of sending "
                   "here (PostgreSQL only; the default there when `workers:` is set).")
@pass_app
@user_errors
def send(app: App, date: dt.datetime | None, list_id: str | None, backend: str | None,
         to: str | None, dry_run: bool, resend: bool, wait: float, force: bool,
         zone: str | None, queue: bool | None) -> None:
    """Deliver the issue to every active subscriber who has not had it yet.

    Every delivery is recorded in the ledger as the server answers, so running the same
    command again resumes an interrupted or partly failed send and never mails anyone
    twice; a fully sent issue is left alone. Exits 0 only if every subscriber has the issue.
    """
    # `is not None`: an empty --to "$TEST_ADDRESS" (unset) is a mistake, not a real send.
    test_reader = Subscriber(email=parse_address(to, "--to")) if to is not None else None
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
        day = due_date(app.settings.schedule, zone, utcnow())
    else:
        day = app.date(date)
    backend_name = "console" if dry_run else (backend or app.settings.delivery.backend)
    # The console only prints: like a dry run, it records nothing (run_send sees to that).
    dry_run = dry_run or not BACKENDS[backend_name].delivers
    recorded = not dry_run and test_reader is None
    enqueue = queue_for_workers(app.settings, queue) if recorded else None
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

    with stop_on_signals(stop), SendProgress(sys.stderr) as progress:
        if recorded:
            lock.acquire(wait=wait, stop=stop)
        try:
            reports = run_send(inputs, day, utcnow(), ledger,
                               list_id=list_id, zone=zone, backend_name=backend_name,
                               to=test_reader,
                               resend=resend, dry_run=dry_run, force=force,
                               stream=sys.stdout, stop=stop, on_start=progress.start,
                               on_result=progress.advance, on_finding=on_finding,
                               on_quiet=_print_quiet, enqueue=enqueue,
                               hold=hold_for_send(app.settings) if recorded else None)
        finally:
            lock.release()
    for report in reports:
        if report.queued is not None:  # said by the hand-over (cli/workers.py)
            continue
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


def _summarise(report: DeliveryReport, backend: str, dry_run: bool) -> None:
    label = "test send" if report.test else ("dry run" if dry_run else backend)
    verb = "to send" if dry_run else "sent"
    parts = [f"{report.sent} {verb}"]
    if report.earlier:
        parts.append(f"{report.earlier} sent earlier")
    unsubscribed = report.skipped.kinds["unsubscribed"]
    if unsubscribed:
        parts.append(f"{unsubscribed} skipped (unsubscribed)")
    paused = report.skipped.kinds["paused"]
    if paused:
        parts.append(f"{paused} paused")
    if len(report.skipped) > unsubscribed + paused:
        parts.append(f"{len(report.skipped) - unsubscribed - paused} suppressed")
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
@user_errors
def compose(app: App, date: dt.datetime | None, list_id: str | None, explain: bool,
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
@user_errors
def check(app: App, date: dt.datetime | None, list_id: str | None) -> None:
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
            findings = check_issue(rendered, lst, app.settings, signer, utcnow())
            errors += sum(f.level == "error" for f in findings)
            label = "" if len(edition.variants) == 1 else f" ({labels[ids]})"
            click.echo(f"{rendered.issue.id}{label}: "
                       + (f"{len(findings)} problem(s)" if findings else "no problems found"))
            for finding in findings:
                click.echo(f"  {finding}")
    if errors:
        sys.exit(EXIT_FAILED_DELIVERIES)

