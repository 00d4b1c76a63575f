"""One run of the digest: compose → render → build → deliver → record.

`newsletter send` and the scheduler both call `run_send`, so a scheduled issue is exactly
a manual one.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO
from zoneinfo import ZoneInfo

from newsletter.archive import archive_issue
from newsletter.check import Finding, as_error, check_issue
from newsletter.composer import compose, compose_for_topics, recompose
from newsletter.db import open_feed_cache
from newsletter.delivery import DeliveryResult, create_backend
from newsletter.delivery.base import DeliveryBackend
from newsletter.delivery.parallel import process_count
from newsletter.dispatch import LEDGER_BATCH, DispatchOptions, dispatch
from newsletter.dkim import DkimSigner, load_signer
from newsletter.errors import ContentError, DeliveryError, NothingNew, Problem
from newsletter.fastmime import MessageTemplate
from newsletter.ledger import UNSENT, Ledger, LedgerError
from newsletter.lock import ProcessLock
from newsletter.message import OutgoingMessage, message_id
from newsletter.models import (
    Article,
    Edition,
    Issue,
    Sample,
    Skipped,
    Subscriber,
    SubscriberList,
    topic_key,
)
from newsletter.readers.roster import load_readers
from newsletter.render import RenderedIssue, Renderer
from newsletter.secret import unsubscribe_secret
from newsletter.settings import ScheduleSection, Settings
from newsletter.sources import load_articles
from newsletter.sources.feed import load_feeds
from newsletter.subscribers import Roster

if TYPE_CHECKING:
    from newsletter.workers.hold import Holding

# `send --queue`: (the rendered edition, its unsent readers due now, the Date) → how many
# readers were handed to the workers.
Enqueue = Callable[["RenderedEdition", Iterable[Subscriber], dt.datetime], int]
# A send on PostgreSQL: issue id → for the send, the rows it holds (workers/hold.py).
Hold = Callable[[str], AbstractContextManager["Holding"]]


@dataclass
class DeliveryReport:
    """What happened to one issue in this run, and where it stands overall."""

    issue: Issue
    sent: int = 0
    failed: list[DeliveryResult] = field(default_factory=list)  # the last failure of each
    # Counted in full; the readers themselves only as a sample (a list may hold millions).
    skipped: Skipped = field(default_factory=Skipped)
    earlier: int = 0  # sent by earlier runs
    not_attempted: Sample[Subscriber] = field(default_factory=Sample)
    error: DeliveryError | None = None
    paused: str | None = None
    stopped: bool = False
    test: bool = False
    later: int = 0  # readers in other time zones, not due in this run
    queued: int | None = None  # `send --queue`: readers handed to the workers

    @property
    def ok(self) -> bool:
        return (not self.failed and self.error is None and not self.not_attempted
                and not self.paused and not self.stopped)


@dataclass
class Inputs:
    """Everything a run reads from disk (and feeds), read once."""

    settings: Settings
    roster: Roster
    articles: list[Article]
    # Problems that do not stop a run: a feed that is down, a duplicate subscriber.
    warnings: list[Problem] = field(default_factory=list)
    # Every feed failed: an error for a new issue, not for one the ledger already holds
    # (a later time zone's run has the recorded copies of its articles).
    feeds_failed: ContentError | None = None


def load_inputs(settings: Settings) -> Inputs:
    """Read subscribers (the file merged with the database's readers), article files and
    feeds named by the settings.

    Feeds are fetched with conditional GET; their validators and last bodies are kept in
    the ledger's database. A feed that fails is a warning; every feed failing is an error.
    """
    roster = load_readers(settings)
    warnings = list(roster.warnings)
    articles = load_articles(settings.articles.paths, settings.schedule.tz, warnings)
    feeds_failed = None
    if settings.articles.feeds:
        with open_feed_cache(settings) as cache:
            try:
                fed = load_feeds(settings.articles.feeds, cache=cache,
                                 timeout=settings.articles.feed_timeout)
            except ContentError as err:
                # Each feed's failure is a warning; "none could be read" is the error.
                summary, *failures = err.problems
                warnings.extend(failures)
                feeds_failed = ContentError(problems=[summary])
            else:
                articles.extend(fed.articles)
                warnings.extend(fed.warnings)
                if not articles and fed.empty:  # the feeds were all there was, and empty
                    feeds_failed = fed.nothing_error()
    return Inputs(settings, roster, articles, warnings, feeds_failed)


def issue_date(settings: Settings, now: dt.datetime) -> dt.date:
    """Today, in the schedule's time zone."""
    return now.astimezone(settings.schedule.tz).date()


def due_date(schedule: ScheduleSection, zone: str, now: dt.datetime) -> dt.date:
    """The local date in `zone` of the latest `schedule.time` at or before `now`.

    A run that starts late (within the grace time, even past midnight) still sends the
    issue of the morning it was due.
    """
    return run_day(now, dt.time(*schedule.hour_minute), ZoneInfo(zone))


def run_day(moment: dt.datetime, at: dt.time, zone: dt.tzinfo) -> dt.date:
    """The local date in `zone` of the latest daily time `at` at or before `moment`: the
    day whose issue a run at `moment` sends (also when a jump over midnight, Greenland's
    23:00 → 00:00, pushed the run into the next day)."""
    local = moment.astimezone(dt.UTC).astimezone(zone)
    return local.date() - dt.timedelta(days=1) if local.time() < at else local.date()


def list_zone(subscriber_list: SubscriberList, settings: Settings) -> str:
    """The list's time zone: its own `timezone:`, else `schedule.timezone`."""
    return subscriber_list.timezone or settings.schedule.timezone


def reader_zone(subscriber: Subscriber, subscriber_list: SubscriberList,
                settings: Settings) -> str:
    """Where the reader's morning is: their `timezone:`, else the list's."""
    return subscriber.timezone or list_zone(subscriber_list, settings)


def compose_issue(inputs: Inputs, subscriber_list: SubscriberList, date: dt.date,
                  ledger: Ledger | None = None) -> Issue:
    """The general issue as recorded when it was first sent, or freshly composed.

    A fresh issue leaves out articles that earlier issues of the list already carried.
    """
    if ledger is not None:
        record = ledger.issue(f"{subscriber_list.id}/{date.isoformat()}")
        if record is not None:
            return recompose(_with_recorded(inputs.articles, ledger, record.issue_id,
                                            record.article_ids),
                             subscriber_list, date, record.article_ids)
    if inputs.feeds_failed is not None:
        raise inputs.feeds_failed
    sent = ledger.articles_sent_before(subscriber_list.id, date) if ledger else frozenset()
    return compose(inputs.articles, subscriber_list, date, already_sent=sent,
                   **_compose_options(inputs, subscriber_list))


def compose_edition(inputs: Inputs, subscriber_list: SubscriberList, date: dt.date,
                    ledger: Ledger | None = None) -> Edition:
    """The general issue plus a variant for each set of topics the list's readers chose.

    Variants recorded by an earlier run of the same date are kept as they were, so
    readers in a later time zone get what the earlier ones got.
    """
    general = compose_issue(inputs, subscriber_list, date, ledger)
    recorded = ledger.variants(general.id) if ledger is not None else {}
    # A variant first wanted by a later run of a started issue is chosen from what that
    # run reads plus the copies the first run kept (a feed may be down or have moved on).
    pool = (_with_recorded(inputs.articles, ledger, general.id)
            if ledger is not None and ledger.issue(general.id) is not None
            else inputs.articles)
    choices = {topic_key(s.topics): tuple(sorted(s.topics)) for s in subscriber_list.subscribers
               if s.topics and s.status == "active"}
    by_topics: dict[str, Issue] = {}
    for key, topics in sorted(choices.items()):
        if key in recorded and ledger is not None:
            issue = recompose(_with_recorded(inputs.articles, ledger, general.id, recorded[key]),
                              subscriber_list, date, recorded[key])
            by_topics[key] = issue.model_copy(update={
                "topics": topics, "fallback": recorded[key] == general.article_ids})
            continue
        sent = (ledger.articles_sent_before(subscriber_list.id, date, key)
                if ledger is not None else frozenset())
        by_topics[key] = compose_for_topics(pool, subscriber_list, date, topics,
                                            general, already_sent=sent,
                                            **_compose_options(inputs, subscriber_list))
    return Edition(general=general, by_topics=by_topics)


def compose_lists(inputs: Inputs, lists: list[SubscriberList], date: dt.date,
                  ledger: Ledger | None = None,
                  on_quiet: Callable[[NothingNew], None] | None = None,
                  ) -> list[tuple[SubscriberList, Edition]]:
    """The edition of each list; with `articles.quiet_day: skip`, a list with nothing new
    is left out (and passed to `on_quiet`) while the others still get their issue."""
    editions = []
    for lst in lists:
        try:
            editions.append((lst, compose_edition(inputs, lst, date, ledger)))
        except NothingNew as quiet:
            if inputs.settings.articles.quiet_day != "skip":
                raise
            if on_quiet is not None:
                on_quiet(quiet)
    return editions


def _with_recorded(articles: list[Article], ledger: Ledger, issue_id: str,
                   wanted: tuple[str, ...] | None = None) -> list[Article]:
    """`articles`, plus the recorded copy of each wanted one (None: every recorded one)
    that is no longer there (an entry a feed has since dropped; a story now kept under
    another feed's id is still there)."""
    present = {i for a in articles for i in (a.id, *a.aliases)}
    recorded = ledger.recorded_articles(issue_id)
    missing = [key for key in (recorded if wanted is None else wanted) if key not in present]
    if not missing:
        return articles
    return articles + [Article.model_validate_json(recorded[key])
                       for key in missing if key in recorded]


def _compose_options(inputs: Inputs, subscriber_list: SubscriberList) -> dict:
    a = inputs.settings.articles
    return {"headlines": a.headlines, "max_age_days": a.max_age_days, "min_new": a.min_new,
            "tz": ZoneInfo(list_zone(subscriber_list, inputs.settings))}


@dataclass(frozen=True)
class Audience:
    """Who gets one variant: how many active readers, and the topic sets that lead to it."""

    issue: Issue
    general: bool
    readers: int
    topic_sets: tuple[tuple[str, ...], ...]  # () stands for readers without topics

    @property
    def label(self) -> str:
        """`general`, or `topics city | culture, sport` when two choices got the same."""
        if self.general:
            return "general"
        return "topics " + " | ".join(", ".join(t) for t in self.topic_sets)


def variant_audience(edition: Edition, subscriber_list: SubscriberList) -> list[Audience]:
    """Each distinct variant (general first) with its readers and the topics behind it."""
    readers: dict[tuple[str, ...], int] = {}
    topic_sets: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for s in subscriber_list.subscribers:
        if s.status != "active":
            continue
        ids = edition.issue_for(s).article_ids
        readers[ids] = readers.get(ids, 0) + 1
        topics = tuple(sorted(s.topics))
        if topics not in topic_sets.setdefault(ids, []):
            topic_sets[ids].append(topics)
    return [Audience(variant, index == 0, readers.get(variant.article_ids, 0),
                     tuple(sorted(topic_sets.get(variant.article_ids, []))))
            for index, variant in enumerate(edition.variants())]


@dataclass(frozen=True)
class RenderedEdition:
    """An edition with each distinct variant rendered (and CSS-inlined) exactly once."""

    edition: Edition
    variants: dict[tuple[str, ...], RenderedIssue]  # article ids → the rendered variant

    @property
    def general(self) -> RenderedIssue:
        return self.variants[self.edition.general.article_ids]

    def for_reader(self, subscriber: Subscriber) -> RenderedIssue:
        return self.variants[self.edition.issue_for(subscriber).article_ids]


def render_edition(renderer: Renderer, edition: Edition, locale: str | None,
                   zone: str | None = None) -> RenderedEdition:
    """Render each distinct variant of `edition` once, in the list's locale and zone."""
    return RenderedEdition(edition, {issue.article_ids: renderer.render(issue, locale, zone)
                                     for issue in edition.variants()})


def send_lock(settings: Settings) -> ProcessLock:
    """The lock that lets one process at a time send with this ledger (with PostgreSQL,
    one process on any machine: an advisory lock, db/locks.py)."""
    if settings.database_config.is_postgres:
        from newsletter.db.locks import DatabaseLock

        return DatabaseLock(settings.database_config, "send", "sending")
    return ProcessLock(settings.ledger.with_name(settings.ledger.name + ".lock"),
                       "sending")


def run_send(
    inputs: Inputs,
    date: dt.date,
    now: dt.datetime,
    ledger: Ledger | None,
    *,
    list_id: str | None = None,
    zone: str | None = None,
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
    on_quiet: Callable[[NothingNew], None] | None = None,
    enqueue: Enqueue | None = None,
    hold: Hold | None = None,
) -> list[DeliveryReport]:
    """Send the `date` issue of each selected list to everyone who has not had it yet.

    With `zone`, only to readers whose morning is in that time zone (the scheduler's run
    for that zone); the others stay pending for their own run. With `to`, send one test
    copy of the general issue instead (never recorded; the issue as recorded, if it was
    sent). A dry run, and a backend that does not deliver, read the ledger but record
    nothing. Everything is composed and rendered before the first message
    goes out, so a content or template mistake in any list stops the run before anyone
    gets mail; so does an error `check` finds, unless `force`. A list with nothing new
    (`NothingNew`) is skipped and passed to `on_quiet`, or with `articles.quiet_day: error`
    stops the run. The caller holds `send_lock`
    around a recorded run. With `enqueue` (`send --queue`), a recorded run stops after the
    plan and hands each issue's unsent readers to it instead of sending them.
    """
    settings = inputs.settings
    lists = inputs.roster.select(list_id)
    if zone is not None:
        # A list with nobody in this zone waits for its own readers' morning, so its issue
        # is composed then, from the articles of that morning.
        lists = [lst for lst in lists
                 if any(reader_zone(s, lst, settings) == zone for s in lst.subscribers
                        if s.status == "active")]
    signer = load_signer(settings.dkim)  # an unusable key stops the run here, before any mail
    renderer = Renderer.from_settings(settings)
    composed = compose_lists(inputs, lists, date, ledger, on_quiet)  # quiet lists left out
    lists = [lst for lst, _ in composed]
    editions = [render_edition(renderer, edition, lst.locale, list_zone(lst, settings))
                for lst, edition in composed]
    for lst, edition in zip(lists, editions, strict=True):
        for rendered in edition.variants.values():
            findings = check_issue(rendered, lst, settings, signer, now)
            for finding in findings:
                if on_finding is not None:
                    on_finding(rendered.issue.id, finding)
            if not force and any(f.level == "error" for f in findings):
                raise as_error(rendered.issue.id, findings)
    name = backend_name or settings.delivery.backend
    # A backend that can't be built fails before any work. One that does not deliver (the
    # console) records nothing and publishes nothing, like a dry run: printing is not sending.
    dry_run = dry_run or not create_backend(name, settings, stream).delivers
    if ledger is not None and not dry_run and to is None:
        for lst, edition in zip(lists, editions, strict=True):
            # The public copies, linked from every message as "view in browser"; each
            # variant has its own page, and the list's index shows the general issues.
            locale = lst.locale or settings.newsletter.locale
            for rendered in edition.variants.values():
                archive_issue(settings.delivery.outbox, rendered.issue,
                              renderer.render_web(rendered.issue, locale,
                                                  list_zone(lst, settings)), locale)
    options = DispatchOptions(
        connections=settings.smtp.connections if name == "smtp" else 1,
        retries=settings.delivery.retries,
        retry_backoff=settings.delivery.retry_backoff,
        pause_after_failures=settings.delivery.pause_after_failures,
        rate_limit=settings.delivery.rate_limit,
        processes=process_count(settings.smtp.connections) if name == "smtp" else 1,
    )

    def open_backend() -> DeliveryBackend:
        return create_backend(name, settings, stream)

    def due(lst: SubscriberList) -> Callable[[Subscriber], bool] | None:
        if zone is None:
            return None
        return lambda s: reader_zone(s, lst, settings) == zone

    reports: list[DeliveryReport] = []
    for lst, edition in zip(lists, editions, strict=True):
        if reports and (reports[-1].error or reports[-1].paused or reports[-1].stopped):
            # The run is over: later lists are reported as waiting, never silently dropped.
            is_due = due(lst)
            waiting = Sample(s for s in lst.subscribers
                             if s.status == "active" and (is_due is None or is_due(s)))
            reports.append(DeliveryReport(issue=edition.edition.general, test=to is not None,
                                          not_attempted=waiting))
            continue
        reports.append(_send_issue(edition, lst, settings, now, ledger, open_backend, options,
                                   signer, to=to, due=due(lst), resend=resend,
                                   dry_run=dry_run, stop=stop, sleep=sleep,
                                   on_start=on_start, on_result=on_result,
                                   enqueue=enqueue, hold=hold))
    return reports


def _send_issue(rendered: RenderedEdition, lst: SubscriberList, settings: Settings,
                now: dt.datetime, ledger: Ledger | None,
                open_backend: Callable[[], DeliveryBackend], options: DispatchOptions,
                signer: DkimSigner | None, *,
                to: Subscriber | None, due: Callable[[Subscriber], bool] | None,
                resend: bool, dry_run: bool,
                stop: threading.Event | None,
                sleep: Callable[[float], object] | None,
                on_start: Callable[[Issue, int], None] | None,
                on_result: Callable[[DeliveryResult], None] | None,
                enqueue: Enqueue | None = None,
                hold: Hold | None = None) -> DeliveryReport:
    edition = rendered.edition
    issue = edition.general
    newsletter = settings.newsletter
    test = to is not None
    report = DeliveryReport(issue=issue, test=test)
    record = None if dry_run or test else ledger
    todo: Iterator[Subscriber]
    if to is not None:
        count, todo = 1, iter([to])
    else:
        count, todo = _plan(edition, lst, ledger, record, newsletter.sender_domain, resend,
                            report, due)
    if enqueue is not None and record is not None:
        report.queued = enqueue(rendered, todo, now)
        return report
    if on_start is not None:
        on_start(issue, count)
    secret = unsubscribe_secret(settings)
    templates = {ids: MessageTemplate(variant, newsletter, now, test=test, signer=signer,
                                      secret=secret, bounces=settings.bounces.address)
                 for ids, variant in rendered.variants.items()}
    general = templates[issue.article_ids]

    def build(subscriber: Subscriber) -> OutgoingMessage:
        if not subscriber.topics or test:
            return general.build(subscriber)
        return templates[edition.issue_for(subscriber).article_ids].build(subscriber)

    if hold is not None and record is not None:
        with hold(issue.id) as holding:  # rows a worker holds are left to it
            outcome = dispatch(
                holding.take(todo), build, open_backend, options, ledger=record,
                issue_id=issue.id, stop=stop, sleep=sleep, on_result=on_result)
        outcome.not_attempted.extend(holding.others)
    else:
        outcome = dispatch(
            todo, build, open_backend,
            options, ledger=record, issue_id=issue.id, stop=stop, sleep=sleep,
            on_result=on_result)
    report.sent, report.failed = outcome.sent, list(outcome.failed.values())
    report.not_attempted = outcome.not_attempted
    report.error, report.paused, report.stopped = (outcome.error, outcome.paused,
                                                   outcome.stopped)
    if record is not None and not isinstance(report.error, LedgerError):
        _settle(record, issue.id, lst.id, report)
    return report


def _plan(edition: Edition, lst: SubscriberList, ledger: Ledger | None, record: Ledger | None,
          domain: str, resend: bool, report: DeliveryReport,
          due: Callable[[Subscriber], bool] | None = None,
          ) -> tuple[int, Iterator[Subscriber]]:
    """Who gets the issue in this run: how many, and an iterator over them that reads the
    list again as the sending goes. Fills in the report's skipped, earlier and later counts.

    With `record`, the issue, its variants and a row per subscriber go into the ledger
    first, so that every reader is pending there before the first message leaves. The list
    is read a batch at a time (LEDGER_BATCH), and so are the ledger's rows: nothing here
    holds the whole list.
    """
    issue = edition.general
    suppressed = ledger.suppressed(lst.id) if ledger else {}

    def skip(s: Subscriber) -> str | None:
        if s.status != "active":
            return s.status
        if s.email.lower() in suppressed:
            return f"suppressed: {suppressed[s.email.lower()]}"
        if s.paused_on(issue.date):
            return f"paused until {s.paused_until}"
        return None

    for s in lst.subscribers:
        if (reason := skip(s)) is not None:
            report.skipped.append((s, reason))
    if record is not None:
        record.record_issue(issue.id, lst.id, issue.date, issue.article_ids)
        record.record_articles(issue.id, {
            article.id: article.model_dump_json()
            for variant in (issue, *edition.by_topics.values())
            for article in (variant.lead, *variant.headlines)})
        if resend:
            # Only the rows of readers this run plans: one gone since (forgotten, taken
            # out of the file) would stay pending for ever.
            for batch in _batches(s.email for s in lst.subscribers if due is None or due(s)):
                record.reset(issue.id, batch)
        record.plan(issue.id, (
            (s.email, message_id(issue.id, s.email, domain),
             "skipped" if skip(s) is not None else "pending")
            for s in lst.subscribers))
        record.set_state(issue.id, "sending")
    look_up = ledger is not None and not (resend and record is None)

    def unsent() -> Iterator[tuple[Subscriber, str]]:
        """Each reader not skipped, with their status in the ledger."""
        active = (s for s in lst.subscribers if skip(s) is None)
        for batch in _batches(active):
            statuses = (ledger.statuses_of(issue.id, [s.email for s in batch])
                        if look_up and ledger is not None else {})
            for s in batch:
                yield s, statuses.get(s.email.lower(), "pending")

    count = 0
    wanted: set[str] = set()
    for s, status in unsent():
        if status == "sent":
            report.earlier += 1
        elif status == "failed-permanent":
            report.skipped.append((s, "failed permanently before"))
        elif status in UNSENT:
            if due is not None and not due(s):
                report.later += 1
                continue
            count += 1
            if s.topics:
                wanted.add(topic_key(s.topics))
    if record is not None:
        # Only the variants someone gets now: a variant recorded for readers who had the
        # issue before they chose topics would count its articles as sent to that topic.
        record.record_variants(issue.id, {key: variant.article_ids
                                          for key, variant in edition.by_topics.items()
                                          if key in wanted})
    todo = (s for s, status in unsent() if status in UNSENT and (due is None or due(s)))
    return count, todo


def _batches(items: Iterator[Subscriber] | Iterator[str]) -> Iterator[list]:
    """`items` in lists of LEDGER_BATCH."""
    while batch := list(itertools.islice(items, LEDGER_BATCH)):
        yield batch


def _settle(ledger: Ledger, issue_id: str, list_id: str, report: DeliveryReport) -> None:
    """After the run: suppress hard bounces; record whether the issue is complete."""
    for result in report.failed:
        if result.status == "failed-permanent":
            ledger.suppress(list_id, result.recipient, "refused",
                            {"issue": issue_id, "reply": result.reply, "source": "smtp"})
    if report.paused:
        ledger.set_state(issue_id, "paused", report.paused)
    elif report.ok and not report.later:
        ledger.set_state(issue_id, "complete")
