"""MIME messages: structure, headers, encodings, line lengths, deterministic ids."""

from __future__ import annotations

import datetime as dt
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.utils import parseaddr

import pytest

from newsletter.message import build_message, message_id
from newsletter.models import Subscriber
from newsletter.render import Renderer
from newsletter.settings import NewsletterSection
from tests.conftest import REPO
from tests.test_render import ISSUE

NEWSLETTER = NewsletterSection(title="The Brief", sender="Die Frühpost <brief@example.com>",
                               base_url="https://example.com")
NOW = dt.datetime(2026, 11, 24, 7, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def rendered():
    return Renderer(REPO / "templates", NEWSLETTER).render(ISSUE)


def parse(data: bytes):
    return message_from_bytes(data, policy=policy.default)


@pytest.mark.parametrize("name", [
    "Zoë Ångström-Núñez", "山田 太郎", "O'Brien, \"Pat\" <the boss>", "x" * 300,
    ("Ünïcødé " * 40).strip(), "",
])
def test_names_round_trip_and_lines_stay_short(rendered, name: str) -> None:
    email = "someone.with.a.rather.long.local.part+newsletter-tag@sub.example-domain.org"
    out = build_message(rendered, Subscriber(email=email, name=name or None), NEWSLETTER, NOW)
    lines = out.data.split(b"\r\n")
    assert max(len(line) for line in lines) <= 998
    assert b"\n" not in out.data.replace(b"\r\n", b"")  # CRLF only
    head = out.data.split(b"\r\n\r\n", 1)[0]
    head.decode("ascii")  # non-ASCII travels RFC 2047-encoded
    msg = parse(out.data)
    # Decoded with email.header: the headerregistry parser wrongly inserts spaces between
    # adjacent encoded-words of a long display name (RFC 2047 §6.2 says to drop them).
    raw_to = message_from_bytes(out.data, policy=policy.compat32)["To"]
    assert parseaddr(str(make_header(decode_header(raw_to)))) == (name, email)
    assert msg["From"].addresses[0].display_name == "Die Frühpost"
    text, html = msg.get_payload()
    for part in (text, html):
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
        assert max(len(line) for line in part.get_payload().splitlines()) <= 76
    first = " ".join(name.split()[:1])
    assert f"Good morning, {first or 'reader'}." in text.get_content()


def test_headers_and_parts(rendered) -> None:
    out = build_message(rendered, Subscriber(email="ada@example.com", name="Ada"), NEWSLETTER,
                        NOW)
    msg = parse(out.data)
    assert msg["MIME-Version"] == "1.0"
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg["Subject"] == "The Brief: Bridge reopens"
    assert msg["Date"].datetime == NOW
    assert msg["Message-ID"] == out.message_id
    assert msg["List-Id"] == "The Brief <brief.example.com>"
    assert msg["List-Unsubscribe"] == (
        "<https://example.com/unsubscribe?list=brief&email=ada%40example.com>, "
        "<mailto:unsubscribe@example.com?subject=unsubscribe%20brief>")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert (out.sender, out.recipient) == ("brief@example.com", "ada@example.com")


def test_message_id_is_deterministic_and_distinct() -> None:
    a = message_id("brief/2026-11-24", "ada@example.com", "example.com")
    assert a == message_id("brief/2026-11-24", "ADA@example.com", "example.com")
    assert a != message_id("brief/2026-11-25", "ada@example.com", "example.com")
    assert a != message_id("brief/2026-11-24", "bob@example.com", "example.com")
    assert a != message_id("brief/2026-11-24", "ada@example.com", "example.com", test=True)
    assert a.startswith("<brief.2026-11-24.") and a.endswith("@example.com>")
