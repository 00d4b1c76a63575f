"""The fast per-issue builder against the reference `EmailMessage` builder."""

from __future__ import annotations

import datetime as dt
import re
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
                           '"Quote, Inc." <q@example.com>',
                           ("The Very Long Sender Name " * 20).strip() + " <long@example.com>",
                           "S" * 1000 + " <s@example.com>"])
titles = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")),
                 min_size=1, max_size=200).map(lambda s: " ".join(s.split()) or "x")
# Words too long for any line, names and titles of absurd length, and each mixed with text.
long_words = st.sampled_from(["x" * 1200, "é" * 700, "山" * 400, "https://example.com/" + "a" * 990,
                              ("word " * 300).strip(), ("Ünïcødé " * 150).strip(),
                              '"' * 500, "=?utf-8?b?" + "Q" * 1000 + "?="])
long_text = st.one_of(long_words, st.tuples(titles, long_words, titles).map(" ".join))
# Line breaks and controls a reader's name or a feed's title may carry: never a new header.
CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
broken = st.tuples(st.sampled_from(["Ada", "Zoë Ångström", "x" * 100]),
                   st.sampled_from(["\r\n", "\n", "\r", "\x00", "\t", "\x85", "\u2028", "\x1b[0m",
                                    "\r\nBcc: evil@example.net\r\n"]),
                   st.sampled_from(["Bcc: evil@example.net", "Lovelace", "", "X-Evil: 1"])
                   ).map("".join)


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
    # Read back as any stdlib user would: the same headers, the same subject and reader.
    assert list(fast_msg.keys()) == ["From", "To", "Subject", "Date", "Message-ID", "List-Id",
                                     "List-Unsubscribe", "List-Unsubscribe-Post",
                                     "MIME-Version", "Content-Type"]
    assert str(fast_msg["Subject"]) == expected["Subject"]
    [to] = fast_msg["To"].addresses
    assert to.addr_spec == expected["To"][1]  # type: ignore[index]
    if not re.search(r"\?=\s+=\?", raw_header(fast, "To")):
        # (The headerregistry parser puts a space between adjacent encoded-words of a long
        # non-ASCII name, against RFC 2047 §6.2; email.header decodes those, above.)
        assert to.display_name == expected["To"][0]  # type: ignore[index]
    body = fast.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.one_of(names, long_text, broken), local_part=local, host=domain,
       base_url=base_urls, sender=senders, title=st.one_of(titles, titles, long_text),
       headline=st.one_of(st.just(ISSUE.lead.title), long_text, broken), test=st.booleans())
def test_fast_builder_equals_reference(name: str, local_part: str, host: str, base_url: str,
                                       sender: str, title: str, headline: str,
                                       test: bool) -> None:
    newsletter = NewsletterSection(sender=sender, base_url=base_url)
    issue = ISSUE.model_copy(update={"list_title": title,
                                     "lead": ISSUE.lead.model_copy(update={"title": headline})})
    rendered = Renderer(REPO / "templates", newsletter).render(issue)
    subscriber = Subscriber(email=f"{local_part}@{host}", name=name or None)
    fast = MessageTemplate(rendered, newsletter, NOW, test=test).build(subscriber)
    reference = build_message(rendered, subscriber, newsletter, NOW, test=test)
    assert (fast.message_id, fast.recipient, fast.subject) == (
        reference.message_id, reference.recipient, reference.subject)
    assert_equivalent(fast.data, reference.data, {
        "From": (newsletter.sender_name, newsletter.sender_address),
        "To": (CONTROLS.sub(" ", subscriber.name or ""), subscriber.email),
        "List-Id": (title, f"{issue.list_id}.{newsletter.sender_domain}"),
        "Subject": CONTROLS.sub(" ", ("[TEST] " if test else "") + f"{title}: {headline}"),
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


HEADERS = ["From", "To", "Subject", "Date", "Message-ID", "List-Id", "List-Unsubscribe",
           "List-Unsubscribe-Post", "MIME-Version", "Content-Type"]


@pytest.mark.parametrize(("name", "headline", "list_title"), [
    ("Ada", "x" * 1200, "The Brief"),  # the 1,201-octet Subject line of issue #10
    ("Ada", ("A very long headline " * 60).strip(), "T" * 900),
    ("x" * 1200, "Bridge reopens", "The Brief"),
    ('Dr "Pat" O\'Brien, ' * 40, "Bridge reopens", ("Ünïcødé " * 120).strip()),
    ("Ada\r\nBcc: evil@example.net", "Bridge\r\nBcc: evil@example.net", "The\nBrief"),
    ("Zoë\x00\x1b[31m\u2028Ångström\x85", "Tab\tand\x7fDEL", "The Brief\r\n"),
])
def test_no_header_line_exceeds_998_octets_and_no_text_adds_a_header(
        name: str, headline: str, list_title: str) -> None:
    newsletter = NewsletterSection(sender="The Brief <brief@example.com>")
    issue = ISSUE.model_copy(update={"list_title": list_title,
                                     "lead": ISSUE.lead.model_copy(update={"title": headline})})
    rendered = Renderer(REPO / "templates", newsletter).render(issue)
    subscriber = Subscriber(email="ada@example.com", name=name)
    data = MessageTemplate(rendered, newsletter, NOW).build(subscriber).data
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    assert head.count("\n") == head.count("\r\n")
    msg = parse(data)
    assert list(msg.keys()) == HEADERS
    clean = " ".join(CONTROLS.sub(" ", f"{list_title}: {headline}").split())
    assert " ".join(str(msg["Subject"]).split()) == clean
    assert " ".join(mailboxes(data, "To")[0][0].split()) == " ".join(CONTROLS.sub(" ", name)
                                                                       .split())
    assert msg["To"].addresses[0].addr_spec == "ada@example.com"
