"""Per-message addresses that come back to us: the envelope sender and the mailto unsubscribe.

With `bounces.address` set (say `bounces@bounce.example.com`), each message's Return-Path
is `bounces+bTOKEN@bounce.example.com` and its List-Unsubscribe mailto is
`bounces+uTOKEN@…`. TOKEN names one delivery (an issue and a reader) without showing the
address: 10 bytes of the delivery's key (the digest in its Message-ID, which the ledger
keeps) and 10 bytes of HMAC-SHA256 over the kind and the key, in lower-case base32 (mail
servers may lower-case a local part). A bounce is then attributed by what it was sent to,
never guessed from its text, and nobody can forge one for a reader without the secret.

34 characters of token keep `local+TOKEN` under RFC 5321's 64 octets for a local part of
up to 20 characters (the settings refuse a longer one).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

Kind = Literal["b", "u"]  # b: the Return-Path (bounces), u: the mailto unsubscribe
KEY_BYTES = 10
_MAC_BYTES = 10
_TOKEN_CHARS = 1 + (KEY_BYTES + _MAC_BYTES) * 8 // 5  # 33


def delivery_key(issue_id: str, email: str) -> str:
    """The hex key of one delivery: the same digest its Message-ID carries."""
    digest = hashlib.sha256(f"{issue_id}\0{email.lower()}".encode()).hexdigest()
    return digest[:KEY_BYTES * 2]


@functools.lru_cache(maxsize=8)
def _mac_key(secret: str) -> bytes:
    # A key of its own: the unsubscribe links' key must not sign anything else.
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"newsletter/verp-token").derive(secret.encode())


def _mac(secret: str, kind: str, key: bytes) -> bytes:
    return hmac.new(_mac_key(secret), kind.encode() + key, hashlib.sha256).digest()[:_MAC_BYTES]


def token(secret: str, kind: Kind, issue_id: str, email: str) -> str:
    """The token for one delivery and one use."""
    key = bytes.fromhex(delivery_key(issue_id, email))
    raw = base64.b32encode(key + _mac(secret, kind, key)).decode("ascii")
    return kind + raw.lower()


def address(base: str, secret: str, kind: Kind, issue_id: str, email: str) -> str:
    """`local+TOKEN@domain` for the `base` address `local@domain`."""
    local, _, domain = base.rpartition("@")
    return f"{local}+{token(secret, kind, issue_id, email)}@{domain}"


@dataclass(frozen=True)
class Tagged:
    """A checked token: what it is for and the delivery key it names."""

    kind: Kind
    key: str  # hex, as `delivery_key` gives it


def read_token(secret: str, candidate: str) -> Tagged | None:
    """The kind and delivery key of a token made with `secret`; None for anything else."""
    candidate = candidate.strip().lower()
    if len(candidate) != _TOKEN_CHARS or candidate[0] not in "bu":
        return None
    try:
        raw = base64.b32decode(candidate[1:].upper())
    except (binascii.Error, ValueError):
        return None
    key, mac = raw[:KEY_BYTES], raw[KEY_BYTES:]
    if not hmac.compare_digest(mac, _mac(secret, candidate[0], key)):
        return None
    return Tagged(candidate[0], key.hex())  # type: ignore[arg-type]


def read_address(secret: str, base: str, candidate: str) -> Tagged | None:
    """The checked token of `candidate` when it is `base` with a `+TOKEN`; None otherwise.

    The local part is compared without case (servers may change it) and the domain too.
    """
    text = candidate.strip().strip("<>").strip()
    local, at, domain = text.rpartition("@")
    base_local, _, base_domain = base.rpartition("@")
    if not at or domain.lower() != base_domain.lower():
        return None
    name, plus, tag = local.partition("+")
    if not plus or name.lower() != base_local.lower():
        return None
    return read_token(secret, tag)
