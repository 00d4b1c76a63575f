"""`POST /webhooks/postmark`: Postmark's Bounce, Spam Complaint, Subscription Change and
Delivery webhooks (one JSON object each, told apart by `RecordType`).

Postmark does not sign its webhooks; it sends the HTTP basic credentials given in the
webhook URL (postmarkapp.com/developer/webhooks). We compare both in constant time; without
`webhooks.postmark_username` and `postmark_password` the endpoint is off (404).

Mapping (postmarkapp.com/developer/api/bounce-api, bounce types):
- Bounce `HardBounce`, `BadEmailAddress` → hard bounce; `SoftBounce`, `Transient`,
  `DnsError`, `SpamNotification`, `Blocked`, `DMARCPolicy` → soft bounce; `SpamComplaint`
  → complaint; the rest (auto-responders, challenges, address changes…) ignored;
- SubscriptionChange with `SuppressSending: true`: `ManualSuppression` → unsubscribed,
  `HardBounce` → hard bounce, `SpamComplaint` → complaint; a reactivation is ignored (a
  resubscription is `newsletter resubscribe`, a person's decision);
- Delivery → delivered.

Postmark's `MessageID` is its own, not our Message-ID header (which Postmark replaces unless
the message says `X-PM-KeepID: true`). When the bounce webhook includes the bounce's
`Content`, the Message-ID of the original message quoted in it is used; otherwise the
event is matched by the address (`Email` / `Recipient`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from email import message_from_string, policy
from email.errors import MessageError
from email.message import EmailMessage
from typing import Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from newsletter.inbound.events import Event, EventKind
from newsletter.inbound.settings import BouncesSection, WebhooksSection
from newsletter.ledger import SqliteLedger
from newsletter.web.webhooks.common import Loose, Refused, endpoint, event, parse, read_body, take

SOURCE = "postmark"
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="newsletter webhooks", charset="UTF-8"'}
_HARD = {"HardBounce", "BadEmailAddress"}
_SOFT = {"SoftBounce", "Transient", "DnsError", "SpamNotification", "Blocked", "DMARCPolicy"}
_SUPPRESSED: dict[str, EventKind] = {"ManualSuppression": "unsubscribed",
                                     "HardBounce": "bounce-hard",
                                     "SpamComplaint": "complaint"}
# The bounce's raw source may be long; its quoted headers are near the top.
_MAX_CONTENT = 256 * 1024


class Record(Loose):
    RecordType: str = Field(min_length=1)
    ID: str = ""
    Type: str = ""
    MessageID: str = ""
    Email: str = ""
    Recipient: str = ""
    Details: str = ""
    Description: str = ""
    Content: str = ""
    SuppressSending: bool = False
    SuppressionReason: str = ""
    ChangedAt: str = ""
    DeliveredAt: str = ""
    Metadata: dict[str, Any] = Field(default_factory=dict)


def authorized(header: str, username: str, password: str) -> bool:
    """Whether an `Authorization: Basic …` header names these credentials (constant time,
    both compared whatever the first gives)."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    user, _, secret = given.partition(b":")
    same_user = hmac.compare_digest(user, username.encode())
    same_secret = hmac.compare_digest(secret, password.encode())
    return same_user & same_secret


def quoted_message_id(content: str) -> str:
    """The Message-ID of the original message a bounce's raw source quotes (its attached
    message or headers part), or ''. The bounce's own Message-ID is not it."""
    if not content:
        return ""
    try:
        bounce = message_from_string(content[:_MAX_CONTENT], policy=policy.default)
        for part in bounce.walk():
            kind = part.get_content_type()
            if kind == "message/rfc822" and isinstance(part, EmailMessage):
                inner = part.get_payload()
                original = inner[0] if isinstance(inner, list) and inner else None
                if isinstance(original, EmailMessage) and original.get("Message-ID"):
                    return str(original["Message-ID"])
            elif kind == "text/rfc822-headers":
                headers = message_from_string(part.get_content(), policy=policy.default)
                if headers.get("Message-ID"):
                    return str(headers["Message-ID"])
    except (MessageError, ValueError, TypeError, LookupError, AttributeError,
            RecursionError):
        return ""  # a malformed dump: match by address
    return ""


def to_events(record: Record) -> list[Event]:
    """The normalised event in one Postmark record (none for what we do not track)."""
    kind: EventKind | None
    if record.RecordType in ("Bounce", "SpamComplaint"):
        kind = ("bounce-hard" if record.Type in _HARD else "bounce-soft"
                if record.Type in _SOFT else "complaint" if record.Type == "SpamComplaint"
                else None)
        if kind is None or not record.ID:
            return []
        return [event(SOURCE, record.ID, kind, record.Email,
                      message_id=quoted_message_id(record.Content),
                      diagnostic=record.Details or record.Description)]
    if record.RecordType == "SubscriptionChange":
        kind = _SUPPRESSED.get(record.SuppressionReason) if record.SuppressSending else None
        if kind is None:
            return []
        ident = f"change:{record.MessageID}:{record.Recipient}:{record.ChangedAt}"
        return [event(SOURCE, ident, kind, record.Recipient,
                      diagnostic=f"Postmark suppression: {record.SuppressionReason}")]
    if record.RecordType == "Delivery":
        ident = f"delivery:{record.MessageID}:{record.Recipient}"
        return [event(SOURCE, ident, "delivered", record.Recipient,
                      diagnostic=record.Details)]
    return []


def postmark_routes(webhooks: WebhooksSection, bounces: BouncesSection,
                    ledger: SqliteLedger) -> list[Route]:
    username = webhooks.postmark_username or ""
    password = webhooks.postmark_password.get_secret_value() if webhooks.postmark_password \
        else ""

    async def receive(request: Request) -> Response:
        if not username or not password:
            raise Refused(404, "off: webhooks.postmark_username/postmark_password not set")
        header = request.headers.get("authorization", "")
        if not header:
            raise Refused(401, "no credentials", _CHALLENGE)
        if not authorized(header, username, password):
            raise Refused(403, "credentials do not match webhooks.postmark_username/"
                               "postmark_password")
        body = await read_body(request)
        return await take(SOURCE, ledger, bounces,
                          to_events(parse(Record, body, "a Postmark webhook")))

    return [Route("/webhooks/postmark", endpoint(SOURCE, receive), methods=["POST"])]
