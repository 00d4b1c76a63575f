"""What every reader form of `serve` needs: a bounded body, a CSRF check, the client.

- `read_form` takes only `application/x-www-form-urlencoded`, at most `MAX_FORM` bytes and
  `MAX_FIELDS` fields, valid UTF-8: anything else is a `FormRefused` with its 4xx (415 for
  multipart, 413 too big, 400 malformed, 408 too slow). No multipart parser ever runs.
- CSRF: no page of ours relies on a cookie or a login (the token in the URL is the
  credential), so a forged cross-site post gains nothing it could not do alone; still,
  every form of our own pages carries `form_token` (HMAC of its purpose, the page's token
  and the time it was shown), and posts to /confirm and /preferences must carry it and
  must not come from another site (`Sec-Fetch-Site` / `Origin`). /subscribe takes posts
  from the publisher's own site by design (double opt-in is what guards it).
- `client_address`: the peer, or the first untrusted hop of `X-Forwarded-For` when the
  peer is one of `signup.trusted_proxies`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import time
from collections.abc import Sequence
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request

from newsletter.web.webhooks.common import Refused, read_body

MAX_FORM = 16 * 1024
MAX_FIELDS = 64
BODY_SECONDS = 10.0
# A form shown more than this long ago is stale: the reader reloads the page.
FORM_SECONDS = 24 * 3600
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


_REFUSED = {413: "the form is too large", 400: "the form did not arrive whole",
            408: "the form took too long to arrive"}


class FormRefused(Exception):
    """A post we will not read; `status` is its 4xx."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.why = why


class Form:
    """The fields of one post: the last value of a name, or all of a repeated one."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self.pairs = list(pairs)

    def get(self, name: str, default: str = "") -> str:
        values = self.getlist(name)
        return values[-1] if values else default

    def getlist(self, name: str) -> list[str]:
        return [v for k, v in self.pairs if k == name]

    def __contains__(self, name: str) -> bool:
        return any(k == name for k, _ in self.pairs)


async def read_form(request: Request, limit: int = MAX_FORM) -> Form:
    """The urlencoded body of `request`, bounded (see module docstring)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise FormRefused(415, "send the form as application/x-www-form-urlencoded")
    try:
        body = await read_body(request, limit, BODY_SECONDS)
    except Refused as refused:
        raise FormRefused(refused.status, _REFUSED.get(refused.status, refused.why)) from None
    try:
        text = body.decode("ascii")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False,
                          encoding="utf-8", errors="strict", max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise FormRefused(400, "the form could not be read") from None
    return Form(pairs)


@functools.lru_cache(maxsize=8)
def _key(secret: str) -> bytes:
    return hashlib.sha256(b"newsletter form token v1\n" + secret.encode()).digest()


def form_token(secret: str, purpose: str, bound: str, now: float | None = None) -> str:
    """The hidden field of a form we show: `purpose` (e.g. "preferences"), bound to the
    page's own token and the time it was shown."""
    stamp = str(int(now if now is not None else time.time()))
    mac = hmac.new(_key(secret), f"{purpose}\n{bound}\n{stamp}".encode(), hashlib.sha256)
    return f"{stamp}.{base64.urlsafe_b64encode(mac.digest()[:18]).decode()}"


def check_form_token(secret: str, purpose: str, bound: str, candidate: str,
                     now: float | None = None) -> bool:
    stamp, _, _ = candidate.partition(".")
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        return False
    moment = now if now is not None else time.time()
    if not 0 <= moment - int(stamp) <= FORM_SECONDS:
        return False
    expected = form_token(secret, purpose, bound, int(stamp))
    return hmac.compare_digest(expected.encode(), candidate.encode("utf-8", "replace"))


def same_site(request: Request, base_url: str) -> bool:
    """Whether a post comes from our own pages (or from no browser at all: curl, a test).

    Browsers send `Sec-Fetch-Site`; older ones `Origin`. A post from another site is
    refused even with a valid token: a page that embeds a reader's link must not be able
    to make their browser submit it.
    """
    site = request.headers.get("sec-fetch-site", "").lower()
    if site in ("cross-site", "same-site"):
        return False
    origin = request.headers.get("origin")
    if origin is None or site in ("same-origin", "none"):
        return True
    if origin == "null":
        return False
    own = {_origin(base_url), _origin(str(request.base_url))}
    return _origin(origin) in own


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def client_address(request: Request, trusted: Sequence[Network]) -> str:
    """The address a rate limit counts: the peer's, or behind a trusted proxy the last
    address of `X-Forwarded-For` that is not a trusted proxy."""
    peer = request.client.host if request.client else ""
    if not trusted or not _within(peer, trusted):
        return peer
    hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",")]
    for hop in reversed([h for h in hops if h]):
        if not _within(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # a proxy that passes on garbage: count the proxy
    return peer


def _within(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)
