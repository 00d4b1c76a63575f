"""What every provider's endpoint shares: reading the body with a cap, refusing in one log
line, checking a timestamp window, and handing the events to `policy.apply_event`.

Nothing a request carries reaches the log but through `shown` (printable, short), and no
hostile request ends in a 500 or a traceback: every refusal is a `Refused` with its status.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response

from newsletter.errors import NewsletterError
from newsletter.inbound.events import Event, EventKind
from newsletter.inbound.policy import Applied, apply_event
from newsletter.inbound.settings import BouncesSection
from newsletter.ledger import SqliteLedger

# uvicorn's own error log: what `serve` prints, with its format and level.
log = logging.getLogger("uvicorn.error").getChild("webhooks")

# One provider event is a few kilobytes; SNS messages are at most 256 KB.
MAX_BODY = 1 << 20
# A provider sends its body at once; one that trickles in a byte at a time (a slow loris)
# would hold a connection, and a worker, for as long as it likes.
BODY_SECONDS = 30.0

Handler = Callable[[Request], Awaitable[Response]]
M = TypeVar("M")


class Refused(Exception):
    """A request we do not take: its HTTP status and a fixed reason for the log."""

    def __init__(self, status: int, why: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(why)
        self.status = status
        self.why = why
        self.headers = headers or {}


def shown(value: object, limit: int = 80) -> str:
    """A request's value as it may appear in a log line: one line, printable, short."""
    return ascii(str(value)[:limit])


def answer(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    return PlainTextResponse(text + "\n", status_code=status,
                             headers={"Cache-Control": "no-store", **(headers or {})})


def endpoint(source: str, handler: Handler) -> Handler:
    """`handler` with every `Refused` turned into its status and one warning line."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except Refused as refused:
            if refused.status != 404:  # an endpoint that is off: scanners, not news
                log.warning("webhook %s: %d, %s", source, refused.status, refused.why)
            return answer(refused.status, refused.why, refused.headers)
        except (NewsletterError, sqlite3.Error) as err:  # the ledger, not the request
            log.warning("webhook %s: 503, the ledger cannot be read or written: %s", source,
                        str(err).splitlines()[0] if str(err) else type(err).__name__)
            return answer(503, "cannot take events just now; send them again later")
        except (ValueError, TypeError, LookupError, RecursionError) as err:
            # Reading something odd that the models let through: the request's doing.
            log.warning("webhook %s: 400, could not be read (%s)", source,
                        type(err).__name__)
            return answer(400, "could not be read")

    return run


async def read_body(request: Request, limit: int = MAX_BODY,
                    seconds: float | None = None) -> bytes:
    """The request body, refused (413) past `limit` bytes however it is sent, (408) when
    it takes over `seconds` (default `BODY_SECONDS`), (400) when the client leaves."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise Refused(413, f"body over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(seconds or BODY_SECONDS):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise Refused(413, f"body over {limit} bytes")
                chunks.append(chunk)
    except ClientDisconnect:
        raise Refused(400, "the client left before the body ended") from None
    except TimeoutError:
        raise Refused(408, f"the body took over {seconds or BODY_SECONDS:g} s to arrive"
                      ) from None
    return b"".join(chunks)


def parse(model: type[M] | TypeAdapter[M], data: bytes | object, what: str) -> M:
    """`data` (JSON bytes, or what JSON gave) as `model`, or a 400 naming `what`."""
    adapter = model if isinstance(model, TypeAdapter) else TypeAdapter(model)
    try:
        if isinstance(data, bytes | str):
            return adapter.validate_json(data)
        return adapter.validate_python(data)
    except ValidationError as err:
        errors = err.errors()
        where = ".".join(str(p) for p in errors[0]["loc"]) if errors else ""
        kind = errors[0]["type"] if errors else "invalid"
        raise Refused(400, f"not {what} ({where or 'body'}: {kind})") from None
    except (ValueError, RecursionError):
        raise Refused(400, f"not {what}") from None


def check_age(timestamp: str, max_age: int, now: float | None = None) -> None:
    """Refuse (403) a signed timestamp (Unix seconds) outside `max_age` of now: a replay
    window, either way (a sender's clock may run ahead)."""
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        raise Refused(403, "timestamp is not Unix seconds")
    if abs((now if now is not None else time.time()) - int(timestamp)) > max_age:
        raise Refused(403, f"timestamp outside {max_age} seconds of now (old or replayed)")


def event(source: str, event_id: str, kind: EventKind, recipient: str, *,
          message_id: str = "", status: str = "", diagnostic: str = "") -> Event:
    """An authenticated provider event; its id is kept as `source:id` in the ledger."""
    return Event(source=source, event_id=f"{source}:{event_id}", kind=kind,
                 recipient=recipient.strip(), message_id=message_id.strip(),
                 status=status, diagnostic=diagnostic, authenticated=True)


async def take(source: str, ledger: SqliteLedger, bounces: BouncesSection,
               events: Iterable[Event]) -> Response:
    """Apply each event (off the event loop) and answer 200, unmatched ones included: a
    provider would retry those forever. A ledger that cannot be written is a 503, so that
    the provider sends them again later."""
    batch = list(events)
    try:
        results = await run_in_threadpool(_apply_all, ledger, batch, bounces)
    except (NewsletterError, sqlite3.Error) as err:
        log.warning("webhook %s: 503, the ledger cannot be written: %s", source,
                    str(err).splitlines()[0] if str(err) else type(err).__name__)
        return answer(503, "cannot record the events just now; send them again later")
    # The provider's event id, not the address: the log is no list of readers.
    for one, applied in zip(batch, results, strict=True):
        if applied.handled:
            log.info("webhook %s: %s %s: %s %s", source, one.kind, shown(one.event_id),
                     applied.outcome, applied.issue_id)
        else:
            # A delivery of someone else's mail through the same account is routine.
            log.log(logging.INFO if one.kind == "delivered" else logging.WARNING,
                    "webhook %s: %s %s unmatched: %s", source, one.kind,
                    shown(one.event_id), applied.detail)
    return answer(200, f"{len(batch)} event(s) taken")


def _apply_all(ledger: SqliteLedger, events: list[Event], bounces: BouncesSection
               ) -> list[Applied]:
    moment = dt.datetime.now(dt.UTC)
    return [apply_event(ledger, one, bounces, moment) for one in events]


class Loose(BaseModel):
    """A provider's JSON object: unknown fields ignored (providers add some), numbers taken
    where a string is expected (ids and codes come as either)."""

    model_config = {"extra": "ignore", "coerce_numbers_to_str": True, "populate_by_name": True}

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_missing(cls, data: Any) -> Any:
        # Providers send null for "none" (Postmark's MessageID of a manual suppression).
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data
