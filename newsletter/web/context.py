"""What the reader pages of `serve` share: settings, secret, ledger, pages, the lists.

The subscriber file is read at start and again when it changes (its modification time
and size), so a list the publisher adds, or a reader they add by hand, is known without a
restart; a file broken by an edit in progress keeps the last good copy (and is logged).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field

from newsletter.errors import NewsletterError
from newsletter.ledger import SqliteLedger
from newsletter.models import SubscriberList
from newsletter.settings import Settings
from newsletter.subscribers import Roster, load_roster
from newsletter.web.pages import Pages

log = logging.getLogger("newsletter.serve")


class RosterCache:
    """The subscriber file, re-read when it changes."""

    def __init__(self, settings: Settings) -> None:
        self.path = settings.subscribers
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._roster = load_roster(self.path)  # at start a broken file stops `serve`

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def get(self) -> Roster:
        stamp = self._stat()
        if stamp == self._stamp:
            return self._roster
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._roster = load_roster(self.path)
                except NewsletterError as err:
                    log.error("subscriber file not re-read, keeping the last good copy: %s",
                              str(err).splitlines()[0])
                self._stamp = stamp
        return self._roster


@dataclass
class WebContext:
    settings: Settings
    secret: str
    ledger: SqliteLedger
    pages: Pages
    roster: RosterCache
    # Set by `serve` for tests: a clock (Unix seconds) the tests control.
    clock: object = field(default=None)

    def list_of(self, list_id: str) -> SubscriberList | None:
        return self.roster.get().lists.get(list_id)

    def locale_of(self, lst: SubscriberList | None) -> str:
        return (lst.locale if lst and lst.locale else None) or self.settings.newsletter.locale

    def double_opt_in(self, lst: SubscriberList) -> bool:
        if lst.double_opt_in is not None:
            return lst.double_opt_in
        return self.settings.signup.double_opt_in

    def titles(self) -> dict[str, str]:
        return {lst.id: lst.title for lst in self.roster.get().lists.values()}
