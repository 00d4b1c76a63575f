"""Unsubscribe links: an opaque token that carries list and address, checked without a database.

A link is `BASE/unsubscribe?t=TOKEN`, where TOKEN is AES-SIV (RFC 5297) over the list and
the address under a key derived from the secret. SIV is deterministic, so the same reader
gets the same bytes in every run, and authenticated, so a changed token is refused. The
link shows no address to forwarded copies, link scanners or spam filters.

Links of earlier versions, `?list=…&email=…&token=HMAC`, stay valid while the secret is
unchanged: `valid` checks them.

The List-Unsubscribe mailto carries the same token in its subject (`unsubscribe TOKEN`),
so a forwarded header shows no address either; `read_request` takes that subject (or the
token, the link, the mailto URI) back apart for `newsletter unsubscribe`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

from newsletter.readers.tokens import seal, unseal

# Binds a token to its use: the same key material could sign something else one day.
_CONTEXT = b"newsletter unsubscribe link v1"
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]+")
# The key of every link ever sent: changing it would break them all.
_KEY = b"newsletter/unsubscribe-token/aes-siv"


def opaque_token(secret: str, list_id: str, email: str) -> str:
    """The URL-safe token that names (`list_id`, `email`) to whoever holds `secret`."""
    return seal(secret, _KEY, _CONTEXT, (list_id, email))


def read_token(secret: str, candidate: str) -> tuple[str, str] | None:
    """The (list id, address) a token made with `secret` names; None for anything else."""
    fields = unseal(secret, _KEY, _CONTEXT, candidate, 2)
    return (fields[0], fields[1]) if fields else None


def token(secret: str, list_id: str, email: str) -> str:
    """The links of earlier versions: 128 bits of HMAC-SHA256 over list and lower-cased
    address, URL-safe."""
    mac = hmac.new(secret.encode(), f"{list_id}\n{email.lower()}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()[:16]).decode().rstrip("=")


def valid(secret: str, list_id: str, email: str, candidate: str) -> bool:
    """Whether `candidate` is the HMAC token of an earlier version's link for list and address.

    Compared as bytes: `hmac.compare_digest` refuses a str that is not ASCII, and the
    candidate is whatever a request carried.
    """
    return hmac.compare_digest(token(secret, list_id, email).encode("ascii"),
                               candidate.encode("utf-8", "replace"))


def unsubscribe_url(base_url: str, list_id: str, email: str, secret: str | None) -> str:
    """The https link that unsubscribes `email` from `list_id`: opaque with a secret.

    The program always passes one (`newsletter.secret.unsubscribe_secret`); without, the
    link is the unsigned form of old versions, which `serve` refuses, kept for unit tests
    of message building.
    """
    if secret:
        return f"{base_url}/unsubscribe?t={opaque_token(secret, list_id, email)}"
    return f"{base_url}/unsubscribe?{urlencode({'list': list_id, 'email': email})}"


def link_token(url: str) -> str | None:
    """The opaque token of an unsubscribe link made by `unsubscribe_url`, if it has one."""
    values = parse_qs(urlsplit(url).query).get("t")
    return values[-1] if values else None


def mailto_subject(list_id: str, url: str) -> str:
    """The subject of the List-Unsubscribe mailto: the link's token, never the address.

    Without a token (links made without a secret, in unit tests only) it names the list.
    """
    return f"unsubscribe {link_token(url) or list_id}"


@dataclass(frozen=True)
class Request:
    """What a publisher pasted into `newsletter unsubscribe`: an address (with the list
    when an earlier version's mailto subject named it) or a token still to be checked."""

    email: str | None = None
    list_id: str | None = None
    token: str | None = None


def read_request(text: str) -> Request | None:
    """Take apart an address, a token, `unsubscribe TOKEN` (the mailto subject, also after
    `Re:`), the mailto URI, the https link, or an earlier version's subject
    `unsubscribe LIST EMAIL`. None when it is none of these."""
    text = text.strip()
    if text[:7].lower() == "mailto:":
        values = parse_qs(urlsplit(text).query).get("subject")
        text = values[-1] if values else ""
    elif text[:8].lower() in ("https://", "http://") or text.startswith("/unsubscribe?"):
        found = link_token(text)
        return Request(token=found) if found else None
    words = text.split()
    while words and words[0].lower() in ("re:", "aw:", "fwd:", "fw:"):
        words.pop(0)
    if words and words[0].lower() == "unsubscribe":
        words.pop(0)
    if len(words) == 2 and "@" in words[1] and "@" not in words[0]:
        return Request(email=words[1], list_id=words[0])
    if len(words) != 1:
        return None
    if "@" in words[0]:
        return Request(email=words[0])
    return Request(token=words[0]) if _TOKEN_CHARS.fullmatch(words[0]) else None
