"""DKIM signatures (RFC 6376, rsa-sha256, relaxed/relaxed), computed with OpenSSL.

dkimpy signs in ~9 ms a message with its own RSA arithmetic, which would cap a send at about
a hundred messages a second; here the RSA step goes through the `cryptography` package
(~1 ms). dkimpy stays the independent verifier in the tests.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from newsletter.errors import ConfigError
from newsletter.settings import DkimSection
from newsletter.settingsbase import control_character
from newsletter.yamlfile import read_regular

# Everything Gmail and RFC 8058 want covered: List-Unsubscribe-Post included.
SIGNED_HEADERS = ("from", "to", "subject", "date", "message-id", "mime-version",
                  "content-type", "list-id", "list-unsubscribe", "list-unsubscribe-post")
_WSP = re.compile(rb"[ \t]+")
_TRAILING_WSP = re.compile(rb"[ \t]+\r\n")
_FOLD = re.compile(rb"\r\n(?=[ \t])")
_KEY_ENV = "NEWSLETTER_DKIM__PRIVATE_KEY"
_WHAT = "the DKIM private key"
KEY_LIMIT = 64 * 1024  # a 4096-bit RSA key in PEM is about 3.3 kB


class DkimSigner:
    """Signs finished messages for one domain and selector."""

    def __init__(self, domain: str, selector: str, key: rsa.RSAPrivateKey) -> None:
        self.domain, self.selector, self.key = domain, selector, key

    def sign(self, message: bytes) -> bytes:
        """`message` (CRLF) with a DKIM-Signature header in front."""
        head, _, body = message.partition(b"\r\n\r\n")
        body_hash = base64.b64encode(hashlib.sha256(canonical_body(body)).digest()).decode()
        fields = _header_fields(head)
        signed = [name for name in SIGNED_HEADERS if name in fields]
        value = (f"v=1; a=rsa-sha256; c=relaxed/relaxed; d={self.domain}; s={self.selector};"
                 f" t={int(time.time())}; h={':'.join(signed)}; bh={body_hash}; b=")
        data = b"".join(_canonical_header(name.encode(), fields[name]) + b"\r\n"
                        for name in signed)
        data += _canonical_header(b"dkim-signature", value.encode())
        signature = self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        b64 = base64.b64encode(signature).decode()
        folded = "\r\n ".join(b64[i:i + 72] for i in range(0, len(b64), 72))
        # Folded for line length; relaxed canonicalization makes the folds irrelevant.
        shown = value.replace("; h=", ";\r\n h=").replace("; bh=", ";\r\n bh=")
        return f"DKIM-Signature: {shown}\r\n {folded}\r\n".encode() + message


def canonical_body(body: bytes) -> bytes:
    """RFC 6376 §3.4.4 relaxed body canonicalization."""
    body = _TRAILING_WSP.sub(b"\r\n", _WSP.sub(b" ", body))
    body = body.rstrip(b"\r\n")
    return body + b"\r\n" if body else b""


def _canonical_header(name: bytes, value: bytes) -> bytes:
    """RFC 6376 §3.4.2 relaxed header canonicalization (without the final CRLF)."""
    value = _WSP.sub(b" ", _FOLD.sub(b"", value)).strip(b" ")
    return name.lower() + b":" + value


def _header_fields(head: bytes) -> dict[str, bytes]:
    """The last occurrence of each header, by lower-cased name (the one DKIM signs)."""
    fields: dict[str, bytes] = {}
    for field in re.split(rb"\r\n(?![ \t])", head):
        name, sep, value = field.partition(b":")
        if sep:
            fields[name.strip().lower().decode("ascii", "replace")] = value
    return fields


def load_signer(dkim: DkimSection) -> DkimSigner | None:
    """The signer the settings ask for, or None; a key that can't be used is a `ConfigError`."""
    if not dkim.domain:
        return None
    if not dkim.selector or dkim.private_key is None:
        raise ConfigError("DKIM needs a domain, a selector and a private key", field="dkim",
                          fix="set dkim.selector and dkim.private_key (a PEM file), or "
                              f"{_KEY_ENV} in the environment; `newsletter dkim keygen` makes one")
    secret = dkim.private_key.get_secret_value()
    if "-----BEGIN" in secret:
        pem, source = secret.encode(), _KEY_ENV
    else:
        path = Path(secret)
        if not _is_existing_path(secret):
            # Most likely (part of) a key pasted without its BEGIN line: never echo it.
            raise ConfigError("the DKIM private key is neither a PEM key nor an existing file",
                              field="dkim.private_key",
                              fix="set it to the path of the file `newsletter dkim keygen` "
                                  f"writes, or put the whole PEM (BEGIN line too) in {_KEY_ENV}")
        # A regular file of a key's size: a FIFO or /dev/zero there would hang the run.
        try:
            pem = read_regular(path, _WHAT, limit=KEY_LIMIT)
        except ConfigError as err:
            why = err.problems[0].what.removeprefix(_WHAT).strip()
            raise ConfigError(f"cannot read the DKIM private key: {why}", file=path,
                              field="dkim.private_key",
                              fix="check the path, or run `newsletter dkim keygen`") from err
        source = str(path)
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise ConfigError("the DKIM private key is not an unencrypted PEM key", file=source,
                          field="dkim.private_key",
                          fix="use the file `newsletter dkim keygen` writes") from err
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 1024:
        raise ConfigError("the DKIM key must be RSA, 1024 bits or more (2048 advised)",
                          file=source, field="dkim.private_key")
    return DkimSigner(dkim.domain, dkim.selector, key)


def _is_existing_path(value: str) -> bool:
    """Whether a private_key value can be shown as a file name in an error.

    Only what names something that is there: a key without its BEGIN line, or one line of
    its base64 (short, maybe with a '/'), names nothing, and must never reach a log.
    """
    if len(value) > 4096 or control_character(value) is not None or not value.strip():
        return False
    try:
        return os.path.lexists(value)
    except (OSError, ValueError):
        return False


def generate_key(path: Path, bits: int = 2048, *, overwrite: bool = False) -> str:
    """Write a new private key to `path` (mode 600, its folder 700 if new); return the
    public key for DNS. An existing file is a `ConfigError` unless `overwrite`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            _write_private(path, pem, overwrite)
        except FileExistsError as err:
            raise ConfigError("a key file is already there", file=path, field="--out",
                              fix="pick another --selector or --out (never reuse a published "
                                  "key), or pass --overwrite to replace it") from err
    except OSError as err:
        raise ConfigError(f"cannot write the key ({err.strerror})", file=path, field="--out",
                          fix="pick a folder you can write to with --out") from err
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(public).decode()


def _write_private(path: Path, data: bytes, overwrite: bool) -> None:
    """Write `data` readable by its owner only from the first byte on (created 0600, then
    chmod whatever the umask). A new key is created exclusively, so a key made meanwhile
    is never replaced; a replacement is written aside and moved into place when complete."""
    target = path.with_name(f".{path.name}.{os.getpid()}.part") if overwrite else path
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if overwrite:
            os.replace(target, path)
    except BaseException:
        target.unlink(missing_ok=True)  # nothing half-written
        raise


def dns_record(domain: str, selector: str, public_key: str) -> str:
    """The TXT record to publish, in zone-file form (long strings split at 255)."""
    value = f"v=DKIM1; k=rsa; p={public_key}"
    chunks = " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))
    return f"{selector}._domainkey.{domain}. IN TXT ( {chunks} )"
