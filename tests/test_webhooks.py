"""Providers' webhooks over real HTTP against the real `serve` app, after a real `send`:
signed events suppress the right reader with evidence; forged, unsigned, expired,
replayed, oversized or malformed requests change nothing and get the right 4xx."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from newsletter.ledger import SqliteLedger
from newsletter.settings import load_settings
from newsletter.suppressions import Suppression
from newsletter.web import create_app
from tests.conftest import (
    ARTICLES,
    ISSUE_DATE,
    REPO,
    SETTINGS_YAML,
    SUBSCRIBERS_YAML,
    Project,
    mounted_tmpfs,
)
from tests.web_server import Answer, call, running
from tests.webhook_signers import (
    MAILGUN_KEY,
    POSTMARK_PASSWORD,
    TOPIC,
    Keys,
    mailgun_body,
    mailgun_event,
    postmark_auth,
    sendgrid_headers,
    ses_bounce,
    ses_complaint,
    sns_notification,
)

READERS = ("ada@example.com", "linus@example.com", "zoe@example.org")
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys.make(tmp_path_factory.mktemp("keys"))


@dataclass
class Hooked:
    project: Project
    base: str
    keys: Keys
    message_ids: dict[str, str]
    log: list[logging.LogRecord] = field(default_factory=list)

    def post(self, provider: str, body: bytes | dict[str, Any] | list[Any],
             headers: dict[str, str] | None = None) -> Answer:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return call(f"{self.base}/webhooks/{provider}", "POST", data,
                    {**JSON, **(headers or {})})

    def suppressions(self) -> list[Suppression]:
        ledger = SqliteLedger(self.project.outbox / "newsletter.sqlite3")
        try:
            return ledger.suppressions()
        finally:
            ledger.close()

    def of(self, email: str) -> list[Suppression]:
        return [s for s in self.suppressions() if s.email == email]

    def events(self) -> list[Any]:
        ledger = SqliteLedger(self.project.outbox / "newsletter.sqlite3")
        try:
            return ledger.events()
        finally:
            ledger.close()


def configure(project: Project, keys: Keys, monkeypatch: pytest.MonkeyPatch | None = None
              ) -> None:
    project.write("config/newsletter.yaml", SETTINGS_YAML + f"""\
webhooks:
  ses_certificate: {keys.sns_cert}
  ses_topic_arns: ["{TOPIC}"]
  postmark_username: hooks
  max_age_seconds: 300
""")
    if monkeypatch is None:
        return
    monkeypatch.setenv("NEWSLETTER_WEBHOOKS__MAILGUN_SIGNING_KEY", MAILGUN_KEY)
    monkeypatch.setenv("NEWSLETTER_WEBHOOKS__POSTMARK_PASSWORD", POSTMARK_PASSWORD)
    monkeypatch.setenv("NEWSLETTER_WEBHOOKS__SENDGRID_PUBLIC_KEY", keys.sendgrid_public)


@pytest.fixture(scope="module")
def sent_outbox(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Path:
    """The outbox (ledger, sent mail) of a real `send` of the test project, made once."""
    proj = Project(tmp_path_factory.mktemp("sent"))
    shutil.copytree(REPO / "templates", proj.templates)
    proj.write("config/subscribers.yaml", SUBSCRIBERS_YAML)
    for name, text in ARTICLES.items():
        proj.write(f"articles/{name}", text)
    configure(proj, keys)
    result = proj.run("send", "--date", ISSUE_DATE)
    assert result.returncode == 0, result.stderr
    return proj.outbox


def sent_message_ids(project: Project) -> dict[str, str]:
    found = {}
    for email in READERS:
        eml = project.outbox / "mail" / "morning-brief" / ISSUE_DATE / f"{email}.eml"
        found[email] = str(message_from_bytes(eml.read_bytes(),
                                              policy=email_policy.default)["Message-ID"])
    return found


@contextlib.contextmanager
def serving(project: Project, keys: Keys, sent_outbox: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Hooked]:
    configure(project, keys, monkeypatch)
    shutil.copytree(sent_outbox, project.outbox, dirs_exist_ok=True)
    ids = sent_message_ids(project)
    with running(create_app(load_settings(project.settings))) as base:
        # After the server set up its logging (which resets uvicorn's handlers).
        hooked = Hooked(project, base, keys, ids)
        handler = logging.Handler()
        handler.emit = hooked.log.append  # type: ignore[method-assign]
        logger = logging.getLogger("uvicorn.error")
        logger.addHandler(handler)
        try:
            yield hooked
        finally:
            logger.removeHandler(handler)
    # Whatever a test sent, the server never failed on it nor logged a traceback.
    assert not [r for r in hooked.log if r.exc_info], [r.getMessage() for r in hooked.log]


@pytest.fixture
def hooked(project: Project, keys: Keys, sent_outbox: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Hooked]:
    """The project after a real `send`, served with every webhook configured."""
    with serving(project, keys, sent_outbox, monkeypatch) as hooked:
        yield hooked


def hard(s: Suppression) -> bool:
    return s.reason == "hard-bounce" and s.list_id == "*"


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
    from tests.webhook_signers import sns_confirmation
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


# Every endpoint ----------------------------------------------------------------------

def test_an_event_about_no_delivery_of_ours_is_taken_and_logged(hooked: Hooked) -> None:
    stranger = mailgun_event("failed", "stranger@example.net", "<not-ours@elsewhere>",
                             severity="permanent")
    assert hooked.post("mailgun", mailgun_body(stranger)).status == 200
    assert hooked.suppressions() == []
    assert any("unmatched" in r.getMessage() for r in hooked.log)


def signed_junk(hooked: Hooked, provider: str, body: bytes) -> dict[str, str]:
    """Valid credentials for `body` where they are not in it (Postmark, SendGrid)."""
    if provider == "postmark":
        return postmark_auth()
    if provider == "sendgrid":
        return sendgrid_headers(hooked.keys.sendgrid, body)
    return {}


@pytest.mark.parametrize("provider", ["ses", "postmark", "mailgun", "sendgrid"])
@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe\x00", b"[]", b"{}", b"null",
                                  b'{"Type": 5}', b"[" * 100_000])
def test_malformed_bodies_are_400(hooked: Hooked, provider: str, body: bytes) -> None:
    answer = hooked.post(provider, body, signed_junk(hooked, provider, body))
    expected = 200 if (provider, body) == ("sendgrid", b"[]") else 400  # an empty batch
    assert answer.status == expected, (answer.status, answer.body)
    assert hooked.suppressions() == []


def raw_post(base: str, provider: str, headers: dict[str, str], pieces: list[bytes]) -> int:
    """POST `pieces` (a body in chunks when no Content-Length is given) and read the answer
    as soon as the server gives one, without sending more."""
    import http.client
    from urllib.parse import urlsplit
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.putrequest("POST", f"/webhooks/{provider}")
        chunked = "Content-Length" not in headers
        for name, value in {**JSON, **headers,
                            **({"Transfer-Encoding": "chunked"} if chunked else {})}.items():
            conn.putheader(name, value)
        conn.endheaders()
        for piece in pieces:
            conn.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.mark.parametrize("provider", ["ses", "postmark", "mailgun", "sendgrid"])
def test_oversized_bodies_are_413_whatever_content_length_says(hooked: Hooked,
                                                               provider: str) -> None:
    auth = signed_junk(hooked, provider, b"")
    # Declared too long: refused before a byte of it is read.
    assert raw_post(hooked.base, provider, {**auth, "Content-Length": str(5 << 20)},
                    []) == 413
    # Chunked, with no length to go by: refused once it has grown past the cap (4 MB for
    # SendGrid's batches, 1 MB for the others), not read to its end.
    pieces = [b"[" + b" " * 65535] + [b" " * 65536] * (80 if provider == "sendgrid" else 20)
    assert raw_post(hooked.base, provider, auth, pieces) == 413
    assert hooked.suppressions() == []


def test_get_is_not_allowed(hooked: Hooked) -> None:
    assert call(f"{hooked.base}/webhooks/mailgun").status == 405


def test_endpoints_without_their_settings_are_off(project: Project) -> None:
    result = project.run("send", "--date", ISSUE_DATE)
    assert result.returncode == 0, result.stderr
    with running(create_app(load_settings(project.settings))) as base:
        for provider in ("ses", "postmark", "mailgun", "sendgrid"):
            answer = call(f"{base}/webhooks/{provider}", "POST", b"{}", JSON)
            assert answer.status == 404, provider


def test_serve_names_a_sendgrid_key_it_cannot_read(project: Project) -> None:
    result = project.run("serve", env={"NEWSLETTER_WEBHOOKS__SENDGRID_PUBLIC_KEY": "bm9wZQ=="})
    assert result.returncode == 2
    assert result.stderr.startswith("error: webhooks.sendgrid_public_key: is not a public key")
    assert "Traceback" not in result.stderr


def test_a_full_disk_is_a_503_and_the_provider_sending_again_gets_it_in(
        project: Project, keys: Keys, sent_outbox: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0 or not shutil.which("mount"):
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run the full-disk tests: run them as root (mount)")
        pytest.skip("needs root to mount a small tmpfs")
    with mounted_tmpfs(project.outbox, "2M"), \
            serving(project, keys, sent_outbox, monkeypatch) as hooked:
        ada = hooked.message_ids["ada@example.com"]
        body = mailgun_body(mailgun_event("failed", "ada@example.com", ada,
                                          severity="permanent"))
        filler = project.outbox / "filler"
        with open(filler, "wb") as f, contextlib.suppress(OSError):  # ENOSPC: full
            f.write(b"\0" * shutil.disk_usage(project.outbox).free)
        full = hooked.post("mailgun", body)
        assert full.status == 503, full.body
        assert any("503" in r.getMessage() for r in hooked.log)
        filler.unlink()
        again = hooked.post("mailgun", body)  # what Mailgun does after a 503
        assert again.status == 200, again.body
        assert [hard(s) for s in hooked.of("ada@example.com")] == [True]
