"""Per-issue message template: everything shared by all subscribers is encoded once.

Building a message with `EmailMessage` costs milliseconds, most of it in pure-Python
quoted-printable encoding of a body that is the same for every reader. Here the bodies are
encoded once per issue, cut at the personal fields (`render.PersonalTemplate`): each literal
piece is quoted-printable on its own and ends with a soft line break, so a subscriber's
value, encoded on its own line, can be spliced in without touching the rest. Soft breaks
vanish when decoding, so the decoded text and HTML equal the reference builder's
(`message.build_message`); `tests/test_fastmime.py` checks that property on random input.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import html
import re
from email.utils import format_datetime

from newsletter.dkim import DkimSigner
from newsletter.message import (
    OutgoingMessage,
    envelope,
    header_text,
    list_unsubscribe,
    message_id,
    personal_fields,
    subject_of,
)
from newsletter.models import Subscriber
from newsletter.render import PersonalFields, PersonalTemplate, RenderedIssue
from newsletter.settings import NewsletterSection

CRLF = b"\r\n"
QP_LINE = 76
# Words of RFC 5322 atext, single spaces between: a display name that needs no quoting.
_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
# RFC 5322 §2.1.1: lines SHOULD stay within 78 characters and MUST within 998. A word longer
# than this cannot be folded onto a line of 78, so text with one is RFC 2047-encoded.
_LONGEST_WORD = 76
_LINE = 78
_TOKENS = re.compile(r" *[^ ]+| +$")  # each word with the spaces before it
_SOFT_BREAK = b"=\r\n"
# 45 bytes of UTF-8 make 60 base64 characters: with `=?utf-8?b?` and `?=`, 72 per word.
_WORD_BYTES = 45


class MessageTemplate:
    """Builds each subscriber's copy of one rendered issue in microseconds."""

    def __init__(self, rendered: RenderedIssue, newsletter: NewsletterSection,
                 now: dt.datetime, *, test: bool = False,
                 signer: DkimSigner | None = None, secret: str | None = None,
                 bounces: str | None = None) -> None:
        self.rendered = rendered
        self.bounces = bounces
        self.signer = signer
        self.secret = secret
        self.newsletter = newsletter
        self.test = test
        issue = rendered.issue
        self.subject = subject_of(rendered, test=test)
        self._domain = newsletter.sender_domain
        boundary = "=_nl_" + hashlib.sha256(f"{issue.id}{self.subject}".encode()).hexdigest()[:24]
        self._head = "".join([
            "From: ", mailbox(newsletter.sender_name, newsletter.sender_address), "\r\n",
        ]).encode("ascii")
        self._middle = "".join([
            "Subject: ", unstructured(self.subject), "\r\n",
            "Date: ", format_datetime(now.astimezone(dt.UTC)), "\r\n",
        ]).encode("ascii")
        self._tail = "".join([
            "List-Id: ", mailbox(issue.list_title, f"{issue.list_id}.{self._domain}"), "\r\n",
        ]).encode("ascii")
        self._mime = (
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
            "MIME-Version: 1.0\r\n"
            f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n'
            "\r\n"
            f"--{boundary}\r\n"
            'Content-Type: text/plain; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: quoted-printable\r\n"
            "\r\n"
        ).encode("ascii")
        self._between = (
            f"\r\n--{boundary}\r\n"
            'Content-Type: text/html; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: quoted-printable\r\n"
            "\r\n"
        ).encode("ascii")
        self._end = f"\r\n--{boundary}--\r\n".encode("ascii")
        self._text = _EncodedPart(rendered.text)
        self._html = _EncodedPart(rendered.html)

    def build(self, subscriber: Subscriber) -> OutgoingMessage:
        """One subscriber's message, byte for byte ready for SMTP."""
        issue = self.rendered.issue
        personal = personal_fields(self.newsletter, issue.list_id, subscriber, self.secret)
        msg_id = message_id(issue.id, subscriber.email, self._domain, test=self.test)
        back = envelope(self.newsletter, self.bounces, self.secret, issue.id,
                        subscriber.email, test=self.test)
        data = b"".join([
            self._head,
            b"To: ", mailbox(subscriber.name or "", subscriber.email).encode("ascii"), CRLF,
            self._middle,
            b"Message-ID: ", msg_id.encode("ascii"), CRLF,
            self._tail,
            b"List-Unsubscribe: ",
            list_unsubscribe(self.newsletter, issue.list_id, subscriber.email,
                             personal.unsubscribe_url, back.mailto).encode("ascii"), CRLF,
            self._mime,
            self._text.fill(personal),
            self._between,
            self._html.fill(personal),
            self._end,
        ])
        if self.signer is not None:
            data = self.signer.sign(data)
        return OutgoingMessage(
            list_id=issue.list_id, issue_id=issue.id, sender=back.sender,
            recipient=subscriber.email, message_id=msg_id, subject=self.subject, data=data,
            test=self.test)


class _EncodedPart:
    """A `PersonalTemplate` whose literal pieces are already quoted-printable."""

    def __init__(self, template: PersonalTemplate) -> None:
        literals = list(template.literals)
        # Like EmailMessage, end the part with a line break.
        if not literals[-1].endswith("\n"):
            literals[-1] += "\n"
        self._literals = [encode_qp(_lines(piece).encode("utf-8")) for piece in literals]
        self._slots = template.slots
        self._escape = template.escape_html

    def fill(self, personal: PersonalFields) -> bytes:
        out = [self._literals[0]]
        for (name, default), literal in zip(self._slots, self._literals[1:], strict=True):
            value = getattr(personal, name) or default
            if self._escape:
                value = html.escape(value)
            out.append(encode_qp(_lines(value).encode("utf-8")))
            out.append(literal)
        return b"".join(out)


def _lines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def encode_qp(data: bytes) -> bytes:
    """Quoted-printable for a piece of a part, CRLF line ends, lines of at most 76 octets.

    A piece that does not end with a line break ends with a soft one, so whatever follows
    starts on a fresh line and can be encoded on its own.
    """
    if not data:
        return b""
    encoded = binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)
    encoded = encoded.replace(b"\n", CRLF)
    if data.endswith(b"\n"):
        return encoded
    start = encoded.rfind(CRLF) + 2 if CRLF in encoded else 0
    last = encoded[start:]
    if len(last) + 1 > QP_LINE:  # no room for the "=": break the line once more
        cut = QP_LINE - 1
        escape = last.rfind(b"=", max(0, cut - 2), cut)
        if escape != -1:  # never split "=XX"
            cut = escape
        encoded = encoded[:start] + last[:cut] + _SOFT_BREAK + last[cut:]
    return encoded + _SOFT_BREAK


def mailbox(name: str, address: str) -> str:
    """`Name <address>` with the name as is, quoted, or RFC 2047-encoded (ASCII result),
    folded at its spaces to lines of at most 78 characters wherever a line can be that short.

    Control characters and line breaks in the name become spaces (`message.header_text`).
    """
    name = header_text(name)
    if not name:
        return address
    if not _plain(name):
        phrase = encoded_words(name)
    elif _ATOMS.fullmatch(name):
        phrase = name
    else:
        phrase = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if len(phrase) + len(address) + 3 <= _LINE - len("List-Id: "):
        return f"{phrase} <{address}>"  # the usual case, at the cost of one comparison
    if "\r\n" not in phrase:
        phrase = _fold(phrase)  # folding whitespace may stand inside a quoted string too
    last = phrase.rsplit("\n", 1)[-1]
    space = " " if len(last) + len(address) + 3 <= _LINE else "\r\n "
    return f"{phrase}{space}<{address}>"


def unstructured(text: str) -> str:
    """An unstructured header value (Subject): folded ASCII, or RFC 2047 words if needed.

    Control characters and line breaks become spaces (`message.header_text`).
    """
    text = header_text(text)
    return _fold(text) if _plain(text) else encoded_words(text)


def _plain(text: str) -> bool:
    """Whether `text` can travel as it is: printable ASCII, no encoded-word look-alike, and
    no word too long to fold."""
    return text.isascii() and text.isprintable() and "=?" not in text and (
        len(text) <= _LONGEST_WORD or all(len(word) <= _LONGEST_WORD for word in text.split()))


def encoded_words(text: str) -> str:
    """RFC 2047 base64 words of at most 75 characters, never splitting a character."""
    words = []
    chunk = b""
    for char in text:
        encoded = char.encode("utf-8")
        if len(chunk) + len(encoded) > _WORD_BYTES:
            words.append(chunk)
            chunk = b""
        chunk += encoded
    words.append(chunk)
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(w).decode('ascii')}?=" for w in words)


def _fold(text: str, width: int = _LINE - len("Subject: ")) -> str:
    """Fold before spaces so lines stay within `width` (the first) and 78 characters; exact:
    unfolding gives `text` back. Words are at most `_LONGEST_WORD` long (`_plain`)."""
    lines, line = [], ""
    for token in _TOKENS.findall(text):
        if line and token[0] == " " and token.strip() and len(line) + len(token) > width:
            # Fold before the word's last space: a run of spaces ends the line before.
            spaces = len(token) - len(token.lstrip(" "))
            lines.append(line + token[:spaces - 1])
            line, width = token[spaces - 1:], _LINE
        else:
            line += token
    lines.append(line)
    return "\r\n".join(lines)
