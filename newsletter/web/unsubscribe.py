"""`/unsubscribe`: RFC 8058 one-click unsubscribe and its confirmation page.

- `POST /unsubscribe?t=TOKEN` unsubscribes at once: that is what mail clients send for
  `List-Unsubscribe-Post: List-Unsubscribe=One-Click`, with no cookies or login, and what
  the confirmation page's button sends. Idempotent, 200, never a redirect.
- `GET` on the same URL only shows the page with the button: link scanners follow GETs.
- A token that was not made with the secret is 403; a list that is gone is 404.
- Links of earlier versions, `?list=…&email=…&token=…`, are honoured the same way.

The ledger is only touched off the event loop, one indexed lookup or insert at a time, so
a slow disk or a long suppression list never stalls the other requests.
"""

from __future__ import annotations

import html
import sqlite3

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from newsletter.ledger import LedgerError, SqliteLedger
from newsletter.unsubscribe import read_token, valid

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title}</title>
<style>body{{font-family:Georgia,serif;max-width:32rem;margin:4rem auto;padding:0 1rem;
line-height:1.5;color:#1d1d1b}}button{{font-size:1rem;padding:.6rem 1.2rem;cursor:pointer}}
</style></head><body><h1>{title}</h1>{body}</body></html>"""


def unsubscribe_routes(secret: str, titles: dict[str, str], ledger: SqliteLedger
                       ) -> list[Route]:
    """The confirmation page (GET) and the one-click unsubscribe (POST)."""

    def checked(request: Request) -> tuple[str, str, str] | Response:
        query = request.query_params
        if "list" in query and "t" not in query:  # a link of an earlier version
            list_id, email = query["list"], query.get("email", "")
            if list_id not in titles:
                return _not_found()
            named = (list_id, email) if email and valid(secret, list_id, email,
                                                        query.get("token", "")) else None
        else:
            named = read_token(secret, query.get("t", ""))
        if named is None:
            return _page("Link not valid",
                         "<p>This unsubscribe link is not valid. Use the link in your latest "
                         "email, or reply to it and ask to be unsubscribed.</p>", 403)
        list_id, email = named
        if list_id not in titles:
            return _not_found()
        return list_id, email, titles[list_id]

    async def confirm(request: Request) -> Response:
        found = checked(request)
        if isinstance(found, Response):
            return found
        list_id, email, title = found
        try:
            done = await run_in_threadpool(ledger.is_suppressed, list_id, email)
        except (sqlite3.Error, LedgerError):  # LedgerError: PostgreSQL's (db/errors.py)
            return _busy()
        if done:
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
        try:
            await run_in_threadpool(_unsubscribe, ledger, list_id, email)
        except (sqlite3.Error, LedgerError):  # LedgerError: PostgreSQL's (db/errors.py)
            return _busy()
        return _page("Unsubscribed", f"<p>{html.escape(email)} gets no more "
                     f"{html.escape(title)}. Sorry to see you go.</p>")

    return [Route("/unsubscribe", confirm, methods=["GET"]),
            Route("/unsubscribe", unsubscribe, methods=["POST"])]


def _unsubscribe(ledger: SqliteLedger, list_id: str, email: str) -> None:
    # A forgotten address (an old issue's link) is never mailed anyway: a suppression
    # would keep it in clear again, which `subscribers forget` promised it would not.
    if not ledger.is_forgotten(email, list_id):
        ledger.suppress(list_id, email, "unsubscribed", {"via": "one-click link"})


def _not_found() -> HTMLResponse:
    return _page("Not found", "<p>There is no such newsletter here.</p>", 404)


def _busy() -> HTMLResponse:
    return _page("Try again", "<p>This did not work just now. Please try again in a "
                 "minute.</p>", 503)


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    # The page names the reader: no cache may keep it.
    return HTMLResponse(_PAGE.format(title=html.escape(title), body=body), status_code=status,
                        headers={"Cache-Control": "no-store"})
