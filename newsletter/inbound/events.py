"""One normalised event, whatever brought it: the mailbox, SES, Postmark, Mailgun, SendGrid."""

from __future__ import annotations

from dataclasses import dataclass

from newsletter.suppressions import EventKind
from newsletter.verp import Tagged

__all__ = ["Event", "EventKind"]


@dataclass(frozen=True)
class Event:
    """Something that happened to one delivery.

    Attribution, strongest first: `verp` (a checked token of the address the mail came
    back to), `list_token` (a checked unsubscribe token: list and address), then, only for
    an `authenticated` source (a provider's signed webhook), the Message-ID or the address
    the report names. A report that only *says* which reader it is about (the text of a
    bounce, a Message-ID anyone can compute) attributes nothing: anyone can send mail to
    the bounce address.
    """

    source: str  # mailbox | ses | postmark | mailgun | sendgrid
    event_id: str  # unique within the source; the same id again is a replay
    kind: EventKind
    recipient: str = ""  # the address the report names, if any
    message_id: str = ""  # our Message-ID, if the report carries it
    verp: Tagged | None = None
    list_token: tuple[str, str] | None = None  # (list id, address), checked
    status: str = ""  # DSN status, e.g. 5.1.1
    diagnostic: str = ""  # the remote server's words, one line
    authenticated: bool = False
