"""The unsubscribe secret: configured, or generated on first use and kept beside the ledger
(with PostgreSQL, in its `secrets` table: every machine must seal and open the same links).

Every unsubscribe link is sealed with it, so it must outlive the run that made it: a new
secret would break every link in issues already sent. Hence an empty or damaged file is an
error, never a reason to make a new one. `NEWSLETTER_UNSUBSCRIBE__SECRET` wins when set.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import secrets
import stat
from pathlib import Path

from newsletter.errors import ConfigError
from newsletter.settings import Settings

SECRET_FILE = "unsubscribe.key"
_FIELD = "unsubscribe.secret"
_ENV = "NEWSLETTER_UNSUBSCRIBE__SECRET"
_MIN_CHARS = 32
_MIN_CONFIGURED = 16
_MAX_BYTES = 4096
_WELL_FORMED = re.compile(r"[\x21-\x7e]+")  # one word of printable ASCII


def secret_path(settings: Settings) -> Path:
    """Where the generated secret lives: in the ledger's folder (state, not settings)."""
    return settings.ledger.parent / SECRET_FILE


def unsubscribe_secret(settings: Settings) -> str:
    """The secret that seals unsubscribe links: the configured one, else the stored one,
    else a new one, stored first. Never printed."""
    found = existing_secret(settings)
    if found is not None:
        return found
    if settings.database_config.is_postgres:
        return _create_shared(settings)
    return _create(secret_path(settings))


def existing_secret(settings: Settings) -> str | None:
    """The configured or stored secret; None when none was made yet (nothing is written)."""
    configured = settings.unsubscribe.secret
    if configured is not None:
        value = configured.get_secret_value()
        if not value.strip():
            raise ConfigError("the unsubscribe secret is empty", field=_ENV,
                              fix="set a long random value, or unset it to use a generated one")
        if len(value) < _MIN_CONFIGURED:
            # One link a reader got is enough to test guesses offline; a short secret
            # falls, and with it every reader's link.
            raise ConfigError(f"the unsubscribe secret is too short ({len(value)} characters; "
                              f"at least {_MIN_CONFIGURED})", field=_ENV,
                              fix="set a long random value (python -c 'import secrets; "
                                  "print(secrets.token_urlsafe(32))'), or unset it to use a "
                                  "generated one")
        return value
    if settings.database_config.is_postgres:
        return _read_shared(settings)
    path = secret_path(settings)
    archive = settings.delivery.outbox / "archive"
    if path.resolve().is_relative_to(archive.resolve()):
        raise ConfigError("the unsubscribe secret would be kept in the public archive folder",
                          file=path, field="ledger",
                          fix="put the ledger outside delivery.outbox/archive")
    try:
        return _read(path)
    except FileNotFoundError:
        return None


def _read(path: Path) -> str:
    """The stored secret; FileNotFoundError when there is none yet."""
    try:
        # O_NONBLOCK: a FIFO put there must not hang the program. O_NOFOLLOW: a symlink
        # planted there must not make some other file (one an attacker can read) the secret.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
                     | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise
    except OSError as err:
        if os.path.islink(path):
            raise ConfigError("the unsubscribe secret file is a symbolic link", file=path,
                              field=_FIELD,
                              fix=f"put the file itself there, or set {_ENV} in the "
                                  "environment or .env") from err
        raise ConfigError(f"cannot read the unsubscribe secret: {err.strerror or err}",
                          file=path, field=_FIELD,
                          fix="check that the ledger's folder is a folder and the file is "
                              "readable by the user running newsletter") from err
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _damaged(path, "is not a regular file")
        _keep_private(fd, path, info.st_mode)
        data = os.read(fd, _MAX_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"cannot read the unsubscribe secret: {err.strerror or err}",
                          file=path, field=_FIELD, fix="check the disk and the file") from err
    finally:
        os.close(fd)
    if not data.strip():
        raise _damaged(path, "is empty")
    try:
        value = data.decode("ascii").strip()
    except UnicodeDecodeError:
        value = ""
    if len(data) > _MAX_BYTES or len(value) < _MIN_CHARS or not _WELL_FORMED.fullmatch(value):
        raise _damaged(path, "is not an unsubscribe secret (one line of at least "
                             f"{_MIN_CHARS} printable characters)")
    return value


def _keep_private(fd: int, path: Path, mode: int) -> None:
    """Take away others' (and the group's) access to the secret: whoever reads it can
    unsubscribe anyone. A file readable by all that we cannot tighten is an error."""
    if not mode & 0o077:
        return
    try:
        os.fchmod(fd, stat.S_IMODE(mode) & ~0o077)
    except OSError as err:
        if mode & 0o004:
            raise ConfigError("the unsubscribe secret file is readable by every user",
                              file=path, field=_FIELD,
                              fix=f"chmod 600 {path} as its owner") from err


def _damaged(path: Path, what: str) -> ConfigError:
    # Never show the content: it may be the secret.
    return ConfigError(f"the unsubscribe secret file {what}", file=path, field=_FIELD,
                       fix="restore it from a backup (the links in issues already sent need "
                           "it), or delete it to make a new one, which breaks those links")


def _create(path: Path) -> str:
    """Store a new secret; if another process stored one first, use that one."""
    value = secrets.token_urlsafe(32)  # 256 bits
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole under a private name, then linked into place: the secret file
        # is never seen half-written, and O_EXCL and link never replace a file.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                     0o600)
        try:
            os.write(fd, f"{value}\n".encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):  # a concurrent first run won: use its
            os.link(tmp, path)
        _sync_folder(path.parent)
    except OSError as err:
        raise ConfigError(f"cannot store the unsubscribe secret: {err.strerror or err}",
                          file=path, field=_FIELD,
                          fix="make the ledger's folder writable and give the disk room, or "
                              f"set {_ENV} in the environment or .env") from err
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return _read(path)


def _sync_folder(folder: Path) -> None:
    """Make the new name durable (POSIX); not possible, and not needed, everywhere."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# PostgreSQL ---------------------------------------------------------------------------

_NAME = "unsubscribe"


def _read_shared(settings: Settings) -> str | None:
    """The secret in the database's `secrets` table; None when none was made yet."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    from newsletter.db import engine
    from newsletter.db.errors import database_error
    from newsletter.db.migrate import ensure_postgres

    database = settings.database_config
    try:
        ensure_postgres(engine(database), database)
        with engine(database).connect() as conn:
            value = conn.execute(text("SELECT value FROM secrets WHERE name = :name"),
                                 {"name": _NAME}).scalar()
    except SQLAlchemyError as err:
        raise database_error(database, err) from err
    if value is None:
        return None
    if len(value) < _MIN_CHARS or not _WELL_FORMED.fullmatch(value):
        raise ConfigError("the unsubscribe secret in the database is not one (one line of at "
                          f"least {_MIN_CHARS} printable characters)", field=_FIELD,
                          fix="restore the secrets table from a backup (the links in issues "
                              "already sent need it), or delete its 'unsubscribe' row to make "
                              "a new one, which breaks those links")
    return str(value)


def _create_shared(settings: Settings) -> str:
    """Store a new secret unless another machine stored one first; the stored one wins."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    from newsletter.db import engine
    from newsletter.db.errors import database_error

    database = settings.database_config
    try:
        with engine(database).begin() as conn:
            conn.execute(text("INSERT INTO secrets (name, value, created) VALUES "
                              "(:name, :value, :created) ON CONFLICT (name) DO NOTHING"),
                         {"name": _NAME, "value": secrets.token_urlsafe(32),
                          "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
    except SQLAlchemyError as err:
        raise database_error(database, err) from err
    found = _read_shared(settings)
    assert found is not None
    return found
