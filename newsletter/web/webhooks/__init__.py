"""Providers' event webhooks on `serve`: `POST /webhooks/ses`, `/webhooks/postmark`,
`/webhooks/mailgun`, `/webhooks/sendgrid`.

Each one checks its provider's signature (or credentials) before it reads anything else,
turns what it got into `inbound.events.Event`s (authenticated: matched by our Message-ID,
else by address) and hands them to `inbound.policy.apply_event`, the one path to the
ledger. Unsigned: 401; forged, expired, replayed: 403 (409 for a Mailgun token seen
before); not configured: 404; over the size cap: 413; not the provider's JSON: 400; an
event about no delivery of ours: 200 (logged), so that the provider lets go of it.
"""

from __future__ import annotations

from starlette.routing import Route

from newsletter.ledger import SqliteLedger
from newsletter.settings import Settings
from newsletter.web.webhooks.mailgun import mailgun_routes
from newsletter.web.webhooks.postmark import postmark_routes
from newsletter.web.webhooks.sendgrid import sendgrid_routes
from newsletter.web.webhooks.ses import ses_routes


def enabled(settings: Settings) -> list[str]:
    """The providers whose endpoint is on with these settings (the others answer 404)."""
    h = settings.webhooks
    on = {"ses": bool(h.ses_topic_arns),
          "postmark": bool(h.postmark_username and h.postmark_password),
          "mailgun": h.mailgun_signing_key is not None,
          "sendgrid": h.sendgrid_public_key is not None}
    return [name for name, yes in on.items() if yes]


def webhook_routes(settings: Settings, ledger: SqliteLedger) -> list[Route]:
    """The four endpoints; a key in the settings that cannot be read is a ConfigError."""
    hooks, bounces = settings.webhooks, settings.bounces
    return [*ses_routes(hooks, bounces, ledger), *postmark_routes(hooks, bounces, ledger),
            *mailgun_routes(hooks, bounces, ledger), *sendgrid_routes(hooks, bounces, ledger)]
