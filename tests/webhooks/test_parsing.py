"""Whatever JSON a signed (or credentialed) request carries, reading it ends in events or a
400, never another exception; a bounce's raw source never breaks the Message-ID lookup."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.web.webhooks import mailgun, postmark, sendgrid, ses
from newsletter.web.webhooks.common import Refused, parse
from newsletter.web.webhooks.sns import SnsMessage

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
keys = st.sampled_from(["event", "Type", "RecordType", "bounce", "mail", "headers", "id",
                        "ID", "recipient", "email", "severity", "bounceType",
                        "bouncedRecipients", "emailAddress", "notificationType", "message",
                        "delivery-status", "Content", "SuppressSending", "smtp-id",
                        "sg_event_id", "complaint", "complainedRecipients", "delivery",
                        "recipients", "commonHeaders", "messageId", "name", "value"])
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(keys | st.text(max_size=5), inner, max_size=6),
                      max_leaves=30)
# Each reader's known values, so that the mapping code is reached, not just the models.
known = st.sampled_from(["failed", "permanent", "temporary", "complained", "bounce",
                         "blocked", "dropped", "Invalid", "Bounce", "Complaint", "Delivery",
                         "Permanent", "HardBounce", "SpamComplaint", "SubscriptionChange",
                         "ManualSuppression", "not-spam", "delivered", "spamreport"])
objects = st.dictionaries(keys, values | known, max_size=10)


def read(provider: str, data: Any) -> list[Any]:
    if provider == "mailgun":
        return mailgun.to_events(parse(mailgun.EventData, data, "x"))
    if provider == "postmark":
        return postmark.to_events(parse(postmark.Record, data, "x"))
    if provider == "sendgrid":
        return sendgrid.to_events(parse(sendgrid._BATCH, data, "x"))
    return ses.to_events(parse(ses.Notification, data, "x"), "sns-id")


@pytest.mark.parametrize("provider", ["mailgun", "postmark", "sendgrid", "ses"])
@settings(max_examples=300, deadline=None)
@given(data=objects | st.lists(objects, max_size=3) | values)
def test_any_json_gives_events_or_a_400(provider: str, data: Any) -> None:
    try:
        found = read(provider, data)
    except Refused as refused:
        assert refused.status == 400
        return
    assert all(e.authenticated and e.event_id.startswith(f"{provider}:") for e in found)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400) | st.builds(
    lambda a, b: f"Content-Type: multipart/mixed; boundary=b\n\n--b\n{a}\n--b\n{b}",
    st.text(max_size=100), st.text(max_size=100)))
def test_any_bounce_source_gives_a_message_id_or_nothing(content: str) -> None:
    assert isinstance(postmark.quoted_message_id(content), str)


def test_a_deeply_nested_bounce_source_is_just_not_used() -> None:
    nested = "".join(f"Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n"
                     for i in range(3000))
    assert postmark.quoted_message_id(nested) == ""


def test_sns_envelope_fields_are_strings_or_a_400() -> None:
    with pytest.raises(Refused) as refused:
        parse(SnsMessage, json.dumps({"Type": "Notification", "MessageId": "m",
                                      "TopicArn": "t", "Message": {"not": "a string"}}
                                     ).encode(), "an SNS message")
    assert refused.value.status == 400
