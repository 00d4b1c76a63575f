"""Test keys and the providers' signing, written from their documentation (not from our
code): an SNS signing certificate, SendGrid's ECDSA key, a Mailgun signing key."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

TOPIC = "arn:aws:sns:eu-west-1:123456789012:newsletter-ses"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"
SUBSCRIBE_URL = ("https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription"
                 f"&TopicArn={TOPIC}&Token=2336412f37fb687f5d51e6e2425dacbba")
MAILGUN_KEY = "key-0123456789abcdef0123456789abcdef"
POSTMARK_USER, POSTMARK_PASSWORD = "hooks", "a long postmark password"
SG_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SG_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def self_signed(key: rsa.RSAPrivateKey, name: str = "sns.amazonaws.com") -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Keys:
    sns: rsa.RSAPrivateKey
    sns_cert: Path
    sendgrid: ec.EllipticCurvePrivateKey

    @classmethod
    def make(cls, folder: Path) -> Keys:
        sns = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        path = folder / "sns-signing.pem"
        path.write_bytes(self_signed(sns))
        return cls(sns, path, ec.generate_private_key(ec.SECP256R1()))

    @property
    def sendgrid_public(self) -> str:
        """The key as SendGrid's settings page shows it: base64 DER, no PEM armour."""
        return b64(self.sendgrid.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


# SNS ---------------------------------------------------------------------------------

_SIGNED = {"Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn",
                            "Type")}
_CONFIRM = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")


def sns_sign(message: dict[str, Any], key: rsa.RSAPrivateKey, version: str = "2"
             ) -> dict[str, Any]:
    """`message` signed as SNS does: "Name\\nvalue\\n" per field, SHA1/SHA256withRSA."""
    signed = {"SignatureVersion": version, "SigningCertURL": CERT_URL, **message}
    fields = _SIGNED.get(signed["Type"], _CONFIRM)
    text = "".join(f"{name}\n{signed[name]}\n" for name in fields if name in signed)
    digest = hashes.SHA256() if version == "2" else hashes.SHA1()
    signed["Signature"] = b64(key.sign(text.encode(), padding.PKCS1v15(), digest))
    return signed


def sns_notification(ses: dict[str, Any], key: rsa.RSAPrivateKey, *,
                     message_id: str | None = None, topic: str = TOPIC, version: str = "2",
                     **extra: Any) -> dict[str, Any]:
    return sns_sign({"Type": "Notification", "MessageId": message_id or secrets.token_hex(8),
                     "TopicArn": topic, "Message": json.dumps(ses),
                     "Timestamp": "2026-11-24T08:00:00.000Z", **extra}, key, version)


def sns_confirmation(key: rsa.RSAPrivateKey, subscribe_url: str = SUBSCRIBE_URL
                     ) -> dict[str, Any]:
    return sns_sign({"Type": "SubscriptionConfirmation", "MessageId": "c0nf1rm",
                     "Token": "2336412f37fb687f5d51e6e2425dacbba", "TopicArn": TOPIC,
                     "Message": f"You have chosen to subscribe to the topic {TOPIC}.",
                     "SubscribeURL": subscribe_url,
                     "Timestamp": "2026-11-24T08:00:00.000Z"}, key)


def ses_bounce(email: str, message_id: str, bounce_type: str = "Permanent",
               sub_type: str = "General", feedback: str = "fb-bounce-1") -> dict[str, Any]:
    return {"notificationType": "Bounce",
            "bounce": {"bounceType": bounce_type, "bounceSubType": sub_type,
                       "bouncedRecipients": [{"emailAddress": email, "action": "failed",
                                              "status": "5.1.1",
                                              "diagnosticCode": "smtp; 550 5.1.1 no such user"}],
                       "feedbackId": feedback, "timestamp": "2026-11-24T07:59:00.000Z"},
            "mail": _ses_mail(message_id)}


def ses_complaint(email: str, message_id: str, feedback_type: str = "abuse",
                  feedback: str = "fb-complaint-1") -> dict[str, Any]:
    return {"notificationType": "Complaint",
            "complaint": {"complainedRecipients": [{"emailAddress": email}],
                          "complaintFeedbackType": feedback_type, "feedbackId": feedback,
                          "timestamp": "2026-11-24T09:00:00.000Z"},
            "mail": _ses_mail(message_id)}


def _ses_mail(message_id: str) -> dict[str, Any]:
    return {"messageId": "0100018f-ses-own-id-000000", "source": "brief@example.com",
            "headersTruncated": False,
            "headers": [{"name": "From", "value": "brief@example.com"},
                        {"name": "Message-ID", "value": message_id}],
            "commonHeaders": {"messageId": message_id, "subject": "The Test Brief"}}


# Mailgun -----------------------------------------------------------------------------

def mailgun_body(data: dict[str, Any], *, token: str | None = None,
                 timestamp: int | None = None, key: str = MAILGUN_KEY) -> bytes:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    token = token or secrets.token_hex(25)
    signature = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    return json.dumps({"signature": {"timestamp": stamp, "token": token,
                                     "signature": signature},
                       "event-data": data}).encode()


def mailgun_event(event: str, email: str, message_id: str, *, severity: str = "",
                  event_id: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": event_id or secrets.token_urlsafe(16), "event": event, "recipient": email,
        "timestamp": time.time(), "log-level": "error",
        "message": {"headers": {"message-id": message_id.strip("<>"),
                                "to": email, "subject": "The Test Brief"}}}
    if event == "failed":
        data.update(severity=severity, reason="generic", **{"delivery-status": {
            "code": 550 if severity == "permanent" else 452, "enhanced-code": "5.1.1"
            if severity == "permanent" else "4.2.2", "message": "mailbox says no"}})
    return data


# SendGrid ----------------------------------------------------------------------------

def sendgrid_headers(key: ec.EllipticCurvePrivateKey, body: bytes,
                     timestamp: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {SG_SIGNATURE: b64(signature), SG_TIMESTAMP: stamp,
            "Content-Type": "application/json"}


def postmark_auth(user: str = POSTMARK_USER, password: str = POSTMARK_PASSWORD
                  ) -> dict[str, str]:
    return {"Authorization": "Basic " + b64(f"{user}:{password}".encode()),
            "Content-Type": "application/json"}
