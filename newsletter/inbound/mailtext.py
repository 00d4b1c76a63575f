"""Reading a hostile mail without trusting it: headers, text parts, one-line summaries.

`email.policy.default` parses a header into a structured object when it is read, and some
malformed headers raise then (an address list with a stray quote, a bad encoded word). So
headers are read here from `raw_items()`, as the bytes left them, and decoded by hand,
whatever the policy the mail was parsed with; nothing in this module raises on what a mail
contains.
"""

from __future__ import annotations

import email.header
import re
from collections.abc import Iterator
from email.message import Message

# What any one text part may contribute to the search for tokens and codes: a bounce's
# own words and the original's headers are at the top; the rest is the original's body.
PART_LIMIT = 256 * 1024
# A header value past this is no header a mail system wrote (RFC 5322 lines are at most
# 998 characters; a long To folds over some dozens).
VALUE_LIMIT = 64 * 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069]+")
_SURROGATE = re.compile("[\ud800-\udfff]")
_SANE_ID = re.compile(r"<[!-;=?A-~]{1,200}@[!-;=?A-~]{1,200}>")


def _has_surrogates(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def _unescape(text: str) -> str:
    # The parser keeps a header's undecodable bytes as lone surrogates, which no file,
    # database or terminal takes: they are read back as UTF-8 if they are, else Latin-1.
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def clean(text: str, limit: int = 200) -> str:
    """One printable line of at most `limit` characters: no control or bidi characters,
    no lone surrogates."""
    if _has_surrogates(text):
        text = _unescape(text)
    flat = " ".join(_CONTROL.sub(" ", text).split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def _decode(value: str) -> str:
    # An encoded word (RFC 2047) may name any charset or none that exists; what cannot be
    # decoded stays as it was written.
    if "=?" not in value:
        return value
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except Exception:  # LookupError, UnicodeError, HeaderParseError, and whatever else
        return value


def header_values(msg: Message, name: str) -> list[str]:
    """Every value of header `name`, unfolded and decoded, as written (never parsed)."""
    wanted = name.lower()
    values = []
    try:
        items = list(msg.raw_items())
    except Exception:
        return []
    for key, value in items:
        if isinstance(key, str) and key.lower() == wanted:
            text = (value if isinstance(value, str) else str(value))[:VALUE_LIMIT]
            if _has_surrogates(text):  # raw 8-bit bytes (RFC 6532 allows UTF-8)
                text = _unescape(text)
            values.append(_decode(" ".join(text.split())))
    return values


def header(msg: Message, name: str) -> str:
    """The first value of header `name`, or ""."""
    values = header_values(msg, name)
    return values[0] if values else ""


def has_header(msg: Message, name: str) -> bool:
    wanted = name.lower()
    try:
        return any(isinstance(key, str) and key.lower() == wanted for key, _ in msg.raw_items())
    except Exception:
        return False


def content_type(part: Message) -> str:
    """The part's MIME type, lower-case; read from the raw header, since the parsing
    policy would build a header object on every call (and a part is asked many times)."""
    value = header(part, "content-type").split(";", 1)[0].strip().lower()
    if value.count("/") == 1 and " " not in value:
        return value
    try:
        return part.get_default_type()  # text/plain, or message/rfc822 in a digest
    except Exception:
        return "text/plain"


def param(part: Message, name: str) -> str:
    """A parameter of the part's Content-Type, lower-cased, or ""."""
    pattern = _params.get(name)
    if pattern is None:
        pattern = _params[name] = re.compile(
            rf";\s*{re.escape(name)}\s*=\s*(?:\"([^\"]*)\"|([^\s;]*))", re.IGNORECASE)
    found = pattern.search(header(part, "content-type"))
    return (found.group(1) or found.group(2) or "").strip().lower() if found else ""


_params: dict[str, re.Pattern[str]] = {}


def walk(msg: Message, limit: int = 500) -> Iterator[Message]:
    """The parts of the mail, depth first, at most `limit` of them (a bomb has millions)."""
    try:
        for count, part in enumerate(msg.walk()):
            if count >= limit:
                return
            yield part
    except Exception:
        return


def part_text(part: Message, limit: int = PART_LIMIT) -> str:
    """The decoded text of a non-multipart part; a wrong or unknown charset is read as
    Latin-1 rather than refused (every byte is then some character)."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        return ""
    if not isinstance(payload, bytes):
        return ""
    payload = payload[:limit]
    charset = param(part, "charset") or "utf-8"
    try:
        return payload.decode(charset)
    except (LookupError, UnicodeError, ValueError):
        return payload.decode("latin-1")


def header_block(msg: Message) -> str:
    """A message's headers as text, one per line (for the headers of an attached original)."""
    try:
        items = list(msg.raw_items())
    except Exception:
        return ""
    return "\n".join(f"{key}: {' '.join(str(value).split())}" for key, value in items)


def message_id(msg: Message) -> str:
    """The mail's Message-ID if it is one (`<left@right>`, printable ASCII), else ""."""
    found = _SANE_ID.fullmatch(header(msg, "message-id").strip())
    return found.group(0) if found else ""
