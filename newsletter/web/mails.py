"""The mails a sign-up sends one reader: a confirmation, a welcome, or "already subscribed".

- `confirm`: the link that confirms a pending sign-up (double opt-in).
- `welcome`: a list without double opt-in took the reader at once; the preference link.
- `already`: the address is a reader already; the preference link instead of a sign-up.

Each is rendered from `<kind>-mail.txt` and `<kind>-mail.html` (built in, overridable from
`<templates>/web/`) in the list's locale, and built as multipart/alternative (text, then
HTML), utf-8, CRLF, with the reader's name made safe for the To header as in every issue.
It goes out through the configured delivery backend; the file backend writes it to
`outbox/confirmations/<list>/<address>.eml` (the latest one per address).
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Literal

import jinja2

from newsletter.delivery import create_backend
from newsletter.delivery.file import READER_MAILS
from newsletter.dkim import DkimSigner, load_signer
from newsletter.errors import NewsletterError
from newsletter.message import _POLICY, _WIRE, OutgoingMessage, _encoded, _set_mailbox, header_text
from newsletter.settings import Settings
from newsletter.web.pages import Pages

log = logging.getLogger("newsletter.serve")

MailKind = Literal["confirm", "welcome", "already"]

SUBJECTS: dict[MailKind, str] = {
    "confirm": "Please confirm your subscription to %(title)s",
    "welcome": "Welcome to %(title)s",
    "already": "You are already subscribed to %(title)s",
}


@dataclass(frozen=True)
class ReaderMail:
    """One mail to one reader about their sign-up."""

    kind: MailKind
    list_id: str
    list_title: str
    locale: str
    address: str
    name: str  # "" when they gave none
    link: str  # the confirmation link, or the preference page


def build_reader_mail(pages: Pages, settings: Settings, mail: ReaderMail, now: dt.datetime,
                      signer: DkimSigner | None = None) -> OutgoingMessage:
    """The message, ready for a delivery backend."""
    newsletter = settings.newsletter
    context = {"list_title": mail.list_title, "reader_name": mail.name, "link": mail.link,
               "hours": settings.signup.confirm_hours, "newsletter_title": newsletter.title}
    text = pages.render(f"{mail.kind}-mail.txt", mail.locale, **context)
    html = pages.render(f"{mail.kind}-mail.html", mail.locale, **context)
    subject = header_text(pages.gettext(mail.locale, SUBJECTS[mail.kind],
                                        title=mail.list_title))
    domain = newsletter.sender_domain
    # Random: a confirmation is no delivery of an issue, and names nobody.
    msg_id = f"<{mail.kind}.{secrets.token_hex(12)}@{domain}>"

    msg = EmailMessage(policy=_POLICY)
    _set_mailbox(msg, "From", newsletter.sender_name, newsletter.sender_address)
    _set_mailbox(msg, "To", mail.name, mail.address)
    if "=?" in subject:
        msg.set_raw("Subject", _encoded(subject))
    else:
        msg["Subject"] = subject
    msg["Date"] = format_datetime(now.astimezone(dt.UTC))
    msg["Message-ID"] = msg_id
    # RFC 3834: made by a program at someone's request; autoresponders do not answer it.
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(text, cte="quoted-printable")
    msg.add_alternative(html, subtype="html", cte="quoted-printable")
    data = msg.as_bytes(policy=_WIRE)
    return OutgoingMessage(
        list_id=mail.list_id,
        issue_id=f"{mail.list_id}/{READER_MAILS}",
        sender=newsletter.sender_address,
        recipient=mail.address,
        message_id=msg_id,
        subject=subject,
        data=signer.sign(data) if signer else data,
    )


class Mailer:
    """Sends reader mails through the configured backend, one connection a mail."""

    def __init__(self, settings: Settings, pages: Pages) -> None:
        self.settings = settings
        self.pages = pages
        self._signer: DkimSigner | None = None
        self._signer_loaded = False

    def send(self, mail: ReaderMail, now: dt.datetime) -> bool:
        """Whether the backend took the mail; a failure is logged (without the address)."""
        try:
            if not self._signer_loaded:
                # Read on first use: a broken key stops only these mails, not `serve`.
                self._signer = load_signer(self.settings.dkim)
                self._signer_loaded = True
            message = build_reader_mail(self.pages, self.settings, mail, now, self._signer)
            backend = create_backend(self.settings.delivery.backend, self.settings)
            with backend:
                result = backend.send(message)
        except (NewsletterError, OSError, ValueError, jinja2.TemplateError) as err:
            log.warning("%s mail for list %s not sent: %s", mail.kind, mail.list_id,
                        _without(str(err).splitlines()[0] if str(err) else type(err).__name__,
                                 mail.address))
            return False
        if not result.ok:
            log.warning("%s mail for list %s refused: %s", mail.kind, mail.list_id,
                        _without(result.reply.splitlines()[0] if result.reply else result.status,
                                 mail.address))
        return result.ok


def _without(text: str, address: str) -> str:
    """`text` (a server's reply, say) with the reader's address left out: no log names
    a reader."""
    lowered = text.lower()
    needle = address.lower()
    while needle and needle in lowered:
        at = lowered.index(needle)
        text = f"{text[:at]}<reader>{text[at + len(needle):]}"
        lowered = text.lower()
    return text[:300]
