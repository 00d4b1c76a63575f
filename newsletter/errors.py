"""One small error hierarchy. The CLI turns any `NewsletterError` into one line per problem."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the user's input: where it is, what it is, how to fix it."""

    what: str
    file: Path | str | None = None
    line: int | None = None
    field: str | None = None
    fix: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        field = f"{self.field}: " if self.field else ""
        fix = f" — {self.fix}" if self.fix else ""
        return f"{where}{field}{self.what}{fix}"


class NewsletterError(Exception):
    """Root of every error a user can cause or fix; carries one or more `Problem`s."""

    exit_code = 2

    def __init__(
        self,
        what: str = "",
        *,
        file: Path | str | None = None,
        line: int | None = None,
        field: str | None = None,
        fix: str | None = None,
        problems: list[Problem] | None = None,
    ) -> None:
        self.problems = problems or [Problem(what, file, line, field, fix)]
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class ConfigError(NewsletterError):
    """Settings or subscriber files are invalid."""


class ContentError(NewsletterError):
    """Articles are missing, unreadable, malformed, or too old for the issue."""


class NothingNew(ContentError):
    """A quiet day: too few new articles for a list's issue (`articles.min_new`).

    With `articles.quiet_day: skip` (the default) it is not a mistake: commands say
    `nothing new for LIST on DATE; no issue sent` and exit 0. Raised, it is the error the
    problems describe.
    """

    def __init__(self, list_id: str, date: dt.date, reason: str, what: str, *,
                 field: str | None = None, fix: str | None = None) -> None:
        self.list_id, self.date, self.reason = list_id, date, reason
        super().__init__(what, field=field, fix=fix)

    @property
    def quiet_line(self) -> str:
        return f"nothing new for {self.list_id} on {self.date}; no issue sent ({self.reason})"


class TemplateError(NewsletterError):
    """A template is missing or fails to render."""


class DeliveryError(NewsletterError):
    """The delivery backend cannot work at all (server unreachable, login refused, disk full)."""


class TemporaryFailure(DeliveryError):
    """A recipient was refused for now (SMTP 4xx); trying again later may work."""


class PermanentFailure(DeliveryError):
    """A recipient was refused for good (SMTP 5xx)."""


class MailboxError(NewsletterError):
    """The bounce mailbox cannot be read now (server down, refused connection, timeout, a
    broken connection): trying again later may work, so it exits 1, as a failed delivery.
    What the user must fix in the settings (login, folder, certificate, a missing Maildir)
    is a `ConfigError`."""

    exit_code = 1
