"""RSS 0.9x/2.0, RSS 1.0 (RDF) and Atom 1.0 feeds: fetched, parsed, sanitised, merged.

A feed that is down or malformed is a warning, not an error: the digest goes on without it.
Only when every configured feed fails does `load_feeds` raise `ContentError`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import hashlib
import html
import http.client
import importlib.metadata
import itertools
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit
from xml.sax import SAXParseException

import feedparser
import nh3

from newsletter.composer import strong_words, title_similarity
from newsletter.errors import ContentError, Problem
from newsletter.models import Article
from newsletter.sources.feedcache import CachedFeed, FeedCache
from newsletter.sources.sanitize import absolute_url as _absolute
from newsletter.sources.sanitize import sanitize_html
from newsletter.sources.text import html_to_text, one_line, summarize
from newsletter.yamlfile import read_regular

try:
    _VERSION = importlib.metadata.version("newsletter")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    _VERSION = "0"
USER_AGENT = f"newsletter/{_VERSION}"
_ACCEPT = ("application/rss+xml, application/atom+xml, application/rdf+xml;q=0.9, "
           "application/xml;q=0.8, text/xml;q=0.8, */*;q=0.1")
_MAX_BYTES = 10 * 1024 * 1024
_MAX_WORKERS = 8
_SUMMARY_LIMIT = 300
_EARLIEST_YEAR, _LATEST_YEAR = 1970, 2999
_GOES_ON = "the digest goes on without this feed"
_NOTHING_FIX = ("check the feed's address (or wait for it to publish), or add Markdown (.md) "
                "or text (.txt) articles to articles.paths")
# Copies of one story appear close together: the same link within two days, the same
# title within half a day (a title that comes back a day later is a new story: a daily
# "Morning briefing").
_SAME_URL_WITHIN = dt.timedelta(days=2)
_SAME_TITLE_WITHIN = dt.timedelta(hours=12)
# When an entry without a date was first seen (recording it if it is new).
FirstSeen = Callable[[str], dt.datetime]

# Tags of HTML's text-level elements (and what must never show): in a title or a "text"
# summary they are markup sent with the wrong type, not words.
_MARKUP = re.compile(
    r"</?(?:a|abbr|b|big|br|cite|code|del|div|em|font|i|img|ins|kbd|mark|p|q|s|small|span|"
    r"strike|strong|sub|sup|tt|u|script|style|iframe)\b[^<>]*>", re.IGNORECASE)
# feedparser flags these as bozo, but the document itself was read correctly.
_XML_DECLARATION = re.compile(rb"(?:\xef\xbb\xbf)?<\?xml")
_BENIGN = (feedparser.CharacterEncodingOverride, feedparser.NonXMLContentType)
# A character reference to what is no character (a surrogate, beyond U+10FFFF): the
# XML parser refuses the document for it, and feedparser's lenient one raises on it.
_REFERENCE = re.compile(rb"&#(?:[xX]([0-9a-fA-F]{1,16})|([0-9]{1,20}));")


@dataclass
class FeedLoad:
    """What the feeds gave: articles, and warnings about the feeds that failed."""

    articles: list[Article] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    # The feeds that were read but gave no article, each with what it had instead.
    empty: list[Problem] = field(default_factory=list)

    def nothing_error(self) -> ContentError:
        """The error when these feeds were the only source and gave nothing: it names each
        of them, not the article folders."""
        if len(self.empty) == 1:
            [only] = self.empty
            return ContentError(f"{only.what}, and there are no other articles", file=only.file,
                                field="articles.feeds", fix=_NOTHING_FIX)
        return ContentError(problems=[
            Problem(f"none of the {len(self.empty)} feeds has an entry to use, and there are "
                    "no other articles", field="articles.feeds", fix=_NOTHING_FIX),
            *self.empty])


def load_feeds(feeds: Sequence[str], *, cache: FeedCache | None, timeout: float,
               now: dt.datetime | None = None) -> FeedLoad:
    """Fetch or read every feed (URLs in parallel), parse them and merge duplicates.

    `cache` keeps each URL's last good answer for a conditional GET next time, and as a
    fallback when the feed is down; an entry without a date is dated when `cache` first
    saw it (`now`, without a cache). Raises `ContentError` only if no feed could be read.
    """
    if not feeds:
        return FeedLoad()
    now = now or dt.datetime.now(dt.UTC)
    first_seen: FirstSeen = ((lambda entry_id: cache.first_seen(entry_id, now))
                             if cache is not None else (lambda entry_id: now))
    cached = {f: cache.get(f) for f in feeds if _is_url(f)} if cache is not None else {}
    with ThreadPoolExecutor(max_workers=min(_MAX_WORKERS, len(feeds))) as pool:
        answers = list(pool.map(lambda f: _get(f, cached.get(f), timeout), feeds))
    articles: list[list[Article]] = []  # per feed that could be read
    read: list[str] = []  # those feeds
    warnings: list[Problem] = []
    empty: list[Problem] = []
    failures: list[Problem] = []
    for source, answer in zip(feeds, answers, strict=True):
        failure = answer.failure
        if failure is None:
            parsed = _parse(answer.body, source, answer.base_url, answer.content_type,
                            first_seen)
            failure = parsed.failure
            if failure is None:
                if cache is not None and _is_url(source):
                    cache.put(source, answer.etag, answer.last_modified, answer.body, now,
                              answer.base_url)
                articles.append(parsed.articles)
                read.append(source)
                warnings.extend(parsed.warnings)
                if not parsed.articles:
                    empty.append(_empty(source, parsed))
                continue
        old = cached.get(source)
        if old is not None and not answer.not_modified:
            parsed = _parse(old.body, source, old.base_url or source, None, first_seen)
            if parsed.failure is None:
                when = old.fetched_at.strftime("%Y-%m-%d %H:%M UTC")
                warnings.append(Problem(f"{failure}; using the copy fetched {when}", source))
                articles.append(parsed.articles)
                read.append(source)
                warnings.extend(parsed.warnings)
                if not parsed.articles:
                    empty.append(_empty(source, parsed))
                continue
        failures.append(Problem(failure, source, field=answer.field))
        warnings.append(Problem(failure, source, field=answer.field, fix=_GOES_ON))
    if len(failures) == len(feeds):
        raise ContentError(problems=[
            Problem("the feed could not be read" if len(feeds) == 1
                    else f"none of the {len(feeds)} feeds could be read", field="articles.feeds",
                    fix="check the URLs and paths (and the network), or remove "
                        "articles.feeds to use only local articles"),
            *failures,
        ])
    merged = _unique_ids(merge_duplicates(articles))
    if cache is not None:
        feed_of = {a.id: source for source, found in zip(read, articles, strict=True)
                   for a in found}
        merged = _remembered_aliases(merged, feed_of, cache, now)
    return FeedLoad(merged, warnings, empty)


def _empty(source: str, parsed: _Parsed) -> Problem:
    what = ("the feed has no entries" if not parsed.entries
            else "the feed's only entry could not be used" if parsed.entries == 1
            else f"none of the feed's {parsed.entries} entries could be used")
    return Problem(what, source, field="articles.feeds")


def _remembered_aliases(articles: list[Article], feed_of: dict[str, str], cache: FeedCache,
                        now: dt.datetime) -> list[Article]:
    """Each article with every id its story was ever known by, and those links kept.

    A story sent under feed A's id must not be new when, days later, only feed B still
    carries it (or a longer copy from C is now the one kept). A story has at most one id
    per feed, remembered ones included: today's entry of feed A is never tied to A's
    entry of yesterday through feed B's copy of that one (a daily "Morning briefing").
    """
    known = cache.aliases(i for a in articles for i in (a.id, *a.aliases))
    out = []
    for article in articles:
        story = {i: feed_of.get(i, i) for i in (article.id, *article.aliases)}
        current = dict(story)
        for one in current:
            for other, feed in sorted(known.get(one, {}).items()):
                if other not in story and feed not in story.values():
                    story[other] = feed
        if len(story) > 1:
            cache.link([story], now)
        aliases = tuple(sorted(set(story) - {article.id}))
        out.append(article if aliases == article.aliases
                   else article.model_copy(update={"aliases": aliases}))
    return out


def parse_feed(data: bytes, source: str, base_url: str | None = None, *,
               first_seen: FirstSeen | None = None) -> FeedLoad:
    """Articles from one feed document; `source` names it in warnings.

    `base_url` (the feed's URL) resolves relative links; without it, the feed's own link.
    `first_seen(id)` dates an entry that has no date; without it such entries are skipped.
    """
    parsed = _parse(data, source, base_url, None, first_seen)
    if parsed.failure is not None:
        return FeedLoad([], [Problem(parsed.failure, source)])
    return FeedLoad(parsed.articles, parsed.warnings)


def merge_duplicates(feeds: Sequence[Sequence[Article]]) -> list[Article]:
    """One article per story told by several feeds: the same URL (normalised) published
    within two days, or a near-identical title within twelve hours.

    A feed's own entries are never merged with each other, and a link one feed gives to
    several entries (a status page's home page) does not name a story. Closest matches pair
    first (same URL before same title, then the nearest in time), whatever the feeds' order.
    Of the copies, the one with the longest body is kept (ties: earliest, then id) with
    every copy's tags and the others' ids as `aliases` (so a story sent under one copy's id
    is known under another's); groups keep the order of their first copy.
    """
    copies = [(feed, article) for feed, articles in enumerate(feeds) for article in articles]

    def close_in_time(a: int, b: int, within: dt.timedelta) -> bool:
        return abs(copies[a][1].published - copies[b][1].published) <= within

    # (kind, −similarity, time apart, ids): URL matches (kind 0) before title matches.
    edges: list[tuple[int, float, dt.timedelta, str, str, int, int]] = []

    def edge(kind: int, similarity: float, a: int, b: int) -> None:
        first, second = sorted((copies[a][1].id, copies[b][1].id))
        gap = abs(copies[a][1].published - copies[b][1].published)
        edges.append((kind, -similarity, gap, first, second, a, b))

    by_url: dict[str, list[int]] = {}
    for index, (_, article) in enumerate(copies):
        if article.url:
            by_url.setdefault(_normal_url(article.url), []).append(index)
    for same_url in by_url.values():
        feeds_of = [copies[i][0] for i in same_url]
        if len(same_url) < 2 or len(set(feeds_of)) < len(feeds_of):
            continue  # one feed's link for several entries is no story's own
        for a, b in itertools.combinations(same_url, 2):
            if close_in_time(a, b, _SAME_URL_WITHIN):
                edge(0, 1.0, a, b)
    # Titles: ≥0.9 similarity needs a strong (not small, not a number) word in common, so
    # only titles sharing one are compared: a long feed, or several, cost what their
    # overlap does, not the square of their length.
    strong = [strong_words(article.title) for _, article in copies]
    by_word: dict[str, list[int]] = {}
    for index, words in enumerate(strong):
        for word in words or {""}:  # titles of small words only: compared with each other
            by_word.setdefault(word, []).append(index)
    for index, (feed, article) in enumerate(copies):
        candidates = {other for word in strong[index] or {""} for other in by_word[word]
                      if other > index and copies[other][0] != feed}
        for other in sorted(candidates):
            # A cheap bound first: ≥0.9 similarity needs most strong words in common.
            shared = len(strong[index] & strong[other])
            if (not close_in_time(index, other, _SAME_TITLE_WITHIN)
                    or 2 * shared < max(len(strong[index]), len(strong[other]))):
                continue
            similarity = title_similarity(article.title, copies[other][1].title)
            if similarity >= 0.9:
                edge(1, similarity, index, other)
    groups = _Groups([{feed} for feed, _ in copies])
    for *_, a, b in sorted(edges):
        groups.join(a, b)
    members: dict[int, list[int]] = {}
    for index in range(len(copies)):
        members.setdefault(groups.root(index), []).append(index)
    merged = []
    for group in members.values():  # in order of each group's first copy
        story = sorted((copies[i][1] for i in group), key=_rank)
        kept = story[0]
        # Every copy's categories, but the kept copy's section stays out of its tags.
        tags = tuple(dict.fromkeys(
            t for a in story for t in (*a.tags, *((a.section,) if a.section else ()))
            if t != kept.section))
        aliases = tuple(sorted({a.id for a in story[1:]} - {kept.id}))
        if tags != kept.tags or aliases:
            kept = kept.model_copy(update={"tags": tags, "aliases": aliases})
        merged.append(kept)
    return merged


class _Groups:
    """Union-find over copies, where a group holds at most one copy from each feed."""

    def __init__(self, feeds: list[set[int]]) -> None:
        self._parent = list(range(len(feeds)))
        self._feeds = feeds

    def root(self, index: int) -> int:
        while self._parent[index] != index:
            self._parent[index] = self._parent[self._parent[index]]
            index = self._parent[index]
        return index

    def join(self, a: int, b: int) -> None:
        a, b = self.root(a), self.root(b)
        if a == b or self._feeds[a] & self._feeds[b]:
            return
        a, b = min(a, b), max(a, b)  # the root is the group's first copy
        self._parent[b] = a
        self._feeds[a] |= self._feeds[b]


# --- fetching -------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Answer:
    body: bytes = b""
    base_url: str | None = None
    content_type: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    not_modified: bool = False  # a 304: `body` is the cached copy
    failure: str | None = None
    field: str | None = None  # the setting to fix, when the user can fix it


def _is_url(feed: str) -> bool:
    return feed.lower().startswith(("http://", "https://"))


def _get(feed: str, cached: CachedFeed | None, timeout: float) -> _Answer:
    if _is_url(feed):
        return _fetch(feed, cached, timeout)
    # A local feed has the fetched one's cap, and must be a regular file: a FIFO would
    # wait for a writer forever, /dev/zero never ends.
    try:
        body = read_regular(Path(feed), "feed file", ContentError, limit=_MAX_BYTES)
    except ContentError as err:
        return _Answer(failure=err.problems[0].what, field="articles.feeds")
    return _Answer(body, content_type="application/xml")


def _fetch(url: str, cached: CachedFeed | None, timeout: float) -> _Answer:
    # `timeout` bounds each network step; the deadline the whole answer, headers and
    # redirects included, so a server that trickles a byte at a time cannot hold the run.
    with _Deadline(timeout) as deadline:
        answer = _fetch_within(url, cached, timeout, deadline)
    if deadline.expired:  # the connection was cut: whatever came is not the whole feed
        return _Answer(failure=f"the whole feed did not arrive within {timeout:g} s"
                       if deadline.answered else f"no answer within {timeout:g} s")
    return answer


class _Deadline:
    """Shuts the connections' sockets down when time is up, which ends any read blocked on
    them; `expired` says whether it did (the answer is then cut short)."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self.answered = False  # the status line and headers came
        self._done = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def opener(self) -> urllib.request.OpenerDirector:
        """A urllib opener whose connections the deadline watches (redirects included)."""
        deadline = self

        class Connection(http.client.HTTPConnection):
            def connect(self) -> None:
                super().connect()
                deadline.watch(self.sock)

        class TLSConnection(http.client.HTTPSConnection):
            def connect(self) -> None:
                super().connect()
                deadline.watch(self.sock)

        class Handler(urllib.request.HTTPHandler):
            def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
                return self.do_open(Connection, req)

        class TLSHandler(urllib.request.HTTPSHandler):
            def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
                return self.do_open(TLSConnection, req)

        return urllib.request.build_opener(Handler, TLSHandler)

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


def _fetch_within(url: str, cached: CachedFeed | None, timeout: float,
                  deadline: _Deadline) -> _Answer:
    headers = {"User-Agent": USER_AGENT, "Accept": _ACCEPT, "Accept-Encoding": "gzip"}
    if cached is not None and cached.etag:
        headers["If-None-Match"] = cached.etag
    if cached is not None and cached.last_modified:
        headers["If-Modified-Since"] = cached.last_modified
    try:
        with deadline.opener().open(urllib.request.Request(url, headers=headers),
                                    timeout=timeout) as response:
            deadline.answered = True
            body = response.read(_MAX_BYTES + 1)  # one more than allowed: too big
            deadline.stop()  # all that was sent has come; unzipping is not the network's time
            too_large = _Answer(failure=f"the feed is larger than {_MAX_BYTES // 2**20} MB")
            if len(body) > _MAX_BYTES:
                return too_large
            if response.headers.get("Content-Encoding", "").lower() == "gzip":
                body = _gunzip(body)
                if body is None:
                    return too_large
            final_url = response.geturl()
            location = response.headers.get("Content-Location")
            return _Answer(body, urljoin(final_url, location) if location else final_url,
                           response.headers.get("Content-Type"), response.headers.get("ETag"),
                           response.headers.get("Last-Modified"))
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 304 and cached is not None:
            return _Answer(cached.body, cached.base_url or err.geturl() or url, None,
                           err.headers.get("ETag") or cached.etag,
                           err.headers.get("Last-Modified") or cached.last_modified,
                           not_modified=True)
        return _Answer(failure=f"HTTP {err.code} {err.reason}")
    except urllib.error.URLError as err:
        return _Answer(failure=_network_failure(err.reason, timeout))
    except (OSError, http.client.HTTPException, zlib.error) as err:
        return _Answer(failure=_network_failure(err, timeout))
    except ValueError as err:
        return _Answer(failure=f"not a valid URL ({err})", field="articles.feeds")


def _gunzip(data: bytes) -> bytes | None:
    """The unzipped answer (every gzip member), or None past _MAX_BYTES — bounded, so a
    small compressed answer cannot fill the memory. Raises zlib.error if it is cut short."""
    out = bytearray()
    while data:
        unzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out += unzip.decompress(data, _MAX_BYTES + 1 - len(out))
        if len(out) > _MAX_BYTES or unzip.unconsumed_tail:
            return None
        if not unzip.eof:
            raise zlib.error("the compressed data ends early")
        data = unzip.unused_data
        if not data.startswith(b"\x1f\x8b"):
            break  # not another member: padding or a stray newline some servers add
    return bytes(out)


def _network_failure(reason: object, timeout: float) -> str:
    if isinstance(reason, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(reason, socket.gaierror):
        return "host not found (DNS lookup failed)"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, ssl.SSLError):
        return f"TLS failed ({getattr(reason, 'reason', None) or reason})"
    if isinstance(reason, zlib.error):
        return f"the gzip-compressed answer is damaged ({reason})"
    if isinstance(reason, OSError) and reason.strerror:
        return f"network error ({reason.strerror})"
    return f"network error ({reason})"


# --- parsing --------------------------------------------------------------------------------

@dataclass
class _Parsed:
    articles: list[Article] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    failure: str | None = None
    entries: int = 0  # in the document, used or not


def _parse(data: bytes, source: str, base_url: str | None, content_type: str | None,
           first_seen: FirstSeen | None) -> _Parsed:
    headers = {"content-type": content_type or "application/xml"}
    if base_url:
        headers["content-location"] = base_url
    # Our own sanitiser runs later; feedparser's would turn a <script> that writes markup
    # into that markup.
    try:
        doc = feedparser.parse(_REFERENCE.sub(_character, data), response_headers=headers,
                               sanitize_html=False)
    except (ValueError, TypeError, LookupError, AttributeError, OverflowError,
            RecursionError) as err:  # feedparser's own bugs: one bad feed, not a crash
        return _Parsed(failure=f"not a readable RSS or Atom feed ({type(err).__name__}: "
                               f"{err})")
    if not doc.get("version") and not doc.entries:
        reason = (_bozo_reason(doc, data) if doc.get("bozo")
                  else "no <rss>, <rdf:RDF> or <feed> element")
        return _Parsed(failure=f"not a readable RSS or Atom feed ({reason})")
    result = _Parsed(entries=len(doc.entries))
    if doc.get("bozo") and not isinstance(doc.get("bozo_exception"), _BENIGN):
        result.warnings.append(Problem(
            f"the feed is not well-formed ({_bozo_reason(doc, data)}); used the "
            f"{_entries(len(doc.entries))} that could be read", source))
    base = base_url or _absolute(doc.feed.get("link"), None)
    feed_author = (doc.feed.get("author_detail") or {}).get("name")
    seen: set[str] = set()
    for number, entry in enumerate(doc.entries, start=1):
        try:
            article = _article(entry, source, base, feed_author, first_seen, result.warnings)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as err:
            # One odd entry must not cost the feed (or the run): skip it and say which.
            result.warnings.append(Problem(f"entry {number} could not be read ({err}); "
                                           "skipped", source))
            continue
        if article is None:
            continue
        if article.id in seen:  # a feed that reuses a guid for different entries
            article = article.model_copy(
                update={"id": _id(f"{article.id} {article.url} {article.title}")})
        seen.add(article.id)
        result.articles.append(article)
    return result


def _character(reference: re.Match[bytes]) -> bytes:
    """A character reference as it is, or U+FFFD's if it names no character."""
    hexadecimal, decimal = reference.groups()
    code = int(hexadecimal, 16) if hexadecimal else int(decimal)
    if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
        return b"&#xFFFD;"
    return reference.group()


def _bozo_reason(doc: Any, data: bytes) -> str:
    err = doc.get("bozo_exception")
    if isinstance(err, SAXParseException):
        line = err.getLineNumber() or 1
        # feedparser puts a line with an XML declaration in front of a document that has
        # none, so the parser counts one line too many.
        if not _XML_DECLARATION.match(data):
            line = max(1, line - 1)
        return f"line {line}: {err.getMessage()}"
    return str(err) or type(err).__name__


def _entries(count: int) -> str:
    return "1 entry" if count == 1 else f"{count} entries"


def _article(entry: Any, source: str, base: str | None, feed_author: str | None,
             first_seen: FirstSeen | None, warnings: list[Problem]) -> Article | None:
    url = _absolute(entry.get("link"), base)
    link_base = base or url
    body_html = sanitize_html(_entry_html(entry), link_base)
    body = html_to_text(body_html)
    description = entry.get("summary_detail")
    summary_text = _text_of(description, link_base) if description else ""
    summary = _shorten(summary_text) if summary_text else summarize(body, _SUMMARY_LIMIT)
    title = _title(entry) or _shorten(summary, 80)
    if not title:
        warnings.append(Problem("an entry has neither a title nor any text; skipped", source))
        return None
    published = _date(entry)
    guid = entry.get("id")
    # A guid that is not a URI ("4411") is only unique within its feed.
    key = (guid if ":" in guid else f"{source} {guid}") if guid else (
        url or f"{source} {title} {published.isoformat() if published else ''}")
    if published is None:
        if first_seen is None:
            warnings.append(Problem(f"entry “{title}” has no usable date; skipped", source,
                                    fix="the feed needs a pubDate, dc:date, published or "
                                        "updated"))
            return None
        # Feed readers date such an entry by when they first saw it; so do we, and the
        # date is kept so the entry does not look new again tomorrow.
        published = first_seen(_id(key))
    # One line each, like titles: a category is printed by `compose` and in the text part.
    terms = [one_line(t.get("term") or t.get("label") or "").lower()
             for t in entry.get("tags") or []]
    tags = tuple(dict.fromkeys(t for t in terms if t))
    author = (entry.get("author_detail") or {}).get("name") or feed_author
    return Article(
        id=_id(key),
        title=title,
        url=url,
        summary=summary,
        body=body,
        body_html=body_html,
        author=one_line(author) or None if author else None,
        published=published,
        # The first category is the section; the others are tags, as in front matter (a
        # section repeated as a tag would count twice in the composer's relatedness).
        section=tags[0] if tags else None,
        tags=tags[1:],
        image=_image(entry, link_base),
    )


def _id(key: str) -> str:
    return "feed:" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _entry_html(entry: Any) -> str:
    """The fullest HTML the entry has: content:encoded or Atom content, else the summary."""
    details = [*(entry.get("content") or []), entry.get("summary_detail")]
    for detail in details:
        if detail and detail.get("value", "").strip():
            return _as_html(detail)
    return ""


def _as_html(detail: Any) -> str:
    if _is_html(detail):
        return detail["value"]
    paragraphs = re.split(r"\n\s*\n", detail["value"].strip())
    return "".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in paragraphs)


def _text_of(detail: Any, base: str | None) -> str:
    return " ".join(html_to_text(sanitize_html(_as_html(detail), base)).split())


def _title(entry: Any) -> str:
    detail = entry.get("title_detail") or {}
    title = entry.get("title") or ""
    if _is_html({"type": detail.get("type"), "value": title}):
        title = nh3.clean(title, tags=set())
    # Unescaped even as text: many feeds escape their titles twice ("&amp;amp;"), and
    # markup escaped twice is markup still.
    title = html.unescape(title)
    if _MARKUP.search(title):
        title = html.unescape(nh3.clean(title, tags=set()))
    return one_line(title)


def _is_html(detail: Any) -> bool:
    """Whether the text construct holds HTML: it says so, or it is "text" with tags in it
    (Atom 0.3 base64 and escaped content default to text/plain, yet carry HTML)."""
    return "html" in (detail.get("type") or "") or bool(_MARKUP.search(detail["value"]))


def _shorten(text: str, limit: int = _SUMMARY_LIMIT) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit + 1].rsplit(" ", 1)[0] if " " in text[:limit + 1] else text[:limit]
    return cut.rstrip(",;:—–-") + "…"


def _date(entry: Any) -> dt.datetime | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        # dict.get: FeedParserDict.get maps a missing updated_parsed to published_parsed,
        # with a DeprecationWarning.
        parsed = dict.get(entry, key)
        if parsed:  # feedparser gives UTC struct_time, whatever offset the feed wrote
            try:
                when = dt.datetime(*parsed[:6]).replace(tzinfo=dt.UTC)
            except (ValueError, OverflowError):
                continue
            # "0001-01-01" is a serialiser's null, 9999 a placeholder: neither is a date.
            if _EARLIEST_YEAR <= when.year <= _LATEST_YEAR:
                return when
    return None


# Zone abbreviations that feeds write and feedparser does not know (it reads them as UTC).
# Only unambiguous ones: IST is India, Ireland or Israel, so it stays unknown.
_ZONE_ABBREVIATIONS = {
    "WET": "+0000", "WEST": "+0100", "BST": "+0100", "CET": "+0100", "CEST": "+0200",
    "EET": "+0200", "EEST": "+0300", "MSK": "+0300", "HKT": "+0800", "SGT": "+0800",
    "AWST": "+0800", "JST": "+0900", "KST": "+0900", "ACST": "+0930", "ACDT": "+1030",
    "AEST": "+1000", "AEDT": "+1100", "NZST": "+1200", "NZDT": "+1300", "HST": "-1000",
    "AKST": "-0900", "AKDT": "-0800", "NST": "-0330", "NDT": "-0230",
}
_ZONED_DATE = re.compile(r"^(.*\d:\d\d(?::\d\d)?)\s+([A-Za-z]{3,4})\s*$")


def _date_with_zone_abbreviation(value: str) -> time.struct_time | None:
    """An RFC 822 date ending in one of `_ZONE_ABBREVIATIONS`, as UTC (feedparser's way)."""
    match = _ZONED_DATE.match(value)
    offset = _ZONE_ABBREVIATIONS.get(match.group(2).upper()) if match else None
    if match is None or offset is None:
        return None
    parsed = email.utils.parsedate_tz(f"{match.group(1)} {offset}")
    if parsed is None:
        return None
    return time.gmtime(email.utils.mktime_tz(parsed))


feedparser.registerDateHandler(_date_with_zone_abbreviation)


def _image(entry: Any, base: str | None) -> str | None:
    candidates = [m.get("url") for m in entry.get("media_content") or []
                  if m.get("medium") == "image" or (m.get("type") or "").startswith("image/")]
    candidates += [m.get("url") for m in entry.get("media_thumbnail") or []]
    candidates += [e.get("href") for e in entry.get("enclosures") or []
                   if (e.get("type") or "").startswith("image/")]
    return next((url for c in candidates if (url := _absolute(c, base))), None)


# --- merging --------------------------------------------------------------------------------

def _rank(article: Article) -> tuple:
    return (-len(article.body), article.published, article.id, article.url or "", article.title)


def _normal_url(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"),
                       parts.query, ""))


def _unique_ids(articles: list[Article]) -> list[Article]:
    """Two feeds may share a guid for different stories; the later one gets a new id."""
    seen: set[str] = set()
    unique = []
    for article in articles:
        if article.id in seen:
            article = article.model_copy(
                update={"id": _id(f"{article.id} {article.url} {article.title}")})
        seen.add(article.id)
        unique.append(article)
    return unique
