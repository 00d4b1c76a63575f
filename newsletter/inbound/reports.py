"""The machine-readable parts of a report: RFC 3464 delivery status, RFC 5965 feedback.

flufl.bounce names the addresses that failed; what a failure *means* (the status code, the
server's words, delayed or delivered) is read here from the `message/delivery-status` part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from typing import Literal

from newsletter.inbound.mailtext import clean, content_type, header, param, part_text, walk

Severity = Literal["hard", "soft"]
Outcome = Literal["hard", "soft", "delayed", "delivered"]
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
_DSN_TYPES = ("message/delivery-status", "message/global-delivery-status")
_ARF_TYPES = ("message/feedback-report",)
_MAX_BLOCKS = 200


@dataclass(frozen=True)
class Recipient:
    """One per-recipient block of a DSN."""

    outcome: Outcome
    recipient: str  # Final-Recipient (or Original-Recipient), as the report says
    status: str  # e.g. 5.1.1, or ""
    diagnostic: str  # one line


def severity(status: str) -> Severity:
    """Whether a permanent failure is about the address (hard) or not (soft).

    The rules of the SMTP backend (`newsletter.delivery.smtp._blame`): X.1.x (addressing)
    and X.2.0 / X.2.1 (mailbox unavailable, disabled) are the address; X.2.2 (full) and the
    other mailbox codes are the reader's, but only for now; X.3–X.7 (system, network,
    protocol, content, policy and blocklists) are about the sender. 5.0.0 is what Exim and
    others put on every failure, the address included, so it counts as hard.
    """
    found = _STATUS.fullmatch(status)
    if found is None or found.group(1) != "5":
        return "soft"
    subject, detail = int(found.group(2)), int(found.group(3))
    if subject == 1 or (subject == 2 and detail in (0, 1)) or (subject == 0 and detail == 0):
        return "hard"
    return "soft"


def status_in(text: str) -> str:
    """The first enhanced status code (RFC 3463) in `text`, or ""."""
    found = _STATUS.search(text)
    return ".".join(found.groups()) if found else ""


def is_dsn(msg: Message) -> bool:
    """Whether the mail carries a delivery-status part (RFC 3464, or RFC 6533's global)."""
    return any(content_type(part) in _DSN_TYPES for part in walk(msg))


def is_arf(msg: Message) -> bool:
    """Whether the mail is a feedback report (RFC 5965)."""
    if content_type(msg) == "multipart/report" and param(msg, "report-type") == \
            "feedback-report":
        return True
    return any(content_type(part) in _ARF_TYPES for part in walk(msg))


def _blocks(part: Message) -> list[Message]:
    """The header blocks of a delivery-status (or feedback-report) part.

    The parser splits `message/delivery-status` into blocks itself; a global one, or one
    sent base64-encoded, arrives as a message or as text, and is split here.
    """
    try:
        payload = part.get_payload()
    except Exception:
        return []
    blocks: list[Message] = []
    if isinstance(payload, list):
        for block in payload[:_MAX_BLOCKS]:
            if not isinstance(block, Message):
                continue
            blocks.append(block)
            try:
                rest = block.get_payload()
            except Exception:
                rest = None
            if isinstance(rest, str) and rest.strip():
                blocks.extend(_parse_blocks(rest))
        return blocks
    return _parse_blocks(part_text(part))


def _parse_blocks(text: str) -> list[Message]:
    parser = HeaderParser()
    chunks = re.split(r"\r?\n[ \t]*\r?\n", text.replace("\r\n", "\n"))
    blocks = []
    for chunk in chunks[:_MAX_BLOCKS]:
        if chunk.strip():
            try:
                blocks.append(parser.parsestr(chunk.strip() + "\n"))
            except Exception:
                continue
    return blocks


def _address(value: str) -> str:
    # "rfc822; user@example.com", or an angle address with no type at all.
    _, semi, rest = value.partition(";")
    text = (rest if semi else value).strip().strip("<>").strip()
    return clean(text, 254) if "@" in text else ""


def dsn_recipients(msg: Message) -> list[Recipient]:
    """Every per-recipient block of the mail's delivery-status parts that says something."""
    found: list[Recipient] = []
    for part in walk(msg):
        if content_type(part) not in _DSN_TYPES:
            continue
        for block in _blocks(part):
            action = header(block, "action").strip().lower()
            recipient = _address(header(block, "final-recipient")) or \
                _address(header(block, "original-recipient"))
            if not action and not recipient:
                continue  # the per-message block (Reporting-MTA, Arrival-Date)
            diagnostic = clean(header(block, "diagnostic-code"))
            status = status_in(header(block, "status"))
            # Exim and others put 5.0.0 (or 4.0.0) on every failure; the remote server's
            # own code in the diagnostic says more (a 5.7.1 blocklist is not the address).
            if status[1:] in ("", ".0.0") and status_in(diagnostic):
                detail = status_in(diagnostic)
                if not status or detail[0] == status[0]:
                    status = detail
            found.append(Recipient(_outcome(action, status), recipient, status, diagnostic))
    return found


def _outcome(action: str, status: str) -> Outcome:
    if action.startswith(("fail", "error")):  # opensmtpd says "error"
        return severity(status) if status.startswith("5") else "soft"
    if action.startswith("delayed"):
        return "delayed"
    if action.startswith(("delivered", "relayed", "expanded")):
        return "delivered"
    # No Action (or one of no standard): the status code is all there is.
    if status.startswith("5"):
        return severity(status)
    return "delayed" if status.startswith("4") else "delivered"


@dataclass(frozen=True)
class Feedback:
    """The fields of a feedback report that matter here (most are empty in JMRP's)."""

    feedback_type: str  # lower-case; "" when the report has no such line
    recipient: str  # Original-Rcpt-To or Removal-Recipient, if not redacted
    user_agent: str


def feedback(msg: Message) -> Feedback:
    """The feedback-report fields of an ARF mail (empty ones when it has none)."""
    for part in walk(msg):
        if content_type(part) not in _ARF_TYPES:
            continue
        for block in _blocks(part):
            kind = header(block, "feedback-type").strip().lower()
            recipient = _address(header(block, "original-rcpt-to")) or \
                _address(header(block, "removal-recipient"))
            agent = clean(header(block, "user-agent"), 80)
            if kind or recipient or agent:
                return Feedback(clean(kind, 40), recipient, agent)
    return Feedback("", "", "")
