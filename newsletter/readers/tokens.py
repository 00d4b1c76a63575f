"""The tokens a reader carries instead of a login: preferences links and confirmations.

Both are AES-SIV (RFC 5297), as the unsubscribe links are, under their own key derived from
the project secret and bound to their use, so a token made for one purpose never passes for
another (an unsubscribe token is no preferences token, nor the other way round).

- A preferences token names (list, address) and does not expire: it is in every issue, as
  the unsubscribe link is, and lets the reader do no more than that link does plus choose.
- A confirmation token names (list, address, nonce, time issued). It expires after
  `signup.confirm_hours`, and it confirms only while the nonce is the one stored with the
  pending sign-up: once used, or after the reader left and signed up again, it is dead.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_PREFERENCES = b"newsletter preferences link v1"
_CONFIRM = b"newsletter confirmation link v1"
_MAX_TOKEN = 1024
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]+")


_READER_KEY = b"newsletter/reader-tokens/aes-siv"


@functools.lru_cache(maxsize=16)
def _cipher(secret: str, info: bytes) -> AESSIV:
    # One derivation per secret and use, not per message: sending builds thousands.
    key = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=info).derive(
        secret.encode())
    return AESSIV(key)


def seal(secret: str, info: bytes, context: bytes, fields: tuple[str, ...]) -> str:
    """`fields` sealed (AES-SIV, key derived from `secret` with `info`, bound to
    `context`) as a URL-safe token. Deterministic: the same fields, the same token."""
    sealed = _cipher(secret, info).encrypt("\n".join(fields).encode(), [context])
    return base64.urlsafe_b64encode(sealed).decode("ascii").rstrip("=")


def unseal(secret: str, info: bytes, context: bytes, candidate: str,
           count: int) -> list[str] | None:
    """The `count` fields of a token `seal` made with the same secret, info and context;
    None for anything else (altered, foreign, too long, not URL-safe)."""
    if not isinstance(candidate, str) or len(candidate) > _MAX_TOKEN \
            or not _TOKEN_CHARS.fullmatch(candidate):
        return None
    try:
        sealed = base64.urlsafe_b64decode(candidate + "=" * (-len(candidate) % 4))
        plain = _cipher(secret, info).decrypt(sealed, [context]).decode("utf-8")
    except (binascii.Error, ValueError, InvalidTag):  # UnicodeDecodeError is a ValueError
        return None
    fields = plain.split("\n")
    return fields if len(fields) == count and all(fields) else None


def _seal(secret: str, context: bytes, fields: tuple[str, ...]) -> str:
    return seal(secret, _READER_KEY, context, fields)


def _open(secret: str, context: bytes, candidate: str, count: int) -> list[str] | None:
    return unseal(secret, _READER_KEY, context, candidate, count)


def preferences_token(secret: str, list_id: str, email: str) -> str:
    """The token of `email`'s preference page for `list_id` (the same in every issue)."""
    return _seal(secret, _PREFERENCES, (list_id, email.lower()))


def read_preferences_token(secret: str, candidate: str) -> tuple[str, str] | None:
    """(list id, lower-cased address) of a preferences token; None for anything else."""
    fields = _open(secret, _PREFERENCES, candidate, 2)
    return (fields[0], fields[1]) if fields else None


def preferences_url(base_url: str, list_id: str, email: str, secret: str | None) -> str:
    """The link every message carries to the reader's preference page ("" without a
    secret: unit tests of message building only; the program always has one)."""
    if not secret:
        return ""
    return f"{base_url}/preferences?token={preferences_token(secret, list_id, email)}"


def new_nonce() -> str:
    """What a pending sign-up stores and its confirmation token carries."""
    return secrets.token_urlsafe(12)


@dataclass(frozen=True)
class Confirmation:
    list_id: str
    email: str  # lower-cased
    nonce: str
    issued: int  # Unix time the mail was made


def confirm_token(secret: str, list_id: str, email: str, nonce: str, issued: int) -> str:
    return _seal(secret, _CONFIRM, (list_id, email.lower(), nonce, str(issued)))


def read_confirm_token(secret: str, candidate: str) -> Confirmation | None:
    """What a confirmation token names, unchecked for age and nonce; None if not ours."""
    fields = _open(secret, _CONFIRM, candidate, 4)
    if not fields or not fields[3].isdigit():
        return None
    return Confirmation(fields[0], fields[1], fields[2], int(fields[3]))


def confirm_url(base_url: str, token: str) -> str:
    return f"{base_url}/confirm?token={token}"
