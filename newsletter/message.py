"""Build one subscriber's MIME message from a rendered issue. Pure: the clock is an argument.

`build_message` assembles it with the stdlib's `EmailMessage`: slow (milliseconds a message)
but the reference that `fastmime.MessageTemplate`, used for real sends, is tested against.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr
from urllib.parse import quote

from newsletter import verp
from newsletter.dkim import DkimSigner
from newsletter.models import Subscriber
from newsletter.readers.tokens import preferences_url
from newsletter.render import PersonalFields, RenderedIssue
from newsletter.settings import NewsletterSection
from newsletter.unsubscribe import mailto_subject, unsubscribe_url
from newsletter.verp import delivery_key

# CRLF line ends. The body's quoted-printable lines follow max_line_length: RFC 2045 allows 76.
_POLICY = SMTP.clone(max_line_length=76)
# Headers set with `set_raw` are written exactly as given.
_WIRE = _POLICY.clone(refold_source="none")
# C0 and C1 controls (CR, LF, TAB, NUL, NEL…) and the Unicode line and paragraph separators:
# everything `str.splitlines` breaks at, and nothing a header may carry raw.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# A lone surrogate (a YAML or JSON escape) is no character and cannot be encoded.
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class OutgoingMessage:
    """Bytes ready for the wire (CRLF), with the envelope a backend needs."""

    list_id: str
    issue_id: str
    sender: str
    recipient: str
    message_id: str
    subject: str
    data: bytes
    test: bool = False


def message_id(issue_id: str, email: str, domain: str, *, test: bool = False) -> str:
    """Deterministic Message-ID: the same issue to the same address always gets the same one."""
    digest = delivery_key(issue_id, email)  # what a VERP token names (verp.py)
    label = issue_id.replace("/", ".")
    return f"<{label}.{'test.' if test else ''}{digest}@{domain}>"


@dataclass(frozen=True)
class Envelope:
    """Where a message's replies go back to: its Return-Path and its mailto unsubscribe."""

    sender: str
    mailto: str


def envelope(newsletter: NewsletterSection, bounces: str | None, secret: str | None,
             issue_id: str, email: str, *, test: bool = False) -> Envelope:
    """Without `bounces` (the `bounces.address` setting): the From address and
    `newsletter.unsubscribe_mailto`, as before. With it, per-delivery VERP addresses
    (verp.py) on the bounce domain, so what comes back names the delivery; a test send,
    which the ledger does not keep, gets the bounce mailbox itself."""
    if not bounces or not secret:
        return Envelope(newsletter.sender_address, newsletter.unsubscribe_mailto)
    mailto = verp.address(bounces, secret, "u", issue_id, email)
    if test:
        return Envelope(bounces, mailto)
    return Envelope(verp.address(bounces, secret, "b", issue_id, email), mailto)


def list_unsubscribe(newsletter: NewsletterSection, list_id: str, email: str,
                     url: str, mailto_address: str | None = None) -> str:
    """The List-Unsubscribe value, folded after the https URI: `<https…>,CRLF <mailto…>`.

    The mailto's subject is `unsubscribe TOKEN`, the link's token: not the address (`email`
    is not used), which would travel in every forwarded header and every reply.
    """
    mailto = (f"mailto:{mailto_address or newsletter.unsubscribe_mailto}?subject="
              f"{quote(mailto_subject(list_id, url))}")
    return f"<{url}>,\r\n <{mailto}>"


def header_text(text: str) -> str:
    """`text` fit for a header: each run of control characters or line breaks (from a
    reader's name, an article title, a list title) becomes one space, so none can end the
    header or start another."""
    if text.isprintable():
        return text
    return _SURROGATE.sub("\ufffd", _CONTROLS.sub(" ", text))


def subject_of(rendered: RenderedIssue, *, test: bool = False) -> str:
    return header_text(f"[TEST] {rendered.subject}" if test else rendered.subject)


def personal_fields(newsletter: NewsletterSection, list_id: str, subscriber: Subscriber,
                    secret: str | None = None) -> PersonalFields:
    """What differs per reader; `secret` signs the unsubscribe and preferences links."""
    return PersonalFields(
        email=subscriber.email,
        name=subscriber.name or "",
        unsubscribe_url=unsubscribe_url(newsletter.base_url, list_id, subscriber.email, secret),
        preferences_url=preferences_url(newsletter.base_url, list_id, subscriber.email, secret),
    )


def build_message(
    rendered: RenderedIssue,
    subscriber: Subscriber,
    newsletter: NewsletterSection,
    now: dt.datetime,
    *,
    test: bool = False,
    signer: DkimSigner | None = None,
    secret: str | None = None,
    bounces: str | None = None,
) -> OutgoingMessage:
    """One subscriber's copy: multipart/alternative (text, then HTML), utf-8, CRLF.

    A test send (`test=True`) is marked in the subject and gets its own Message-ID, so it is
    never mistaken for the issue's real delivery.
    """
    issue = rendered.issue
    personal = personal_fields(newsletter, issue.list_id, subscriber, secret)
    domain = newsletter.sender_domain
    subject = subject_of(rendered, test=test)
    msg_id = message_id(issue.id, subscriber.email, domain, test=test)
    back = envelope(newsletter, bounces, secret, issue.id, subscriber.email, test=test)

    msg = EmailMessage(policy=_POLICY)
    _set_mailbox(msg, "From", newsletter.sender_name, newsletter.sender_address)
    _set_mailbox(msg, "To", subscriber.name or "", subscriber.email)
    if "=?" in subject:
        msg.set_raw("Subject", _encoded(subject))
    else:
        msg["Subject"] = subject
    msg["Date"] = format_datetime(now.astimezone(dt.UTC))
    msg["Message-ID"] = msg_id
    _set_mailbox(msg, "List-Id", issue.list_title, f"{issue.list_id}.{domain}")
    # Set raw and pre-folded: the policy would turn a URL longer than 78 characters into
    # RFC 2047 encoded-words, which mail clients do not decode in this header.
    msg.set_raw("List-Unsubscribe", list_unsubscribe(newsletter, issue.list_id,
                                                     subscriber.email,
                                                     personal.unsubscribe_url,
                                                     back.mailto))
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(rendered.text.fill(personal), cte="quoted-printable")
    msg.add_alternative(rendered.html.fill(personal), subtype="html", cte="quoted-printable")
    data = msg.as_bytes(policy=_WIRE)
    return OutgoingMessage(
        list_id=issue.list_id,
        issue_id=issue.id,
        sender=back.sender,
        recipient=subscriber.email,
        message_id=msg_id,
        subject=subject,
        data=signer.sign(data) if signer else data,
        test=test,
    )


def _set_mailbox(msg: EmailMessage, header: str, name: str, address: str) -> None:
    """`Name <address>`; a name holding an encoded-word look-alike ("=?utf-8?b?…?=") is
    encoded itself, as the stdlib would write it raw and readers would decode it."""
    name = header_text(name)
    if "=?" in name:
        msg.set_raw(header, f"{_encoded(name)} <{address}>")
    elif header == "List-Id":
        msg[header] = formataddr((name, address))
    else:
        msg[header] = Address(name, addr_spec=address)


def _encoded(text: str) -> str:
    """`text` as RFC 2047 encoded-words, folded (lines of at most 76 characters)."""
    return Header(text, "utf-8", header_name="Subject").encode(linesep="\r\n")
