"""One run of the digest: compose → render → build → deliver. `send` and the scheduler share it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from newsletter.composer import compose
from newsletter.delivery import DeliveryBackend, DeliveryResult, create_backend
from newsletter.errors import DeliveryError
from newsletter.message import build_message
from newsletter.models import Article, Issue, Subscriber, SubscriberList
from newsletter.render import RenderedIssue, Renderer
from newsletter.settings import NewsletterSection, Settings
from newsletter.sources import load_articles
from newsletter.subscribers import Roster, load_roster


@dataclass
class DeliveryReport:
    """What happened to one issue: a result per subscriber, and who was skipped and why."""

    issue: Issue
    results: list[DeliveryResult] = field(default_factory=list)
    skipped: list[tuple[Subscriber, str]] = field(default_factory=list)
    not_attempted: list[Subscriber] = field(default_factory=list)
    error: DeliveryError | None = None
    test: bool = False

    @property
    def sent(self) -> int:
        return sum(r.status == "sent" for r in self.results)

    @property
    def failed(self) -> list[DeliveryResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed and self.error is None and not self.not_attempted


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


def compose_issue(inputs: Inputs, subscriber_list: SubscriberList, date: dt.date) -> Issue:
    a = inputs.settings.articles
    return compose(inputs.articles, subscriber_list, date, headlines=a.headlines,
                   max_age_days=a.max_age_days, tz=inputs.settings.schedule.tz)


def deliver_issue(
    rendered: RenderedIssue,
    recipients: list[Subscriber],
    newsletter: NewsletterSection,
    backend: DeliveryBackend,
    now: dt.datetime,
    *,
    test: bool = False,
    on_result: Callable[[DeliveryResult], None] | None = None,
) -> DeliveryReport:
    """Build and deliver one message per active recipient through an open `backend`.

    A fault that stops the backend ends the run early; the report then says who was not
    attempted, so nobody is silently left out.
    """
    report = DeliveryReport(issue=rendered.issue, test=test)
    active = [s for s in recipients if s.status == "active"]
    report.skipped = [(s, s.status) for s in recipients if s.status != "active"]
    for index, subscriber in enumerate(active):
        message = build_message(rendered, subscriber, newsletter, now, test=test)
        try:
            result = backend.send(message)
        except DeliveryError as err:
            report.error = err
            report.not_attempted = active[index:]
            break
        report.results.append(result)
        if on_result is not None:
            on_result(result)
    return report


def run_send(
    inputs: Inputs,
    date: dt.date,
    now: dt.datetime,
    *,
    list_id: str | None = None,
    backend_name: str | None = None,
    to: Subscriber | None = None,
    stream: TextIO | None = None,
    on_result: Callable[[DeliveryResult], None] | None = None,
) -> list[DeliveryReport]:
    """Send the `date` issue of each selected list (or a test copy to `to` only).

    Everything is composed and rendered before the first message goes out, so a content or
    template mistake in any list stops the run before anyone gets mail.
    """
    settings = inputs.settings
    lists = inputs.roster.select(list_id)
    renderer = Renderer(settings.templates, settings.newsletter)
    rendered = [renderer.render(compose_issue(inputs, lst, date)) for lst in lists]
    backend = create_backend(backend_name or settings.delivery.backend, settings, stream)
    reports: list[DeliveryReport] = []
    with backend:
        for lst, issue in zip(lists, rendered, strict=True):
            recipients = [to] if to is not None else list(lst.subscribers)
            if reports and reports[-1].error is not None:
                # The backend is down: later lists are reported as waiting, not dropped.
                reports.append(DeliveryReport(issue=issue.issue, test=to is not None,
                               not_attempted=[s for s in recipients if s.status == "active"]))
                continue
            reports.append(deliver_issue(issue, recipients, settings.newsletter, backend, now,
                                         test=to is not None, on_result=on_result))
    return reports
