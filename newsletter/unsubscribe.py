"""Signed unsubscribe links: an HMAC of list and address, checked without a database."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import urlencode


def token(secret: str, list_id: str, email: str) -> str:
    """128 bits of HMAC-SHA256 over the list and the lower-cased address, URL-safe."""
    mac = hmac.new(secret.encode(), f"{list_id}\n{email.lower()}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()[:16]).decode().rstrip("=")


def valid(secret: str, list_id: str, email: str, candidate: str) -> bool:
    return hmac.compare_digest(token(secret, list_id, email), candidate)


def unsubscribe_url(base_url: str, list_id: str, email: str, secret: str | None) -> str:
    """The https link that unsubscribes `email` from `list_id` (signed when there is a secret)."""
    params = {"list": list_id, "email": email}
    if secret:
        params["token"] = token(secret, list_id, email)
    return f"{base_url}/unsubscribe?{urlencode(params)}"
