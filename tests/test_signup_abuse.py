"""Sign-up abuse over real HTTP: no enumeration, rate limits, one mail an hour, tokens that
expire, are altered or replayed, cross-site posts, odd bodies, and a burst of duplicates."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import hashlib
from urllib.parse import urlencode

import pytest

from newsletter.readers.store import NewReader
from newsletter.unsubscribe import opaque_token
from newsletter.web.limits import RateLimit
from tests.conftest import Project
from tests.signup_site import (
    SECRET,
    START,
    Clock,
    Site,
    form_field,
    ledger,
    prepare,
    serving,
)
from tests.smtp_server import Sink, free_port, start_server
from tests.web_server import call, one_click

HOUR = 3600


def test_the_answer_is_the_same_whoever_the_address_is(project: Project, secret: None) -> None:
    prepare(project)
    with ledger(project) as db:
        db.sign_up(NewReader("morning-brief", "waiting@example.com", "Wai"))
        db.sign_up(NewReader("morning-brief", "reader@example.com", "Rea"), confirmed=True)
        db.sign_up(NewReader("morning-brief", "gone@example.com"), confirmed=True)
        db.forget("gone@example.com")
        db.suppress("morning-brief", "left@example.com", "unsubscribed", {})
        # Its mail went out just now (by the server's clock).
        db.claim_confirmation_mail("waiting@example.com",
                                   now=dt.datetime.fromtimestamp(START, dt.UTC))
    addresses = ["fresh@example.com", "waiting@example.com", "reader@example.com",
                 "ada@example.com", "gone@example.com", "left@example.com"]
    with serving(project) as site:
        answers = {a: site.post(email=a, name="Someone") for a in addresses}
        site.settle()
        assert len({(r.status, r.body) for r in answers.values()}) == 1
        assert answers["fresh@example.com"].status == 200
        headers = {a: sorted(k for k in r.headers if k.lower() != "date")
                   for a, r in answers.items()}
        assert len({tuple(h) for h in headers.values()}) == 1
        assert all(a not in r.body for a, r in answers.items())
        # What happened behind the answer differs, as it must.
        # Forgotten: a fresh consent is possible, but only by confirming (README).
        assert site.row("gone@example.com").state == "pending"  # type: ignore[union-attr]
        assert site.mail("waiting@example.com") is None  # had its mail this hour
        for already in ("reader@example.com", "ada@example.com"):
            msg = site.mail(already)
            assert msg and msg["Subject"] == "You are already subscribed to The Morning Brief"
            assert "/preferences?token=" in msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert site.row("ada@example.com") is None  # a file reader: nothing stored
        assert site.row("reader@example.com").name == "Rea"  # type: ignore[union-attr]
        for new in ("fresh@example.com", "left@example.com", "gone@example.com"):
            msg = site.mail(new)
            assert msg and msg["Subject"].startswith("Please confirm")
            assert site.row(new).state == "pending"  # type: ignore[union-attr]


def test_at_most_one_confirmation_mail_an_hour(site: Site) -> None:
    site.post(email="twice@example.com")
    first = site.mail("twice@example.com")
    site.post(email="twice@example.com")
    site.post("abendblatt", email="twice@example.com")  # whatever the list
    site.clock.advance(HOUR - 60)
    site.post(email="twice@example.com")
    assert site.mail("twice@example.com")["Message-ID"] == first["Message-ID"]  # type: ignore[index]
    assert site.mail("twice@example.com", "abendblatt") is None
    site.clock.advance(61)
    site.post(email="twice@example.com")
    again = site.mail("twice@example.com")
    assert again and again["Message-ID"] != first["Message-ID"]  # type: ignore[index]
    # The same pending sign-up: the new mail's link confirms it.
    assert site.confirm(site.confirm_link("twice@example.com")).status == 200


def test_a_mail_that_could_not_be_sent_gives_back_its_hour(project: Project, secret: None,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    prepare(project)
    sink = Sink(refuse_data={"*": "554 5.7.1 rejected by policy"})
    port = free_port()
    controller = start_server(sink, port=port)
    monkeypatch.setenv("NEWSLETTER_DELIVERY__BACKEND", "smtp")
    monkeypatch.setenv("NEWSLETTER_SMTP__PORT", str(port))
    try:
        with serving(project) as site:
            site.post(email="unlucky@example.com")
            site.settle()
            assert sink.received == []
            sink.refuse_data.clear()
            site.post(email="unlucky@example.com")  # the same hour
            site.settle()
            assert [r.recipients for r in sink.received] == [["unlucky@example.com"]]
            assert "Please confirm" in str(sink.received[0].message["Subject"])
    finally:
        controller.stop()


def test_twenty_identical_posts_at_once_make_one_reader_and_one_mail(
        project: Project, secret: None, monkeypatch: pytest.MonkeyPatch) -> None:
    prepare(project)
    sink = Sink()
    port = free_port()
    controller = start_server(sink, port=port)
    monkeypatch.setenv("NEWSLETTER_DELIVERY__BACKEND", "smtp")
    monkeypatch.setenv("NEWSLETTER_SMTP__PORT", str(port))
    try:
        with serving(project) as site, concurrent.futures.ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda _: site.post(email="Rush@example.com",
                                                        name="Rush"), range(20)))
            site.settle()
            assert {a.status for a in answers} == {200}
            assert len(sink.received) == 1
            row = site.row("rush@example.com")
            assert row and row.state == "pending" and row.address == "Rush@example.com"
    finally:
        controller.stop()
    with ledger(project) as db:
        assert [r.email for r in db.reader_rows("morning-brief")] == ["rush@example.com"]


def test_posts_from_one_client_are_limited_with_retry_after(project: Project,
                                                            secret: None) -> None:
    prepare(project, "signup:\n  per_client_hour: 3\n  per_address_hour: 100\n")
    with serving(project) as site:
        assert [site.post(email=f"c{i}@example.com").status for i in range(3)] == [200] * 3
        refused = site.post(email="c3@example.com")
        assert refused.status == 429 and refused.headers["Retry-After"] == "1200"
        assert site.post(email="bad address").status == 429  # counted before reading
        site.clock.advance(1199)
        assert site.post(email="c3@example.com").status == 429
        site.clock.advance(1)
        assert site.post(email="c3@example.com").status == 200
        site.settle()
        assert site.mail("c3@example.com") is not None


def test_posts_naming_one_address_are_limited(project: Project, secret: None) -> None:
    prepare(project, "signup:\n  per_client_hour: 100\n  per_address_hour: 2\n")
    with serving(project) as site:
        assert site.post(email="same@example.com").status == 200
        assert site.post(email="SAME@example.com").status == 200
        refused = site.post(email="same@example.com")
        assert refused.status == 429 and int(refused.headers["Retry-After"]) == 1800
        assert site.post(email="other@example.com").status == 200


def test_a_client_behind_a_trusted_proxy_is_limited_by_its_own_address(project: Project,
                                                                        secret: None) -> None:
    prepare(project, "signup:\n  per_client_hour: 1\n  trusted_proxies: [127.0.0.1]\n")
    with serving(project) as site:
        first = {"X-Forwarded-For": "198.51.100.7"}
        assert site.post(email="p1@example.com", headers=first).status == 200
        assert site.post(email="p2@example.com", headers=first).status == 429
        assert site.post(email="p3@example.com",
                         headers={"X-Forwarded-For": "203.0.113.9"}).status == 200
        site.settle()
        consent = site.row("p1@example.com").consent  # type: ignore[union-attr]
        assert consent["network"] == "198.51.100.0/24" and "198.51.100.7" not in str(consent)


def test_the_limiter_keeps_a_bounded_number_of_keys() -> None:
    clock = Clock()
    limit = RateLimit(2, clock, max_keys=100)
    for i in range(5000):
        limit.hit(f"client-{i}")
    assert len(limit) == 100
    assert limit.hit("client-4999") == 0 and limit.hit("client-4999") == 1800


def test_an_expired_link_is_410_with_a_way_back(site: Site) -> None:
    site.post(email="late@example.com")
    link = site.confirm_link("late@example.com")
    site.clock.advance(48 * HOUR + 1)
    for answer in (call(link), call(link, "POST", b"form=x")):
        assert answer.status == 410 and "expired" in answer.body
        assert 'href="subscribe/morning-brief"' in answer.body
    assert site.row("late@example.com").state == "pending"  # type: ignore[union-attr]


@pytest.mark.parametrize("change", [
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
    lambda t: t[:-1],
    lambda t: "",
    lambda t: "%ff%fe",
    lambda t: t + "%C3%A9",
])
def test_an_altered_link_is_400(site: Site, change) -> None:
    site.post(email="alter@example.com")
    link = site.confirm_link("alter@example.com")
    base, token = link.split("token=")
    url = f"{base}token={change(token)}"
    assert call(url).status == 400
    assert call(url, "POST", b"form=x").status == 400
    assert site.row("alter@example.com").state == "pending"  # type: ignore[union-attr]


def test_a_used_link_is_410_and_after_leaving_stays_dead(site: Site) -> None:
    site.post(email="again@example.com")
    link = site.confirm_link("again@example.com")
    assert site.confirm(link).status == 200
    replay = site.confirm(link)
    assert replay.status == 410 and "can no longer be used" in replay.body
    token = opaque_token(SECRET, "morning-brief", "again@example.com")
    assert one_click(f"{site.base}/unsubscribe?t={token}").status == 200
    assert site.confirm(link).status == 410  # it must not undo the unsubscribe
    # Signing up again makes a new link; the old one stays dead.
    site.clock.advance(HOUR)
    site.post(email="again@example.com")
    fresh = site.confirm_link("again@example.com")
    assert fresh != link
    assert site.confirm(link).status == 410
    assert site.row("again@example.com").state == "pending"  # type: ignore[union-attr]
    assert site.confirm(fresh).status == 200
    assert site.row("again@example.com").state == "confirmed"  # type: ignore[union-attr]
    assert site.confirm(fresh).status == 410  # this link, used
    # The first link, of a sign-up since replaced and confirmed: a confirmed reader's page.
    older = site.confirm(link)
    assert older.status == 200 and "already gets" in older.body


@pytest.mark.parametrize("headers", [
    {"Sec-Fetch-Site": "cross-site"},
    {"Origin": "https://evil.example"},
    {"Origin": "null"},
])
def test_a_cross_site_confirmation_is_403(site: Site, headers: dict[str, str]) -> None:
    site.post(email="csrf@example.com")
    link = site.confirm_link("csrf@example.com")
    answer = site.confirm(link, headers)
    assert answer.status == 403
    assert site.row("csrf@example.com").state == "pending"  # type: ignore[union-attr]


def test_a_confirmation_without_the_pages_form_token_is_403(site: Site) -> None:
    site.post(email="bare@example.com")
    link = site.confirm_link("bare@example.com")
    other = form_field(call(site.local(f"{site.base}/subscribe/morning-brief")).body)
    for body in (b"", b"form=", urlencode({"form": other}).encode()):
        assert call(link, "POST", body).status == 403
    assert site.row("bare@example.com").state == "pending"  # type: ignore[union-attr]


@pytest.mark.parametrize(("body", "content_type", "status"), [
    (b"--x\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\na@example.com\r\n--x--\r\n",
     "multipart/form-data; boundary=x", 415),
    (b"email=a%40example.com&name=" + b"A" * 20_000, "application/x-www-form-urlencoded", 413),
    (b"email=a%40example.com&name=%ff%fe", "application/x-www-form-urlencoded", 400),
    (b"email=a%40example.com&name=\xff", "application/x-www-form-urlencoded", 400),
])
def test_odd_bodies_get_their_4xx(site: Site, body: bytes, content_type: str,
                                  status: int) -> None:
    for path in ("/subscribe/morning-brief", "/confirm?token=x"):
        answer = call(f"{site.base}{path}", "POST", body, {"Content-Type": content_type})
        assert answer.status == status, (path, answer.body)
    site.settle()
    assert site.row("a@example.com") is None


def test_the_consent_keeps_the_page_not_the_query_nor_the_client(site: Site) -> None:
    site.post(email="from-blog@example.com",
              headers={"Referer": "https://blog.example.org/join?email=from-blog%40example.com"})
    site.post(fields={"email": "own@example.com", "form": form_field(site.form().body)})
    site.post(email="secret-ref@example.com",
              headers={"Referer": "https://admin:hunter2@Blog.example.org:8443/join#x"})
    site.settle()
    blog = site.row("from-blog@example.com").consent  # type: ignore[union-attr]
    assert blog["page"] == "https://blog.example.org/join" and blog["source"] == "form"
    # A Referer's user and password are not kept.
    secretive = site.row("secret-ref@example.com").consent  # type: ignore[union-attr]
    assert secretive["page"] == "https://blog.example.org:8443/join"
    own = site.row("own@example.com").consent  # type: ignore[union-attr]
    assert own["page"] == "https://news.example.com/subscribe/morning-brief"
    assert own["network"] == "127.0.0.0/24"
    assert hashlib.sha256(b"127.0.0.1").hexdigest() not in str(own)
