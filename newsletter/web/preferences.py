"""`/preferences?token=…`: a reader's own choices, with no login.

- The token (`newsletter.readers.tokens`) names one list and one address, and is the only
  credential: altered or made for something else (an unsubscribe link) is a 400 page, a
  list that is gone a 404, an address that asked to be forgotten a 410.
- A reader is someone the next issue goes to: in the subscriber file, or a confirmed
  sign-up or import. Their current values are the file's with their own choices from the
  database applied (`merge_list`), as the send sees them. Anyone else (pending, or no
  longer in the file) has nothing to change: a 404 page.
- `GET` shows the form; `POST` (our form only: form token, same site) saves what changed
  as choices in the database (a file reader gets an override row; the file is never
  written), or unsubscribes (`action=leave`). Saved choices apply from the next issue, not
  to one already being sent, and the page says so.
- A reader who left (suppressed on the list, or unsubscribed in the file) sees that, and
  a link to the sign-up form: only a new, confirmed sign-up brings them back.

The database is touched off the event loop; when it cannot be read or written the page
says to try again (503), never a 500.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from newsletter.errors import NewsletterError
from newsletter.models import SubscriberList
from newsletter.readers.roster import merge_list
from newsletter.readers.tokens import read_preferences_token
from newsletter.web.choices import (
    MAX_WEEKS,
    Current,
    Note,
    Posted,
    changes,
    choices_of,
    read_posted,
)
from newsletter.web.context import WebContext
from newsletter.web.forms import FormRefused, check_form_token, form_token, read_form, same_site

PURPOSE = "preferences"
_REFUSED = {
    413: "The form is too large. Open the preferences link again and send the form from "
         "there.",
    415: "This is not a web form. Open the preferences link again and send the form from "
         "there.",
}
# Offered in the time zone field's list; any other zone of the tz database may be typed.
COMMON_ZONES = (
    "Europe/London", "Europe/Dublin", "Europe/Lisbon", "Europe/Paris", "Europe/Berlin",
    "Europe/Vienna", "Europe/Zurich", "Europe/Madrid", "Europe/Rome", "Europe/Amsterdam",
    "Europe/Stockholm", "Europe/Warsaw", "Europe/Athens", "Europe/Helsinki",
    "Europe/Istanbul", "Europe/Moscow", "Africa/Lagos", "Africa/Johannesburg",
    "Africa/Nairobi", "Asia/Dubai", "Asia/Kolkata", "Asia/Singapore", "Asia/Shanghai",
    "Asia/Tokyo", "Australia/Sydney", "Pacific/Auckland", "America/Sao_Paulo",
    "America/Mexico_City", "America/New_York", "America/Chicago", "America/Denver",
    "America/Los_Angeles", "America/Anchorage", "Pacific/Honolulu", "UTC",
)


@dataclass(frozen=True)
class Reader:
    """The reader a valid token names, as the next issue sees them."""

    lst: SubscriberList
    email: str  # lower-cased, as the database keys it
    address: str  # as the file or the sign-up wrote it
    origin: str
    current: Current
    left: bool  # suppressed on this list (or all), or unsubscribed in the file


class Unavailable(Exception):
    """The database could not be read or written just now."""


def find_reader(web: WebContext, list_id: str, email: str) -> Reader | str:
    """The reader, or why there is none: "list" (gone), "forgotten" or "nobody"."""
    lst = web.list_of(list_id)
    if lst is None:
        return "list"
    ledger = web.ledger
    try:
        if ledger.is_forgotten(email, list_id):
            return "forgotten"
        in_file = next((s for s in lst.subscribers if s.email.lower() == email), None)
        row = ledger.reader_row(list_id, email)
        one = lst.model_copy(update={"subscribers": (in_file,) if in_file else ()})
        merged = merge_list(one, [row] if row else [], frozenset()).subscribers
        if not merged:
            return "nobody"
        suppressed = ledger.is_suppressed(list_id, email)
    except (NewsletterError, sqlite3.Error) as err:
        raise Unavailable from err
    reader = next(iter(merged))
    return Reader(lst, email, reader.email, "file" if in_file else (row.origin if row else ""),
                  Current.of(reader), suppressed or reader.status != "active")


def preferences_routes(web: WebContext) -> list[Route]:
    """The preference page (GET) and its form (POST)."""

    def now() -> float:
        clock = web.clock
        return float(clock()) if callable(clock) else time.time()

    def today(lst: SubscriberList) -> dt.date:
        zone = ZoneInfo(lst.timezone or web.settings.schedule.timezone)
        return dt.datetime.fromtimestamp(now(), zone).date()

    def render(lst: SubscriberList | None, status: int, state: str, **context: Any
               ) -> HTMLResponse:
        locale = web.locale_of(lst)
        return web.pages.page("preferences.html", locale, status, state=state,
                              list_title=lst.title if lst else "",
                              newsletter_title=lst.title if lst else "", **context)

    def problem(lst: SubscriberList | None, status: int, title: str, text: Note
                ) -> HTMLResponse:
        return render(lst, status, "problem", title=title, text=text)

    def busy(lst: SubscriberList | None) -> HTMLResponse:
        return problem(lst, 503, "Try again", (
            "Your preferences cannot be read or saved just now. Please try again in a "
            "minute.", {}))

    async def found(request: Request) -> tuple[str, Reader] | Response:
        token = request.query_params.get("token", "")
        named = read_preferences_token(web.secret, token)
        if named is None:
            return problem(None, 400, "Link not valid", (
                "This link is not valid. Use the preferences link in your latest email.", {}))
        list_id, email = named
        try:
            reader = await run_in_threadpool(find_reader, web, list_id, email)
        except Unavailable:
            return busy(web.list_of(list_id))
        if reader == "list":
            return problem(None, 404, "Not found", ("There is no such newsletter here.", {}))
        lst = web.list_of(list_id)
        if reader == "forgotten":
            return problem(lst, 410, "Nothing to change", (
                "This address asked to be forgotten: nothing is kept about it, and it gets "
                "no email from us.", {}))
        if isinstance(reader, str):
            return problem(lst, 404, "Nothing to change", (
                "%(address)s is not a reader of %(title)s (or has not confirmed the "
                "subscription yet), so there is nothing to change.",
                {"address": email, "title": lst.title if lst else ""}))
        return token, reader

    def left_page(reader: Reader, status: int = 200, just_now: bool = False) -> HTMLResponse:
        base = web.settings.newsletter.base_url
        return render(reader.lst, status, "left", address=reader.address,
                      just_now=just_now, signup_url=f"{base}/subscribe/{reader.lst.id}")

    def form_page(token: str, reader: Reader, status: int = 200,
                  posted: Posted | None = None, notes: list[Note] | None = None
                  ) -> HTMLResponse:
        lst, current = reader.lst, reader.current
        day = today(lst)
        locale = web.locale_of(lst)
        paused = current.paused_until if current.paused_on(day) else None
        if posted is not None:
            name, zone, weeks = posted.name, posted.timezone, posted.weeks_typed
            chosen = set(posted.topics or ())
        else:
            name, zone, chosen = current.name, current.timezone, set(current.topics)
            weeks = "" if paused else "0"
        zones = COMMON_ZONES if not zone or zone in COMMON_ZONES else (zone, *COMMON_ZONES)
        return render(
            lst, status, "form", address=reader.address, reader_name=name,
            sections=lst.sections, chosen=chosen, timezone=zone, zones=zones,
            list_zone=lst.timezone or web.settings.schedule.timezone,
            paused_until=_long(paused, locale) if paused else "",
            weeks=weeks, most_weeks=MAX_WEEKS,
            form=form_token(web.secret, PURPOSE, token, now()),
            action=f"?token={token}",  # relative: works behind a proxy's path prefix
            errors=posted.errors if posted else {},
            notes=[_dated(note, locale) for note in notes] if notes is not None else None)

    async def show(request: Request) -> Response:
        answer = await found(request)
        if isinstance(answer, Response):
            return answer
        token, reader = answer
        if reader.left:
            return left_page(reader)
        return form_page(token, reader)

    async def save(request: Request) -> Response:
        answer = await found(request)
        if isinstance(answer, Response):
            return answer
        token, reader = answer
        lst = reader.lst
        try:
            form = await read_form(request)
        except FormRefused as refused:
            return problem(lst, refused.status, "Not saved", (_REFUSED.get(
                refused.status, "The form could not be read. Open the preferences link "
                "again and send the form from there."), {}))
        if not same_site(request, web.settings.newsletter.base_url) or not check_form_token(
                web.secret, PURPOSE, token, form.get("form"), now()):
            return problem(lst, 403, "Not saved", (
                "This form is out of date or did not come from this page. Open the "
                "preferences link again and send the form from there.", {}))
        posted = read_posted(form, lst.sections)
        if reader.left:
            return left_page(reader, 200 if posted.action == "leave" else 409)
        if posted.action == "leave":
            try:
                await run_in_threadpool(web.ledger.suppress, lst.id, reader.email,
                                        "unsubscribed", {"via": "preference page"})
            except (NewsletterError, sqlite3.Error):
                return busy(lst)
            return left_page(reader, just_now=True)
        if posted.errors:
            return form_page(token, reader, 400, posted)
        choices = choices_of(posted, reader.current, today(lst))
        try:
            if choices is not None:
                await run_in_threadpool(web.ledger.choose, lst.id, reader.email, choices,
                                        origin="file" if reader.origin == "file" else "signup")
            after = await run_in_threadpool(find_reader, web, lst.id, reader.email)
        except (NewsletterError, sqlite3.Error, Unavailable):
            return busy(lst)
        if isinstance(after, str):  # gone between the two (the file was just edited)
            return problem(lst, 404, "Nothing to change", (
                "%(address)s is no longer a reader of %(title)s.",
                {"address": reader.address, "title": lst.title}))
        return form_page(token, after, notes=changes(reader.current, after.current,
                                                     today(lst)))

    return [Route("/preferences", show, methods=["GET"]),
            Route("/preferences", save, methods=["POST"])]


def _dated(note: Note, locale: str) -> Note:
    """A note's ISO date written for the reader's language."""
    text, values = note
    if "date" in values:
        values = dict(values, date=_long(dt.date.fromisoformat(values["date"]), locale))
    return text, values


def _long(day: dt.date, locale: str) -> str:
    try:
        return format_date(day, "long", locale=Locale.parse(locale.replace("-", "_")))
    except (UnknownLocaleError, ValueError, TypeError):
        return day.isoformat()
