"""`POST /webhooks/ses`: Amazon SES bounce, complaint and delivery notifications, by SNS.

On only when `webhooks.ses_topic_arns` names the topic(s) SES publishes to. Verifying the
SNS signature proves that *SNS* sent a message, not that it is about our mail: anyone with
an AWS account can make a topic of their own, subscribe this URL and publish a made-up
"bounce" that SNS signs. So the topic is the secret here, and no topic, no endpoint (404).
Raw message delivery must stay off: an SNS message without its envelope carries no
signature and is refused.

Mapping (docs.aws.amazon.com/ses/latest/dg/notification-contents.html):
- Bounce: `bounceType` Permanent (any subtype, OnAccountSuppressionList and Suppressed
  too) → hard bounce for each of `bouncedRecipients`; Transient and Undetermined → soft;
- Complaint → complaint for each of `complainedRecipients`, except `complaintFeedbackType:
  not-spam` (a reader taking a message *out* of spam), which is ignored;
- Delivery → delivered for each of `delivery.recipients`; anything else ignored.
Each event's id is SES's `feedbackId` (the SNS MessageId for deliveries) and the address;
its Message-ID is our header as SES quotes it (`mail.headers`, else
`mail.commonHeaders.messageId`), never SES's own `mail.messageId`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from newsletter.errors import ConfigError
from newsletter.inbound.events import Event, EventKind
from newsletter.inbound.settings import BouncesSection, WebhooksSection
from newsletter.ledger import SqliteLedger
from newsletter.web.webhooks.common import (
    Loose,
    Refused,
    answer,
    endpoint,
    event,
    log,
    parse,
    read_body,
    shown,
    take,
)
from newsletter.web.webhooks.sns import (
    TYPES,
    Fetch,
    SnsMessage,
    SnsVerifier,
    confirm,
    https_get,
    load_certificate,
)

SOURCE = "ses"


class Header(Loose):
    name: str = ""
    value: str = ""


class CommonHeaders(Loose):
    messageId: str = ""


class Mail(Loose):
    headers: list[Header] = Field(default_factory=list)
    commonHeaders: CommonHeaders = Field(default_factory=CommonHeaders)

    @property
    def our_message_id(self) -> str:
        for header in self.headers:
            if header.name.lower() == "message-id":
                return header.value
        return self.commonHeaders.messageId


class Recipient(Loose):
    emailAddress: str = ""
    status: str = ""
    diagnosticCode: str = ""


class Bounce(Loose):
    bounceType: str = ""
    bounceSubType: str = ""
    bouncedRecipients: list[Recipient] = Field(default_factory=list)
    feedbackId: str = ""


class Complaint(Loose):
    complaintFeedbackType: str = ""
    complainedRecipients: list[Recipient] = Field(default_factory=list)
    feedbackId: str = ""


class Delivery(Loose):
    recipients: list[str] = Field(default_factory=list)
    smtpResponse: str = ""


class Notification(Loose):
    notificationType: str = ""
    eventType: str = ""  # the same, in SES event publishing
    mail: Mail = Field(default_factory=Mail)
    bounce: Bounce | None = None
    complaint: Complaint | None = None
    delivery: Delivery | None = None


def to_events(note: Notification, sns_id: str) -> list[Event]:
    """The normalised events of one SES notification: one per recipient it names."""
    kind: EventKind
    mid = note.mail.our_message_id
    what = note.notificationType or note.eventType
    if what == "Bounce" and note.bounce is not None:
        b = note.bounce
        kind = "bounce-hard" if b.bounceType == "Permanent" else "bounce-soft"
        detail = f"{b.bounceType}/{b.bounceSubType}"
        return [event(SOURCE, f"{b.feedbackId or sns_id}:{r.emailAddress}", kind,
                      r.emailAddress, message_id=mid, status=r.status,
                      diagnostic=r.diagnosticCode or detail)
                for r in b.bouncedRecipients if r.emailAddress]
    if what == "Complaint" and note.complaint is not None:
        c = note.complaint
        if c.complaintFeedbackType.lower() == "not-spam":
            return []
        return [event(SOURCE, f"{c.feedbackId or sns_id}:{r.emailAddress}", "complaint",
                      r.emailAddress, message_id=mid,
                      diagnostic=c.complaintFeedbackType or "complaint")
                for r in c.complainedRecipients if r.emailAddress]
    if what == "Delivery" and note.delivery is not None:
        d = note.delivery
        return [event(SOURCE, f"{sns_id}:{address}", "delivered", address, message_id=mid,
                      diagnostic=d.smtpResponse)
                for address in d.recipients if address]
    return []


def verifier(path: Path | None, fetch: Fetch) -> SnsVerifier:
    """A verifier with the certificate at `path` (webhooks.ses_certificate), else one that
    fetches them."""
    if path is None:
        return SnsVerifier(fetch=fetch)
    try:
        return SnsVerifier(load_certificate(path.read_bytes()), fetch)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot be read as a PEM certificate with an RSA key ({err})",
                          field="webhooks.ses_certificate", file=path,
                          fix="give the SNS signing certificate (PEM), or leave it unset "
                              "to fetch it from AWS") from err


def ses_routes(webhooks: WebhooksSection, bounces: BouncesSection, ledger: SqliteLedger,
               fetch: Fetch = https_get) -> list[Route]:
    """The SES endpoint; `fetch` GETs certificates and confirmation URLs (tests inject)."""
    topics = frozenset(webhooks.ses_topic_arns)
    signatures = verifier(webhooks.ses_certificate, fetch)

    async def receive(request: Request) -> Response:
        if not topics:
            raise Refused(404, "off: webhooks.ses_topic_arns is not set")
        msg = parse(SnsMessage, await read_body(request), "an SNS message")
        if msg.Type not in TYPES:
            raise Refused(400, "not an SNS message type")
        if not msg.Signature:
            raise Refused(401, "no SNS signature")
        if msg.TopicArn not in topics:
            raise Refused(403, f"topic {shown(msg.TopicArn)} is not in "
                               "webhooks.ses_topic_arns")
        await run_in_threadpool(signatures.verify, msg)
        if msg.Type == "SubscriptionConfirmation":
            await run_in_threadpool(confirm, msg, fetch)
            log.warning("webhook ses: subscribed to %s", shown(msg.TopicArn, 300))
            return answer(200, "subscription confirmed")
        if msg.Type == "UnsubscribeConfirmation":
            log.warning("webhook ses: unsubscribed from %s (not confirmed here)",
                        shown(msg.TopicArn, 300))
            return answer(200, "noted")
        note = parse(Notification, msg.Message, "an SES notification")
        return await take(SOURCE, ledger, bounces, to_events(note, msg.MessageId))

    return [Route("/webhooks/ses", endpoint(SOURCE, receive), methods=["POST"])]
