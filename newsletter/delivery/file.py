"""Write each message as an `.eml` file: `outbox/mail/<list>/<date>/<address>.eml`.

A sign-up's mail (confirmation, welcome; issue id `<list>/confirmations`, which no issue
has) goes to `outbox/confirmations/<list>/<address>.eml`: the latest one per address.

Every name at the top of the outbox is the program's own (`mail/`, `test/`, `archive/`,
`preview/`, `confirmations/`, the ledger), and lists are only ever the folders one level
down: a list called `archive` or `preview` has its mail in `mail/archive/`, never in the
folder `serve` publishes or beside another list's pages.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import TextIO

from newsletter.delivery.base import DeliveryBackend, DeliveryResult
from newsletter.errors import DeliveryError
from newsletter.message import OutgoingMessage
from newsletter.settings import Settings

_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]")
# A file name may have 255 bytes; an address up to 254, plus ".eml" would not fit.
_LONGEST_NAME = 200
MAIL_FOLDER = "mail"
TEST_FOLDER = "test"
READER_MAILS = "confirmations"


def file_name(address: str) -> str:
    """The address as a file name: as it is when it is plain (`ada@example.com`); otherwise
    with `_` for what a file name should not hold, cut to fit, and a hash of the address,
    so `a&b@…` and `a_b@…` (both valid) never share a file, and none starts with a dot."""
    safe = _UNSAFE.sub("_", address)
    if safe == address and len(safe) <= _LONGEST_NAME and not safe.startswith("."):
        return safe
    digest = hashlib.sha256(address.lower().encode()).hexdigest()[:12]
    return f"{safe.lstrip('.')[:_LONGEST_NAME]}.{digest}"


class FileBackend(DeliveryBackend):
    name = "file"
    idempotent = True

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox
        self._folders: set[Path] = set()  # already created: one mkdir per folder, not message
        self._issue_folders: dict[tuple[bool, str], Path] = {}  # path joins once an issue

    @classmethod
    def from_settings(cls, settings: Settings, stream: TextIO) -> FileBackend:
        return cls(settings.delivery.outbox)

    def path_for(self, message: OutgoingMessage) -> Path:
        key = (message.test, message.issue_id)
        folder = self._issue_folders.get(key)
        if folder is None:
            # Test sends live apart, so they are never taken for the issue's delivery.
            list_id, _, date = message.issue_id.partition("/")
            folder = (self.outbox / READER_MAILS / list_id if date == READER_MAILS else
                      self.outbox / (TEST_FOLDER if message.test else MAIL_FOLDER) / list_id
                      / date)
            self._issue_folders[key] = folder
        return folder / f"{file_name(message.recipient)}.eml"

    def send(self, message: OutgoingMessage) -> DeliveryResult:
        path = self.path_for(message)
        if path.parent not in self._folders:
            _make_folder(path.parent)
            self._folders.add(path.parent)
        write_atomically(path, message.data, make_folder=False)
        return DeliveryResult(message.recipient, message.message_id, "sent", str(path))


def write_atomically(path: Path, data: bytes, *, make_folder: bool = True) -> None:
    """Write `data` to `path` so that a reader sees the old file or the whole new one."""
    if make_folder:
        _make_folder(path.parent)
    # One writer per path at a time (the send lock), so a fixed temporary name is safe.
    tmp = path.with_name(f".{path.name}.part")
    try:
        try:
            with open(tmp, "wb") as out:
                out.write(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as err:
        raise _write_error(path, err) from err


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _write_error(folder / "x", err) from err


def _write_error(path: Path, err: OSError) -> DeliveryError:
    return DeliveryError(f"cannot write {path.name}: {err.strerror or err}", file=path.parent,
                         field="delivery.outbox",
                         fix="check that the outbox folder is writable and the disk has space, "
                             "then run the same command again (nothing half-written is left)")
