"""`newsletter serve`: RFC 8058 one-click unsubscribe, the web archive, and a health check.

- `/unsubscribe?t=…` (and the links of earlier versions): see `newsletter.web.unsubscribe`.
- `/archive/<list>/` serves the sent issues' web pages and their index, and nothing else:
  see `newsletter.web.archive`.
- `/subscribe/<list>` and `/confirm?token=…`: sign-up with double opt-in
  (`newsletter.web.signup`); `/preferences?token=…`: a reader's own choices
  (`newsletter.web.preferences`).
- `/healthz` answers `ok`.
- `POST /webhooks/<provider>`: providers' bounce, complaint and unsubscribe events, each
  checked for its signature: see `newsletter.web.webhooks`.

Every answer carries the security headers of `newsletter.web.headers`; the access log
leaves query strings out (`newsletter.web.accesslog`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from newsletter.db import open_ledger
from newsletter.secret import unsubscribe_secret
from newsletter.settings import Settings
from newsletter.web.accesslog import drop_queries_from_access_log
from newsletter.web.archive import archive_routes
from newsletter.web.background import Background
from newsletter.web.context import RosterCache, WebContext
from newsletter.web.headers import SecurityHeaders
from newsletter.web.pages import Pages
from newsletter.web.preferences import preferences_routes
from newsletter.web.signup import signup_routes
from newsletter.web.unsubscribe import unsubscribe_routes
from newsletter.web.webhooks import webhook_routes


def create_app(settings: Settings, *, clock: Callable[[], float] | None = None) -> ASGIApp:
    """The web app for these settings; the secret, subscriber file and ledger are read once.

    With no secret configured, the generated one is used (and made, on a first run), so the
    links of every issue sent from this project work. `clock` (Unix seconds) is for tests.
    The sign-ups' background jobs are `app.app.state.jobs` (tests wait on `.join()`).
    """
    secret = unsubscribe_secret(settings)
    roster = RosterCache(settings)
    ledger = open_ledger(settings)
    try:
        hooks = webhook_routes(settings, ledger)
    except BaseException:
        ledger.close()
        raise
    web = WebContext(settings, secret, ledger,
                     Pages(settings.templates, settings.newsletter.locale), roster, clock)
    titles = web.titles()
    jobs = Background("serve-signups")

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        jobs.close()  # the sign-ups answered are stored and mailed before the ledger closes
        ledger.close()

    drop_queries_from_access_log()
    app = Starlette(routes=[
        *unsubscribe_routes(secret, titles, ledger),
        *signup_routes(web, jobs),
        *preferences_routes(web),
        Route("/healthz", health, methods=["GET"]),
        *archive_routes(settings.delivery.outbox / "archive"),
        *hooks,
    ], lifespan=lifespan)
    # Starlette would answer `/unsubscribe/?t=…` with an absolute redirect built from the
    # Host header: a reader's token handed to whatever host a request names. No URL we
    # publish ends in a slash (the archive redirects its folders itself, relatively).
    app.router.redirect_slashes = False
    app.state.jobs = jobs
    return SecurityHeaders(app)
