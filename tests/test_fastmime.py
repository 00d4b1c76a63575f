"""The fast per-issue builder against the reference `EmailMessage` builder."""

from __future__ import annotations

import datetime as dt
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import getaddresses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter.fastmime import MessageTemplate, encode_qp
from newsletter.message import build_message
from newsletter.models import Subscriber
from newsletter.render import Renderer
from newsletter.settings import NewsletterSection
from tests.conftest import REPO
from tests.test_render import ISSUE

NOW = dt.datetime(2026, 11, 24, 7, 0, tzinfo=dt.UTC)

names = st.one_of(
    st.just(""),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")),
            max_size=120).map(lambda s: " ".join(s.split())),
    st.sampled_from(['O\'Brien, "Pat" <the boss>', "Zoë Ångström-Núñez", "山田 太郎",
                     "back\\slash", "=?utf-8?q?not-a-word?=", "x" * 200, "é" * 200,
                     "Dr. A. B. Smith", "  spaced   out  "]).map(lambda s: " ".join(s.split())),
)
local = st.text("abcdefghijklmnopqrstuvwxyz0123456789.+_-", min_size=1, max_size=64).filter(
    lambda s: not s.startswith(".") and not s.endswith(".") and ".." not in s)
domain = st.sampled_from(["example.com", "sub.example-domain.org", "xn--mnchen-3ya.de",
                          "a" * 60 + ".example.net"])
base_urls = st.sampled_from(["https://example.com", "https://news.example.org/letters",
                             "https://example.com/a%20b/~x;y=1,z=(2)"])
senders = st.sampled_from(["The Brief <brief@example.com>", "Die Frühpost <post@example.de>",
                           '"Quote, Inc." <q@example.com>'])
titles = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")),
                 min_size=1, max_size=200).map(lambda s: " ".join(s.split()) or "x")


def parse(data: bytes) -> EmailMessage:
    return message_from_bytes(data, policy=policy.default)  # type: ignore[return-value]


def raw_header(data: bytes, name: str) -> str:
    return message_from_bytes(data, policy=policy.compat32)[name].replace("\r\n", "")


def decoded(data: bytes, name: str) -> str:
    # email.header decodes adjacent encoded-words correctly; the headerregistry parser
    # inserts spaces between them.
    return str(make_header(decode_header(raw_header(data, name))))


def mailboxes(data: bytes, name: str) -> list[tuple[str, str]]:
    """Split the address structure first, then decode each display name."""
    return [(str(make_header(decode_header(display))), address)
            for display, address in getaddresses([raw_header(data, name)])]


def assert_equivalent(fast: bytes, reference: bytes, expected: dict[str, object]) -> None:
    """Headers that carry text must decode to exactly what was meant (the stdlib reference
    gets some wrong: it drops a space when it folds adjacent encoded-words, and writes a
    name that looks like an encoded-word raw); the rest must equal the reference's."""
    assert mailboxes(fast, "From") == [expected["From"]]
    assert mailboxes(fast, "To") == [expected["To"]]
    assert mailboxes(fast, "List-Id") == [expected["List-Id"]]
    assert decoded(fast, "Subject") == expected["Subject"]
    for name in ("Date", "Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post",
                 "MIME-Version"):
        assert decoded(fast, name) == decoded(reference, name), name
    fast_msg, ref_msg = parse(fast), parse(reference)
    assert fast_msg.get_content_type() == ref_msg.get_content_type() == "multipart/alternative"
    for fast_part, ref_part in zip(fast_msg.iter_parts(), ref_msg.iter_parts(), strict=True):
        assert fast_part.get_content_type() == ref_part.get_content_type()
        assert fast_part.get_content_charset() == "utf-8"
        assert fast_part.get_content() == ref_part.get_content()
    assert b"\n" not in fast.replace(b"\r\n", b"")
    assert max(len(line) for line in fast.split(b"\r\n")) <= 998
    body = fast.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=names, local_part=local, host=domain, base_url=base_urls, sender=senders,
       title=titles, test=st.booleans())
def test_fast_builder_equals_reference(name: str, local_part: str, host: str, base_url: str,
                                       sender: str, title: str, test: bool) -> None:
    newsletter = NewsletterSection(sender=sender, base_url=base_url)
    issue = ISSUE.model_copy(update={"list_title": title})
    rendered = Renderer(REPO / "templates", newsletter).render(issue)
    subscriber = Subscriber(email=f"{local_part}@{host}", name=name or None)
    fast = MessageTemplate(rendered, newsletter, NOW, test=test).build(subscriber)
    reference = build_message(rendered, subscriber, newsletter, NOW, test=test)
    assert (fast.message_id, fast.recipient, fast.subject) == (
        reference.message_id, reference.recipient, reference.subject)
    assert_equivalent(fast.data, reference.data, {
        "From": (newsletter.sender_name, newsletter.sender_address),
        "To": (subscriber.name or "", subscriber.email),
        "List-Id": (title, f"{issue.list_id}.{newsletter.sender_domain}"),
        "Subject": ("[TEST] " if test else "") + f"{title}: {issue.lead.title}",
    })


@pytest.mark.parametrize("data", [
    b"Good morning, ", b"a" * 75, b"a" * 76, b"a" * 74 + b"\xc3\xa9", b"x" * 200,
    b"line one\nline two", b"trailing space \n", b"tab\t", "é".encode() * 40, b"=" * 30,
])
def test_encoded_pieces_concatenate_to_the_original(data: bytes) -> None:
    import quopri

    encoded = encode_qp(data) + encode_qp(b"Ada") + encode_qp(data)
    assert all(len(line) <= 76 for line in encoded.split(b"\r\n"))
    assert quopri.decodestring(encoded.replace(b"\r\n", b"\n")) == (
        data + b"Ada" + data).replace(b"\r\n", b"\n")
