"""Amazon SNS messages: their signature, their signing certificate, and the subscription
confirmation (docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html and
…/http-subscription-confirmation-json.html).

- The signature is a base64 RSA signature (PKCS#1 v1.5; SignatureVersion 1: SHA-1,
  2: SHA-256) over "Name\\nvalue\\n" for each field in this order: for a Notification
  Message, MessageId, Subject (when present), Timestamp, TopicArn, Type; for a
  Subscription/UnsubscribeConfirmation Message, MessageId, SubscribeURL, Timestamp, Token,
  TopicArn, Type.
- The certificate is `webhooks.ses_certificate` when set (a pinned or test certificate),
  else fetched once from `SigningCertURL`, which must be exactly
  `https://sns.<region>.amazonaws.com/<name>.pem`: no other scheme, host, port, user, query
  or path. Fetching follows no redirect and verifies TLS, so the key comes from AWS.
- A SubscriptionConfirmation is confirmed by GETting its `SubscribeURL`, only when that is
  https on `sns.<region>.amazonaws.com`, path `/`, `Action=ConfirmSubscription` for the
  signed TopicArn: the message cannot send us anywhere else (no SSRF).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import http.client
import re
import ssl
import threading
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import Field

from newsletter.web.webhooks.common import Loose, Refused

_REGION = r"[a-z]{2}(?:-[a-z]+)+-\d{1,2}"
SNS_HOST = re.compile(rf"sns\.{_REGION}\.amazonaws\.com(?:\.cn)?")
CERT_URL = re.compile(rf"https://sns\.{_REGION}\.amazonaws\.com(?:\.cn)?/[A-Za-z0-9_-]+\.pem")
TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
_NOTIFICATION = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_CONFIRMATION = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn",
                 "Type")
_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
_MAX_FETCH = 64 * 1024
_TIMEOUT = 5.0
_CACHE_SIZE = 32


class FetchError(Exception):
    """A GET that did not give a 200 and its body; `answered`: the server said so (rather
    than the network failing)."""

    def __init__(self, why: str, *, answered: bool = False) -> None:
        super().__init__(why)
        self.answered = answered


Fetch = Callable[[str], bytes]


def https_get(url: str) -> bytes:
    """GET an https URL: TLS verified, no redirect followed, a short timeout, a small cap."""
    parts = urlsplit(url)
    conn = http.client.HTTPSConnection(parts.hostname or "", 443, timeout=_TIMEOUT,
                                       context=ssl.create_default_context())
    try:
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""),
                     headers={"User-Agent": "newsletter-webhooks"})
        response = conn.getresponse()
        if response.status != 200:
            raise FetchError(f"HTTP {response.status}", answered=True)
        data = response.read(_MAX_FETCH + 1)
    except (OSError, http.client.HTTPException) as err:
        raise FetchError(type(err).__name__) from err
    finally:
        conn.close()
    if len(data) > _MAX_FETCH:
        raise FetchError("answer too large", answered=True)
    return data


class SnsMessage(Loose):
    Type: str
    MessageId: str = Field(min_length=1, max_length=200)
    TopicArn: str = Field(min_length=1, max_length=300)
    Message: str
    Timestamp: str = ""
    SignatureVersion: str = ""
    Signature: str = ""
    SigningCertURL: str = ""
    Subject: str | None = None
    SubscribeURL: str = ""
    Token: str = ""


def canonical(msg: SnsMessage) -> bytes:
    """The bytes SNS signed for this message (module docstring)."""
    fields = _NOTIFICATION if msg.Type == "Notification" else _CONFIRMATION
    text = "".join(f"{name}\n{getattr(msg, name)}\n" for name in fields
                   if getattr(msg, name) is not None)
    return text.encode("utf-8", "surrogatepass")


def load_certificate(data: bytes) -> x509.Certificate:
    """A PEM certificate with an RSA key, or ValueError."""
    cert = x509.load_pem_x509_certificate(data)
    if not isinstance(cert.public_key(), rsa.RSAPublicKey):
        raise ValueError("its key is not RSA")
    return cert


class SnsVerifier:
    """Checks SNS signatures; fetched certificates are kept in memory by URL."""

    def __init__(self, pinned: x509.Certificate | None = None, fetch: Fetch = https_get
                 ) -> None:
        self._pinned = pinned
        self._fetch = fetch
        self._cache: dict[str, x509.Certificate] = {}
        self._lock = threading.Lock()

    def verify(self, msg: SnsMessage) -> None:
        """Return if SNS signed `msg`; else raise Refused (403, or 502 when the
        certificate cannot be fetched just now). Blocking: call it off the event loop."""
        algorithm = _HASHES.get(msg.SignatureVersion)
        if algorithm is None:
            raise Refused(403, "SignatureVersion is neither 1 nor 2")
        if not CERT_URL.fullmatch(msg.SigningCertURL):
            raise Refused(403, "SigningCertURL is not https://sns.<region>.amazonaws.com/"
                               "….pem")
        try:
            signature = base64.b64decode(msg.Signature, validate=True)
        except (binascii.Error, ValueError):
            raise Refused(403, "Signature is not base64") from None
        cert = self._certificate(msg.SigningCertURL)
        now = dt.datetime.now(dt.UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise Refused(403, "the signing certificate is not valid now")
        key = cert.public_key()
        assert isinstance(key, rsa.RSAPublicKey)  # load_certificate checked
        try:
            key.verify(signature, canonical(msg), padding.PKCS1v15(), algorithm())
        except (InvalidSignature, ValueError):
            raise Refused(403, "signature does not verify") from None

    def _certificate(self, url: str) -> x509.Certificate:
        if self._pinned is not None:
            return self._pinned
        with self._lock:
            cached = self._cache.get(url)
        if cached is not None:
            return cached
        try:
            cert = load_certificate(self._fetch(url))
        except FetchError as err:
            if err.answered:  # AWS has no such certificate: not a message of theirs
                raise Refused(403, f"no signing certificate at SigningCertURL ({err})") \
                    from None
            raise Refused(502, f"cannot fetch the signing certificate ({err})") from None
        except ValueError:
            raise Refused(403, "SigningCertURL holds no RSA certificate") from None
        with self._lock:
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            self._cache[url] = cert
        return cert


def subscribe_url_ok(url: str, topic_arn: str) -> bool:
    """Whether `url` is SNS's own confirmation URL for this topic (and nothing else)."""
    if not url.isprintable() or any(c.isspace() for c in url):
        return False
    try:
        parts = urlsplit(url)
        query = parse_qs(parts.query, strict_parsing=True)
    except ValueError:
        return False
    return (parts.scheme == "https" and SNS_HOST.fullmatch(parts.netloc) is not None
            and parts.path == "/" and not parts.fragment
            and query.get("Action") == ["ConfirmSubscription"]
            and query.get("TopicArn") == [topic_arn] and len(query.get("Token", [])) == 1)


def confirm(msg: SnsMessage, fetch: Fetch = https_get) -> None:
    """Confirm a (verified) SubscriptionConfirmation by GETting its SubscribeURL; Refused
    403 for a URL that is not SNS's, 502 when the GET fails (SNS sends it again)."""
    if not subscribe_url_ok(msg.SubscribeURL, msg.TopicArn):
        raise Refused(403, "SubscribeURL is not https://sns.<region>.amazonaws.com/"
                           "?Action=ConfirmSubscription for this topic")
    try:
        fetch(msg.SubscribeURL)
    except FetchError as err:
        raise Refused(502, f"could not confirm the subscription ({err}); SNS will send "
                           "the confirmation again") from None
