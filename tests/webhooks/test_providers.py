"""Each provider's webhook over real HTTP against the real `serve` app, after a real
`send`: its hard bounces, complaints and unsubscribes suppress the right reader with
evidence, soft bounces count, replays change nothing; forged, unsigned, expired or
replayed requests change nothing and get the right 4xx."""

from __future__ import annotations

import json
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.webhooks.conftest import Hooked, hard
from tests.webhooks.signers import (
    Keys,
    mailgun_body,
    mailgun_event,
    postmark_auth,
    sendgrid_headers,
    ses_bounce,
    ses_complaint,
    sns_confirmation,
    sns_notification,
)

# SES ---------------------------------------------------------------------------------

def test_ses_hard_bounce_suppresses_with_evidence_and_a_replay_changes_nothing(
        hooked: Hooked) -> None:
    ada = hooked.message_ids["ada@example.com"]
    # The address SES names may differ (an alias): our Message-ID is what attributes it.
    body = sns_notification(ses_bounce("Ada.Alias@example.net", ada), hooked.keys.sns,
                            Subject="Amazon SES Email Event Notification")
    first = hooked.post("ses", body)
    assert first.status == 200, first.body
    [s] = hooked.of("ada@example.com")
    assert hard(s)
    assert s.evidence["source"] == "ses" and s.evidence["status"] == "5.1.1"
    assert "no such user" in s.evidence["diagnostic"]
    assert s.evidence["issue"].startswith("morning-brief")
    events = hooked.events()
    assert hooked.post("ses", body).status == 200  # SNS retries; a replay
    assert hooked.events() == events and hooked.of("ada@example.com") == [s]


def test_ses_bounce_types_map_to_hard_and_soft(hooked: Hooked) -> None:
    ids, key = hooked.message_ids, hooked.keys.sns
    assert hooked.post("ses", sns_notification(ses_bounce(
        "linus@example.com", ids["linus@example.com"], "Permanent",
        "OnAccountSuppressionList", "fb-2"), key, version="1")).status == 200  # SHA1
    assert hooked.post("ses", sns_notification(ses_bounce(
        "zoe@example.org", ids["zoe@example.org"], "Undetermined", "Undetermined", "fb-3"),
        key)).status == 200
    assert hooked.post("ses", sns_notification(ses_bounce(
        "ada@example.com", ids["ada@example.com"], "Transient", "MailboxFull", "fb-4"),
        key)).status == 200
    assert [hard(s) for s in hooked.of("linus@example.com")] == [True]
    assert hooked.of("zoe@example.org") == [] and hooked.of("ada@example.com") == []
    kinds = {(e.email, e.kind) for e in hooked.events()}
    assert {("zoe@example.org", "bounce-soft"), ("ada@example.com", "bounce-soft")} <= kinds


def test_ses_complaint_suppresses_but_not_spam_does_not(hooked: Hooked) -> None:
    ids, key = hooked.message_ids, hooked.keys.sns
    assert hooked.post("ses", sns_notification(ses_complaint(
        "zoe@example.org", ids["zoe@example.org"], "not-spam", "fb-5"), key)).status == 200
    assert hooked.of("zoe@example.org") == []
    assert hooked.post("ses", sns_notification(ses_complaint(
        "zoe@example.org", ids["zoe@example.org"]), key)).status == 200
    [s] = hooked.of("zoe@example.org")
    assert s.reason == "complaint" and s.evidence["source"] == "ses"


def test_ses_forged_unsigned_or_foreign_messages_change_nothing(hooked: Hooked,
                                                                tmp_path: Path) -> None:
    ada = hooked.message_ids["ada@example.com"]
    good = sns_notification(ses_bounce("ada@example.com", ada), hooked.keys.sns)
    tampered = dict(good, Message=good["Message"].replace("ada@", "linus@"))
    other = Keys.make(tmp_path)  # a key AWS never had
    forged = sns_notification(ses_bounce("ada@example.com", ada), other.sns)
    unsigned = {k: v for k, v in good.items() if k != "Signature"}
    foreign = sns_notification(ses_bounce("ada@example.com", ada), hooked.keys.sns,
                               topic="arn:aws:sns:eu-west-1:999999999999:theirs")
    v3 = dict(good, SignatureVersion="3")
    for body, status in ((tampered, 403), (forged, 403), (unsigned, 401), (foreign, 403),
                         (v3, 403)):
        answer = hooked.post("ses", body)
        assert answer.status == status, (answer.status, answer.body)
    assert hooked.suppressions() == [] and hooked.events() == []


@pytest.mark.parametrize("url", [
    "https://sns.eu-west-1.amazonaws.com.evil.example/SimpleNotificationService-1.pem",
    "http://sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem",
    "https://sns.eu-west-1.amazonaws.com:8443/SimpleNotificationService-1.pem",
    "https://attacker@sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem",
    "https://sns.eu-west-1.amazonaws.com/../evil/cert.pem",
    "https://sns.eu-west-1.amazonaws.com/cert.pem?x=https://evil.example/",
    "https://evil.example/sns.eu-west-1.amazonaws.com/cert.pem",
    "https://s3.amazonaws.com/SimpleNotificationService-1.pem",
])
def test_ses_a_signing_cert_url_off_aws_is_refused_even_with_a_valid_signature(
        hooked: Hooked, url: str) -> None:
    ada = hooked.message_ids["ada@example.com"]
    body = sns_notification(ses_bounce("ada@example.com", ada), hooked.keys.sns,
                            SigningCertURL=url)  # signed: only the URL is wrong
    answer = hooked.post("ses", body)
    assert answer.status == 403 and "SigningCertURL" in answer.body
    assert hooked.suppressions() == []


def test_ses_subscription_confirmation_to_a_foreign_url_is_never_fetched(
        hooked: Hooked) -> None:
    body = sns_confirmation(hooked.keys.sns, "http://127.0.0.1:9/?Action=ConfirmSubscription")
    answer = hooked.post("ses", body)
    assert answer.status == 403 and "SubscribeURL" in answer.body


# Postmark ----------------------------------------------------------------------------

def postmark_bounce(email: str, kind: str = "HardBounce", ident: int = 42,
                    content: str = "") -> dict[str, Any]:
    return {"RecordType": "Bounce", "MessageStream": "outbound", "ID": ident, "Type": kind,
            "TypeCode": 1, "Name": "Hard bounce", "MessageID": "883953f4-6105-42a2-a16a",
            "ServerID": 23, "Description": "The server was unable to deliver your message",
            "Details": "smtp;550 5.1.1 The email account does not exist", "Email": email,
            "From": "brief@example.com", "BouncedAt": "2026-11-24T08:00:00Z",
            "DumpAvailable": True, "Inactive": True, "CanActivate": True,
            "Subject": "The Test Brief", "Metadata": {}, "Content": content}


def dsn_quoting(message_id: str) -> str:
    """A bounce's raw source as Postmark includes it: a DSN with the original attached."""
    original = EmailMessage()
    original["Message-ID"] = message_id
    original["Subject"] = "The Test Brief"
    original.set_content("Hello")
    report = EmailMessage()
    report["Message-ID"] = "<dsn-1@mx.example.net>"
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report.set_content("Your message could not be delivered.")
    report.add_attachment(original)
    return report.as_string()


def test_postmark_needs_its_credentials(hooked: Hooked) -> None:
    body = postmark_bounce("ada@example.com")
    missing = hooked.post("postmark", body)
    assert missing.status == 401 and "Basic" in missing.headers["WWW-Authenticate"]
    assert hooked.post("postmark", body, postmark_auth(password="guess")).status == 403
    assert hooked.post("postmark", body, postmark_auth(user="other")).status == 403
    assert hooked.post("postmark", body, {"Authorization": "Basic !!!"}).status == 403
    assert hooked.suppressions() == []


def test_postmark_events_suppress_count_and_unsubscribe(hooked: Hooked) -> None:
    auth = postmark_auth()
    # Postmark's MessageID is its own; the quoted original says whose bounce it is.
    quoted = postmark_bounce("forwarded@example.net", "HardBounce", 1,
                             dsn_quoting(hooked.message_ids["ada@example.com"]))
    assert hooked.post("postmark", quoted, auth).status == 200
    assert [hard(s) for s in hooked.of("ada@example.com")] == [True]
    assert hooked.post("postmark", postmark_bounce("linus@example.com", "SoftBounce", 2),
                       auth).status == 200
    assert hooked.of("linus@example.com") == []
    assert ("linus@example.com", "bounce-soft") in {(e.email, e.kind) for e in hooked.events()}
    complaint = dict(postmark_bounce("zoe@example.org", "SpamComplaint", 3),
                     RecordType="SpamComplaint")
    assert hooked.post("postmark", complaint, auth).status == 200
    assert [s.reason for s in hooked.of("zoe@example.org")] == ["complaint"]
    change = {"RecordType": "SubscriptionChange", "MessageID": None, "ServerID": 23,
              "MessageStream": "outbound", "ChangedAt": "2026-11-24T10:00:00Z",
              "Recipient": "linus@example.com", "Origin": "Recipient",
              "SuppressSending": True, "SuppressionReason": "ManualSuppression",
              "Tag": "", "Metadata": None}
    assert hooked.post("postmark", change, auth).status == 200
    [s] = hooked.of("linus@example.com")
    assert (s.reason, s.list_id, s.evidence["source"]) == ("unsubscribed", "morning-brief",
                                                          "postmark")
    before = hooked.events()
    assert hooked.post("postmark", change, auth).status == 200  # replayed
    assert hooked.post("postmark", dict(change, SuppressSending=False), auth).status == 200
    assert hooked.events() == before and len(hooked.of("linus@example.com")) == 1


# Mailgun -----------------------------------------------------------------------------

def test_mailgun_events_suppress_and_count(hooked: Hooked) -> None:
    ids = hooked.message_ids
    hard_one = mailgun_event("failed", "ada@example.com", ids["ada@example.com"],
                             severity="permanent")
    assert hooked.post("mailgun", mailgun_body(hard_one)).status == 200
    [s] = hooked.of("ada@example.com")
    assert hard(s) and s.evidence["status"] == "5.1.1" and s.evidence["source"] == "mailgun"
    soft = mailgun_event("failed", "linus@example.com", ids["linus@example.com"],
                         severity="temporary")
    assert hooked.post("mailgun", mailgun_body(soft)).status == 200
    assert hooked.of("linus@example.com") == []
    assert hooked.post("mailgun", mailgun_body(mailgun_event(
        "complained", "zoe@example.org", ids["zoe@example.org"]))).status == 200
    assert [s.reason for s in hooked.of("zoe@example.org")] == ["complaint"]
    assert hooked.post("mailgun", mailgun_body(mailgun_event(
        "unsubscribed", "linus@example.com", ids["linus@example.com"]))).status == 200
    assert [s.reason for s in hooked.of("linus@example.com")] == ["unsubscribed"]
    # The same event again, freshly signed (Mailgun retrying): nothing changes.
    before = hooked.events()
    assert hooked.post("mailgun", mailgun_body(hard_one)).status == 200
    assert hooked.events() == before


def test_mailgun_forged_expired_or_replayed_signatures_change_nothing(hooked: Hooked) -> None:
    ada = hooked.message_ids["ada@example.com"]
    data = mailgun_event("failed", "ada@example.com", ada, severity="permanent")
    assert hooked.post("mailgun", mailgun_body(data, key="key-not-ours")).status == 403
    old = int(time.time()) - 3600
    assert hooked.post("mailgun", mailgun_body(data, timestamp=old)).status == 403
    unsigned = json.loads(mailgun_body(data))
    unsigned["signature"]["signature"] = ""
    assert hooked.post("mailgun", unsigned).status == 401
    assert hooked.suppressions() == []
    # A captured request replayed with other event-data: refused before it is read.
    assert hooked.post("mailgun", mailgun_body(mailgun_event(
        "delivered", "ada@example.com", ada), token="t" * 50)).status == 200
    replay = mailgun_body(data, token="t" * 50)
    answer = hooked.post("mailgun", replay)
    assert answer.status == 409 and "replay" in answer.body
    assert hooked.suppressions() == []


# SendGrid ----------------------------------------------------------------------------

def sendgrid_event(event: str, email: str, message_id: str, ident: str,
                   **extra: Any) -> dict[str, Any]:
    return {"email": email, "timestamp": int(time.time()), "smtp-id": message_id,
            "event": event, "sg_event_id": ident, "sg_message_id": "14c5d75ce93.dfd.64b469",
            **extra}


def test_sendgrid_batch_suppresses_counts_and_ignores(hooked: Hooked) -> None:
    ids = hooked.message_ids
    batch = [
        sendgrid_event("processed", "ada@example.com", ids["ada@example.com"], "e0"),
        sendgrid_event("bounce", "ada@example.com", ids["ada@example.com"], "e1",
                       type="bounce", status="5.1.1", reason="550 5.1.1 no such user"),
        sendgrid_event("bounce", "linus@example.com", ids["linus@example.com"], "e2",
                       type="blocked", status="4.0.0", reason="blocked for now"),
        sendgrid_event("dropped", "zoe@example.org", ids["zoe@example.org"], "e3",
                       reason="Unsubscribed Address"),
        sendgrid_event("spamreport", "zoe@example.org", ids["zoe@example.org"], "e4"),
        sendgrid_event("delivered", "linus@example.com", ids["linus@example.com"], "e5",
                       response="250 OK"),
    ]
    body = json.dumps(batch).encode()
    answer = hooked.post("sendgrid", body, sendgrid_headers(hooked.keys.sendgrid, body))
    assert answer.status == 200, answer.body
    [s] = hooked.of("ada@example.com")
    assert hard(s) and s.evidence["source"] == "sendgrid" and s.evidence["status"] == "5.1.1"
    assert hooked.of("linus@example.com") == []
    assert [s.reason for s in hooked.of("zoe@example.org")] == ["complaint"]
    kinds = {(e.email, e.kind) for e in hooked.events()}
    assert {("linus@example.com", "bounce-soft"), ("linus@example.com", "delivered")} <= kinds
    before = hooked.events()
    again = hooked.post("sendgrid", body, sendgrid_headers(hooked.keys.sendgrid, body))
    assert again.status == 200 and hooked.events() == before


def test_sendgrid_unsigned_forged_or_old_change_nothing(hooked: Hooked, tmp_path: Path) -> None:
    ada = hooked.message_ids["ada@example.com"]
    body = json.dumps([sendgrid_event("bounce", "ada@example.com", ada, "x1",
                                      type="bounce")]).encode()
    key = hooked.keys.sendgrid
    assert hooked.post("sendgrid", body).status == 401
    other = Keys.make(tmp_path).sendgrid
    assert hooked.post("sendgrid", body, sendgrid_headers(other, body)).status == 403
    signed = sendgrid_headers(key, body)
    assert hooked.post("sendgrid", body.replace(b"ada@", b"zoe@"), signed).status == 403
    old = sendgrid_headers(key, body, int(time.time()) - 3600)
    assert hooked.post("sendgrid", body, old).status == 403
    assert hooked.suppressions() == [] and hooked.events() == []


