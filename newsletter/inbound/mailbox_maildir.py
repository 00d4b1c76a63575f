"""The bounce mailbox as a local Maildir (`bounces.maildir`), e.g. one Postfix or Dovecot
delivers to.

Mail is read from `new/` and `cur/`; handled mail is moved into the Maildir++ sub-folder
`.Processed` (made with the stdlib's `mailbox.Maildir` when missing), marked seen. A move
is a hard link then an unlink within the Maildir's own file system: at every instant the
file is in one of the two folders (or, after a crash between the two, in both, and the
next fetch finds its events already recorded and finishes the move). Nothing is ever
overwritten.
"""

from __future__ import annotations

import contextlib
import errno
import mailbox
import os
import stat
from pathlib import Path
from types import TracebackType

from newsletter.errors import ConfigError, MailboxError
from newsletter.inbound.mailbox import MAX_BYTES, Mail, Unreadable, too_large

PROCESSED = "Processed"  # the Maildir++ folder `.Processed`
_FIELD = "bounces.maildir"
_SUBFOLDERS = ("cur", "new", "tmp")


class MaildirMailbox:
    def __init__(self, root: Path, box: mailbox.Maildir) -> None:
        self.root = root
        self._box = box
        self._processed: Path | None = None
        self._paths: dict[str, str] = {}  # key -> "new/NAME" or "cur/NAME:2,FLAGS"

    @classmethod
    def open(cls, root: Path) -> MaildirMailbox:
        """The Maildir at `root`; a clear `ConfigError` when it is missing or is not one
        (never created: a typo must not become an empty mailbox that is read forever)."""
        if not os.path.lexists(root):
            raise ConfigError("the bounce Maildir does not exist", file=root, field=_FIELD,
                              fix="point bounces.maildir at the Maildir your mail server "
                                  "delivers the bounce address to (it holds cur/, new/, tmp/)")
        if not root.is_dir():
            raise ConfigError("the bounce Maildir is not a folder", file=root, field=_FIELD,
                              fix="point bounces.maildir at a Maildir folder (it holds cur/, "
                                  "new/, tmp/)")
        missing = [sub for sub in _SUBFOLDERS if not (root / sub).is_dir()]
        if missing:
            raise ConfigError(f"the folder is not a Maildir (no {', '.join(missing)} in it)",
                              file=root, field=_FIELD,
                              fix="point bounces.maildir at the Maildir itself, the folder "
                                  "that holds cur/, new/ and tmp/")
        try:
            box = mailbox.Maildir(root, factory=None, create=False)
        except (OSError, mailbox.Error) as err:
            raise _os_error(root, "cannot open the bounce Maildir", err) from err
        return cls(root, box)

    @property
    def name(self) -> str:
        return f"Maildir {self.root}"

    @property
    def folder(self) -> str:
        return str(self.root)

    def messages(self) -> list[Mail]:
        """The mail in `new/` and `cur/`, oldest first."""
        self._paths = {}
        found: list[tuple[float, str, int]] = []
        for sub in ("new", "cur"):
            try:
                entries = list(os.scandir(self.root / sub))
            except OSError as err:
                raise _os_error(self.root / sub, "cannot list the bounce Maildir", err) from err
            for entry in entries:
                # Dot files are not mail (Maildir spec); temporary files live in tmp/.
                if entry.name.startswith("."):
                    continue
                key = entry.name.split(self._box.colon)[0]
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:  # gone since it was listed: another reader took it
                    continue
                if not stat.S_ISREG(info.st_mode) or key in self._paths:
                    continue
                self._paths[key] = f"{sub}/{entry.name}"
                found.append((info.st_mtime, key, info.st_size))
        return [Mail(key, size) for _, key, size in sorted(found)]

    def label(self, mail: Mail) -> str:
        return self._paths.get(mail.key, mail.key)

    def read(self, mail: Mail) -> bytes:
        if mail.size is not None and mail.size > MAX_BYTES:
            raise too_large(mail.size)
        path = self.root / self._paths[mail.key]
        try:
            # O_NOFOLLOW, O_NONBLOCK: a link or a FIFO put there is not mail, and must not
            # make us read another file or hang.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
                         | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError as err:
            raise Unreadable("gone: another program moved or deleted it", gone=True) from err
        except OSError as err:
            raise Unreadable(f"cannot be read: {err.strerror or err}") from err
        try:
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise Unreadable("is not a regular file")
                data = f.read(MAX_BYTES + 1)
        except OSError as err:
            raise Unreadable(f"cannot be read: {err.strerror or err}") from err
        if len(data) > MAX_BYTES:
            raise too_large(os.stat(path).st_size)
        return data

    def mark_handled(self, mail: Mail) -> None:
        """Move the mail into `.Processed/cur/`, marked seen."""
        source = self.root / self._paths[mail.key]
        folder = self._processed_folder() / "cur"
        flags = source.name.partition(self._box.colon + "2,")[2] if source.parent.name == "cur" \
            else ""
        target = folder / f"{mail.key}{self._box.colon}2,{''.join(sorted(set(flags + 'S')))}"
        try:
            _move(source, target)
        except FileNotFoundError:
            if not os.path.lexists(source):
                return  # another fetch moved it first
            raise
        except OSError as err:
            raise _os_error(folder, "cannot move handled mail into the processed folder",
                            err) from err
        self._paths.pop(mail.key, None)

    def _processed_folder(self) -> Path:
        if self._processed is None:
            try:
                if PROCESSED not in self._box.list_folders():
                    self._box.add_folder(PROCESSED)  # cur/ new/ tmp/ and maildirfolder
            except (OSError, mailbox.Error) as err:
                raise _os_error(self.root / f".{PROCESSED}",
                                "cannot make the processed folder", err) from err
            self._processed = self.root / f".{PROCESSED}"
        return self._processed

    def close(self) -> None:
        self._box.close()

    def __enter__(self) -> MaildirMailbox:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _move(source: Path, target: Path) -> None:
    """Link `target` to `source`, then unlink `source`; never replaces a file."""
    try:
        os.link(source, target, follow_symlinks=False)
    except FileExistsError:
        if not os.path.samefile(source, target):
            # Another mail of the same unique name (it should not happen): keep both.
            return _move(source, target.with_name(f"{target.name}.{os.urandom(4).hex()}"))
        # The link was made by a fetch that stopped before the unlink.
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        # A file system without hard links: a rename, after making sure it replaces nothing.
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "already there", str(target)) from err
        os.rename(source, target)
        return _sync(target.parent)
    _sync(target.parent)
    os.unlink(source)
    _sync(source.parent)


def _sync(folder: Path) -> None:
    """Make a new or removed name durable before the next step."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _os_error(path: Path, what: str, err: OSError | mailbox.Error) -> ConfigError | MailboxError:
    why = getattr(err, "strerror", None) or str(err)
    if isinstance(err, PermissionError):
        return ConfigError(f"{what}: permission denied", file=path, field=_FIELD,
                           fix="run newsletter as a user who may read and write the Maildir")
    if isinstance(err, OSError) and err.errno == errno.EXDEV:
        return ConfigError(f"{what}: it is on another file system", file=path, field=_FIELD,
                           fix="the Maildir's .Processed folder must be on its file system")
    return MailboxError(f"{what}: {why}", file=path)
