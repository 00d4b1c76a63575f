"""The program's one SQLite file (the ledger and the feed cache): created only where there
is no file, and never taken over when what is there is not ours.

A ledger that is silently replaced sends the issue again to readers who had it and loses
the suppression list, so an existing file must prove it is the program's before anything
writes to it. New files carry a marker (`PRAGMA application_id`, with the schema version in
`user_version`); files written before the marker existed are recognised by their tables.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from newsletter.errors import ConfigError

# "NLTR": written into every file the program creates, and into older ones it adopts.
APPLICATION_ID = 0x4E4C5452
SCHEMA_VERSION = 1
# Every table the program keeps in the file: the ledger's (ledger.py) and the feed cache's
# (sources/feedcache.py). A file without the marker is ours only if it holds some of these.
PROGRAM_TABLES = frozenset({
    "issues", "issue_variants", "issue_articles", "deliveries", "suppressions",
    "feed_cache", "feed_entries", "feed_aliases", "events", "resubscriptions",
    "webhook_tokens",
})
_START_OVER = ("nothing was changed; to start a new ledger on purpose, move this file away "
               "(e.g. mv {path} {path}.old) and run again")


def open_database(path: Path, schema: str, what: str) -> sqlite3.Connection:
    """Open the program's SQLite file with `schema` (creating the file if there is none):
    WAL mode, one connection shared by threads behind the caller's lock. `what` names it
    in errors. An empty, foreign or unreadable file is a `ConfigError`, left untouched."""
    if not os.path.lexists(path):
        _create(path, what)
    _check_file(path, what)
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    except sqlite3.Error as err:
        raise _cannot_open(path, what, err) from err
    try:
        try:
            db.execute("PRAGMA schema_version").fetchone()  # reads the header
        except sqlite3.Error as err:
            raise _not_sqlite(path, err) or _cannot_open(path, what, err) from err
        _check_marker(db, path, what)
        db.execute("PRAGMA journal_mode=WAL")
        # A committed record must survive the process being killed: in WAL mode NORMAL
        # gives that (the commit is in the WAL file before COMMIT returns) at 25 µs a
        # commit instead of FULL's 125 µs fsync. What it gives up: after an operating
        # system crash or power loss the last commits may be lost, and those messages
        # would be sent again.
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(schema)
    except ConfigError:
        db.close()
        raise
    except sqlite3.Error as err:
        db.close()
        raise _cannot_open(path, what, err) from err
    return db


def open_read_only(path: Path, what: str) -> sqlite3.Connection:
    """Open the program's existing SQLite file for reading alone, where it cannot be
    written (a read-only file, folder or mount; a full disk): for commands that only read.

    In WAL mode SQLite needs its -shm file beside the database; where it cannot make one
    and no -wal file holds commits, the file is read as it is on disk (`immutable`), which
    is then all there is to read. A `ConfigError` names what still stands in the way.
    """
    _check_file(path, what)
    uri = path.resolve().as_uri()
    wal = path.with_name(path.name + "-wal")
    try:
        pending = wal.exists() and wal.stat().st_size > 0
    except OSError:
        pending = True
    last: sqlite3.Error | None = None
    for query in ("mode=ro",) if pending else ("mode=ro", "mode=ro&immutable=1"):
        try:
            db = sqlite3.connect(f"{uri}?{query}", uri=True, check_same_thread=False,
                                 isolation_level=None, timeout=30)
        except sqlite3.Error as err:
            last = err
            continue
        try:
            (app_id,) = db.execute("PRAGMA application_id").fetchone()
            tables = {name for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.Error as err:
            db.close()
            if (refusal := _not_sqlite(path, err)) is not None:
                raise refusal from err
            last = err
            continue
        if app_id not in (0, APPLICATION_ID) or (tables and not tables & PROGRAM_TABLES):
            db.close()
            raise ConfigError("is another program's SQLite database, not a newsletter ledger",
                              file=path, field="ledger", fix="point `ledger` at another file")
        return db
    assert last is not None
    raise _cannot_open(path, what, last) from last


def has_tables(db: sqlite3.Connection, names: set[str]) -> bool:
    """Whether every table in `names` is in the file."""
    found = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = "
                                            "'table'")}
    return names <= found


def _create(path: Path, what: str) -> None:
    """Make a new, marked, empty database at `path` in one step: it is built beside it and
    linked into place, so a crash or a full disk never leaves a half-made file that the
    next run would refuse as empty."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".new", dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise _cannot_write(path, what, err) from err
    tmp = Path(name)
    try:
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("VACUUM")  # writes the header (and the marker) to the file now
        finally:
            db.close()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the content is on disk before the name is
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # never replaces a file another process made meanwhile
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links: a rename, if still no file
            if not os.path.lexists(path):
                os.replace(tmp, path)
    except sqlite3.Error as err:
        raise _cannot_open(path, what, err) from err
    except OSError as err:
        raise _cannot_write(path, what, err) from err
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _check_file(path: Path, what: str) -> None:
    """Refuse, before SQLite touches it, what cannot be the program's database."""
    def refuse(why: str) -> ConfigError:
        return ConfigError(f"{why}, not a newsletter ledger", file=path, field="ledger",
                           fix=_START_OVER.format(path=path))

    if path.is_dir():
        raise ConfigError("is a folder, not a newsletter ledger", file=path, field="ledger",
                          fix="nothing was changed; set `ledger` to a file's path, e.g. "
                              f"{path / 'newsletter.sqlite3'}")
    if path.is_symlink() and not path.exists():
        # A ledger on a mount that is not there: never start a new one in its place.
        raise ConfigError(f"is a symbolic link to {os.readlink(path)}, which is not there",
                          file=path, field="ledger",
                          fix="mount or restore what it points to, or point `ledger` at "
                              "the ledger file itself")
    if not path.is_file():
        raise refuse("is not a regular file")
    # The size, not the header: opening and closing the file here would drop every POSIX
    # lock this process holds on it (a ledger already open, serve's own connection), and
    # another process would then delete the -wal file under that connection. The header
    # is SQLite's to read: `_not_sqlite` turns its "file is not a database" into ours.
    try:
        size = path.stat().st_size
    except OSError as err:
        raise _cannot_open(path, what, err) from err
    if not size:
        raise refuse("is empty (0 bytes)")


def _not_sqlite(path: Path, err: sqlite3.Error) -> ConfigError | None:
    """Our refusal of a file that is no SQLite database, from SQLite's own error."""
    if getattr(err, "sqlite_errorcode", None) != sqlite3.SQLITE_NOTADB:
        return None
    return ConfigError("is not an SQLite database, not a newsletter ledger", file=path,
                       field="ledger", fix=_START_OVER.format(path=path))


def _check_marker(db: sqlite3.Connection, path: Path, what: str) -> None:
    """Accept our marker; adopt (and mark) an unmarked file that holds our tables or none."""
    (app_id,) = db.execute("PRAGMA application_id").fetchone()
    if app_id == APPLICATION_ID:
        return
    tables = {name for (name,) in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
    if app_id != 0 or (tables and not tables & PROGRAM_TABLES):
        holds = f"application id {app_id:#x}" if app_id else (
            "tables " + ", ".join(sorted(tables)[:5]))
        raise ConfigError(
            f"is another program's SQLite database ({holds}), not a newsletter ledger",
            file=path, field="ledger", fix="point `ledger` at another file, or "
            + _START_OVER.format(path=path))
    # A ledger or feed cache from before the marker (or a database with nothing in it).
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def failure(path: Path, err: Exception) -> tuple[str, str]:
    """What went wrong writing or opening the file, and the fix: (what, fix)."""
    reason = str(err)
    code = getattr(err, "sqlite_errorname", "") or ""  # SQLITE_FULL, SQLITE_IOERR_SHMSIZE…
    errno = getattr(err, "errno", None)
    if code == "SQLITE_FULL" or errno in (28, 27):  # ENOSPC, EFBIG
        return "the disk is full", "free some space and run the same command again"
    if code.startswith("SQLITE_READONLY") or errno in (1, 13, 30) or not _writable(path):
        return ("the file or its folder is read-only",  # EPERM, EACCES, EROFS
                "make both writable (SQLite keeps -wal and -shm files beside it), then run "
                "the same command again")
    if code.startswith("SQLITE_IOERR"):
        # SQLite does not say why a write failed; mostly it is a disk (nearly) full.
        if _free_space(path) < 1 << 20:
            return "the disk is full", "free some space and run the same command again"
        return (f"a write failed ({reason})", "check the disk (free space, `ulimit -f`, "
                "errors in the system log), then run the same command again")
    return (reason or type(err).__name__, "check that the path is a file this program made "
            "(or none), in a writable folder")


def _free_space(path: Path) -> int:
    try:
        return shutil.disk_usage(path.parent).free
    except OSError:
        return 0


def _cannot_open(path: Path, what: str, err: Exception) -> ConfigError:
    why, fix = failure(path, err)
    return ConfigError(f"cannot open the {what}: {why}", file=path, field="ledger", fix=fix)


def _cannot_write(path: Path, what: str, err: OSError) -> ConfigError:
    why, fix = failure(path, err)
    return ConfigError(f"cannot create the {what}: {why}", file=path, field="ledger", fix=fix)


def _writable(path: Path) -> bool:
    """Whether the file (if any) and its folder can be written; an actual attempt, since
    root passes `access()` checks on read-only mounts and immutable files."""
    folder = path.parent if path.parent.exists() else None
    if folder is None:
        return True
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        return False
    if path.exists():
        try:
            with open(path, "r+b"):
                pass
        except OSError:
            return False
    return True
