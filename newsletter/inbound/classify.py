"""What one mail in the bounce mailbox is: a bounce, a complaint, an unsubscribe, or noise.

`classify` is pure: bytes in, a `Classification` out, never an exception. Its events go to
`newsletter.inbound.policy.apply_event`, which attributes them by their checked token
only (see `newsletter.inbound.tokens`); an event without one is reported as unmatched.

Order matters. A delivery report (RFC 3464) wins over everything, since Postfix's DSNs
carry `Auto-Submitted: auto-replied`; then a feedback report (RFC 5965, and Microsoft's
JMRP, which may have no feedback fields at all); then a non-standard bounce from a mail
system (Exim's bounces are auto-submitted too); then auto-replies and challenges; then a
mailto unsubscribe (which an unsubscribe button may mark `Auto-Submitted: auto-generated`:
that alone does not make it an auto-reply); then any other bounce flufl.bounce recognises.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import logging
import re
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from typing import Literal

import flufl.bounce

from newsletter.inbound import reports, tokens
from newsletter.inbound.autoreply import auto_reply_reason
from newsletter.inbound.events import Event, EventKind
from newsletter.inbound.mailtext import (
    clean,
    content_type,
    has_header,
    header,
    message_id,
    part_text,
    walk,
)

Kind = Literal["bounce", "complaint", "unsubscribe", "auto-reply", "delayed", "delivered",
               "unknown"]
# A bounce is a few kilobytes, a complaint with its original some hundreds; what lies past
# this is an attachment of the original and is not read (the mail is still classified).
MAX_BYTES = 10 * 1024 * 1024
# Headers take a DSN some kilobytes; a block of thousands of lines is a bomb whose every
# header lookup (here and in flufl.bounce's detectors) would walk the whole list.
MAX_HEADER_BYTES = 256 * 1024
# A report has three parts, a complaint with its original some dozens; flufl.bounce reads
# every line of every part, many times over.
MAX_PARTS = 500
# flufl.bounce's SimpleMatch reads every line of the mail (some 15 µs each): 10 MB of short
# lines took it two minutes, at every fetch while the mail stays in the mailbox. A bounce's
# own words come first, so its detectors see only the start of a larger mail.
DETECTOR_BYTES = 256 * 1024
_COMPLAINT_TYPES = ("abuse", "fraud", "virus", "")
_OPT_OUT_TYPES = ("opt-out", "opt-out-list", "unsubscribe")
_MAIL_SYSTEM = re.compile(r"mailer-?daemon|postmaster|mail delivery|mail-?daemon|"
                          r"mail administrator", re.IGNORECASE)
_JMRP_SUBJECT = re.compile(r"complaint about message from", re.IGNORECASE)
# compat32, not policy.default: every header is read from `raw_items()` here anyway, and
# policy.default builds (and may raise on) a header object at each read, including the
# parser's own reads of Content-Type; flufl.bounce's detectors are written and tested
# against compat32 messages. It makes classification 2-3 times faster (benchmarks/).
_POLICY = email.policy.compat32
# flufl.bounce logs a detector's exception with its traceback before re-raising it; the
# exception is handled here (the mail is reported as unknown), the traceback is noise.
logging.getLogger("flufl.bounce").addHandler(logging.NullHandler())
logging.getLogger("flufl.bounce").propagate = False
_RANK = {"hard": 0, "soft": 1, "delivered": 2, "delayed": 3}


@dataclass(frozen=True)
class Classification:
    """What a mail is, the events it reports (none for auto-reply, delayed, unknown) and
    one line for the report."""

    kind: Kind
    events: tuple[Event, ...]
    summary: str


@dataclass(frozen=True)
class _Mail:
    msg: Message
    ident: str  # the stable part of every event id of this mail
    secret: str
    bounces_address: str | None
    note: str  # said after the summary (e.g. that only the first 10 MB were read)
    head: bytes = b""  # the first DETECTOR_BYTES of a larger mail, for flufl.bounce

    def done(self, kind: Kind, events: list[Event], summary: str) -> Classification:
        return Classification(kind, tuple(events), clean(summary + self.note, 300))

    def event(self, kind: EventKind, suffix: str, found: tokens.Found, *, recipient: str = "",
              status: str = "", diagnostic: str = "") -> Event:
        return Event(source="mailbox", event_id=f"mailbox:{self.ident}:{suffix.lower()}",
                     kind=kind, recipient=recipient, message_id=_original_id(self.msg),
                     verp=found.verp, list_token=found.list_token, status=status,
                     diagnostic=diagnostic)


def classify(raw: bytes, *, secret: str, bounces_address: str | None) -> Classification:
    """Classify one mail of the bounce mailbox (module docstring); never raises."""
    try:
        return _classify(bytes(raw), secret, bounces_address)
    except Exception as err:  # a last guard: one mail must never stop a fetch
        return Classification("unknown", (), f"unknown: could not be read "
                                             f"({clean(type(err).__name__, 60)})")


def _read(raw: bytes) -> Message | str:
    """The parsed mail, or why it is not read (a bomb, not a mail). Only the first
    `MAX_BYTES` are parsed: the report is at the top, the rest is the original's."""
    text = raw[:MAX_BYTES]
    if b"\r" in text:
        # A bare CR ends a header line for the parser, and the rest of the header block
        # would become the body; RFC 5322 allows CR only before LF.
        text = text.replace(b"\r\n", b"\n").replace(b"\r", b" ")
    if text.count(b"\n--") > 4 * MAX_PARTS:  # before the parser builds a part of each
        return f"more than {MAX_PARTS} MIME parts: not read"
    end = text.find(b"\n\n")
    if (end < 0 and len(text) > MAX_HEADER_BYTES) or end > MAX_HEADER_BYTES:
        return f"a header block of {(end if end > 0 else len(text)) // 1024} KB: not read"
    try:
        msg = email.message_from_bytes(text, policy=_POLICY)
    except Exception:
        return "not a mail the email package can read"
    if not list(msg.raw_items()):
        return "no mail headers (not a mail)"
    if sum(1 for _ in walk(msg, MAX_PARTS + 1)) > MAX_PARTS:
        return f"more than {MAX_PARTS} MIME parts: not read"
    return msg


def _classify(raw: bytes, secret: str, bounces_address: str | None) -> Classification:
    if not raw.strip():
        return Classification("unknown", (), "unknown: an empty mail")
    note = ""
    if len(raw) > MAX_BYTES:
        note = f" (a mail of {len(raw) // (1024 * 1024)} MB: only its first " \
               f"{MAX_BYTES // (1024 * 1024)} MB read)"
    msg = _read(raw)
    if isinstance(msg, str):
        return Classification("unknown", (), clean(f"unknown: {msg}{note}", 300))
    # The digest of the mail, for one without a Message-ID: the same whether IMAP gave it
    # with CRLF or a Maildir with LF.
    ident = message_id(msg) or hashlib.sha256(raw.replace(b"\r\n", b"\n")).hexdigest()
    mail = _Mail(msg, ident, secret, bounces_address, note,
                 raw[:DETECTOR_BYTES] if len(raw) > DETECTOR_BYTES else b"")
    to = tokens.recipient_token(msg, secret, bounces_address)
    report = _dsn(mail, to) if reports.is_dsn(msg) else None
    if report is not None:  # a delivery-status part that names nobody: see flufl.bounce
        return report
    if reports.is_arf(msg) or _is_jmrp(msg):
        return _feedback(mail, to)
    system = _from_mail_system(msg)
    if system:
        bounce = _nonstandard(mail, to)
        if bounce is not None:
            return bounce
    reason = auto_reply_reason(msg)
    unsubscribed = _unsubscribe(mail, to)
    if unsubscribed is not None and not auto_reply_reason(msg, generated_ok=True):
        return unsubscribed
    if reason:
        return mail.done("auto-reply", [], f"auto-reply ({reason}): ignored")
    if not system:
        bounce = _nonstandard(mail, to)
        if bounce is not None:
            return bounce
    return mail.done("unknown", [], "unknown: " + _why_unknown(mail, to))


def _attribution(mail: _Mail, to: tokens.Found, *, bounce: bool = False) -> tokens.Found:
    """The report's token: the address it came back to, else one inside the original.

    A bounce is attributed by a Return-Path token (`bounces+b…`) only: the unsubscribe
    address and link are in the List-Unsubscribe of every copy a reader forwards, and are
    worth one list's unsubscribe, not a suppression on every list. (Without a
    `bounces.address` there is no Return-Path token, and the link is all there is.)
    """
    bounce = bounce and bool(mail.bounces_address)
    if to.verp is not None and (to.verp.kind == "b" or not bounce):
        return to
    return tokens.inside_token(mail.msg, mail.secret, mail.bounces_address,
                               return_path_only=bounce)


def _how(found: tokens.Found) -> str:
    if found.verp is None and found.list_token is None:
        return "no token of ours: unmatched"
    return f"by the token in {found.where}"


def _dsn(mail: _Mail, to: tokens.Found) -> Classification | None:
    blocks = reports.dsn_recipients(mail.msg)
    if not blocks:
        return None
    blocks.sort(key=lambda block: _RANK[block.outcome])
    worst = blocks[0].outcome
    if worst == "delayed":
        return mail.done("delayed", [], f"delayed {blocks[0].status or ''} for "
                         f"{_names(blocks)}: ignored (the server is still trying)")
    found = _attribution(mail, to, bounce=worst != "delivered")
    wanted, seen = [], set()
    for block in blocks:  # worst first; a recipient named twice is one event
        if (block.outcome == "delivered") == (worst == "delivered") and \
                block.recipient.lower() not in seen:
            seen.add(block.recipient.lower())
            wanted.append(block)
    if found.verp is not None:
        # A VERP address names one delivery, one reader: one event, the worst news.
        wanted = wanted[:1]
    events = []
    for block in wanted:
        kind: EventKind = "delivered" if block.outcome == "delivered" else \
            "bounce-hard" if block.outcome == "hard" else "bounce-soft"
        events.append(mail.event(kind, block.recipient or kind, found,
                                 recipient=block.recipient, status=block.status,
                                 diagnostic=block.diagnostic))
    first = wanted[0]
    if worst == "delivered":
        return mail.done("delivered", events, f"delivered to {_names(wanted)} ({_how(found)})")
    status = first.status or "without a status"
    return mail.done("bounce", events, f"{first.outcome} bounce {status} for {_names(wanted)} "
                                       f"({_how(found)})")


def _names(blocks: list[reports.Recipient]) -> str:
    first = blocks[0].recipient or "an unnamed recipient"
    return first if len(blocks) == 1 else f"{first} and {len(blocks) - 1} more"


def _nonstandard(mail: _Mail, to: tokens.Found) -> Classification | None:
    """A bounce without a delivery-status part, as flufl.bounce's detectors read it.

    flufl.bounce's temporary failures are warnings ("delayed 24 hours", "will be
    retried"): the mail may still arrive, so they are "delayed", not soft bounces.
    """
    target = _read(mail.head) if mail.head else mail.msg
    if not isinstance(target, Message):
        return None
    if not header(target, "from").strip():
        # flufl.bounce's Yale detector raises IndexError on a mail without a From, and the
        # detectors after it (Postfix, qmail, SimpleMatch…) would never run.
        del target["From"]
        target["From"] = "nobody@invalid"
    try:
        temporary, permanent = flufl.bounce.all_failures(target)
    except Exception:  # a detector tripped over this mail: it is no bounce it knows
        return None
    if permanent:
        own_words = _own_words(mail.msg)
        status = reports.status_in(own_words)
        status = status if status.startswith(("5", "4.2.")) else ""
        # The server's words: the line with the code, else the bounce's subject.
        said = next((line for line in own_words.splitlines() if status and status in line),
                    header(mail.msg, "subject"))
        # A 4.2.x given up on (Exim's "retry timeout exceeded" on a full mailbox) is a
        # soft bounce: the mailbox exists. (qmail's #4.4.1 after days of no answer stays
        # hard: the domain may be gone.)
        outcome = "soft" if status.startswith("4") else \
            reports.severity(status) if status else "hard"
        found = _attribution(mail, to, bounce=True)
        addresses = sorted(clean(a.decode("ascii", "replace"), 254) for a in permanent)
        if found.verp is not None:
            addresses = addresses[:1]
        kind: EventKind = "bounce-hard" if outcome == "hard" else "bounce-soft"
        events = [mail.event(kind, address, found, recipient=address, status=status,
                             diagnostic=clean(said))
                  for address in addresses]
        more = f" and {len(addresses) - 1} more" if len(addresses) > 1 else ""
        return mail.done("bounce", events, f"{outcome} bounce {status or '(non-standard)'} for "
                         f"{addresses[0]}{more} ({_how(found)})")
    if temporary:
        first = sorted(a.decode("ascii", "replace") for a in temporary)[0]
        return mail.done("delayed", [], f"delayed for {clean(first, 254)}: a warning, ignored "
                                        "(the server is still trying)")
    return None


def _own_words(msg: Message) -> str:
    """The bounce's own text: its first text part, not the original it returns."""
    for part in walk(msg):
        if content_type(part).startswith("message/"):
            break
        if content_type(part) == "text/plain":
            return part_text(part, 64 * 1024)
    return ""


def _feedback(mail: _Mail, to: tokens.Found) -> Classification:
    report = reports.feedback(mail.msg)
    kind = report.feedback_type
    agent = f", {report.user_agent}" if report.user_agent else ""
    if kind in _COMPLAINT_TYPES:
        event_kind: EventKind = "complaint"
        what: Kind = "complaint"
        label = f"complaint ({kind or 'no Feedback-Type'}{agent})"
    elif kind in _OPT_OUT_TYPES:
        event_kind, what, label = "unsubscribed", "unsubscribe", f"unsubscribe ({kind} report" \
                                                                 f"{agent})"
    elif kind == "not-spam":
        return mail.done("unknown", [], "unknown: a not-spam feedback report: ignored")
    else:
        return mail.done("unknown", [], f"unknown: a feedback report of type {kind!r}, "
                                        "not a complaint")
    found = _attribution(mail, to)
    event = mail.event(event_kind, event_kind, found, recipient=report.recipient,
                       diagnostic=clean(f"feedback report: {kind or 'no type'}{agent}"))
    about = f" about {report.recipient}" if report.recipient else ""
    return mail.done(what, [event], f"{label}{about} ({_how(found)})")


def _is_jmrp(msg: Message) -> bool:
    """Microsoft's JMRP in its plain form: the original attached, no feedback part."""
    if not _JMRP_SUBJECT.search(header(msg, "subject")) and \
            not has_header(msg, "x-hmxmroriginalrecipient"):
        return False
    return any(content_type(part) == "message/rfc822" for part in walk(msg))


def _from_mail_system(msg: Message) -> bool:
    if has_header(msg, "x-failed-recipients"):
        return True
    return bool(_MAIL_SYSTEM.search(header(msg, "from")))


def _unsubscribe(mail: _Mail, to: tokens.Found) -> Classification | None:
    """A mail to the mailto unsubscribe address (`bounces+u…`), or one whose subject is
    `unsubscribe TOKEN`: whatever else it says, that reader leaves that list."""
    named = tokens.subject_token(header(mail.msg, "subject"), mail.secret)
    if to.verp is not None and to.verp.kind == "u":
        found = tokens.Found(verp=to.verp, list_token=named, where=to.where)
    elif named is not None:
        found = tokens.Found(list_token=named, where="the subject")
    else:
        return None
    event = mail.event("unsubscribed", "unsubscribed", found)
    return mail.done("unsubscribe", [event], f"mailto unsubscribe ({_how(found)})")


def _why_unknown(mail: _Mail, to: tokens.Found) -> str:
    if to.verp is not None:
        return f"sent to our token address (in {to.where}) but not a bounce, complaint or " \
               "unsubscribe"
    if tokens.sent_to_token_address(mail.msg, mail.bounces_address):
        return "sent to a token address whose token is not ours (forged, changed or made " \
               "with another secret)"
    return "not a bounce, complaint or unsubscribe"


def _original_id(msg: Message) -> str:
    """The Message-ID of the original a report returns, if it carries its headers."""
    for part in walk(msg):
        kind = content_type(part)
        if part is msg:
            continue
        if kind in ("message/rfc822", "message/global"):
            try:
                inner = part.get_payload()
            except Exception:
                continue
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                return message_id(inner[0])
        elif kind in ("text/rfc822-headers", "message/rfc822-headers"):
            try:
                return message_id(HeaderParser().parsestr(part_text(part, 64 * 1024)))
            except Exception:
                return ""
    return ""
