"""Who a mail is about, from what only we could have made: VERP and unsubscribe tokens.

Anyone can write to the bounce address, and anything a report *says* about its recipient
(Final-Recipient, a Message-ID) can be typed by anyone; only a token that carries our HMAC
(`newsletter.verp`) or our AES-SIV seal (`newsletter.unsubscribe`) names a reader. A token
made with another secret, or changed by one character, names nobody.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from email.message import Message

from newsletter import unsubscribe, verp
from newsletter.inbound.mailtext import content_type, header_block, header_values, part_text, walk

# Where the mail came back *to*, most trustworthy first (the delivering server's own
# headers before the To that the sender wrote).
RECIPIENT_HEADERS = ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "to")
# The query before `t=` is bounded: unbounded, each of N `/unsubscribe?` in a line scanned
# to its end, and a 256 KB part of them took 40 s.
_LINK = re.compile(r"/unsubscribe\?(?:[^\s\"'<>]{0,300}?&(?:amp;)?)?t=([A-Za-z0-9_-]{16,1024})")
_MAX_CANDIDATES = 50  # checks per mail: each is an HMAC or a decryption


@dataclass(frozen=True)
class Found:
    """A checked token and where it was found."""

    verp: verp.Tagged | None = None
    list_token: tuple[str, str] | None = None
    where: str = ""


@functools.lru_cache(maxsize=8)
def _address_pattern(bounces_address: str) -> re.Pattern[str]:
    local, _, domain = bounces_address.rpartition("@")
    return re.compile(
        rf"(?<![A-Za-z0-9.+_-]){re.escape(local)}\+[A-Za-z2-7]{{33}}@{re.escape(domain)}"
        r"(?![A-Za-z0-9-]|\.[A-Za-z0-9])", re.IGNORECASE)


def _verp_in(text: str, secret: str, bounces_address: str,
             kinds: str = "bu") -> verp.Tagged | None:
    for count, found in enumerate(_address_pattern(bounces_address).finditer(text)):
        if count >= _MAX_CANDIDATES:
            break
        tagged = verp.read_address(secret, bounces_address, found.group(0))
        if tagged is not None and tagged.kind in kinds:
            return tagged
    return None


def recipient_token(msg: Message, secret: str, bounces_address: str | None) -> Found:
    """The checked VERP token of the address the mail was delivered to, if any: the first
    valid one in Delivered-To, X-Original-To, Envelope-To, X-Envelope-To, To."""
    if not bounces_address:
        return Found()
    for name in RECIPIENT_HEADERS:
        for value in header_values(msg, name):
            tagged = _verp_in(value, secret, bounces_address)
            if tagged is not None:
                return Found(verp=tagged, where=name.title())
    return Found()


def sent_to_token_address(msg: Message, bounces_address: str | None) -> bool:
    """Whether a recipient header has the form of a token address (checked or not)."""
    if not bounces_address:
        return False
    pattern = _address_pattern(bounces_address)
    return any(pattern.search(value) for name in RECIPIENT_HEADERS
               for value in header_values(msg, name))


def subject_token(subject: str, secret: str) -> tuple[str, str] | None:
    """The (list, address) of a mailto unsubscribe's subject `unsubscribe TOKEN`, checked.

    An earlier version's `unsubscribe LIST EMAIL` is not signed: it names nobody here.
    """
    request = unsubscribe.read_request(subject[:2000])
    if request is None or request.token is None:
        return None
    return unsubscribe.read_token(secret, request.token)


def _inside_texts(msg: Message) -> list[str]:
    """The text of everything the report carries: its own words, the attached original's
    headers (message/rfc822, text/rfc822-headers) and body, decoded from QP or base64."""
    texts: list[str] = []
    for part in walk(msg):
        kind = content_type(part)
        if part is not msg and kind.startswith("message/"):
            try:
                inner = part.get_payload()
            except Exception:
                inner = None
            if isinstance(inner, list):
                texts.extend(header_block(m) for m in inner if isinstance(m, Message))
        elif not part.is_multipart():
            texts.append(part_text(part))
    return texts


def inside_token(msg: Message, secret: str, bounces_address: str | None, *,
                 return_path_only: bool = False) -> Found:
    """A checked token of ours inside the report: the original's Return-Path or its
    List-Unsubscribe (the mailto's `bounces+u…`, the link's `?t=TOKEN`).

    `return_path_only` (for bounces): only a `bounces+b…` token counts. The unsubscribe
    tokens are in every copy of the message a reader forwards; they may take that reader
    off one list, never make a forged bounce suppress them on every list.
    """
    texts = _inside_texts(msg)
    if bounces_address:
        for text in texts:
            tagged = _verp_in(text, secret, bounces_address, "b" if return_path_only else "bu")
            if tagged is not None:
                return Found(verp=tagged, where="the returned message")
    if return_path_only:
        return Found()
    checked = 0
    for text in texts:
        for found in _LINK.finditer(text):
            checked += 1
            if checked > _MAX_CANDIDATES:
                return Found()
            named = unsubscribe.read_token(secret, found.group(1))
            if named is not None:
                return Found(list_token=named, where="the returned message's unsubscribe link")
    return Found()
