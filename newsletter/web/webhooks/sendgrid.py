"""`POST /webhooks/sendgrid`: SendGrid's signed Event Webhook (a JSON array of events).

SendGrid signs `timestamp + raw body` with ECDSA (P-256, SHA-256); the base64 DER signature
is in `X-Twilio-Email-Event-Webhook-Signature`, the timestamp in
`X-Twilio-Email-Event-Webhook-Timestamp` (twilio.com/docs/sendgrid, "Getting Started with
the Event Webhook Security Features"). The public key is the one SendGrid shows: base64
DER (SubjectPublicKeyInfo) or PEM. A timestamp outside `webhooks.max_age_seconds` is
refused, and each event's `sg_event_id` is its id in the ledger (a replay changes nothing).

Mapping (twilio.com/docs/sendgrid/for-developers/tracking-events/event):
- `bounce` with `type: blocked` → soft bounce, otherwise (`type: bounce`) → hard bounce;
- `dropped` because of `Bounced Address` or `Invalid` → hard bounce (other drops: ignored,
  they are SendGrid's own suppressions, e.g. of an unsubscribed address);
- `spamreport` → complaint; `unsubscribe`, `group_unsubscribe` → unsubscribed;
- `delivered` → delivered; everything else (processed, deferred, open, click…) ignored.
The Message-ID is `smtp-id`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    load_der_public_key,
    load_pem_public_key,
)
from pydantic import Field, TypeAdapter
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
    check_age,
    endpoint,
    event,
    parse,
    read_body,
    take,
)

SOURCE = "sendgrid"
SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
# SendGrid batches events into one POST: allow more than one event's worth.
MAX_BODY = 4 << 20
_HARD_DROPS = {"bounced address", "invalid"}
_KINDS: dict[str, EventKind] = {"spamreport": "complaint", "unsubscribe": "unsubscribed",
                                "group_unsubscribe": "unsubscribed", "delivered": "delivered"}


class SendGridEvent(Loose):
    event: str = ""
    email: str = ""
    sg_event_id: str = ""
    smtp_id: str = Field("", alias="smtp-id")
    type: str = ""
    reason: str = ""
    status: str = ""
    response: str = ""
    timestamp: str = ""


_BATCH = TypeAdapter(list[SendGridEvent])


def load_key(text: str) -> ec.EllipticCurvePublicKey:
    """The verification key from its PEM or base64 DER form, or a ConfigError."""
    try:
        data = text.strip().encode()
        key = load_pem_public_key(data) if b"-----BEGIN" in data else \
            load_der_public_key(base64.b64decode(b"".join(data.split()), validate=True))
    except (ValueError, TypeError, binascii.Error, UnicodeError) as err:
        raise ConfigError("is not a public key (PEM, or the base64 key SendGrid shows)",
                          field="webhooks.sendgrid_public_key",
                          fix="copy the Verification Key from SendGrid's Mail Settings, "
                              "Signed Event Webhook") from err
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigError("is not an elliptic-curve (ECDSA) key",
                          field="webhooks.sendgrid_public_key",
                          fix="copy the Verification Key of the Signed Event Webhook")
    return key


def signed(key: ec.EllipticCurvePublicKey, timestamp: str, body: bytes, signature: str
           ) -> bool:
    try:
        der = base64.b64decode(signature, validate=True)
        key.verify(der, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


def _kind(one: SendGridEvent) -> EventKind | None:
    if one.event == "bounce":
        return "bounce-soft" if one.type == "blocked" else "bounce-hard"
    if one.event == "dropped":
        return "bounce-hard" if one.reason.strip().lower() in _HARD_DROPS else None
    return _KINDS.get(one.event)


def to_events(batch: list[SendGridEvent]) -> list[Event]:
    """The normalised events of one batch, in order; untracked ones left out."""
    found = []
    for one in batch:
        kind = _kind(one)
        if kind is None or not one.email:
            continue
        # Old events have no sg_event_id: the event itself, hashed, is its identity.
        ident = one.sg_event_id or hashlib.sha256(json.dumps(
            one.model_dump(), sort_keys=True).encode()).hexdigest()[:32]
        found.append(event(SOURCE, ident, kind, one.email, message_id=one.smtp_id,
                           status=one.status, diagnostic=one.reason or one.response))
    return found


def sendgrid_routes(webhooks: WebhooksSection, bounces: BouncesSection,
                    ledger: SqliteLedger) -> list[Route]:
    key = load_key(webhooks.sendgrid_public_key.get_secret_value()) \
        if webhooks.sendgrid_public_key else None
    max_age = webhooks.max_age_seconds

    async def receive(request: Request) -> Response:
        if key is None:
            raise Refused(404, "off: webhooks.sendgrid_public_key is not set")
        signature = request.headers.get(SIGNATURE, "")
        timestamp = request.headers.get(TIMESTAMP, "")
        if not signature or not timestamp:
            raise Refused(401, f"no {SIGNATURE} or {TIMESTAMP} header")
        body = await read_body(request, MAX_BODY)
        if not signed(key, timestamp, body, signature):
            raise Refused(403, "signature does not verify with webhooks.sendgrid_public_key")
        check_age(timestamp, max_age)
        return await take(SOURCE, ledger, bounces,
                          to_events(parse(_BATCH, body, "a SendGrid event batch")))

    return [Route("/webhooks/sendgrid", endpoint(SOURCE, receive), methods=["POST"])]
