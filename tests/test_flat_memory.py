"""Memory that does not grow with the list: the roster is streamed from the file into a
spool, the send reads it again a batch at a time, and reports keep counts and a sample."""

from __future__ import annotations

import gc
import io
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

from newsletter.delivery.console import ConsoleBackend
from newsletter.dispatch import LEDGER_BATCH, DispatchOptions, dispatch
from newsletter.models import SAMPLE, ReaderSource, Sample, Subscriber
from newsletter.subscribers import load_roster
from tests.conftest import Project


def long_file(path: Path, readers: int, extra: str = "") -> Path:
    with path.open("w", encoding="utf-8") as out:
        out.write("lists:\n  brief:\n    sections: [city, culture]\n    subscribers:\n")
        for i in range(readers):
            if i % 3:
                out.write(f"      - r{i}@example.com\n")
            else:
                out.write(f"      - {{email: r{i}@example.com, name: R {i}, topics: [city]}}\n")
        out.write(extra)
    return path


def python_peak(readers: int, tmp_path: Path) -> int:
    """The Python heap's peak while loading `readers` readers and reading them twice."""
    path = long_file(tmp_path / f"s{readers}.yaml", readers)
    gc.collect()
    tracemalloc.start()
    try:
        roster = load_roster(path)
        lst = roster.lists["brief"]
        assert sum(1 for _ in lst.subscribers) == readers == len(lst.subscribers)
        assert sum(1 for s in lst.subscribers if s.topics) == (readers + 2) // 3
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_heap_does_not_grow_with_the_list(tmp_path: Path) -> None:
    small, large = python_peak(2_000, tmp_path), python_peak(40_000, tmp_path)
    # Holding the readers would cost some 300 bytes each (12 MB for 40,000) over the small
    # list; streaming them costs the same at any length.
    assert large - small < 2_000_000, (small, large)


def test_a_streamed_list_reads_the_same_readers_on_every_pass(tmp_path: Path) -> None:
    roster = load_roster(long_file(tmp_path / "s.yaml", 2_500))
    lst = roster.lists["brief"]
    assert isinstance(lst.subscribers, ReaderSource)
    first, second = list(lst.subscribers), list(lst.subscribers)
    assert first == second and len(first) == 2_500
    assert first[0] == Subscriber(email="r0@example.com", name="R 0", line=5, topics=("city",))
    # Two passes at once (one stopped half way) do not disturb each other.
    one, two = iter(lst.subscribers), iter(lst.subscribers)
    assert [next(one).email for _ in range(1500)][-1] == "r1499@example.com"
    assert next(two).email == "r0@example.com" and next(one).email == "r1500@example.com"


def test_a_duplicate_far_down_a_long_list_is_still_found(tmp_path: Path) -> None:
    path = long_file(tmp_path / "s.yaml", 3_000, "      - R7@Example.com\n")
    roster = load_roster(path)
    [warning] = roster.warnings
    assert warning.line == 3_000 + 5
    assert "duplicate address R7@example.com in list 'brief'" in warning.what
    assert "the entry on line 12 wins" in warning.what
    assert len(roster.lists["brief"].subscribers) == 3_000


def test_an_unknown_topic_after_the_entries_is_checked_against_later_sections(
        tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("lists:\n  brief:\n    subscribers:\n      - {email: a@example.com, "
                    "topics: [sport]}\n    sections: [city]\n", encoding="utf-8")
    import pytest

    from newsletter.errors import ConfigError
    with pytest.raises(ConfigError) as caught:
        load_roster(path)
    [problem] = caught.value.problems
    assert problem.line == 4 and "unknown topic 'sport'" in problem.what


def test_dispatch_reads_its_recipients_as_it_goes() -> None:
    """The send loop is never more than a queue ahead of the sending."""
    sent = [0]
    ahead = [0]

    def readers() -> Iterator[Subscriber]:
        for i in range(5 * LEDGER_BATCH):
            ahead[0] = max(ahead[0], i - sent[0])
            yield Subscriber(email=f"r{i}@example.com")

    def build(subscriber: Subscriber):  # counts what reached the backend
        sent[0] += 1
        return template.build(subscriber)

    template = _template()
    outcome = dispatch(readers(), build, lambda: ConsoleBackend(io.StringIO()),
                       DispatchOptions())
    assert outcome.sent == 5 * LEDGER_BATCH and not outcome.not_attempted
    assert ahead[0] <= LEDGER_BATCH + 2, ahead[0]


def test_a_sample_counts_everyone_and_names_the_first() -> None:
    sample = Sample(range(SAMPLE + 500))
    assert len(sample) == SAMPLE + 500 and list(sample) == list(range(SAMPLE))
    assert Sample([1, 2]) == [1, 2] and Sample([1, 2]) != [1, 2, 3]


def test_send_counts_skipped_readers_beyond_the_sample(project: Project) -> None:
    """`send`'s summary is the same for a long list: counts, not the sample's length."""
    with project.subscribers.open("w", encoding="utf-8") as out:
        out.write("lists:\n  morning-brief:\n    title: The Morning Brief\n    subscribers:\n"
                  "      - ada@example.com\n")
        for i in range(SAMPLE + 5):
            out.write(f"      - {{email: u{i}@example.com, status: unsubscribed}}\n")
    result = project.run("send", "--date", "2026-11-24")
    assert result.returncode == 0, result.stderr
    assert (f"morning-brief/2026-11-24 [file]: 1 sent, {SAMPLE + 5} skipped (unsubscribed), "
            "0 failed") in result.stdout


def _template():
    """A message template for the issue of the test project's articles."""
    import datetime as dt

    from newsletter.fastmime import MessageTemplate
    from newsletter.models import Article, Issue
    from newsletter.render import Renderer
    from newsletter.settings import NewsletterSection
    from tests.conftest import REPO

    newsletter = NewsletterSection(title="T", sender="T <t@example.com>",
                                   base_url="https://example.com",
                                   unsubscribe_mailto="u@example.com",
                                   postal_address="1 Quay Street")
    lead = Article(id="a", title="A story", url="https://example.com/a", summary="S.",
                   published=dt.datetime(2026, 11, 24, 6, tzinfo=dt.UTC))
    issue = Issue(list_id="brief", list_title="Brief", date=dt.date(2026, 11, 24), lead=lead)
    rendered = Renderer(REPO / "templates", newsletter).render(issue)
    return MessageTemplate(rendered, newsletter, dt.datetime(2026, 11, 24, 7, tzinfo=dt.UTC))
