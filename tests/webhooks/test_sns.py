"""SNS: the subscription confirmation goes only to SNS's own URL, and the signing
certificate only comes from SNS's own host (an injected fetcher records every GET)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette

from newsletter.inbound.settings import BouncesSection, WebhooksSection
from newsletter.ledger import SqliteLedger
from newsletter.web.webhooks.common import Refused
from newsletter.web.webhooks.ses import ses_routes
from newsletter.web.webhooks.sns import FetchError, SnsMessage, SnsVerifier, confirm
from tests.web_server import call, running
from tests.webhooks.signers import (
    CERT_URL,
    SUBSCRIBE_URL,
    TOPIC,
    Keys,
    self_signed,
    ses_bounce,
    sns_confirmation,
    sns_notification,
)


class Recorder:
    """A fetcher that answers from a table (else fails like the network) and keeps URLs."""

    def __init__(self, answers: dict[str, bytes | FetchError] | None = None) -> None:
        self.answers = answers or {}
        self.urls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        found = self.answers.get(url, FetchError("no network in tests"))
        if isinstance(found, FetchError):
            raise found
        return found


def message(data: dict[str, object]) -> SnsMessage:
    return SnsMessage.model_validate(data)


def test_the_confirmation_gets_exactly_the_subscribe_url(keys: Keys) -> None:
    fetch = Recorder({SUBSCRIBE_URL: b"<ConfirmSubscriptionResponse/>"})
    confirm(message(sns_confirmation(keys.sns)), fetch)
    assert fetch.urls == [SUBSCRIBE_URL]


@pytest.mark.parametrize("url", [
    SUBSCRIBE_URL.replace("https://", "http://"),
    SUBSCRIBE_URL.replace("amazonaws.com/", "amazonaws.com.evil.example/"),
    SUBSCRIBE_URL.replace("amazonaws.com/", "amazonaws.com:8443/"),
    SUBSCRIBE_URL.replace("https://", "https://user@"),
    SUBSCRIBE_URL.replace("https://sns.", "https://evil.example\\@sns."),
    SUBSCRIBE_URL.replace("https://sns.eu-west-1.", "https://sns.eu-west-1.evil.example/x."),
    SUBSCRIBE_URL.replace(".amazonaws.com/?", ".amazonaws.com/admin?"),
    SUBSCRIBE_URL.replace("ConfirmSubscription", "Unsubscribe"),
    SUBSCRIBE_URL.replace(TOPIC, "arn:aws:sns:eu-west-1:999999999999:theirs"),
    SUBSCRIBE_URL + "#frag",
    SUBSCRIBE_URL + "\r\nHost: evil.example",
    SUBSCRIBE_URL + " ",
    "https://127.0.0.1/?Action=ConfirmSubscription",
    "https://169.254.169.254/latest/meta-data/",
    "file:///etc/passwd",
    "",
])
def test_a_subscribe_url_that_is_not_snss_is_never_fetched(keys: Keys, url: str) -> None:
    fetch = Recorder()
    with pytest.raises(Refused) as refused:
        confirm(message(sns_confirmation(keys.sns, url)), fetch)
    assert refused.value.status == 403 and fetch.urls == []


def test_a_confirmation_that_cannot_be_fetched_asks_sns_to_send_it_again(keys: Keys) -> None:
    with pytest.raises(Refused) as refused:
        confirm(message(sns_confirmation(keys.sns)), Recorder())
    assert refused.value.status == 502


def test_the_signing_certificate_is_fetched_from_sns_once_and_kept(keys: Keys) -> None:
    fetch = Recorder({CERT_URL: self_signed(keys.sns)})
    verifier = SnsVerifier(fetch=fetch)
    one = message(sns_notification({"notificationType": "Delivery"}, keys.sns))
    two = message(sns_notification({"notificationType": "Delivery"}, keys.sns))
    verifier.verify(one)
    verifier.verify(two)
    assert fetch.urls == [CERT_URL]


@pytest.mark.parametrize("url", [
    "https://sns.eu-west-1.amazonaws.com.evil.example/SimpleNotificationService-1.pem",
    "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem?",
    "https://sns.eu-west-1.amazonaws.com/a/../SimpleNotificationService-1.pem",
    "https://sns.eu-west-1.amazonaws.com/%2e%2e/SimpleNotificationService-1.pem",
    "https://sns.eu-west-1.amazonaws.com:443/SimpleNotificationService-1.pem",
    "https://sns.amazonaws.com/SimpleNotificationService-1.pem",
    "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem\n",
])
def test_a_signing_cert_url_off_sns_is_never_fetched(keys: Keys, url: str) -> None:
    fetch = Recorder({url: self_signed(keys.sns)})
    msg = message(sns_notification({"notificationType": "Delivery"}, keys.sns,
                                   SigningCertURL=url))
    with pytest.raises(Refused) as refused:
        SnsVerifier(fetch=fetch).verify(msg)
    assert refused.value.status == 403 and fetch.urls == []


def test_a_certificate_sns_does_not_have_or_cannot_give_now(keys: Keys) -> None:
    msg = message(sns_notification({"notificationType": "Delivery"}, keys.sns))
    missing = SnsVerifier(fetch=Recorder({CERT_URL: FetchError("HTTP 404", answered=True)}))
    with pytest.raises(Refused) as refused:
        missing.verify(msg)
    assert refused.value.status == 403
    offline = SnsVerifier(fetch=Recorder())
    with pytest.raises(Refused) as refused:
        offline.verify(msg)
    assert refused.value.status == 502
    junk = SnsVerifier(fetch=Recorder({CERT_URL: b"not a certificate"}))
    with pytest.raises(Refused) as refused:
        junk.verify(msg)
    assert refused.value.status == 403


@pytest.fixture
def confirming(keys: Keys, tmp_path: Path) -> Iterator[tuple[str, Recorder]]:
    """The SES endpoint, served for real, with a fetcher that confirms SUBSCRIBE_URL."""
    fetch = Recorder({SUBSCRIBE_URL: b"<ConfirmSubscriptionResponse/>"})
    hooks = WebhooksSection(ses_certificate=keys.sns_cert, ses_topic_arns=[TOPIC])
    ledger = SqliteLedger(tmp_path / "ledger.sqlite3")
    try:
        with running(Starlette(routes=ses_routes(hooks, BouncesSection(), ledger,
                                                 fetch))) as base:
            yield base, fetch
    finally:
        ledger.close()


def post(base: str, body: dict[str, object]) -> tuple[int, str]:
    answer = call(f"{base}/webhooks/ses", "POST", json.dumps(body).encode(),
                  {"Content-Type": "text/plain; charset=UTF-8",
                   "x-amz-sns-message-type": str(body["Type"])})
    return answer.status, answer.body


def test_a_signed_confirmation_is_confirmed_and_a_forged_one_fetches_nothing(
        confirming: tuple[str, Recorder], keys: Keys, tmp_path: Path) -> None:
    base, fetch = confirming
    forged = sns_confirmation(Keys.make(tmp_path).sns)
    assert post(base, forged)[0] == 403 and fetch.urls == []
    assert post(base, sns_confirmation(keys.sns)) == (200, "subscription confirmed\n")
    assert fetch.urls == [SUBSCRIBE_URL]
    elsewhere = sns_confirmation(keys.sns, SUBSCRIBE_URL.replace(".com/", ".com.evil.io/"))
    assert post(base, elsewhere)[0] == 403 and fetch.urls == [SUBSCRIBE_URL]
    # A notification on the confirmed topic about no delivery of ours: taken, nothing else.
    note = sns_notification(ses_bounce("someone@example.net", "<x@y>"), keys.sns)
    assert post(base, note)[0] == 200
