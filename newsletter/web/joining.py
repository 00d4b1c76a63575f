"""What a sign-up does once it is answered: store the reader, and mail them (or not).

Run by the background thread (`newsletter.web.background`), never on the request path:
the answer was the same whatever is found here, and took no longer.

- a new address: stored pending and sent a confirmation (or, on a list without double
  opt-in, stored confirmed and sent a welcome with the preference link; an address
  suppressed there, though, is stored pending and confirms as on any list);
- a pending one: sent the confirmation again, with the nonce it has; its name, topics and
  time zone become those of this latest request (the link confirms what is stored);
- a reader already (an active, unsuppressed reader of the file, or a confirmed row): a
  short "you are already subscribed" with the preference link, and nothing changed;
- the name posted is stored, but a confirmation or welcome greets no one by it, nor puts
  it in the To header: it is a stranger's text until the owner sees it on their page;
- a forgotten address: on a double opt-in list, as a new one (confirming is a fresh
  consent and ends the erasure for that list); on a single opt-in list, nothing at all;
- an address that reported our mail as spam: nothing at all (only the publisher lifts
  a complaint).

At most one mail an hour goes to an address (`claim_confirmation_mail`), whatever the list;
a mail that could not be sent gives its claim back, so the next sign-up may try again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sqlite3
import threading
from collections.abc import Callable

from newsletter.ledger import LedgerError
from newsletter.readers.store import NewReader
from newsletter.readers.tokens import confirm_token, confirm_url, preferences_url
from newsletter.web.context import WebContext
from newsletter.web.mails import Mailer, MailKind, ReaderMail

log = logging.getLogger("newsletter.serve")


class Joiner:
    """Handles each sign-up that passed the form's checks, a `NewReader` with the address
    normalized (see module docstring)."""

    def __init__(self, web: WebContext, mailer: Mailer, clock: Callable[[], float],
                 stopping: threading.Event | None = None) -> None:
        self.web = web
        self.mailer = mailer
        self.clock = clock
        self.stopping = stopping or threading.Event()

    def __call__(self, request: NewReader) -> None:
        lst = self.web.list_of(request.list_id)
        if lst is None:  # the publisher removed it since
            return
        now = self.clock()
        moment = dt.datetime.fromtimestamp(now, dt.UTC)
        ledger = self.web.ledger
        email = request.address.lower()
        single = not self.web.double_opt_in(lst)
        try:
            # Sign-ups nobody confirmed, whose last link has expired, are not kept.
            ledger.purge_unconfirmed(self.web.settings.signup.confirm_hours + 1)
            if ledger.has_complained(request.list_id, email):
                return
            forgotten = ledger.is_forgotten(email)
            if forgotten and single:
                return  # no proof it is them: see ReaderStore.sign_up
            known = None if forgotten else self._file_reader(request.list_id, email)
            if known is not None:
                kind: MailKind = "already"
                address, name, nonce = known[0], known[1], None
            else:
                result, row = ledger.sign_up(request, confirmed=single)
                if result == "forgotten" or row is None:
                    return
                address, name, nonce = row.address, row.name or "", row.nonce
                if row.state == "pending":
                    kind = "confirm"
                elif result == "new":
                    kind = "welcome"
                else:
                    kind = "already"
            if not ledger.claim_confirmation_mail(email, now=moment):
                return
        except (sqlite3.Error, LedgerError) as err:
            log.error("sign-up for list %s not stored: %s", request.list_id,
                      str(err).splitlines()[0])
            return
        secret = self.web.secret
        base = self.web.settings.newsletter.base_url
        if kind == "confirm" and nonce:
            link = confirm_url(base, confirm_token(secret, lst.id, email, nonce, int(now)))
        else:
            link = preferences_url(base, lst.id, email, secret)
        if kind != "already":
            # Typed by whoever posted, not (yet) by the address's owner: in our mail it
            # would carry a stranger's text ("You won! Call …") under our name and DKIM.
            name = ""
        mail = ReaderMail(kind, lst.id, lst.title, self.web.locale_of(lst), address, name, link)
        if self.stopping.is_set() or not self.mailer.send(mail, moment):
            # Not sent (or `serve` is stopping: the reader is stored, and signing up
            # again sends the mail): the next sign-up may try at once.
            # Should this fail too, the claim lapses by itself within the hour.
            with contextlib.suppress(sqlite3.Error, LedgerError):
                ledger.release_confirmation_mail(email)

    def _file_reader(self, list_id: str, email: str) -> tuple[str, str] | None:
        """(address, name) of an active reader of the file who gets the issue (not
        unsubscribed or bounced since); None otherwise."""
        lst = self.web.list_of(list_id)
        if lst is None:
            return None
        for s in lst.subscribers:
            if s.email.lower() == email and s.status == "active":
                if self.web.ledger.is_suppressed(list_id, email):
                    return None
                row = self.web.ledger.reader_row(list_id, email)
                name = row.name if row is not None and row.name is not None else s.name
                return s.email, name or ""
        return None
