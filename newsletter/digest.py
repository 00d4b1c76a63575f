"""One run of the digest: compose → render → build → deliver → record.

`newsletter send` and the scheduler both call `run_send`, so a scheduled issue is exactly
a manual one.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from newsletter.archive import archive_issue
from newsletter.check import Finding, as_error, check_issue
from newsletter.composer import compose, recompose
from newsletter.delivery import DeliveryResult, create_backend
from newsletter.delivery.base import DeliveryBackend
from newsletter.dispatch import DispatchOptions, dispatch
from newsletter.dkim import DkimSigner, load_signer
from newsletter.errors import DeliveryError
from newsletter.fastmime import MessageTemplate
from newsletter.ledger import UNSENT, Ledger
from newsletter.lock import ProcessLock
from newsletter.message import message_id
from newsletter.models import Article, Issue, Subscriber, SubscriberList
from newsletter.render import RenderedIssue, Renderer
from newsletter.settings import Settings
from newsletter.sources import load_articles
from newsletter.subscribers import Roster, load_roster


@dataclass
class DeliveryReport:
    """What happened to one issue in this run, and where it stands overall."""

    issue: Issue
    sent: int = 0
    failed: list[DeliveryResult] = field(default_factory=list)  # the last failure of each
    skipped: list[tuple[Subscriber, str]] = field(default_factory=list)
    earlier: int = 0  # sent by earlier runs
    not_attempted: list[Subscriber] = field(default_factory=list)
    error: DeliveryError | None = None
    paused: str | None = None
    stopped: bool = False
    test: bool = False

    @property
    def ok(self) -> bool:
        return (not self.failed and self.error is None and not self.not_attempted
                and not self.paused and not self.stopped)


@dataclass
class Inputs:
    """Everything a run reads from disk, read once."""

    settings: Settings
    roster: Roster
    articles: list[Article]


def load_inputs(settings: Settings) -> Inputs:
    """Read subscribers and articles named by the settings."""
    roster = load_roster(settings.subscribers)
    articles = load_articles(settings.articles.paths, settings.schedule.tz)
    return Inputs(settings, roster, articles)


def issue_date(settings: Settings, now: dt.datetime) -> dt.date:
    """Today, in the schedule's time zone."""
    return now.astimezone(settings.schedule.tz).date()


def compose_issue(inputs: Inputs, subscriber_list: SubscriberList, date: dt.date,
                  ledger: Ledger | None = None) -> Issue:
    """The issue as recorded when it was first sent, or freshly composed.

    A fresh issue leaves out articles that earlier issues of the list already carried.
    """
    if ledger is not None:
        record = ledger.issue(f"{subscriber_list.id}/{date.isoformat()}")
        if record is not None:
            return recompose(inputs.articles, subscriber_list, date, record.article_ids)
    a = inputs.settings.articles
    sent = ledger.articles_sent_before(subscriber_list.id, date) if ledger else frozenset()
    return compose(inputs.articles, subscriber_list, date, headlines=a.headlines,
                   max_age_days=a.max_age_days, tz=inputs.settings.schedule.tz,
                   already_sent=sent)


def send_lock(settings: Settings) -> ProcessLock:
    """The lock that lets one process at a time send with this ledger."""
    return ProcessLock(settings.ledger.with_name(settings.ledger.name + ".lock"),
                       "sending")


def run_send(
    inputs: Inputs,
    date: dt.date,
    now: dt.datetime,
    ledger: Ledger | None,
    *,
    list_id: str | None = None,
    backend_name: str | None = None,
    to: Subscriber | None = None,
    resend: bool = False,
    dry_run: bool = False,
    force: bool = False,
    stream: TextIO | None = None,
    stop: threading.Event | None = None,
    sleep: Callable[[float], object] | None = None,
    on_start: Callable[[Issue, int], None] | None = None,
    on_result: Callable[[DeliveryResult], None] | None = None,
    on_finding: Callable[[str, Finding], None] | None = None,
) -> list[DeliveryReport]:
    """Send the `date` issue of each selected list to everyone who has not had it yet.

    With `to`, send one test copy instead (never recorded). A dry run reads the ledger but
    records nothing. Everything is composed and rendered before the first message
    goes out, so a content or template mistake in any list stops the run before anyone
    gets mail; so does an error `check` finds, unless `force`. The caller holds `send_lock`
    around a recorded run.
    """
    settings = inputs.settings
    lists = inputs.roster.select(list_id)
    signer = load_signer(settings.dkim)  # an unusable key stops the run here, before any mail
    renderer = Renderer.from_settings(settings)
    rendered = [renderer.render(compose_issue(inputs, lst, date, ledger)) for lst in lists]
    for lst, issue in zip(lists, rendered, strict=True):
        findings = check_issue(issue, lst, settings, signer, now)
        for finding in findings:
            if on_finding is not None:
                on_finding(issue.issue.id, finding)
        if not force and any(f.level == "error" for f in findings):
            raise as_error(issue.issue.id, findings)
    name = backend_name or settings.delivery.backend
    create_backend(name, settings, stream)  # a backend that can't be built fails before any work
    if ledger is not None and not dry_run and to is None:
        for issue in rendered:  # the public copy, linked from every message as "view in browser"
            archive_issue(settings.delivery.outbox, issue.issue, renderer.render_web(issue.issue))
    options = DispatchOptions(
        connections=settings.smtp.connections if name == "smtp" else 1,
        retries=settings.delivery.retries,
        retry_backoff=settings.delivery.retry_backoff,
        pause_after_failures=settings.delivery.pause_after_failures,
        rate_limit=settings.delivery.rate_limit,
    )

    def open_backend() -> DeliveryBackend:
        return create_backend(name, settings, stream)

    reports: list[DeliveryReport] = []
    for lst, issue in zip(lists, rendered, strict=True):
        if reports and (reports[-1].error or reports[-1].paused or reports[-1].stopped):
            # The run is over: later lists are reported as waiting, never silently dropped.
            reports.append(DeliveryReport(issue=issue.issue, test=to is not None,
                                          not_attempted=lst.active))
            continue
        reports.append(_send_issue(issue, lst, settings, now, ledger, open_backend, options,
                                   signer, to=to, resend=resend, dry_run=dry_run, stop=stop,
                                   sleep=sleep,
                                   on_start=on_start, on_result=on_result))
    return reports


def _send_issue(rendered: RenderedIssue, lst: SubscriberList, settings: Settings,
                now: dt.datetime, ledger: Ledger | None,
                open_backend: Callable[[], DeliveryBackend], options: DispatchOptions,
                signer: DkimSigner | None, *,
                to: Subscriber | None, resend: bool, dry_run: bool,
                stop: threading.Event | None,
                sleep: Callable[[float], object] | None,
                on_start: Callable[[Issue, int], None] | None,
                on_result: Callable[[DeliveryResult], None] | None) -> DeliveryReport:
    issue = rendered.issue
    newsletter = settings.newsletter
    test = to is not None
    report = DeliveryReport(issue=issue, test=test)
    record = None if dry_run or test else ledger
    if test:
        todo = [to]
    else:
        todo = _plan(issue, lst, ledger, record, newsletter.sender_domain, resend, report)
    if on_start is not None:
        on_start(issue, len(todo))
    secret = settings.unsubscribe.secret
    template = MessageTemplate(rendered, newsletter, now, test=test, signer=signer,
                               secret=secret.get_secret_value() if secret else None)
    outcome = dispatch(
        todo, template.build, open_backend,
        options, ledger=record, issue_id=issue.id, stop=stop, sleep=sleep, on_result=on_result)
    report.sent, report.failed = outcome.sent, list(outcome.failed.values())
    report.not_attempted = outcome.not_attempted
    report.error, report.paused, report.stopped = (outcome.error, outcome.paused,
                                                   outcome.stopped)
    if record is not None:
        _settle(record, issue.id, lst.id, report)
    return report


def _plan(issue: Issue, lst: SubscriberList, ledger: Ledger | None, record: Ledger | None,
          domain: str, resend: bool, report: DeliveryReport) -> list[Subscriber]:
    """Who gets the issue in this run; fills in the report's skipped and earlier counts.

    With `record`, the issue and a row per subscriber go into the ledger first, so that
    every reader is pending there before the first message leaves.
    """
    suppressed = ledger.suppressed(lst.id) if ledger else {}
    for s in lst.subscribers:
        if s.status != "active":
            report.skipped.append((s, s.status))
        elif s.email.lower() in suppressed:
            report.skipped.append((s, f"suppressed: {suppressed[s.email.lower()]}"))
    skipped = {s.email for s, _ in report.skipped}
    active = [s for s in lst.subscribers if s.email not in skipped]
    if record is not None:
        record.record_issue(issue.id, lst.id, issue.date,
                            [a.id for a in (issue.lead, *issue.headlines)])
        if resend:
            record.reset(issue.id)
        record.plan(issue.id, (
            (s.email, message_id(issue.id, s.email, domain),
             "skipped" if s.email in skipped else "pending")
            for s in lst.subscribers))
        record.set_state(issue.id, "sending")
    statuses = ledger.statuses(issue.id) if ledger is not None and not resend else {}

    def status(s: Subscriber) -> str:
        return statuses.get(s.email.lower(), "pending")

    report.earlier = sum(status(s) == "sent" for s in active)
    report.skipped += [(s, "failed permanently before") for s in active
                       if status(s) == "failed-permanent"]
    return [s for s in active if status(s) in UNSENT]


def _settle(ledger: Ledger, issue_id: str, list_id: str, report: DeliveryReport) -> None:
    """After the run: suppress hard bounces; record whether the issue is complete."""
    for result in report.failed:
        if result.status == "failed-permanent":
            ledger.suppress(list_id, result.recipient, f"{issue_id}: {result.reply}")
    if report.paused:
        ledger.set_state(issue_id, "paused", report.paused)
    elif report.ok:
        ledger.set_state(issue_id, "complete")
