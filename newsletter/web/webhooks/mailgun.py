"""`POST /webhooks/mailgun`: Mailgun's webhooks (JSON: `signature` and `event-data`).

Mailgun signs each request in its body: `signature.signature` is the hex
HMAC-SHA256 of `timestamp + token` under the webhook signing key
(documentation.mailgun.com, "Securing Webhooks"). We check it in constant time, refuse a
timestamp outside `webhooks.max_age_seconds`, and take each token once: a token seen before
(kept in the ledger's `webhook_tokens`, so across restarts too) is refused with 409 before
`event-data` is even read. Only then is `event-data` validated and mapped:

- `failed` with `severity: permanent` → hard bounce, `temporary` → soft bounce;
- `complained` → complaint; `unsubscribed` → unsubscribed; `delivered` → delivered;
- anything else (accepted, opened, clicked…) is taken and ignored.

The event's Message-ID is `message.headers.message-id` (Mailgun gives it without the
angle brackets); its id is `event-data.id`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import sqlite3
from typing import Any

from pydantic import Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from newsletter.errors import NewsletterError
from newsletter.inbound.events import Event, EventKind
from newsletter.inbound.settings import BouncesSection, WebhooksSection
from newsletter.ledger import SqliteLedger
from newsletter.web.webhooks.common import (
    Loose,
    Refused,
    check_age,
    endpoint,
    event,
    log,
    parse,
    read_body,
    take,
)

SOURCE = "mailgun"


class Signature(Loose):
    timestamp: str = Field(max_length=20)
    token: str = Field(min_length=1, max_length=200)
    signature: str = Field(max_length=200)


class Envelope(Loose):
    signature: Signature
    event_data: dict[str, Any] = Field(alias="event-data")


class Status(Loose):
    code: str = ""
    enhanced_code: str = Field("", alias="enhanced-code")
    message: str = ""
    description: str = ""


class Message(Loose):
    headers: dict[str, Any] = Field(default_factory=dict)


class EventData(Loose):
    id: str = Field(min_length=1)
    event: str
    recipient: str = ""
    severity: str = ""
    reason: str = ""
    delivery_status: Status = Field(default_factory=Status, alias="delivery-status")
    message: Message = Field(default_factory=Message)


def signed(key: str, timestamp: str, token: str, signature: str) -> bool:
    """Whether `signature` is Mailgun's HMAC of `timestamp + token` under `key`."""
    expected = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest().encode(), signature.lower().encode())


def to_events(data: EventData) -> list[Event]:
    """The normalised event in one Mailgun `event-data` (none for what we do not track)."""
    kind: EventKind
    if data.event == "failed":
        if data.severity == "permanent":
            kind = "bounce-hard"
        elif data.severity == "temporary":
            kind = "bounce-soft"
        else:
            return []
    elif data.event == "complained":
        kind = "complaint"
    elif data.event == "unsubscribed":
        kind = "unsubscribed"
    elif data.event == "delivered":
        kind = "delivered"
    else:
        return []
    status = data.delivery_status
    mid = data.message.headers.get("message-id")
    return [event(SOURCE, data.id, kind, data.recipient,
                  message_id=mid if isinstance(mid, str) else "",
                  status=status.enhanced_code or status.code,
                  diagnostic=status.message or status.description or data.reason)]


def mailgun_routes(webhooks: WebhooksSection, bounces: BouncesSection,
                   ledger: SqliteLedger) -> list[Route]:
    key = webhooks.mailgun_signing_key.get_secret_value() if webhooks.mailgun_signing_key \
        else ""
    max_age = webhooks.max_age_seconds

    async def receive(request: Request) -> Response:
        if not key:
            raise Refused(404, "off: webhooks.mailgun_signing_key is not set")
        body = await read_body(request)
        envelope = parse(Envelope, body, "a Mailgun webhook")
        sig = envelope.signature
        if not sig.signature:
            raise Refused(401, "no signature")
        if not signed(key, sig.timestamp, sig.token, sig.signature):
            raise Refused(403, "signature does not verify with webhooks.mailgun_signing_key")
        check_age(sig.timestamp, max_age)
        token = f"{SOURCE}:{sig.token}"
        if await run_in_threadpool(ledger.token_seen, token):
            raise Refused(409, "this signature's token was taken before (a replay)")
        data = parse(EventData, envelope.event_data, "a Mailgun event")
        response = await take(SOURCE, ledger, bounces, to_events(data))
        if response.status_code == 200:
            # Only once taken: a request the ledger could not record may come again.
            forget = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2 * max_age)
            try:
                await run_in_threadpool(ledger.remember_token, token,
                                        forget.isoformat(timespec="seconds"))
            except (NewsletterError, sqlite3.Error):
                # Taken all the same; a replay of it would change nothing (event ids).
                log.warning("webhook %s: could not keep the token as taken", SOURCE)
        return response

    return [Route("/webhooks/mailgun", endpoint(SOURCE, receive), methods=["POST"])]
