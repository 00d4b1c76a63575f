"""`/confirm?token=…`: the link of a confirmation mail.

- `GET` only shows a "Confirm subscription" button: link scanners and mail filters
  follow GETs, and must not confirm anyone.
- `POST` (from that page: a form token, and not from another site, else 403) confirms the
  pending sign-up the token names, if the token's nonce is still the stored one.
- A token we did not make, or altered: 400. Older than `signup.confirm_hours`: 410, with a
  link to sign up again. Used already, or replaced by a newer sign-up after the reader
  left: 410. The list gone: 404. The database failing: 503. Never a 500.

A confirmation keeps, in the consent record, a digest of the nonce it used, so that the
same link posted again is told apart (410) from a reader confirmed otherwise, who is
shown the page of a confirmed reader.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from newsletter.ledger import LedgerError
from newsletter.models import SubscriberList
from newsletter.readers.tokens import Confirmation, preferences_url, read_confirm_token
from newsletter.web.context import WebContext
from newsletter.web.forms import FormRefused, check_form_token, form_token, read_form, same_site

PURPOSE = "confirm"


def nonce_digest(nonce: str) -> str:
    """What the consent record keeps of the nonce a confirmation used."""
    return hashlib.sha256(f"newsletter confirmation nonce\n{nonce}".encode()).hexdigest()[:16]


def confirm_routes(web: WebContext, clock: Callable[[], float]) -> list[Route]:
    """The page with the button (GET) and the confirmation (POST)."""
    settings = web.settings
    max_age = settings.signup.confirm_hours * 3600

    def note(lst: SubscriberList | None, status: int, title: str, text: str,
             link: tuple[str, str] | None = None, /, **values: Any) -> Response:
        locale = web.locale_of(lst)
        pages = web.pages
        return pages.page(
            "signup-note.html", locale, status, title=pages.gettext(locale, title),
            text=pages.gettext(locale, text, **values), error=status >= 400,
            link_href=link[0] if link else "",
            link_text=pages.gettext(locale, link[1]) if link else "",
            newsletter_title=lst.title if lst else "")

    def again(lst: SubscriberList) -> tuple[str, str]:
        # Relative to /confirm, so it works behind a proxy that mounts us under a path.
        return f"subscribe/{lst.id}", "Sign up again"

    def preferences(lst: SubscriberList, email: str) -> tuple[str, str]:
        return (preferences_url(settings.newsletter.base_url, lst.id, email, web.secret),
                "Your preferences: topics, time zone, a pause")

    def checked(token: str) -> tuple[Confirmation, SubscriberList] | Response:
        found = read_confirm_token(web.secret, token)
        if found is None:
            return note(None, 400, "This link is not valid",
                        "Copy the whole link from the mail into the address bar, or sign up "
                        "again.")
        lst = web.list_of(found.list_id)
        if lst is None:
            return note(None, 404, "Not found", "There is no such newsletter here.")
        if clock() - found.issued > max_age:
            return note(lst, 410, "This link has expired",
                        "Confirmation links work for %(hours)s hours. Sign up again and we "
                        "will send you a new one.", again(lst),
                        hours=settings.signup.confirm_hours)
        return found, lst

    def dead(lst: SubscriberList) -> Response:
        return note(lst, 410, "This link can no longer be used",
                    "It has been used already, or a newer sign-up replaced it. If you get "
                    "no issues of %(title)s, sign up again.", again(lst), title=lst.title)

    def busy(lst: SubscriberList) -> Response:
        return note(lst, 503, "Try again",
                    "This did not work just now. Please try again in a minute.")

    async def show(request: Request) -> Response:
        token = request.query_params.get("token", "")
        found = checked(token)
        if isinstance(found, Response):
            return found
        confirmation, lst = found
        try:
            row = await run_in_threadpool(web.ledger.reader_row, lst.id, confirmation.email)
        except (sqlite3.Error, LedgerError):
            return busy(lst)
        # What the button confirms, shown to the one who holds the link (the address's
        # owner): whoever posted the form chose the name, so its owner should see it.
        shown = row if row is not None and row.nonce == confirmation.nonce else None
        return web.pages.page(
            "confirm.html", web.locale_of(lst), list_title=lst.title,
            newsletter_title=lst.title, action=f"?token={token}",
            form=form_token(web.secret, PURPOSE, token, clock()),
            reader_name=(shown.name or "") if shown else "",
            topics=", ".join(t.capitalize() for t in shown.topics or ()) if shown else "")

    async def confirm(request: Request) -> Response:
        token = request.query_params.get("token", "")
        try:
            form = await read_form(request)
        except FormRefused as refused:
            return note(None, refused.status, "This form could not be read",
                        "Open the link from the mail again and press the button.")
        found = checked(token)
        if isinstance(found, Response):
            return found
        confirmation, lst = found
        if not same_site(request, settings.newsletter.base_url) or not check_form_token(
                web.secret, PURPOSE, token, form.get("form"), clock()):
            return note(lst, 403, "Press the button on the page",
                        "Open the link from the mail again and press the button there.")
        used = nonce_digest(confirmation.nonce)
        ledger = web.ledger
        try:
            result = await run_in_threadpool(
                ledger.confirm, lst.id, confirmation.email, confirmation.nonce,
                {"confirmed_with": used}, other_lists=list(web.titles()))
            row = (await run_in_threadpool(ledger.reader_row, lst.id, confirmation.email)
                   if result == "already" else None)
        except (sqlite3.Error, LedgerError):
            return busy(lst)
        if result == "invalid" or (row is not None and
                                   row.consent.get("confirmed_with") == used):
            return dead(lst)
        if result == "confirmed":
            return note(lst, 200, "You are subscribed",
                        "Thank you for confirming. %(title)s comes to your inbox from the next "
                        "issue.", preferences(lst, confirmation.email), title=lst.title)
        return note(lst, 200, "You are subscribed",
                    "This address already gets %(title)s.",
                    preferences(lst, confirmation.email), title=lst.title)

    return [Route("/confirm", show, methods=["GET"]),
            Route("/confirm", confirm, methods=["POST"])]
