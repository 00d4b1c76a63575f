"""`newsletter serve`: RFC 8058 one-click unsubscribe, the web archive, and a health check.

- `POST /unsubscribe?list=…&email=…&token=…` unsubscribes at once: that is what mail clients
  send for `List-Unsubscribe-Post: List-Unsubscribe=One-Click`, with no cookies or login,
  and it is what the confirmation page's button sends. Idempotent, 200, never a redirect.
- `GET` on the same URL only shows the page with the button: link scanners follow GETs.
- A token that does not match list and address is 403; an unknown list is 404.
- `/archive/<list>/` serves the sent issues' web pages and their index.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from newsletter.errors import ConfigError
from newsletter.ledger import SqliteLedger
from newsletter.settings import Settings
from newsletter.subscribers import load_roster
from newsletter.unsubscribe import valid

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title}</title>
<style>body{{font-family:Georgia,serif;max-width:32rem;margin:4rem auto;padding:0 1rem;
line-height:1.5;color:#1d1d1b}}button{{font-size:1rem;padding:.6rem 1.2rem;cursor:pointer}}
</style></head><body><h1>{title}</h1>{body}</body></html>"""


def create_app(settings: Settings) -> Starlette:
    """The web app for these settings; the subscriber file and ledger are opened once."""
    if settings.unsubscribe.secret is None:
        raise ConfigError("unsubscribe links are not signed, so they cannot be checked",
                          field="unsubscribe.secret",
                          fix="set NEWSLETTER_UNSUBSCRIBE__SECRET (a long random string) in the "
                              "environment or .env, then send issues with signed links")
    secret = settings.unsubscribe.secret.get_secret_value()
    titles = {lst.id: lst.title for lst in load_roster(settings.subscribers).lists.values()}
    ledger = SqliteLedger(settings.ledger)

    def checked(request: Request) -> tuple[str, str, str] | Response:
        list_id = request.query_params.get("list", "")
        email = request.query_params.get("email", "")
        if list_id not in titles:
            return _page("Not found", "<p>There is no such newsletter here.</p>", 404)
        if not email or not valid(secret, list_id, email, request.query_params.get("token", "")):
            return _page("Link not valid",
                         "<p>This unsubscribe link is not valid. Use the link in your latest "
                         "email, or reply to it and ask to be unsubscribed.</p>", 403)
        return list_id, email, titles[list_id]

    async def confirm(request: Request) -> Response:
        found = checked(request)
        if isinstance(found, Response):
            return found
        list_id, email, title = found
        if email.lower() in ledger.suppressed(list_id):
            return _page("Unsubscribed", f"<p>{html.escape(email)} gets no more "
                         f"{html.escape(title)}.</p>")
        # Relative, so it works behind a reverse proxy that mounts us under a path.
        action = html.escape(f"?{request.url.query}", quote=True)
        return _page(f"Unsubscribe from {title}?",
                     f"<p>Stop sending {html.escape(title)} to {html.escape(email)}?</p>"
                     f'<form method="post" action="{action}"><button type="submit">'
                     "Unsubscribe</button></form>")

    async def unsubscribe(request: Request) -> Response:
        found = checked(request)
        if isinstance(found, Response):
            return found
        list_id, email, title = found
        ledger.suppress(list_id, email, "one-click unsubscribe")
        return _page("Unsubscribed", f"<p>{html.escape(email)} gets no more "
                     f"{html.escape(title)}. Sorry to see you go.</p>")

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        ledger.close()

    return Starlette(routes=[
        Route("/unsubscribe", confirm, methods=["GET"]),
        Route("/unsubscribe", unsubscribe, methods=["POST"]),
        Route("/healthz", health, methods=["GET"]),
        Mount("/archive", StaticFiles(directory=settings.delivery.outbox / "archive",
                                      html=True, check_dir=False)),
    ], lifespan=lifespan)


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=html.escape(title), body=body), status_code=status)
