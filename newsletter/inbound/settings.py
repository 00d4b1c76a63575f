"""Settings of what comes back: `bounces:` (the mailbox) and `webhooks:` (providers' events).

Secrets (the IMAP password, the webhooks' keys) come only from the environment or `.env`:
`load_settings` refuses them in the YAML file (see `settings.SECRET_KEYS`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from newsletter.addresses import InvalidAddress, normalize_address
from newsletter.settingsbase import _Section


class ImapSection(_Section):
    host: str = "localhost"
    port: int | None = Field(None, ge=1, le=65535)  # default: 993 for ssl, else 143
    security: Literal["ssl", "starttls", "none"] = "ssl"
    username: str | None = None
    password: SecretStr | None = None
    folder: str = "INBOX"
    # Handled mail is moved here (created if missing); without it, it is flagged \Seen
    # and \Flagged and left in `folder` (mail with both is not read again). Nothing is
    # deleted unless `delete_processed` says so (then handled mail is deleted instead).
    processed_folder: str | None = "Processed"
    delete_processed: bool = False
    timeout: float = Field(30, gt=0, le=600)
    # A private CA bundle, for a server with an in-house certificate.
    ca_file: Path | None = None

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.security == "ssl" else 143)


class BouncesSection(_Section):
    # The Return-Path base: each message's envelope sender is `local+TOKEN@domain`.
    # Without it, the envelope sender is the From address, as before.
    address: str | None = None
    imap: ImapSection | None = None
    maildir: Path | None = None
    poll_minutes: int = Field(10, ge=1, le=24 * 60)
    soft_limit: int = Field(3, ge=1, le=100)
    soft_days: int = Field(14, ge=1, le=365)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if not value:
            return None
        try:
            address = normalize_address(value.removeprefix("mailto:"))
        except InvalidAddress as err:
            raise ValueError(f"not a valid address ({err})") from err
        local = address.rpartition("@")[0]
        if "+" in local:
            raise ValueError("must be the mailbox without a '+tag' (the tool adds "
                             "+TOKEN to it), e.g. bounces@bounce.example.com")
        if len(local) > 20:
            # RFC 5321 allows 64 octets of local part; the token takes 34 of them.
            raise ValueError("its local part (before @) must be at most 20 characters, "
                             "since each message adds a 34-character token to it")
        return address

    @model_validator(mode="after")
    def _password_alone_is_no_mailbox(self) -> BouncesSection:
        # NEWSLETTER_BOUNCES__IMAP__PASSWORD on its own (left in .env beside a Maildir)
        # would otherwise make an IMAP mailbox of defaults out of nothing.
        if self.imap is not None and self.imap.model_fields_set <= {"password"}:
            self.imap = None
        return self

    @property
    def source(self) -> str | None:
        """Where bounces are read: "imap", "maildir", or None when neither is set."""
        return "imap" if self.imap else "maildir" if self.maildir else None


class WebhooksSection(_Section):
    # Secrets only from NEWSLETTER_WEBHOOKS__… or .env. An endpoint whose secret is unset
    # answers 404: it is off, not open.
    mailgun_signing_key: SecretStr | None = None
    postmark_username: str | None = None
    postmark_password: SecretStr | None = None
    # The PEM, or the base64 DER key SendGrid's settings page shows.
    sendgrid_public_key: SecretStr | None = None
    # A local SNS signing certificate (PEM): used instead of fetching SigningCertURL
    # (offline tests, a pinned certificate). Without it the certificate is fetched from
    # https://sns.<region>.amazonaws.com/….pem, and cached.
    ses_certificate: Path | None = None
    # Only SNS messages of these topics are taken, and /webhooks/ses is off without them:
    # SNS signs any AWS account's topic, so a valid signature alone proves nothing of ours.
    ses_topic_arns: list[str] = Field(default_factory=list)
    # Events older than this are refused (Mailgun, SendGrid timestamps): a replay window.
    max_age_seconds: int = Field(900, ge=30, le=7 * 24 * 3600)
