"""RSS and Atom feeds: parsing each shape, sanitising, merging, fetching over loopback HTTP."""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import re
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import newsletter.sources.feed as feed_module
from newsletter.composer import compose
from newsletter.errors import ContentError
from newsletter.ledger import SqliteLedger
from newsletter.models import Article, SubscriberList
from newsletter.sources.feed import (
    USER_AGENT,
    FeedLoad,
    load_feeds,
    merge_duplicates,
    parse_feed,
    sanitize_html,
)
from newsletter.sources.feedcache import MemoryFeedCache, SqliteFeedCache

FEEDS = Path(__file__).parent / "feeds"
REPO = Path(__file__).resolve().parents[1]
UTC = dt.UTC


def parse(name: str, base_url: str | None = None) -> FeedLoad:
    return parse_feed((FEEDS / name).read_bytes(), name, base_url)


def by_title(load: FeedLoad) -> dict[str, Article]:
    return {a.title: a for a in load.articles}


# --- parsing ------------------------------------------------------------------------------

def test_rss2_entry_becomes_an_article_with_clean_fields() -> None:
    load = parse("rss2-harbour-gazette.xml", "https://gazette.example.com/feed.xml")
    assert load.warnings == []
    bridge = by_title(load)["Swing bridge reopens after six weeks of repairs & tests"]
    assert bridge.url == "https://gazette.example.com/2026/11/swing-bridge-reopens"
    assert bridge.author == "Mira Castellane"
    # Tue, 24 Nov 2026 06:30:00 +0100
    assert bridge.published == dt.datetime(2026, 11, 24, 5, 30, tzinfo=UTC)
    assert bridge.published.utcoffset() == dt.timedelta(0)
    assert bridge.section == "city"
    # "City" and "city" are one category; the first category is the section, not a tag.
    assert bridge.tags == ("transport",)
    assert bridge.image == "https://gazette.example.com/images/bridge-wide.jpg"
    assert bridge.summary.startswith("The swing bridge over the inner harbour opened")
    assert bridge.id.startswith("feed:")


def test_rss2_content_is_sanitised_for_email() -> None:
    bridge = parse("rss2-harbour-gazette.xml", "https://gazette.example.com/feed.xml").articles[0]
    html = bridge.body_html
    for banned in ("<script", "<style", "<iframe", "onclick", "onmouseover", "javascript:",
                   "style=", "tracker.example.net", "color: red"):
        assert banned not in html
    assert '<a href="https://gazette.example.com/tags/turning-gear">turning gear</a>' in html
    # 600 x 400 in the feed: scaled to the mail's 536-pixel text column.
    assert ('<img alt="The bridge at dawn" height="357" '
            'src="https://gazette.example.com/images/bridge-dawn.jpg" width="536">') in html
    assert "<strong>forty times</strong>" in html and "<blockquote>" in html
    assert bridge.body.split("\n\n") == [
        "The swing bridge over the inner harbour opened to traffic again at dawn, after six "
        "weeks of repairs to its turning gear.",
        "Engineers from the harbour board swung it open and shut forty times overnight.",
        "“It turns like new,” said the bridge keeper.",
    ]


def test_a_feed_file_without_a_base_url_resolves_links_against_its_own_link() -> None:
    bridge = parse("rss2-harbour-gazette.xml").articles[0]
    assert bridge.url == "https://gazette.example.com/2026/11/swing-bridge-reopens"
    assert 'href="https://gazette.example.com/tags/turning-gear"' in bridge.body_html


def test_plain_description_gives_a_short_summary_and_paragraph_html() -> None:
    fish = by_title(parse("rss2-harbour-gazette.xml"))["Fish market rings its bell an hour early"]
    assert fish.author == "Tomas Quay"  # the name, not the address in <author>
    assert fish.published == dt.datetime(2026, 11, 23, 22, 5, tzinfo=UTC)
    assert fish.summary.endswith("…") and len(fish.summary) <= 301
    assert fish.summary[:-1] in fish.body and not fish.summary[:-1].endswith(" ")
    assert fish.body_html.startswith("<p>From Monday") and fish.body_html.endswith("</p>")
    assert fish.image is None


def test_rdf_feed_with_dc_dates() -> None:
    load = parse("rdf-harbour-board.rdf")
    assert load.warnings == []
    storm, dredging = load.articles
    assert storm.title == "Storm surge warning for Thursday night"
    assert storm.url == "https://board.example.org/notices/storm-surge"
    assert storm.published == dt.datetime(2026, 11, 23, 23, 0, tzinfo=UTC)  # 18:00-05:00
    assert (storm.author, storm.section, storm.tags) == ("Harbour Master", "safety", ())
    assert storm.body == "Sandbags are available at the fire station from noon."
    assert dredging.published == dt.datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    assert (dredging.section, dredging.tags, dredging.author) == (None, (), None)


def test_atom_feed_with_xml_base_html_and_xhtml_content() -> None:
    load = parse("atom-quayside.atom")
    assert load.warnings == []
    rowers = by_title(load)["Rowers take the Estuary Cup"]  # <b> stripped from an html title
    assert rowers.url == "https://quayside.example.net/blog/2026/rowers-estuary-cup"
    # Only <updated>, at -08:00: the next day in UTC.
    assert rowers.published == dt.datetime(2026, 11, 24, 1, 45, tzinfo=UTC)
    assert rowers.author == "Ines Harrow"
    assert rowers.tags == ("rowing",) and rowers.section == "sport"
    assert rowers.summary == "The harbour crew won by two lengths in a cold head wind."
    assert 'href="https://quayside.example.net/blog/results#final"' in rowers.body_html
    assert rowers.body == ("The harbour crew won by two lengths.\n\n"
                           "Their cox called it the best row of the year.")

    cafe = by_title(load)["Net loft café wins a regional award"]
    assert cafe.url == "https://quayside.example.net/gallery/net-loft-cafe"  # entry xml:base
    assert cafe.published == dt.datetime(2026, 11, 22, 7, 0, tzinfo=UTC)  # published wins
    assert cafe.author == "Quayside Collective"  # inherited from the feed
    assert 'src="https://quayside.example.net/gallery/photos/net-loft.jpg"' in cafe.body_html
    assert 'href="https://quayside.example.net/menu"' in cafe.body_html
    assert "<div" not in cafe.body_html


def test_atom_0_3_base64_and_escaped_titles_and_summaries_become_plain_text() -> None:
    # Atom 0.3's mode="base64" and mode="escaped" default to text/plain, yet carry HTML.
    load = parse("atom03-harbour-radio.atom")
    assert load.warnings == []
    assert [(a.title, a.summary) for a in load.articles] == [
        ("Tide tables corrected for December",
         "The winter tables had two high tides swapped."),
        ("Lifeboat crew rescues two kayakers", "Both were unhurt & home by dark."),
        ("Example Atom & more", "An escaped summary."),
        ("Quay lights back on", "The council fixed them."),
    ]
    quay = load.articles[3]
    assert quay.body_html == ('<p>The <a href="https://radio.example.org/x">council</a> '
                              "fixed them.</p>")


def test_atom_1_0_html_titles_escaped_once_or_twice_become_plain_text() -> None:
    load = parse("atom10-html-titles.atom")
    assert load.warnings == []
    assert [a.title for a in load.articles] == [
        "Example Atom", "Gulls nest on the pier", "Escaped twice: Ferry late",
        "Markup sent as text: Rain until noon", "Harbour fees & dues",
        "AT&T <3 the harbour & 2 < 3",  # text that only looks like markup stays
    ]
    assert load.articles[3].summary == "Wind force 6 & 3 < 4 knots"


def test_ids_are_stable_and_distinct() -> None:
    names = ["rss2-harbour-gazette.xml", "rdf-harbour-board.rdf", "atom-quayside.atom"]
    first = [a.id for name in names for a in parse(name).articles]
    again = [a.id for name in names for a in parse(name).articles]
    assert first == again and len(set(first)) == len(first)
    # An id from the guid does not change with the base URL the feed was fetched from.
    assert parse("rss2-harbour-gazette.xml", "https://mirror.example.org/f.xml").articles[1].id \
        == parse("rss2-harbour-gazette.xml").articles[1].id


def test_truncated_feed_keeps_what_was_read_and_warns_once() -> None:
    load = parse("truncated.xml")
    assert [a.title for a in load.articles] == ["Ferry timetable changes from Monday"]
    not_well_formed = [w for w in load.warnings if "not well-formed" in w.what]
    assert len(not_well_formed) == 1
    assert "line 15" in str(not_well_formed[0]) and "truncated.xml" in str(not_well_formed[0])


def test_an_html_error_page_is_not_a_feed() -> None:
    load = parse("error-page.html")
    assert load.articles == []
    [warning] = load.warnings
    assert warning.what.startswith("not a readable RSS or Atom feed (")
    assert warning.file == "error-page.html"


def test_parse_feed_alone_skips_an_undated_entry_with_a_warning() -> None:
    load = parse("undated.xml")
    assert [a.title for a in load.articles] == ["Rope works homes: plans go on show"]
    [warning] = load.warnings
    assert str(warning).startswith(
        "undated.xml: entry “Residents' meeting on the rope works homes” has no usable date; "
        "skipped")


def test_an_undated_entry_keeps_the_date_it_was_first_seen(tmp_path: Path) -> None:
    feed = tmp_path / "undated.xml"
    feed.write_bytes((FEEDS / "undated.xml").read_bytes())
    monday = dt.datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
    tuesday = monday + dt.timedelta(days=1)

    def meeting(load: FeedLoad) -> Article:
        assert load.warnings == []
        return by_title(load)["Residents' meeting on the rope works homes"]

    ledger_file = tmp_path / "outbox" / "newsletter.sqlite3"
    with SqliteFeedCache(ledger_file) as cache:
        assert meeting(load_feeds([str(feed)], cache=cache, timeout=1, now=monday)).published \
            == monday
    # Another run, another process: still Monday's entry, not new again on Tuesday.
    with SqliteFeedCache(ledger_file) as cache:
        again = load_feeds([str(feed)], cache=cache, timeout=1, now=tuesday)
        assert meeting(again).published == monday
        assert by_title(again)["Rope works homes: plans go on show"].published == \
            dt.datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    # Gone from the feed for 90 days, it is forgotten; if it comes back it is new.
    later = tuesday + dt.timedelta(days=91)
    with SqliteFeedCache(ledger_file) as cache:
        assert cache.first_seen("other", later) == later
        assert meeting(load_feeds([str(feed)], cache=cache, timeout=1, now=later)).published \
            == later
    # Without a cache (nothing remembered), it is dated now.
    assert meeting(load_feeds([str(feed)], cache=None, timeout=1, now=tuesday)).published \
        == tuesday


def test_sanitiser_drops_unsafe_images_and_links() -> None:
    html = sanitize_html(
        '<p><a href="javascript:alert(1)">x</a> <a href="mailto:desk@example.com">mail</a>'
        '<img src="data:image/png;base64,AAAA" alt="d"><img src="cid:1">'
        '<img src="http://img.example.com/a.png" width="100%" onerror="x()"></p>', None)
    # A link whose href is refused keeps only its text (`check` refuses an empty href).
    assert html == ('<p>x <a href="mailto:desk@example.com">mail</a>'
                    '<img src="http://img.example.com/a.png" alt=""></p>')


# --- merging ------------------------------------------------------------------------------

MIRROR = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Estuary Mirror</title><link>https://mirror.example.org/</link>
<item>
  <title>Swing bridge back in service</title>
  <link>HTTPS://Gazette.Example.com/2026/11/swing-bridge-reopens/#top</link>
  <guid>mirror-1</guid>
  <pubDate>Tue, 24 Nov 2026 04:00:00 GMT</pubDate>
  <category>Roads</category><category>City</category>
  <description>The bridge is open.</description>
</item>
<item>
  <title>Fish market rings the bell an hour early</title>
  <link>https://mirror.example.org/fish</link>
  <guid>mirror-2</guid>
  <pubDate>Tue, 24 Nov 2026 05:00:00 GMT</pubDate>
  <category>Food</category>
  <description>Short copy.</description>
</item>
</channel></rss>
"""


def write_feeds(tmp_path: Path) -> list[str]:
    gazette = tmp_path / "gazette.xml"
    gazette.write_bytes((FEEDS / "rss2-harbour-gazette.xml").read_bytes())
    mirror = tmp_path / "mirror.xml"
    mirror.write_text(MIRROR, encoding="utf-8")
    return [str(mirror), str(gazette)]


def test_duplicates_across_feeds_are_merged(tmp_path: Path) -> None:
    load = load_feeds(write_feeds(tmp_path), cache=None, timeout=1)
    assert load.warnings == []
    assert len(load.articles) == 2
    bridge, fish = load.articles
    # Same URL once normalised: the gazette's longer story wins, with both feeds' tags.
    assert bridge.title == "Swing bridge reopens after six weeks of repairs & tests"
    assert (bridge.section, bridge.tags) == ("city", ("transport", "roads"))
    # Near-identical title, different URLs: the longer body wins.
    assert fish.title == "Fish market rings its bell an hour early"
    assert (fish.section, fish.tags) == ("business", ("food",))


def test_merging_does_not_depend_on_feed_order(tmp_path: Path) -> None:
    feeds = write_feeds(tmp_path)
    forward = load_feeds(feeds, cache=None, timeout=1).articles
    backward = load_feeds(feeds[::-1], cache=None, timeout=1).articles
    assert sorted(a.id for a in forward) == sorted(a.id for a in backward)
    tie = parse("rdf-harbour-board.rdf").articles[0]
    later = tie.model_copy(update={"id": "feed:later", "published": tie.published
                                   + dt.timedelta(hours=1), "tags": ("weather",)})
    for articles in ([[tie], [later]], [[later], [tie]]):
        [kept] = merge_duplicates(articles)
        assert kept.id == tie.id  # same body length: the earliest wins
        assert kept.aliases == ("feed:later",)
        assert (kept.section, set(kept.tags)) == ("safety", {"weather"})


def test_different_stories_are_not_merged() -> None:
    load = parse("rss2-harbour-gazette.xml")
    assert merge_duplicates([load.articles]) == load.articles


def _entry(guid: str, title: str, day: int, link: str = "https://status.example.com/",
           body: str = "Text.") -> Article:
    return Article(id=f"feed:{guid}", title=title, url=link, body=body,
                   published=dt.datetime(2026, 11, day, 6, 0, tzinfo=UTC))


def test_a_feeds_own_entries_are_never_merged() -> None:
    # A status page links every entry to its home page; a daily briefing repeats its title.
    status = [_entry("1", "CDN outage", 24), _entry("2", "Database maintenance", 23),
              _entry("3", "Morning briefing", 24, "https://status.example.com/b/24"),
              _entry("4", "Morning briefing", 23, "https://status.example.com/b/23")]
    assert merge_duplicates([status]) == status
    # Another feed with the home page link and a briefing: the home page names no story
    # (the status feed gives it to two entries), and a title only matches an entry from
    # around the same time.
    other = [_entry("x", "Status", 24), _entry("y", "Morning briefing", 20, "https://o.example/")]
    merged = merge_duplicates([status, other])
    assert [(a.id, a.aliases) for a in merged] == [
        ("feed:1", ()), ("feed:2", ()), ("feed:3", ()), ("feed:4", ()), ("feed:x", ()),
        ("feed:y", ())]


def test_the_closest_copies_pair_up_whatever_the_feeds_order() -> None:
    # The same daily title in two feeds: each day pairs with the same day, not the day
    # before (which is also within two days).
    a = [_entry(f"a{day}", "Morning briefing", day, f"https://a.example/{day}")
         for day in (23, 24, 25)]
    b = [_entry(f"b{day}", "Morning briefing", day, f"https://b.example/{day}")
         for day in (22, 23, 24, 25)]
    # The same link a day apart in one pair, the same day in another: same day wins.
    c = [_entry("c1", "Bridge", 24, "https://n.example/bridge")]
    d = [_entry("d1", "Bridge (updated)", 25, "https://n.example/bridge"),
         _entry("d2", "Bridge", 24, "https://n.example/bridge/")]
    for feeds in ([a, b, c], [b, a, c], [c, b, a]):
        stories = {a.id: set(a.aliases) for a in merge_duplicates(feeds)}
        assert stories == {"feed:a23": {"feed:b23"}, "feed:a24": {"feed:b24"},
                           "feed:a25": {"feed:b25"}, "feed:b22": set(), "feed:c1": set()}
    # d's own entries share a link: it names no story there, so nothing joins by it.
    assert {a.id for a in merge_duplicates([c, d])} == {"feed:c1", "feed:d1"}


def test_a_longer_copy_arriving_later_does_not_make_a_sent_story_new() -> None:
    first = _entry("a", "Harbour bridge reopens", 24, "https://news.example.com/bridge")
    longer = _entry("b", "Harbour bridge reopens", 24, "https://news.example.com/bridge/",
                    body="A much longer telling of the same story.")
    [kept] = merge_duplicates([[first], [longer]])
    assert kept.id == "feed:b" and kept.aliases == ("feed:a",)
    # The composer knows the story under the id it was sent with.
    issue = compose([kept, _entry("c", "Something else", 24, "https://news.example.com/c")],
                    SubscriberList(id="l", title="L"), dt.date(2026, 11, 24), headlines=5,
                    max_age_days=2, tz=ZoneInfo("UTC"), already_sent=frozenset({"feed:a"}))
    assert issue.lead.id == "feed:c" and issue.headlines == ()


def test_titles_of_one_long_feed_are_not_compared(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(feed_module, "title_similarity",
                        lambda a, b: calls.append((a, b)) or 1.0)
    long_feed = [_entry(str(n), f"Story number {n}", 1 + n % 28, f"https://x.example/{n}")
                 for n in range(2000)]
    assert len(merge_duplicates([long_feed])) == 2000
    assert calls == []


# --- fetching -----------------------------------------------------------------------------

@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    block: bool = False


@dataclass
class FeedServer:
    base: str
    routes: dict[str, Route]
    seen: list[tuple[str, dict[str, str]]]

    def url(self, path: str) -> str:
        return self.base + path

    def requests_to(self, path: str) -> list[dict[str, str]]:
        return [headers for p, headers in self.seen if p == path]


@pytest.fixture
def server() -> Iterator[FeedServer]:
    release = threading.Event()
    routes: dict[str, Route] = {}
    seen: list[tuple[str, dict[str, str]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            seen.append((self.path, headers))
            route = routes.get(self.path, Route(404, b"not here"))
            if route.block:
                release.wait()
                return
            etag = route.headers.get("ETag")
            if route.status == 200 and etag and headers.get("if-none-match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return
            body = route.body
            if "gzip" in headers.get("accept-encoding", "") and route.headers.get("gzip"):
                body = gzip.compress(body)
            self.send_response(route.status)
            for name, value in route.headers.items():
                self.send_header("Content-Encoding" if name == "gzip" else name,
                                 "gzip" if name == "gzip" else value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield FeedServer(f"http://127.0.0.1:{httpd.server_address[1]}", routes, seen)
    finally:
        release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def feed_route(name: str, **headers: str) -> Route:
    return Route(200, (FEEDS / name).read_bytes(),
                 {"Content-Type": "application/rss+xml; charset=utf-8", **headers})


def test_conditional_get_uses_the_cache_on_304(server: FeedServer, tmp_path: Path) -> None:
    modified = "Tue, 24 Nov 2026 07:10:00 GMT"
    server.routes["/gazette.xml"] = feed_route("rss2-harbour-gazette.xml", ETag='"v1"',
                                               **{"Last-Modified": modified})
    url = server.url("/gazette.xml")
    with SqliteFeedCache(tmp_path / "outbox" / "newsletter.sqlite3") as cache:
        first = load_feeds([url], cache=cache, timeout=5)
        stored = cache.get(url)
        assert stored is not None and stored.etag == '"v1"'
        assert stored.last_modified == modified
        assert stored.body == (FEEDS / "rss2-harbour-gazette.xml").read_bytes()

        second = load_feeds([url], cache=cache, timeout=5)
    assert second.warnings == [] and second.articles == first.articles
    assert len(first.articles) == 2
    # Relative links resolve against the URL the feed came from.
    assert first.articles[0].url == server.url("/2026/11/swing-bridge-reopens")
    plain, conditional = server.requests_to("/gazette.xml")
    assert "if-none-match" not in plain and plain["user-agent"] == USER_AGENT
    assert conditional["if-none-match"] == '"v1"'
    assert conditional["if-modified-since"] == modified


def test_the_cache_shares_the_ledger_file_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "outbox" / "newsletter.sqlite3"
    ledger = SqliteLedger(path)
    when = dt.datetime(2026, 11, 24, 7, 0, tzinfo=UTC)
    with SqliteFeedCache(path) as cache:
        cache.put("https://example.com/feed.xml", '"a"', None, b"<rss/>", when)
        cache.put("https://example.com/feed.xml", '"b"', None, b"<rss></rss>", when)
    ledger.close()
    with SqliteFeedCache(path) as cache:
        stored = cache.get("https://example.com/feed.xml")
        assert cache.get("https://example.com/other.xml") is None
    assert stored is not None
    assert (stored.etag, stored.body, stored.fetched_at) == ('"b"', b"<rss></rss>", when)


def test_a_redirected_feed_keeps_its_links_after_a_304_and_when_down(
        server: FeedServer, tmp_path: Path) -> None:
    # Links relative to the feed's own folder, and no guid: the link is the entry's id.
    document = (b'<?xml version="1.0"?><rss version="2.0"><channel><title>Blog</title>'
                b"<item><title>Hello</title><link>posts/hello.html</link>"
                b"<pubDate>Tue, 24 Nov 2026 06:00:00 GMT</pubDate></item></channel></rss>")
    server.routes["/feed"] = Route(301, b"", {"Location": "/blog/rss/gazette.xml"})
    server.routes["/blog/rss/gazette.xml"] = Route(200, document, {"ETag": '"v1"'})
    url = server.url("/feed")
    with SqliteFeedCache(tmp_path / "outbox" / "newsletter.sqlite3") as cache:
        first = load_feeds([url], cache=cache, timeout=5)
        assert first.articles[0].url == server.url("/blog/rss/posts/hello.html")
        not_modified = load_feeds([url], cache=cache, timeout=5)
        assert server.requests_to("/blog/rss/gazette.xml")[-1]["if-none-match"] == '"v1"'
        server.routes["/blog/rss/gazette.xml"] = Route(500, b"down")
        down = load_feeds([url], cache=cache, timeout=5)
    # Same links, so the same ids: a story is not new again because it came from the cache.
    assert not_modified.articles == first.articles and not_modified.warnings == []
    assert down.articles == first.articles and "using the copy fetched" in down.warnings[0].what


def test_an_answer_too_large_before_or_after_unzipping_is_refused(
        server: FeedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feed_module, "_MAX_BYTES", 2000)
    noise = bytes(range(256)) * 40  # does not compress: 10 KB zipped too
    server.routes["/big.gz"] = Route(200, b"<rss>" + noise, {"gzip": "yes"})
    server.routes["/bomb.gz"] = Route(200, b"<rss>" + b" " * 100_000 + b"</rss>", {"gzip": "yes"})
    server.routes["/big"] = Route(200, b"<rss>" + noise)
    server.routes["/ok"] = feed_route("atom-quayside.atom", gzip="yes")
    load = load_feeds([server.url(p) for p in ("/big.gz", "/bomb.gz", "/big", "/ok")],
                      cache=None, timeout=5)
    assert [w.what for w in load.warnings] == ["the feed is larger than 0 MB"] * 3


@pytest.mark.parametrize("part", ["headers", "body"])
def test_a_feed_that_trickles_past_the_timeout_is_given_up(part: str) -> None:
    # Each line comes well within the timeout, the whole answer never does.
    stop = threading.Event()

    class Trickle(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            if part == "body":
                self.wfile.write(b"Content-Type: application/rss+xml\r\n\r\n<rss>")
            with contextlib.suppress(OSError):
                while not stop.wait(0.05):
                    self.wfile.write(b"X-Slow: 1\r\n" if part == "headers" else b" ")
                    self.wfile.flush()

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/feed.xml"
        with pytest.raises(ContentError) as raised:
            load_feeds([url], cache=None, timeout=0.5)
    finally:
        stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()
    assert re.search(r"feed\.xml: (no answer|the whole feed did not arrive) within 0\.5 s$",
                     str(raised.value)), str(raised.value)


def test_gzip_answers_are_read(server: FeedServer) -> None:
    server.routes["/atom"] = feed_route("atom-quayside.atom", gzip="yes")
    load = load_feeds([server.url("/atom")], cache=None, timeout=5)
    assert server.requests_to("/atom")[0]["accept-encoding"] == "gzip"
    assert len(load.articles) == 2 and load.warnings == []


def test_a_damaged_gzip_answer_is_a_warning(server: FeedServer) -> None:
    server.routes["/bad-gzip"] = Route(200, b"not gzip at all", {"Content-Encoding": "gzip"})
    server.routes["/rdf"] = feed_route("rdf-harbour-board.rdf")
    load = load_feeds([server.url("/bad-gzip"), server.url("/rdf")], cache=None, timeout=5)
    [warning] = load.warnings
    assert warning.what.startswith("the gzip-compressed answer is damaged")


def test_a_server_error_is_a_warning_and_other_feeds_are_used(server: FeedServer) -> None:
    server.routes["/down"] = Route(500, b"oops")
    server.routes["/rdf"] = feed_route("rdf-harbour-board.rdf")
    load = load_feeds([server.url("/down"), server.url("/rdf")], cache=None, timeout=5)
    assert len(load.articles) == 2
    [warning] = load.warnings
    assert str(warning) == (f"{server.url('/down')}: HTTP 500 Internal Server Error"
                            " — the digest goes on without this feed")


def test_a_feed_that_does_not_answer_in_time_is_a_warning(server: FeedServer) -> None:
    server.routes["/slow"] = Route(block=True)
    server.routes["/rdf"] = feed_route("rdf-harbour-board.rdf")
    load = load_feeds([server.url("/slow"), server.url("/rdf")], cache=None, timeout=0.3)
    assert len(load.articles) == 2
    [warning] = load.warnings
    assert warning.file == server.url("/slow")
    assert warning.what == "no answer within 0.3 s"


def test_a_failing_feed_falls_back_to_its_cached_copy(server: FeedServer) -> None:
    server.routes["/gazette.xml"] = feed_route("rss2-harbour-gazette.xml")
    cache = MemoryFeedCache()
    url = server.url("/gazette.xml")
    first = load_feeds([url], cache=cache, timeout=5)
    server.routes["/gazette.xml"] = Route(503, b"maintenance")
    again = load_feeds([url], cache=cache, timeout=5)
    assert again.articles == first.articles
    [warning] = again.warnings
    assert warning.what.startswith("HTTP 503 Service Unavailable; using the copy fetched ")


def test_an_html_page_served_as_a_feed_is_a_warning(server: FeedServer,
                                                    tmp_path: Path) -> None:
    server.routes["/html"] = Route(200, (FEEDS / "error-page.html").read_bytes(),
                                   {"Content-Type": "text/html"})
    server.routes["/rdf"] = feed_route("rdf-harbour-board.rdf")
    cache = MemoryFeedCache()
    load = load_feeds([server.url("/html"), server.url("/rdf")], cache=cache, timeout=5)
    [warning] = load.warnings
    assert "not a readable RSS or Atom feed" in warning.what
    assert cache.get(server.url("/html")) is None  # a bad answer never replaces a good copy


def refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/feed.xml"


def test_every_feed_failing_is_an_error(server: FeedServer, tmp_path: Path) -> None:
    server.routes["/down"] = Route(500, b"oops")
    feeds = [server.url("/down"), str(tmp_path / "missing.xml"), refused_url()]
    with pytest.raises(ContentError) as caught:
        load_feeds(feeds, cache=None, timeout=5)
    problems = caught.value.problems
    assert problems[0].field == "articles.feeds"
    assert problems[0].what == "none of the 3 feeds could be read"
    assert [p.what for p in problems[1:]] == [
        "HTTP 500 Internal Server Error", "feed file not found", "connection refused"]


def test_a_single_failing_feed_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ContentError) as caught:
        load_feeds([str(tmp_path / "gone.xml")], cache=None, timeout=1)
    assert str(caught.value).splitlines()[0] == (
        "articles.feeds: the feed could not be read — check the URLs and paths (and the "
        "network), or remove articles.feeds to use only local articles")


def test_a_missing_feed_file_is_a_warning(tmp_path: Path) -> None:
    missing = tmp_path / "missing.xml"
    load = load_feeds([str(missing), str(FEEDS / "atom-quayside.atom")], cache=None, timeout=1)
    assert len(load.articles) == 2
    [warning] = load.warnings
    assert str(warning) == (f"{missing}: articles.feeds: feed file not found"
                            " — the digest goes on without this feed")


class Untouchable:
    def __getattr__(self, name: str) -> Callable[..., object]:
        raise AssertionError(f"the cache was used: {name}")


def test_no_feeds_means_no_work() -> None:
    assert load_feeds([], cache=Untouchable(), timeout=1) == FeedLoad()  # type: ignore[arg-type]


def test_the_bundled_sample_feed_reads_cleanly() -> None:
    load = parse_feed((REPO / "articles/feeds/harbourton-events.xml").read_bytes(), "sample")
    assert load.warnings == [] and 4 <= len(load.articles) <= 5
    assert {a.published.date() for a in load.articles} <= {dt.date(2026, 11, 23),
                                                          dt.date(2026, 11, 24)}
    assert all(a.url and a.url.startswith("https://example.com/events/") for a in load.articles)
    assert {"culture", "sport", "city"} <= {a.section for a in load.articles}


def test_odd_entries_are_skipped_with_a_warning_and_the_rest_is_read() -> None:
    document = b"""<?xml version="1.0"?>
<rss version="2.0"><channel><title>Odd</title><link>https://odd.example.com/</link>
<item><title>Broken link</title><link>http://[::1</link><description>Text.</description>
<pubDate>Tue, 24 Nov 2026 06:00:00 +0000</pubDate></item>
<item><title>Null date</title><link>https://odd.example.com/null</link>
<pubDate>Mon, 01 Jan 0001 00:00:00 +0000</pubDate></item>
<item><title>Far future</title><link>https://odd.example.com/far</link>
<pubDate>Fri, 31 Dec 9999 23:59:59 -1200</pubDate></item>
<item><title>Fine</title><link>https://odd.example.com/fine</link>
<description><![CDATA[<a href="http://[::1">x</a> ok]]></description>
<pubDate>Tue, 24 Nov 2026 07:00:00 +0000</pubDate></item>
</channel></rss>"""
    load = parse_feed(document, "odd.xml")
    titles = {a.title: a for a in load.articles}
    assert set(titles) == {"Broken link", "Fine"}
    assert titles["Broken link"].url is None
    assert 'href' not in titles["Fine"].body_html and "ok" in titles["Fine"].body
    assert sorted(str(w) for w in load.warnings) == [
        "odd.xml: entry “Far future” has no usable date; skipped — the feed needs a pubDate, "
        "dc:date, published or updated",
        "odd.xml: entry “Null date” has no usable date; skipped — the feed needs a pubDate, "
        "dc:date, published or updated"]


def test_the_line_of_a_parse_error_is_the_line_in_the_file_without_a_declaration() -> None:
    # feedparser adds a declaration line in front of such a document; the warning must still
    # point at the line the publisher sees in their file.
    load = parse_feed(b"<rss version=\"2.0\">\n<channel>\n<item><title>A</title></item>\n"
                      b"<item><title>B</b></item>\n</channel></rss>", "nodecl.xml", None)
    [warning] = [w for w in load.warnings if "not well-formed" in w.what]
    assert "line 4:" in warning.what and "2 entries that" in warning.what


@pytest.mark.parametrize(("written", "utc"), [
    ("Tue, 24 Nov 2026 08:00:00 CEST", "2026-11-24T06:00:00+00:00"),
    ("Tue, 24 Nov 2026 08:00 CET", "2026-11-24T07:00:00+00:00"),
    ("Tue, 24 Nov 2026 08:00:00 AEDT", "2026-11-23T21:00:00+00:00"),
    ("Tue, 24 Nov 2026 08:00:00 PST", "2026-11-24T16:00:00+00:00"),   # feedparser's own
    ("Tue, 24 Nov 2026 08:00:00 +0530", "2026-11-24T02:30:00+00:00"),
])
def test_dates_with_zone_names_are_converted_to_utc(written: str, utc: str) -> None:
    load = parse_feed(f"""<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>
<item><title>A</title><link>https://t.example/a</link><pubDate>{written}</pubDate></item>
</channel></rss>""".encode(), "zones.xml")
    assert load.articles[0].published.isoformat() == utc


def _one_story_feed(path: Path, guid: str, body: str) -> str:
    path.write_text(f"""<?xml version="1.0"?><rss version="2.0"><channel><title>{guid}</title>
<item><title>Harbour bridge reopens</title><link>https://news.example.com/bridge</link>
<guid>{guid}</guid><pubDate>Tue, 24 Nov 2026 06:00:00 +0000</pubDate>
<description>{body}</description></item></channel></rss>""", encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("order", ["kept copy leaves", "other copy was sent"])
def test_a_story_sent_under_one_feeds_id_stays_sent_when_only_another_carries_it(
        tmp_path: Path, order: str) -> None:
    a = _one_story_feed(tmp_path / "a.xml", "urn:a:1", "The long telling of the story.")
    b = _one_story_feed(tmp_path / "b.xml", "urn:b:1", "Short.")
    ledger_file = tmp_path / "newsletter.sqlite3"
    days = ([[a, b], [b]] if order == "kept copy leaves" else [[b], [a, b], [a]])
    loads = []
    for feeds in days:
        with SqliteFeedCache(ledger_file) as cache:  # a new run each day
            loads.append(load_feeds(feeds, cache=cache, timeout=1).articles)
    [sent] = loads[0]  # the first day's issue carried it under this id
    [last] = loads[-1]
    assert last.id != sent.id and sent.id in last.aliases
    # So the composer does not offer it again.
    with pytest.raises(ContentError, match="all in earlier issues"):
        compose([last], SubscriberList(id="l", title="L"), dt.date(2026, 11, 25), headlines=5,
                max_age_days=2, tz=ZoneInfo("UTC"), already_sent=frozenset({sent.id}))


def test_a_feed_cache_from_before_base_urls_were_kept_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "newsletter.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE feed_cache (url TEXT PRIMARY KEY, etag TEXT, last_modified TEXT, "
               "body BLOB NOT NULL, fetched_at TEXT NOT NULL)")
    db.execute("INSERT INTO feed_cache VALUES ('https://x.example/f', '\"1\"', NULL, "
               "x'3c7273732f3e', '2026-11-24T07:00:00+00:00')")
    db.commit()
    db.close()
    with SqliteFeedCache(path) as cache:
        stored = cache.get("https://x.example/f")
        assert stored is not None and stored.body == b"<rss/>" and stored.base_url is None
        cache.put("https://x.example/f", None, None, b"<rss></rss>",
                  dt.datetime(2026, 11, 25, tzinfo=UTC), "https://x.example/")
        assert cache.get("https://x.example/f").base_url == "https://x.example/"  # type: ignore[union-attr]


def test_gzip_in_several_members_is_read_whole_and_a_cut_one_is_refused(
        server: FeedServer) -> None:
    document = (FEEDS / "atom-quayside.atom").read_bytes()
    half = len(document) // 2
    members = gzip.compress(document[:half]) + gzip.compress(document[half:])
    server.routes["/two"] = Route(200, members, {"Content-Encoding": "gzip"})
    server.routes["/cut"] = Route(200, gzip.compress(document)[:-40],
                                  {"Content-Encoding": "gzip"})
    server.routes["/newline"] = Route(200, gzip.compress(document) + b"\r\n",
                                      {"Content-Encoding": "gzip"})
    load = load_feeds([server.url("/two"), server.url("/cut")], cache=None, timeout=5)
    assert len(load.articles) == 2
    trailing = load_feeds([server.url("/newline")], cache=None, timeout=5)
    assert len(trailing.articles) == 2 and trailing.warnings == []
    [warning] = load.warnings
    assert warning.file == server.url("/cut")
    assert warning.what.startswith("the gzip-compressed answer is damaged")


def _briefings(path: Path, feed: str, days: list[int], body: str) -> str:
    items = "".join(
        f"<item><title>Morning briefing</title><link>https://{feed}.example/b/{day}</link>"
        f"<guid>urn:{feed}:{day}</guid><pubDate>{day} Nov 2026 06:00:00 +0000</pubDate>"
        f"<description>{body} ({day})</description></item>" for day in days)
    path.write_text(f'<?xml version="1.0"?><rss version="2.0"><channel><title>{feed}</title>'
                    f"{items}</channel></rss>", encoding="utf-8")
    return str(path)


def test_a_daily_title_is_new_each_day_even_when_another_feed_is_stuck(tmp_path: Path) -> None:
    # Feed a keeps only its latest briefing; feed b is stuck on the 19th's (unchanged, or
    # down and read from the cache). Each day's briefing from a must go out.
    ledger_file = tmp_path / "newsletter.sqlite3"
    sent: set[str] = set()
    leads = []
    for day in (19, 20, 21, 22):
        a = _briefings(tmp_path / "a.xml", "a", [day], "The long version of the briefing")
        b = _briefings(tmp_path / "b.xml", "b", [19], "Short")
        with SqliteFeedCache(ledger_file) as cache:
            articles = load_feeds([a, b], cache=cache, timeout=1,
                                  now=dt.datetime(2026, 11, day, 7, tzinfo=UTC)).articles
        issue = compose(articles, SubscriberList(id="l", title="L"), dt.date(2026, 11, day),
                        headlines=5, max_age_days=3, tz=ZoneInfo("UTC"),
                        already_sent=frozenset(sent))
        leads.append(issue.lead.body)
        sent.update(issue.article_ids)
    assert leads == [f"The long version of the briefing ({day})" for day in (19, 20, 21, 22)]


def test_control_characters_in_a_feed_title_or_author_become_spaces() -> None:
    # A feed that is not well-formed is read loosely, ESC and NUL included; a title reaches
    # the Subject header, an author the byline.
    load = parse_feed(b"""<?xml version="1.0"?><rss version="2.0"
 xmlns:dc="http://purl.org/dc/elements/1.1/"><channel><title>C</title>
<item><title>Tide&#27;[31m tables&#0;out</title><link>https://c.example.org/1</link>
<dc:creator>Ann&#27;Writer</dc:creator>
<pubDate>Tue, 24 Nov 2026 05:00:00 GMT</pubDate><description>Text.</description></item>
</channel></rss>""", "c.xml")
    [article] = load.articles
    assert (article.title, article.author) == ("Tide [31m tables out", "Ann Writer")
