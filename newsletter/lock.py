"""A lock between processes that a killed process can never leave behind.

`flock` locks belong to the open file: the kernel drops them when the holder exits, however
it exits (`kill -9` and power loss included). The file also names the holder, so a second
process can say who is sending.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import socket
import stat
import sys
import threading
from pathlib import Path
from types import TracebackType

from newsletter.errors import NewsletterError


class LockHeld(NewsletterError):
    """Another live process holds the lock."""


class ProcessLock:
    def __init__(self, path: Path, purpose: str) -> None:
        self.path = path
        self.purpose = purpose
        self._fd: int | None = None

    def acquire(self, wait: float = 0, stop: threading.Event | None = None) -> None:
        """Take the lock, waiting up to `wait` seconds; raise `LockHeld` naming the holder."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except IsADirectoryError as err:
            raise self._not_a_file("is a folder") from err
        except OSError as err:
            raise self._error(err) from err
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or a device: not our lock file
            os.close(fd)
            raise self._not_a_file("is not a regular file")
        stop = stop or threading.Event()
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=wait)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if dt.datetime.now(dt.UTC) >= deadline or stop.wait(0.2):
                    os.close(fd)
                    raise LockHeld(
                        f"{self.purpose} is locked by {self.holder()}", file=self.path,
                        fix="wait for that run to finish (a killed process frees the lock "
                            "at once)") from None
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({
                "pid": os.getpid(), "host": socket.gethostname(),
                "command": " ".join(["newsletter", *sys.argv[1:]]),
                "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            }).encode())
            os.fsync(fd)
        except OSError as err:  # a full disk: the lock is held, only the holder's name is not
            if err.errno != errno.ENOSPC:
                self.release()
                raise self._error(err) from err
            os.ftruncate(fd, 0)

    def _error(self, err: OSError) -> NewsletterError:
        return NewsletterError(
            f"cannot use the lock file: {err.strerror or err}", file=self.path,
            fix="make its folder (the ledger's) writable, or free some space, then run the "
                "same command again")

    def _not_a_file(self, why: str) -> NewsletterError:
        return NewsletterError(
            f"the lock file {why}", file=self.path,
            fix="remove it (the program makes this file itself, beside the ledger), then run "
                "the same command again")

    def holder(self) -> str:
        """Who holds the lock, as recorded in the file by its holder."""
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        if not info:
            return "another process"
        return (f"pid {info.get('pid')} on {info.get('host')} ({info.get('command')}, "
                f"since {info.get('since')})")

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):  # the holder's name is a courtesy
                os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ProcessLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
