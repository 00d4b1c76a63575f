"""The bounce mailbox, whatever holds it: one small interface over IMAP and a local Maildir.

A mailbox lists the mail waiting in it, reads one mail's bytes (never more than
`MAX_BYTES`), and lets go of a mail once it is handled: moved to the processed folder, or
flagged, or (only with `bounces.imap.delete_processed`) deleted. Nothing else is ever
changed, and nothing is changed at all for mail that is not handled.

Keys are stable while a mail stays where it is (an IMAP UID, a Maildir file's unique
name), so a fetch that lists a mail and handles it later names the same mail.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from newsletter.errors import ConfigError
from newsletter.inbound.settings import BouncesSection

# A bounce carries the report and at most the original issue (tens of kilobytes); mail
# far bigger than that is not one, and is not read into memory.
MAX_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class Mail:
    key: str  # an IMAP UID, a Maildir key
    size: int | None = None  # in bytes, when the mailbox says so before reading


class Unreadable(Exception):
    """This one mail cannot be read: it is left where it is (or it is gone) and reported."""

    def __init__(self, why: str, *, gone: bool = False) -> None:
        super().__init__(why)
        self.gone = gone


class Mailbox(Protocol):
    @property
    def name(self) -> str:
        """Where the mail is, for the report: "INBOX on mail.example.com", a Maildir path."""

    @property
    def folder(self) -> str:
        """The folder mail is read from, for "left in FOLDER"."""

    def messages(self) -> list[Mail]:
        """The mail waiting, oldest first (handled mail already let go is not listed)."""

    def read(self, mail: Mail) -> bytes:
        """The mail's bytes, as they arrived; `Unreadable` if too large, gone or unreadable."""

    def label(self, mail: Mail) -> str:
        """How to find the mail by hand: "UID 17", "new/1700000000.M1P2.host"."""

    def mark_handled(self, mail: Mail) -> None:
        """Let go of a handled mail (moved, flagged or deleted, as configured)."""

    def close(self) -> None: ...

    def __enter__(self) -> Mailbox: ...

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None: ...


def not_configured() -> ConfigError:
    return ConfigError(
        "no bounce mailbox is configured", field="bounces",
        fix="set bounces.imap (host, username; the password in "
            "NEWSLETTER_BOUNCES__IMAP__PASSWORD or .env) or bounces.maildir (a local Maildir)")


def open_mailbox(bounces: BouncesSection) -> Mailbox:
    """The configured mailbox, connected (IMAP: logged in, folder selected)."""
    if bounces.imap is not None:
        from newsletter.inbound.mailbox_imap import ImapMailbox

        return ImapMailbox.connect(bounces.imap)
    if bounces.maildir is not None:
        from newsletter.inbound.mailbox_maildir import MaildirMailbox

        return MaildirMailbox.open(bounces.maildir)
    raise not_configured()


def too_large(size: int) -> Unreadable:
    return Unreadable(f"too large to be a bounce ({size / 1024 / 1024:.1f} MB; the limit is "
                      f"{MAX_BYTES // 1024 // 1024} MB)")
