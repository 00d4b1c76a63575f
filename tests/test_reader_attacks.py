"""A hostile internet against the reader side of `serve` (sign-up, confirm, preferences),
over real HTTP: each test is an attack that once worked, or one that must keep failing."""

from __future__ import annotations

import sqlite3
from urllib.parse import urlencode

import pytest

from newsletter.readers.roster import load_readers
from newsletter.readers.store import Choices, NewReader
from newsletter.readers.tokens import preferences_token
from newsletter.settings import load_settings
from tests.conftest import Project
from tests.signup_site import SECRET, Site, form_field, ledger, prepare, serving
from tests.web_server import call


def suppressions(project: Project, email: str) -> list[tuple[str, str]]:
    """(list, reason) of every suppression of `email`, read while `serve` runs."""
    uri = (project.outbox / "newsletter.sqlite3").resolve().as_uri()
    db = sqlite3.connect(f"{uri}?mode=ro", uri=True)
    try:
        return db.execute("SELECT list_id, reason FROM suppressions WHERE email = ? "
                          "ORDER BY list_id", (email,)).fetchall()
    finally:
        db.close()


def test_a_stranger_cannot_lift_an_unsubscribe_or_a_bounce_on_a_single_opt_in_list(
        project: Project, secret: None) -> None:
    """Without double opt-in a post subscribes at once. For an address that left (its
    own unsubscribe) or bounced, anyone posting it must not undo that: the address is
    sent a confirmation instead, and only its owner's click lifts the suppression."""
    prepare(project)
    with ledger(project) as db:
        db.sign_up(NewReader("open-door", "left@example.com"), confirmed=True)
        db.suppress("open-door", "left@example.com", "unsubscribed", {})
        db.suppress("*", "bounced@example.com", "hard-bounce", {})
    with serving(project) as site:
        for address, kept in (("left@example.com", [("open-door", "unsubscribed")]),
                              ("bounced@example.com", [("*", "hard-bounce")])):
            assert site.post("open-door", email=address).status == 200
            site.settle()
            assert suppressions(project, address) == kept
            row = site.row(address, "open-door")
            assert row is not None and row.state == "pending"
            assert "confirmed" not in row.consent
            msg = site.mail(address, "open-door")
            assert msg is not None and msg["Subject"].startswith("Please confirm")
            # The owner's click is what brings them back.
            assert site.confirm(site.confirm_link(address, "open-door")).status == 200
            assert suppressions(project, address) == []
            assert site.row(address, "open-door").state == "confirmed"  # type: ignore[union-attr]
        # A new address still joins at once.
        assert site.post("open-door", email="new@example.com").status == 200
        site.settle()
        assert site.row("new@example.com", "open-door").state == "confirmed"  # type: ignore[union-attr]


@pytest.mark.parametrize("list_id", ["morning-brief", "open-door"])
def test_an_address_that_complained_gets_no_mail_from_a_sign_up(project: Project, secret: None,
                                                                list_id: str) -> None:
    """A complaint ("this is spam") is lifted only by the publisher, so no sign-up can
    make the address a reader again: mailing it would only be more mail it called spam,
    sent on a stranger's word. Nothing is stored or sent; the answer is the usual one."""
    prepare(project)
    with ledger(project) as db:
        db.suppress("*", "angry@example.com", "complaint", {})
        db.suppress("morning-brief", "cross@example.com", "complaint", {})
        db.suppress("open-door", "cross@example.com", "complaint", {})
    with serving(project) as site:
        for address in ("angry@example.com", "cross@example.com"):
            answer = site.post(list_id, email=address)
            assert answer.status == 200
            assert answer.body == site.post(list_id, email=f"x{address}").body
            site.settle()
            assert site.mail(address, list_id) is None
            assert site.row(address, list_id) is None
        assert site.mail("xangry@example.com", list_id) is not None


def sent_mails(project: Project) -> list[str]:
    """The addresses every sign-up mail so far went to (file backend)."""
    folder = project.outbox / "confirmations"
    return sorted(p.stem for p in folder.rglob("*.eml")) if folder.exists() else []


def test_one_ipv6_network_is_one_client(project: Project, secret: None) -> None:
    """Anyone with an IPv6 /64 (every home line) has 2**64 addresses: a limit per address
    would be no limit. The client is its /64."""
    prepare(project, "signup:\n  per_client_hour: 2\n  per_address_hour: 100\n"
                     "  trusted_proxies: [127.0.0.1]\n")
    with serving(project) as site:
        statuses = [site.post(email=f"v6-{i}@example.com",
                              headers={"X-Forwarded-For": f"2001:db8:1:2::{i:x}"}).status
                    for i in range(1, 5)]
        assert statuses == [200, 200, 429, 429]
        other = {"X-Forwarded-For": "2001:db8:1:3::1"}  # the next /64: someone else
        assert site.post(email="v6-next@example.com", headers=other).status == 200
        # IPv4 clients as a dual-stack socket names them are each their own client.
        for i in range(3):
            mapped = {"X-Forwarded-For": f"::ffff:198.51.100.{i}"}
            assert site.post(email=f"v4-{i}@example.com", headers=mapped).status == 200
        site.settle()
        assert site.row("v6-1@example.com").consent["network"] == "2001:db8:1::/48"  # type: ignore[union-attr]
        assert site.row("v4-1@example.com").consent["network"] == "198.51.100.0/24"  # type: ignore[union-attr]


def test_sub_addresses_of_one_mailbox_share_its_limits(project: Project,
                                                       secret: None) -> None:
    """victim+1@, victim+2@, … and Gmail's dotted spellings all reach one mailbox:
    counted apart, one client could send it a mail per variant. They share the limit per
    address and the one mail an hour."""
    prepare(project, "signup:\n  per_client_hour: 100\n  per_address_hour: 3\n")
    with serving(project) as site:
        variants = ["victim@example.com", "victim+1@example.com", "Victim+news@example.com",
                    "victim+2@example.com"]
        assert [site.post(email=v).status for v in variants] == [200, 200, 200, 429]
        site.settle()
        assert sent_mails(project) == ["victim@example.com"]
        gmail = ["some.one@gmail.com", "someone@gmail.com", "s.o.m.e.o.n.e+x@gmail.com"]
        assert [site.post(email=v).status for v in gmail] == [200, 200, 200]
        assert site.post(email="so.meone@googlemail.com").status == 429  # the same mailbox
        site.settle()
        assert sent_mails(project) == ["some.one@gmail.com", "victim@example.com"]
        # Each variant is still its own sign-up, confirmed by its own mail.
        assert site.row("victim+1@example.com").state == "pending"  # type: ignore[union-attr]
        site.clock.advance(3601)
        assert site.post(email="victim+9@example.com").status == 200
        site.settle()
        assert "victim+9@example.com" in sent_mails(project)


def test_a_file_reader_the_file_dropped_can_sign_up_again(project: Project,
                                                          secret: None) -> None:
    """A file reader's choices are a row of origin `file`, which counts only while the file
    has them as active. Once the publisher drops them (or marks them unsubscribed), such
    a row must not pass for a confirmed reader: they were told "already subscribed" and
    got no issue, for ever. A sign-up makes them a pending sign-up like anyone new."""
    prepare(project)
    with ledger(project) as db:
        for address in ("grace@example.com", "dropped@example.com"):
            db.choose("morning-brief", address, Choices(name="Chosen"), origin="file")
    with serving(project) as site:
        for address in ("grace@example.com", "dropped@example.com"):
            assert site.post(email=address, name="Again").status == 200
            msg = site.mail(address)
            assert msg is not None and msg["Subject"].startswith("Please confirm"), address
            assert site.confirm(site.confirm_link(address)).status == 200
            row = site.row(address)
            assert row is not None and (row.origin, row.state) == ("signup", "confirmed")
    readers = {s.email: s for s in load_readers(load_settings(project.settings))
               .lists["morning-brief"].subscribers}
    for address in ("grace@example.com", "dropped@example.com"):
        assert readers[address].status == "active" and readers[address].name == "Again"


INVISIBLE = ["Ad\u200bmin", "\u200fAda", "Ada\u200e", "\u061cAda", "Ad\u2060a", "\ufeffAda",
             "\u200b"]


@pytest.mark.parametrize("name", INVISIBLE)
def test_names_with_invisible_or_bidi_marks_are_refused(site: Site, name: str) -> None:
    """A zero-width space or a direction mark shows as nothing: "Ad\\u200bmin" looks like
    "Admin", a name of marks alone like no name, in the To line of every issue and in
    `subscribers show`. Refused on the sign-up form and on the preference page alike.
    (ZWJ and ZWNJ stay: scripts and emoji need them.)"""
    answer = site.post(email="marks@example.com", name=name)
    assert answer.status == 400 and "control characters" in answer.body
    site.settle()
    assert site.row("marks@example.com") is None
    token = preferences_token(SECRET, "morning-brief", "ada@example.com")
    page = call(f"{site.base}/preferences?token={token}")
    saved = call(f"{site.base}/preferences?token={token}", "POST",
                 urlencode({"form": form_field(page.body), "name": name}).encode())
    assert saved.status == 400 and "cannot be shown" in saved.body
    assert site.row("ada@example.com") is None
    for fine in ("Nasrin\u200cFar", "\U0001f469\u200d\U0001f4bb Ada"):
        assert site.post(email="fine@example.com", name=fine).status == 200


@pytest.mark.parametrize("list_id", ["morning-brief", "open-door"])
def test_a_strangers_name_is_not_relayed_in_our_mail(site: Site, list_id: str) -> None:
    """The name field is a stranger's free text until the address's owner has seen it:
    put in the greeting or the To line of a confirmation it turns the form into a relay
    for spam and phishing ("You won, call …") sent to anyone under our name and DKIM."""
    lure = "Your account is locked call 555 0100 or visit evil.example"
    assert site.post(list_id, email="target@example.com", name=lure).status == 200
    msg = site.mail("target@example.com", list_id)
    assert msg is not None and msg["To"].addresses[0].display_name == ""
    assert "evil.example" not in site.mail_path("target@example.com", list_id).read_text()
    assert "Hello," in msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert site.row("target@example.com", list_id).name == lure  # type: ignore[union-attr]
