"""The classifier of the bounce mailbox, on real-world and hand-made samples.

The samples are in tests/samples/inbound/ (see its README): tokens are placeholders, filled
here with tokens of this test's secret, another secret, or forged ones.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import random
import threading
from pathlib import Path

import pytest

from newsletter import unsubscribe, verp
from newsletter.inbound.classify import MAX_BYTES, Classification, classify
from newsletter.inbound.policy import apply_event
from newsletter.inbound.reports import severity
from newsletter.inbound.settings import BouncesSection
from newsletter.ledger import SqliteLedger
from newsletter.message import message_id

SAMPLES = Path(__file__).parent / "samples" / "inbound"
SECRET = "test-secret-for-the-bounce-mailbox"
OTHER_SECRET = "somebody-else's-secret"
BASE = "bounces@bounce.example.com"
ISSUE = "daily-2026-11-30"
EMAIL = "ada@example.net"
LIST = "daily"
KEY = verp.delivery_key(ISSUE, EMAIL)


def fill(raw: bytes, secret: str = SECRET, *, b_token: str | None = None,
         u_token: str | None = None) -> bytes:
    """The sample with its placeholders replaced by tokens of `secret` (or the given ones)."""
    local, _, domain = BASE.partition("@")
    b = b_token or verp.token(secret, "b", ISSUE, EMAIL)
    u = u_token or verp.token(secret, "u", ISSUE, EMAIL)
    for name, value in ((b"@@VERP_B@@", f"{local}+{b}@{domain}"),
                        (b"@@VERP_U@@", f"{local}+{u}@{domain}"),
                        (b"@@LINK_TOKEN@@", unsubscribe.opaque_token(secret, LIST, EMAIL)),
                        (b"@@MESSAGE_ID@@", message_id(ISSUE, EMAIL, "example.com")[1:-1])):
        raw = raw.replace(name, value.encode())
    return raw


def sample(name: str, secret: str = SECRET, **tokens: str) -> bytes:
    return fill((SAMPLES / name).read_bytes(), secret, **tokens)


def run(raw: bytes, bounces_address: str | None = BASE) -> Classification:
    return classify(raw, secret=SECRET, bounces_address=bounces_address)


def _none(cell: str) -> str:
    return "" if cell == "-" else cell


def _table(path: Path) -> list[list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.split("\t") for line in lines if line and not line.startswith("#")]


EXPECTED = _table(SAMPLES / "expected.tsv")
MANIFEST = _table(SAMPLES / "flufl" / "MANIFEST.tsv")


def test_every_sample_has_an_expectation() -> None:
    assert sorted(row[0] for row in EXPECTED) == sorted(p.name for p in SAMPLES.glob("*.eml"))
    assert sorted(row[0] for row in MANIFEST) == \
        sorted(p.name for p in (SAMPLES / "flufl").glob("*.txt"))
    assert len(MANIFEST) >= 30


@pytest.mark.parametrize(("name", "kind", "event_kind", "status", "by"), EXPECTED,
                         ids=[row[0] for row in EXPECTED])
def test_own_samples(name: str, kind: str, event_kind: str, status: str, by: str) -> None:
    got = run(sample(name))
    assert got.kind == kind, got.summary
    assert [e.kind for e in got.events] == ([] if event_kind == "-" else [event_kind])
    assert "\n" not in got.summary and got.summary.isprintable()
    if not got.events:
        return
    event = got.events[0]
    assert event.source == "mailbox" and event.event_id.startswith("mailbox:")
    assert event.status == ("" if status == "-" else status)
    assert (event.status + event.diagnostic).isprintable()
    if by == "verp":
        assert event.verp is not None and event.verp.key == KEY
    elif by == "list":
        assert event.verp is None and event.list_token == (LIST, EMAIL)
    else:
        assert event.verp is None and event.list_token is None


@pytest.mark.parametrize(("name", "kind", "event_kinds", "statuses", "recipients"), MANIFEST,
                         ids=[row[0] for row in MANIFEST])
def test_flufl_real_world_bounces(name: str, kind: str, event_kinds: str, statuses: str,
                                  recipients: str) -> None:
    raw = (SAMPLES / "flufl" / name).read_bytes()
    got = run(raw)
    assert got.kind == kind, got.summary
    assert ",".join(sorted({e.kind for e in got.events})) == _none(event_kinds)
    assert ",".join(sorted({e.status for e in got.events if e.status})) == _none(statuses)
    assert ",".join(sorted(e.recipient for e in got.events)) == _none(recipients)
    # Nothing in them is ours: whatever they say, they attribute nobody.
    assert all(e.verp is None and e.list_token is None for e in got.events)
    # The same bounce coming back to a VERP address names that one delivery.
    address = verp.address(BASE, SECRET, "b", ISSUE, EMAIL)
    tagged = run(f"Delivered-To: {address}\n".encode() + raw)
    assert tagged.kind == kind
    if kind in ("bounce", "delivered"):
        assert len(tagged.events) == 1 and tagged.events[0].verp == verp.Tagged("b", KEY)


def test_hard_and_soft_follow_the_smtp_rules() -> None:
    assert [severity(s) for s in ("5.1.1", "5.1.10", "5.2.1", "5.2.0", "5.0.0")] == ["hard"] * 5
    assert [severity(s) for s in ("5.2.2", "5.2.3", "5.7.1", "5.7.26", "5.4.4", "4.2.2", "")] \
        == ["soft"] * 7


def test_a_postfix_dsn_with_auto_submitted_is_a_bounce_not_an_auto_reply() -> None:
    raw = sample("postfix_hard_5.1.1.eml")
    assert b"Auto-Submitted: auto-replied" in raw
    got = run(raw)
    assert got.kind == "bounce" and got.events[0].kind == "bounce-hard"
    assert got.events[0].message_id == message_id(ISSUE, EMAIL, "example.com")
    assert got.summary.startswith("hard bounce 5.1.1 for ada@example.net")


def test_tokens_of_another_secret_attribute_nobody() -> None:
    for name in ("postfix_hard_5.1.1.eml", "yahoo_arf_abuse.eml", "jmrp_plain_link_only.eml",
                 "exim_to_plain_address.eml", "aol_arf_abuse.eml"):
        got = run(sample(name, OTHER_SECRET))
        assert got.kind in ("bounce", "complaint"), name
        # Still reported, with what the mail says, for policy to call unmatched.
        assert got.events and all(e.verp is None and e.list_token is None
                                  for e in got.events), name
        assert "no token of ours" in got.summary
    got = run(sample("mailto_unsubscribe_u_address.eml", OTHER_SECRET))
    assert got.kind == "unknown" and not got.events and "not ours" in got.summary
    assert run(sample("mailto_unsubscribe_subject_token.eml", OTHER_SECRET)).kind == "unknown"


def _forged(kind: str) -> str:
    real = verp.token(SECRET, kind, ISSUE, EMAIL)  # type: ignore[arg-type]
    last = "a" if real[-1] != "a" else "b"
    return real[:-1] + last


def test_a_forged_token_attributes_nobody() -> None:
    got = run(sample("postfix_hard_5.1.1.eml", b_token=_forged("b"), u_token=_forged("u")))
    assert got.kind == "bounce" and got.events[0].verp is None
    # The LINK_TOKEN in the headers returned is valid, but a bounce is attributed by a
    # Return-Path token only (below).
    assert got.events[0].list_token is None
    got = run(sample("mailto_unsubscribe_u_address.eml", u_token=_forged("u")))
    assert got.kind == "unknown" and not got.events
    assert "forged" in got.summary
    # A b token where a u token belongs: a token for bounces never unsubscribes.
    got = run(sample("mailto_unsubscribe_u_address.eml",
                     u_token=verp.token(SECRET, "b", ISSUE, EMAIL)))
    assert got.kind == "unknown" and not got.events


def test_unsubscribe_tokens_never_make_a_bounce() -> None:
    # The mailto address and the link are in the List-Unsubscribe of every copy a reader
    # forwards: with them, anyone may take that reader off one list, but a DSN forged
    # around them must not suppress the reader on every list as a hard bounce.
    u_address = verp.address(BASE, SECRET, "u", ISSUE, EMAIL)
    forged_b = f"bounces+{_forged('b')}@bounce.example.com"
    raw = sample("postfix_hard_5.1.1.eml", b_token=_forged("b"))
    for name, dsn in (("inside", raw),
                      ("sent to the u address", raw.replace(forged_b.encode(),
                                                            u_address.encode(), 2))):
        got = run(dsn)
        assert got.kind == "bounce", name
        assert all(e.verp is None and e.list_token is None for e in got.events), name
        assert "no token of ours" in got.summary, name
    # A complaint is still attributed by them (a feedback loop returns no Return-Path).
    got = run(sample("jmrp_plain_link_only.eml"))
    assert got.kind == "complaint" and got.events[0].list_token == (LIST, EMAIL)


def test_a_stranger_never_unsubscribes_anyone() -> None:
    for name in ("stranger.eml", "stranger_unsigned_unsubscribe.eml"):
        got = run(sample(name))
        assert got.kind == "unknown" and got.events == ()
        assert got.summary == "unknown: not a bounce, complaint or unsubscribe"


def test_mailto_unsubscribe_whatever_it_says_but_auto_replies_and_dsns_win() -> None:
    got = run(sample("mailto_unsubscribe_u_address.eml"))
    assert got.kind == "unsubscribe" and got.events[0].kind == "unsubscribed"
    assert got.events[0].verp == verp.Tagged("u", KEY)
    # An out-of-office answer to the unsubscribe address unsubscribes nobody.
    assert run(sample("autoreply_es_x_autorespond.eml")).kind == "auto-reply"
    # A bounce that comes back to the u address is still a bounce.
    raw = sample("postfix_hard_5.1.1.eml").replace(b"Delivered-To: bounces+b", b"X-Old: b", 1)
    raw = f"Delivered-To: {verp.address(BASE, SECRET, 'u', ISSUE, EMAIL)}\n".encode() + raw
    assert run(raw).kind == "bounce"


def test_auto_replies_to_the_return_path_are_not_bounces() -> None:
    names = [row[0] for row in EXPECTED if row[0].startswith(("autoreply_", "challenge_"))]
    assert len(names) >= 6
    for name in names:
        got = run(sample(name))
        assert got.kind == "auto-reply" and got.events == (), name
        assert got.summary.startswith("auto-reply (") and got.summary.endswith("): ignored")


def test_complaints_jmrp_without_feedback_type_and_yahoo() -> None:
    got = run(sample("jmrp_plain_link_only.eml"))
    assert got.kind == "complaint" and got.events[0].kind == "complaint"
    assert got.events[0].list_token == (LIST, EMAIL)  # from the QP-encoded body link
    got = run(sample("yahoo_arf_abuse.eml"))
    assert got.events[0].verp == verp.Tagged("b", KEY)
    assert got.events[0].message_id == message_id(ISSUE, EMAIL, "example.com")
    assert "Yahoo!-Mail-Feedback/2.0" in got.summary


def test_event_ids_are_stable_and_distinct_per_recipient() -> None:
    raw = sample("postfix_hard_5.1.1.eml")
    first, again = run(raw), run(raw)
    assert first.events[0].event_id == again.events[0].event_id == \
        "mailbox:<20261130070211.4Zq9Fh0vKxz9sWL@relay.example.org>:ada@example.net"
    # No sane Message-ID: the digest of the bytes, the same on every fetch.
    bare = raw.replace(b"Message-Id: <20261130070211.4Zq9Fh0vKxz9sWL@relay.example.org>",
                       b"Message-Id: no id")
    digest = hashlib.sha256(bare).hexdigest()
    assert run(bare).events[0].event_id == f"mailbox:{digest}:ada@example.net"
    # The same from IMAP, which gives CRLF line ends.
    crlf = bare.replace(b"\n", b"\r\n")
    assert run(crlf).events[0].event_id == f"mailbox:{digest}:ada@example.net"
    several = run((SAMPLES / "flufl" / "yahoo_04.txt").read_bytes())
    ids = [e.event_id for e in several.events]
    assert len(ids) == 2 and len(set(ids)) == 2


def test_without_a_bounces_address_only_unsubscribe_tokens_count() -> None:
    got = run(sample("postfix_hard_5.1.1.eml"), bounces_address=None)
    assert got.kind == "bounce" and got.events[0].verp is None
    assert got.events[0].list_token == (LIST, EMAIL)
    assert run(sample("mailto_unsubscribe_subject_token.eml"), None).kind == "unsubscribe"


def test_hostile_bytes_never_raise() -> None:
    rng = random.Random(11)
    cases = [b"", b"\r\n\r\n", os.urandom(0) + bytes(rng.randrange(256) for _ in range(50_000)),
             b"\xff\xfe\x00garbage: \x00\x01\n\n\x00", b"Subject: " + b"=?" * 10_000 + b"\n\n",
             b"Content-Type: multipart/mixed; boundary=x\n\n" + b"--x\n" * 5000]
    for raw in cases:
        got = run(raw)
        assert got.kind == "unknown" and got.events == ()
        assert got.summary.startswith("unknown: ") and got.summary.isprintable()


def test_broken_mime_and_bad_headers_are_one_line_not_a_traceback() -> None:
    got = run(sample("broken_mime.eml"))
    assert got.kind == "unknown" and got.summary.isprintable()
    assert "sent to our token address" in got.summary


def test_a_bare_cr_in_a_header_does_not_hide_the_report() -> None:
    raw = sample("bare_cr_header.eml")
    assert b"Mail\rReturned" in raw
    got = run(raw)
    assert got.kind == "bounce" and got.events[0].verp == verp.Tagged("b", KEY)


def test_latin1_labelled_utf8_gives_printable_text() -> None:
    got = run(sample("latin1_labelled_utf8.eml"))
    diagnostic = got.events[0].diagnostic
    assert "gelöscht (Müller)" in diagnostic and "\x1b" not in diagnostic
    diagnostic.encode("utf-8")  # no lone surrogates left
    # A non-standard bounce in Latin-1 that says it is UTF-8: its words are still read (the
    # code that makes it soft, the token of the copy it returns).
    got = run(sample("qmail_latin1_body_labelled_utf8.eml"))
    event = got.events[0]
    assert (event.kind, event.status, event.verp) == ("bounce-soft", "5.2.2",
                                                      verp.Tagged("b", KEY))
    assert event.diagnostic == "Remote host said: 552 5.2.2 Postfach von Jürgen Müller ist " \
                               "voll (über dem Kontingent)"


def test_a_20_mb_mail_is_read_up_to_the_cap_and_says_so() -> None:
    raw = sample("postfix_hard_5.1.1.eml")
    head, sep, tail = raw.rpartition(b"\n--4Zq9Fh0vKxz9sWL.1764486131/relay.example.org--")
    big = head + b"\n" + b"X-Padding: " + b"x" * 70 + b"\n" + \
        (b"y" * 76 + b"\n") * (20 * 1024 * 1024 // 77) + sep + tail
    assert len(big) > 2 * MAX_BYTES
    got = run(big)
    assert got.kind == "bounce" and got.events[0].kind == "bounce-hard"
    assert "only its first 10 MB read" in got.summary
    assert got.events[0].event_id.startswith("mailbox:<20261130070211.")


def test_the_events_go_through_policy_and_suppress_only_with_a_token(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "ledger.sqlite3")
    ledger.record_issue(ISSUE, LIST, dt.date(2026, 11, 30), [])
    ledger.plan(ISSUE, [(EMAIL, message_id(ISSUE, EMAIL, "example.com"), "sent")])
    bounces = BouncesSection(address=BASE)
    forged = run(sample("stranger.eml").replace(b"Delivered-To: bounces@",
                                                 f"Delivered-To: bounces+{_forged('b')}@".encode()))
    assert forged.events == ()
    other = run(sample("yahoo_arf_abuse.eml", OTHER_SECRET))
    assert apply_event(ledger, other.events[0], bounces).outcome == "unmatched"
    hard = run(sample("postfix_hard_5.1.1.eml"))
    applied = apply_event(ledger, hard.events[0], bounces)
    assert (applied.outcome, applied.email, applied.reason) == ("suppressed", EMAIL,
                                                                "hard-bounce")
    assert apply_event(ledger, run(sample("postfix_hard_5.1.1.eml")).events[0],
                       bounces).outcome == "duplicate"
    soft = run(sample("postfix_soft_5.2.2_full.eml"))
    assert apply_event(ledger, soft.events[0], bounces).outcome == "counted"
    ledger.close()


def _strip_recipients(raw: bytes) -> bytes:
    lines = raw.split(b"\n")
    head_end = lines.index(b"")
    kept = [line for line in lines[:head_end]
            if not line.lower().startswith((b"delivered-to:", b"x-original-to:", b"to:",
                                             b"envelope-to:", b"x-envelope-to:"))]
    return b"\n".join(kept + lines[head_end:])


@pytest.mark.parametrize("name", ["Delivered-To", "X-Original-To", "Envelope-To",
                                  "X-Envelope-To", "To"])
def test_the_first_valid_token_of_the_recipient_headers_wins(name: str) -> None:
    # The returned headers and Postfix's X-Postfix-Sender are cut, so only the recipient
    # header can attribute.
    raw = _strip_recipients(sample("postfix_soft_5.2.2_full.eml"))
    raw = raw.split(b"\n--4Zq9Fh0vKxz9sWL.1764486131/relay.example.org\n"
                    b"Content-Description: Undelivered Message Headers")[0]
    raw = b"\n".join(line for line in raw.split(b"\n") if b"X-Postfix-Sender" not in line)
    assert run(raw).events[0].verp is None
    good = verp.address(BASE, SECRET, "b", ISSUE, EMAIL)
    forged = f"bounces+{_forged('b')}@bounce.example.com"
    other = verp.address(BASE, OTHER_SECRET, "b", ISSUE, "eve@example.org")
    # Forged and foreign tokens before it, in the more trusted headers, are passed over.
    headers = f"Delivered-To: {forged}\nX-Original-To: {other}\n{name}: \"Bounces\" " \
              f"<{good.upper()}>\n"
    got = run(headers.encode() + raw)
    assert got.events[0].verp == verp.Tagged("b", KEY), name
    # A valid token in Delivered-To (the first of them, for two) wins over any later one.
    second = verp.address(BASE, SECRET, "b", ISSUE, "grace@example.de")
    got = run(f"{name}: {good}\nDelivered-To: {second}\n".encode() + raw)
    expected = KEY if name == "Delivered-To" else verp.delivery_key(ISSUE, "grace@example.de")
    assert got.events[0].verp == verp.Tagged("b", expected)


def test_a_dsn_for_several_recipients() -> None:
    raw = (SAMPLES / "flufl" / "dsn_11.txt").read_bytes()
    assert len(run(raw).events) == 1  # eleven blocks, one recipient: one event
    raw = sample("postfix_hard_5.1.1.eml")
    second = (b"Final-Recipient: rfc822; grace@example.net\nAction: failed\nStatus: 5.2.2\n"
              b"Diagnostic-Code: smtp; 552 5.2.2 Mailbox full\n\n")
    raw = raw.replace(b"Final-Recipient: rfc822; ada@example.net", second +
                      b"Final-Recipient: rfc822; ada@example.net")
    unattributed = run(_strip_recipients(raw).replace(b"@@", b"").replace(
        b"bounces+", b"someone-else+"))
    assert sorted((e.recipient, e.kind) for e in unattributed.events) == [
        ("ada@example.net", "bounce-hard"), ("grace@example.net", "bounce-soft")]
    assert unattributed.summary.startswith("hard bounce 5.1.1 for ada@example.net and 1 more")
    # To a VERP address, which names one delivery: one event, the worst news.
    got = run(raw)
    assert [(e.recipient, e.kind) for e in got.events] == [("ada@example.net", "bounce-hard")]


@pytest.mark.parametrize("name", ["exim_01.txt", "postfix_02.txt", "qmail_01.txt"])
def test_a_mail_system_bounce_that_says_auto_submitted_is_still_a_bounce(name: str) -> None:
    raw = b"Auto-Submitted: auto-replied\n" + (SAMPLES / "flufl" / name).read_bytes()
    assert run(raw).kind == "bounce"


def test_an_auto_reply_summary_names_its_reason() -> None:
    got = run(sample("autoreply_en_auto_submitted.eml"))
    assert got.summary == "auto-reply (Auto-Submitted: auto-replied): ignored"
    # An Auto-Submitted: no is a person writing: not an auto-reply.
    raw = sample("stranger.eml").replace(b"Subject:", b"Auto-Submitted: no\nSubject:")
    assert run(raw).kind == "unknown"


def test_not_spam_and_other_feedback_types_attribute_nothing() -> None:
    for name in ("arf_not_spam.eml", "arf_auth_failure.eml"):
        got = run(sample(name))
        assert got.kind == "unknown" and got.events == ()
    got = run(sample("arf_opt_out.eml"))
    assert got.kind == "unsubscribe" and got.events[0].kind == "unsubscribed"


def test_bombs_are_refused_quickly_with_a_reason(capfd: pytest.CaptureFixture[str]) -> None:
    headers = b"From: MAILER-DAEMON@example.org\n" + b"X-A: b\n" * 1_000_000 + b"\nbody\n"
    got = run(headers)
    assert got.kind == "unknown" and "header block of" in got.summary
    parts = b"From: MAILER-DAEMON@example.org\nContent-Type: multipart/mixed; boundary=x\n\n" \
        + b"--x\nContent-Type: text/plain\n\nhello\n" * 100_000 + b"--x--\n"
    got = run(parts)
    assert got.kind == "unknown" and "more than 500 MIME parts" in got.summary
    nested = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i)
                      for i in range(1500))
    assert run(nested).kind == "unknown"
    # Nothing printed: a detector's traceback included.
    run(b"Subject: no From at all\n\nhello\n")
    assert capfd.readouterr() == ("", "")


def test_a_bounce_without_a_from_header_is_still_read() -> None:
    # flufl.bounce's Yale detector raises on a mail without From; the ones after it (qmail
    # here) must still see the mail.
    raw = (SAMPLES / "flufl" / "qmail_01.txt").read_bytes()
    lines = [line for line in raw.split(b"\n") if not line.startswith(b"From: ")]
    got = run(b"\n".join(lines))
    assert got.kind == "bounce" and got.events[0].recipient == "userx@example.de"


def test_an_unsubscribe_button_s_auto_generated_mail_still_unsubscribes() -> None:
    for name in ("mailto_unsubscribe_subject_token.eml", "mailto_unsubscribe_u_address.eml"):
        raw = sample(name).replace(b"Subject:", b"Auto-Submitted: auto-generated\nSubject:", 1)
        assert run(raw).kind == "unsubscribe", name
        replied = sample(name).replace(b"Subject:", b"Auto-Submitted: auto-replied\nSubject:", 1)
        assert run(replied).kind == "auto-reply", name
    # An out-of-office subject is an auto-reply whatever Auto-Submitted says.
    raw = sample("mailto_unsubscribe_u_address.eml").replace(
        b"Subject: please take me off this list",
        b"Auto-Submitted: auto-generated\nSubject: Out of office until Monday", 1)
    assert run(raw).kind == "auto-reply"


@pytest.mark.parametrize("subject", [
    "Out of Office: The Daily", "Automatic reply: The Daily", "Abwesenheitsnotiz: The Daily",
    "=?utf-8?q?R=C3=A9ponse_automatique_=3A_The_Daily?=", "Respuesta automática: The Daily",
    "Risposta automatica: The Daily", "Automatisch antwoord: The Daily", "Autosvar: The Daily",
    "=?iso-2022-jp?b?GyRCPCtGMEpWPy4bKEI=?=", "Please confirm your message to ada"])
def test_out_of_office_subjects_alone_make_an_auto_reply(subject: str) -> None:
    raw = sample("stranger.eml").replace(b"Subject: Grow your newsletter 10x",
                                         f"Subject: {subject}".encode())
    got = run(raw)
    assert got.kind == "auto-reply", subject
    assert got.summary in ("auto-reply (out-of-office subject): ignored",
                           "auto-reply (challenge-response): ignored")


def test_an_exim_bounce_that_gave_up_on_a_full_mailbox_is_soft() -> None:
    # Exim's text bounce after its retry timeout: "permanent" for Exim, but the remote
    # server's own code is a 4.x.x (the mailbox is full, the address is good).
    return_path = verp.address(BASE, SECRET, "b", ISSUE, EMAIL)
    raw = (f"Delivered-To: {return_path}\nFrom: Mail Delivery System <Mailer-Daemon@mx."
           "example.org>\nTo: {return_path}\nSubject: Mail delivery failed: returning message "
           f"to sender\nMessage-Id: <exim-quota@mx.example.org>\nX-Failed-Recipients: {EMAIL}\n"
           "\nThis message was created automatically by mail delivery software.\n\n"
           "A message that you sent could not be delivered to one or more of its\n"
           "recipients. This is a permanent error. The following address(es) failed:\n\n"
           f"  {EMAIL}\n    retry timeout exceeded\n    SMTP error from remote mail server "
           f"after RCPT TO:<{EMAIL}>:\n    452 4.2.2 The email account that you tried to "
           "reach is over quota\n").encode()
    got = run(raw)
    assert got.kind == "bounce" and [e.kind for e in got.events] == ["bounce-soft"]
    assert got.events[0].status == "4.2.2" and got.events[0].verp == verp.Tagged("b", KEY)


def test_a_line_of_unsubscribe_links_is_no_regex_bomb() -> None:
    # Four parts of 256 KB of "/unsubscribe?" took the link pattern over 2 minutes (each
    # start scanned the line to its end); bounded, they take a fraction of a second. The
    # generous limit only says that it ends: it is no benchmark.
    part = b"--B\nContent-Type: text/plain\n\n" + b"/unsubscribe?" * 20_000 + b"\n"
    raw = (b"From: feedback@example.org\nTo: bounces@bounce.example.com\nMIME-Version: 1.0\n"
           b"Content-Type: multipart/report; report-type=feedback-report; boundary=B\n\n"
           + part * 4 + b"--B\nContent-Type: message/feedback-report\n\nFeedback-Type: "
           b"abuse\n\n--B--\n")
    done: list[Classification] = []
    worker = threading.Thread(target=lambda: done.append(run(raw)), daemon=True)
    worker.start()
    worker.join(30)
    assert done and done[0].kind == "complaint" and done[0].events[0].list_token is None


def test_bounce_detectors_read_only_the_start_of_a_large_mail() -> None:
    # flufl.bounce reads every line: 10 MB of short lines took it two minutes, again at each
    # fetch while the mail stays. Its detectors get the first 256 KB (the bounce's own words
    # come first): the same failure text is found before that mark, not after it.
    def mail(filler_lines: int) -> bytes:
        return (b"From: MAILER-DAEMON@mx.example.org\nTo: bounces@bounce.example.com\n"
                b"Subject: failure notice\n\n" + b"x\n" * filler_lines +
                b"Hi. This is the qmail-send program at mx.example.org.\nI'm afraid I wasn't "
                b"able to deliver your message to the following addresses.\nThis is a "
                b"permanent error; I've given up. Sorry it didn't work out.\n\n"
                b"<ada@example.net>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n")
    assert run(mail(1000)).kind == "bounce"
    assert run(mail(200_000)).kind == "unknown"
