"""`/subscribe/LIST`: the sign-up form and its post (and, from `newsletter.web.confirm`,
`/confirm`).

- `GET` shows the form in the list's locale: email, name, topics (the list's sections),
  time zone, a honeypot field (`website`) people never see, and a form token.
- `POST` takes our own form or a publisher's (fields `email`, `name`, `topics`,
  `timezone`): a malformed field is a 400 page showing the form again; a filled honeypot
  is answered as a success and does nothing. Otherwise the answer is one "check your
  inbox" page whatever the address (new, pending, a reader, suppressed, forgotten), and
  the work is done after it (`newsletter.web.joining`), so that neither the page nor the
  time it takes tells anyone who is on the list.
- Topics not among the list's sections are left out, not refused: a publisher's form may
  still offer a section removed since, and the sign-up should not fail for it.
- Rate limits (`signup.per_client_hour`, `signup.per_address_hour`): 429 with Retry-After.
  A client is its IPv4 address or its IPv6 /64; an address is its mailbox (`mailbox_key`:
  `+tags` and Gmail's dots left out).
- What is kept of the consent: when (the store adds it), "form", the page the post came
  from (scheme, host and path only, at most 200 characters: a query may hold anything),
  and the client's network cut to /24 (IPv4) or /48 (IPv6), never its address.
"""

from __future__ import annotations

import ipaddress
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from newsletter.addresses import InvalidAddress, normalize_address
from newsletter.models import SubscriberList
from newsletter.readers.store import NewReader, mailbox_key
from newsletter.settings import check_timezone
from newsletter.web.background import Background
from newsletter.web.confirm import confirm_routes
from newsletter.web.context import WebContext
from newsletter.web.forms import (
    Form,
    FormRefused,
    check_form_token,
    client_address,
    form_token,
    read_form,
)
from newsletter.web.joining import Joiner
from newsletter.web.limits import RateLimit, retry_after
from newsletter.web.mails import Mailer

MAX_NAME = 200
MAX_PAGE = 200
# Offered in the time zone field's list; any IANA name may be typed.
COMMON_ZONES = (
    "Europe/London", "Europe/Dublin", "Europe/Lisbon", "Europe/Paris", "Europe/Berlin",
    "Europe/Vienna", "Europe/Zurich", "Europe/Amsterdam", "Europe/Brussels", "Europe/Madrid",
    "Europe/Rome", "Europe/Stockholm", "Europe/Warsaw", "Europe/Athens", "Europe/Helsinki",
    "Europe/Istanbul", "Europe/Moscow", "Africa/Lagos", "Africa/Johannesburg", "Asia/Dubai",
    "Asia/Kolkata", "Asia/Singapore", "Asia/Shanghai", "Asia/Tokyo", "Australia/Sydney",
    "Pacific/Auckland", "America/Sao_Paulo", "America/New_York", "America/Chicago",
    "America/Denver", "America/Los_Angeles", "America/Anchorage", "Pacific/Honolulu", "UTC",
)
# Bidirectional embeddings, overrides and isolates: they would reorder the text around a
# name wherever it is shown (a mail client's To line, our pages).
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
                           "\u200e\u200f\u061c"  # direction marks
                           "\u200b\u2060\ufeff")  # zero-width: "Ad\u200bmin" shows as "Admin"

ERRORS = {
    "email": "Enter your email address, such as name@example.com.",
    "name_long": "A name can have at most 200 characters.",
    "name_chars": "A name cannot hold line breaks or control characters.",
    "timezone": "Choose a time zone from the list, such as Europe/London, or leave it empty.",
}


@dataclass(frozen=True)
class Typed:
    """What the form held, cleaned, to store or to show again."""

    email: str
    name: str
    topics: tuple[str, ...]
    timezone: str


def clean_name(raw: str) -> tuple[str, str | None]:
    """The name with its white space collapsed, and the key of its error, if any."""
    if any((unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") and c != "\t")
           or c in _BIDI_CONTROLS for c in raw):
        return "", "name_chars"
    name = unicodedata.normalize("NFC", " ".join(raw.split()))
    if len(name) > MAX_NAME:
        return name[:MAX_NAME], "name_long"
    return name, None


def check_fields(form: Form, lst: SubscriberList) -> tuple[Typed, dict[str, str]]:
    """The cleaned fields and the errors (field → key of `ERRORS`)."""
    errors: dict[str, str] = {}
    raw_email = form.get("email").strip()
    email = raw_email[:320]
    try:
        if not raw_email or len(raw_email) > 320:
            raise InvalidAddress("empty or too long")
        email = normalize_address(raw_email)
    except InvalidAddress:
        errors["email"] = "email"
    name, name_error = clean_name(form.get("name"))
    if name_error:
        errors["name"] = name_error
    wanted = {t.strip().lower() for t in form.getlist("topics")}
    topics = tuple(s for s in lst.sections if s in wanted)
    zone = form.get("timezone").strip()
    if zone:
        try:
            check_timezone(zone)
        except ValueError:
            errors["timezone"] = "timezone"
            zone = zone[:64]
    return Typed(email, name, topics, zone), errors


def _page_of(request: Request) -> str:
    """Where the post came from, without its query: the consent's `page`."""
    for header in ("referer", "origin"):
        value = request.headers.get(header, "")
        if value and value != "null":
            parts = urlsplit(value)
            # The host only: a Referer may carry `user:password@` in its authority.
            try:
                host = parts.hostname
                port = f":{parts.port}" if parts.port else ""
            except ValueError:  # a port that is no number
                continue
            if parts.scheme in ("http", "https") and host:
                return f"{parts.scheme}://{host}{port}{parts.path}"[:MAX_PAGE]
    return ""


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's address; an IPv4 one as such when a dual-stack socket maps it into
    IPv6 (`::ffff:a.b.c.d`: as a /64 every IPv4 client would be one)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _network(address: str) -> str:
    """The client's network, not its address: enough to see a flood, not to find a home."""
    ip = _ip(address)
    if ip is None:
        return ""
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def _client_key(address: str) -> str:
    """What the limit per client counts: an IPv4 address, or an IPv6 /64 (the least a
    home line gets: its 2**64 addresses are one client)."""
    ip = _ip(address)
    if ip is None:
        return address
    if ip.version == 4:
        return str(ip)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False))


def signup_routes(web: WebContext, jobs: Background) -> list[Route]:
    """The sign-up form and post, and the confirmation pages."""
    clock: Callable[[], float] = web.clock if callable(web.clock) else time.time
    signup = web.settings.signup
    by_client = RateLimit(signup.per_client_hour, clock)
    by_address = RateLimit(signup.per_address_hour, clock)
    mailer = Mailer(web.settings, web.pages)
    joiner = Joiner(web, mailer, clock, jobs.stopping)
    networks = signup.networks()

    def form_page(lst: SubscriberList, status: int = 200, typed: Typed | None = None,
                  errors: dict[str, str] | None = None) -> Response:
        locale = web.locale_of(lst)
        messages = {"email": "", "name": "", "timezone": ""}  # "": no error
        messages.update({f: web.pages.gettext(locale, ERRORS[key])
                         for f, key in (errors or {}).items()})
        zones = (lst.timezone, *COMMON_ZONES) if lst.timezone else COMMON_ZONES
        return web.pages.page(
            "subscribe.html", locale, status, list_id=lst.id, list_title=lst.title,
            newsletter_title=lst.title, sections=lst.sections, zones=dict.fromkeys(zones),
            typed=typed or Typed("", "", (), ""), errors=messages, failed=bool(errors),
            form=form_token(web.secret, "subscribe", lst.id, clock()))

    def note(lst: SubscriberList | None, status: int, title: str, text: str, /,
             **values: Any) -> Response:
        locale = web.locale_of(lst)
        headers = values.pop("headers", None)
        return web.pages.message(locale, web.pages.gettext(locale, title),
                                 web.pages.gettext(locale, text, **values), status,
                                 headers=headers,
                                 newsletter_title=lst.title if lst else "")

    def unknown() -> Response:
        return note(None, 404, "Not found", "There is no such newsletter here.")

    async def show(request: Request) -> Response:
        lst = web.list_of(request.path_params["list_id"])
        return form_page(lst) if lst is not None else unknown()

    async def post(request: Request) -> Response:
        lst = web.list_of(request.path_params["list_id"])
        if lst is None:
            return unknown()
        client = client_address(request, networks)
        wait = by_client.hit(_client_key(client))
        if wait:
            return too_many(lst, wait)
        try:
            form = await read_form(request)
        except FormRefused as refused:
            return note(lst, refused.status, "This form could not be read",
                        "Please go back, check the form and send it again.")
        if form.get("website"):
            return done(lst)  # a bot: the same answer, nothing kept or sent
        typed, errors = check_fields(form, lst)
        if errors:
            return form_page(lst, 400, typed, errors)
        wait = by_address.hit(mailbox_key(typed.email))
        if wait:
            return too_many(lst, wait)
        own = check_form_token(web.secret, "subscribe", lst.id, form.get("form"), clock())
        consent = {"source": "form",
                   "page": (f"{web.settings.newsletter.base_url}/subscribe/{lst.id}" if own
                            else _page_of(request)),
                   "network": _network(client)}
        job = NewReader(lst.id, typed.email, typed.name or None, typed.topics,
                            typed.timezone or None, consent)
        if not jobs.submit(lambda: joiner(job)):
            return note(lst, 503, "Try again",
                        "This did not work just now. Please try again in a minute.",
                        headers={"Retry-After": "60"})
        return done(lst)

    def done(lst: SubscriberList) -> Response:
        if web.double_opt_in(lst):
            return note(lst, 200, "Check your inbox",
                        "If the address can receive mail, a message is on its way to it. "
                        "Open the link in it within %(hours)s hours to confirm your "
                        "subscription to %(title)s.",
                        hours=signup.confirm_hours, title=lst.title)
        return note(lst, 200, "Thank you",
                    "If the address can receive mail, a welcome message to %(title)s is on "
                    "its way to it, with a link to your preferences.", title=lst.title)

    def too_many(lst: SubscriberList, wait: float) -> Response:
        return note(lst, 429, "Please wait",
                    "There have been too many sign-ups from here or for this address. "
                    "Please try again later.", headers={"Retry-After": retry_after(wait)})

    return [
        Route("/subscribe/{list_id}", show, methods=["GET"]),
        Route("/subscribe/{list_id}", post, methods=["POST"]),
        *confirm_routes(web, clock),
    ]
