"""From an event to the ledger: who it is about, whether it is new, what it suppresses.

- hard bounce: suppressed on every list at once (the mailbox does not exist);
- soft bounces: counted per reader, one per issue; `bounces.soft_limit` of them within
  `bounces.soft_days` (and since the reader was last resubscribed) suppress on every list;
  a soft bounce about us or the message (X.3, X.5, X.6, X.7: blocklists, policy, size) is
  kept but not counted;
- complaint: suppressed on every list at once (Gmail and Yahoo count each one against the
  sender: nothing more may reach someone who called it spam), or on the list alone when
  only an unsubscribe link (which forwarded copies carry) names the reader;
- unsubscribed: suppressed on the list the message was for;
- delivered: kept, for the rates in `status`.

Each suppression keeps its evidence: the kind, DSN status, diagnostic, issue, source and
event id, and the time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from newsletter.inbound.events import Event
from newsletter.inbound.settings import BouncesSection
from newsletter.ledger import ALL_LISTS, SqliteLedger
from newsletter.suppressions import Consequence, Reason, StoredEvent

Outcome = Literal["suppressed", "counted", "recorded", "duplicate", "unmatched"]
# Diagnostics are the remote server's text: one line, and not a novel.
_MAX_TEXT = 500


@dataclass(frozen=True)
class Applied:
    outcome: Outcome
    email: str = ""
    list_id: str = ""
    issue_id: str = ""
    reason: str = ""  # the suppression's reason, when the event suppressed someone
    detail: str = ""  # why it was unmatched, or the soft-bounce count

    @property
    def handled(self) -> bool:
        """Whether the event's source may let go of it (move the mail, answer 200)."""
        return self.outcome != "unmatched"


@dataclass(frozen=True)
class _Reader:
    email: str
    list_id: str
    issue_id: str


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_TEXT else flat[:_MAX_TEXT - 1] + "…"


def attribute(ledger: SqliteLedger, event: Event) -> _Reader | str:
    """The reader the event is about, or why it cannot be said."""
    found: tuple[str, str, str] | None = None
    if event.verp is not None:
        found = ledger.delivery_by_key(event.verp.key)
        if found is None:
            return "its token names no delivery in the ledger (another project's, or gone)"
    elif event.list_token is not None:
        list_id, email = event.list_token
        latest = ledger.latest_delivery(email)
        return _Reader(email.lower(), list_id, latest[0] if latest else "")
    elif event.authenticated:
        if event.message_id:
            found = ledger.delivery_by_message_id(event.message_id)
        if found is None and event.recipient:
            found = ledger.latest_delivery(event.recipient)
        if found is None:
            return "it names no delivery of this project (neither its Message-ID nor address)"
    else:
        return "it carries no signed token of this project (no VERP address, no unsubscribe "\
               "token): what a mail says about its recipient is no evidence"
    issue_id, email, _ = found
    return _Reader(email, ledger.list_of(issue_id) or "", issue_id)


def apply_event(ledger: SqliteLedger, event: Event, bounces: BouncesSection,
                now: dt.datetime | None = None) -> Applied:
    """Attribute, record once, and suppress as the policy says (module docstring)."""
    reader = attribute(ledger, event)
    if isinstance(reader, str):
        return Applied("unmatched", detail=reader)
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    stored = StoredEvent(
        event_id=event.event_id[:300], source=event.source, kind=event.kind,
        email=reader.email, list_id=reader.list_id, issue_id=reader.issue_id,
        status=_one_line(event.status)[:16], diagnostic=_one_line(event.diagnostic),
        received=moment.isoformat(timespec="seconds"))
    then = _consequence(ledger, stored, bounces, moment,
                        link_only=event.verp is None and event.list_token is not None)
    new, count, suppressed = ledger.record_event(stored, then)
    if not new:
        return Applied("duplicate", reader.email, reader.list_id, reader.issue_id)
    if suppressed:
        assert then is not None
        return Applied("suppressed", reader.email, reader.list_id, reader.issue_id,
                       then.reason, f"{count} soft bounces" if count else "")
    outcome: Outcome = "counted" if event.kind == "bounce-soft" else "recorded"
    return Applied(outcome, reader.email, reader.list_id, reader.issue_id,
                   detail=f"{count} of {bounces.soft_limit} soft bounces" if count else "")


def _consequence(ledger: SqliteLedger, event: StoredEvent, bounces: BouncesSection,
                 moment: dt.datetime, *, link_only: bool = False) -> Consequence | None:
    reason: Reason
    if event.kind == "bounce-hard":
        reason, list_id = "hard-bounce", ALL_LISTS
    elif event.kind == "bounce-soft":
        reason, list_id = "soft-bounces", ALL_LISTS
    elif event.kind == "complaint":
        # Named only by the unsubscribe link (a JMRP report with the headers stripped): that
        # link is in every copy the reader forwards, so whoever holds one could forge the
        # report; it suppresses on the link's list, not on every list.
        reason, list_id = "complaint", (event.list_id if link_only and event.list_id
                                        else ALL_LISTS)
    elif event.kind == "unsubscribed" and event.list_id:
        reason, list_id = "unsubscribed", event.list_id
    else:
        return None
    evidence = {"kind": event.kind, "status": event.status, "diagnostic": event.diagnostic,
                "issue": event.issue_id, "source": event.source, "event": event.event_id,
                "at": event.received}
    if reason != "soft-bounces":
        return Consequence(list_id, reason, evidence)
    since = (moment - dt.timedelta(days=bounces.soft_days)).isoformat(timespec="seconds")
    lifted = ledger.last_lifted(event.email)
    return Consequence(list_id, reason, evidence, soft_limit=bounces.soft_limit,
                       since=max(since, lifted) if lifted else since)
