"""The ledger file is created only where there is none, and never taken over when what is
there is empty or another program's: that would send the issue again to readers who had it
and forget the suppression list."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from newsletter.errors import ConfigError
from newsletter.ledger import _SCHEMA as LEDGER_SCHEMA
from newsletter.ledger import SqliteLedger
from newsletter.sources.feedcache import _SCHEMA as FEED_SCHEMA
from newsletter.sources.feedcache import SqliteFeedCache
from newsletter.sqlitefile import APPLICATION_ID, PROGRAM_TABLES
from newsletter.suppressions import SCHEMA as SUPPRESSION_SCHEMA
from tests.conftest import ISSUE_DATE, Project


def _ledger(project: Project) -> Path:
    return project.outbox / "newsletter.sqlite3"


def _foreign_sqlite(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE contacts (name TEXT, phone TEXT)")
    db.execute("INSERT INTO contacts VALUES ('Ada', '555')")
    db.commit()
    db.close()


def _other_app_id(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA application_id = 1234")
    db.execute("CREATE TABLE deliveries (x)")  # even with a table name like ours
    db.commit()
    db.close()


@pytest.mark.parametrize(("make", "says"), [
    (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
    (lambda p: p.write_bytes(bytes(range(256)) * 8), "is not an SQLite database"),
    (lambda p: p.write_text("issues: none\n"), "is not an SQLite database"),
    (_foreign_sqlite, "is another program's SQLite database (tables contacts)"),
    (_other_app_id, "is another program's SQLite database (application id 0x4d2)"),
    (lambda p: p.mkdir(), "is a folder, not a newsletter ledger"),
], ids=["empty", "random", "text", "foreign-sqlite", "foreign-app-id", "folder"])
def test_an_existing_file_that_is_not_a_ledger_is_an_error_and_left_alone(
        project: Project, make, says: str) -> None:
    _refused(project, make, says, ["send", "--date", ISSUE_DATE])


@pytest.mark.parametrize("command", [["status"], ["unsubscribe", "ada@example.com"]])
def test_every_command_refuses_an_empty_ledger(project: Project, command: list[str]) -> None:
    _refused(project, lambda p: p.write_bytes(b""), "is empty (0 bytes)", command)


def _refused(project: Project, make, says: str, command: list[str]) -> None:
    path = _ledger(project)
    path.parent.mkdir(parents=True)
    make(path)
    before = sorted((p.name, p.read_bytes() if p.is_file() else b"")
                    for p in path.parent.iterdir())
    result = project.run(*command)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert line.startswith(f"error: {path.relative_to(project.root)}: ledger: {says}")
    assert "nothing was changed; " in line
    assert ("to start a new ledger on purpose, move this file away" in line
            or "set `ledger` to a file's path" in line)  # a folder is not to be moved away
    after = sorted((p.name, p.read_bytes() if p.is_file() else b"")
                   for p in path.parent.iterdir())
    assert after == before  # nothing written beside it either: no mail, no archive
    assert not list(project.outbox.rglob("*.eml"))


def test_a_new_ledger_is_marked_and_made_in_one_step(project: Project) -> None:
    result = project.run("send", "--date", ISSUE_DATE)
    assert result.returncode == 0, result.stderr
    db = sqlite3.connect(_ledger(project))
    assert db.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
    assert db.execute("PRAGMA user_version").fetchone() == (1,)
    db.close()
    assert not [p for p in project.outbox.iterdir() if p.name.endswith(".new")]


def test_a_ledger_from_before_the_marker_still_opens_with_its_records(
        project: Project) -> None:
    assert project.run("send", "--date", ISSUE_DATE).returncode == 0
    db = sqlite3.connect(_ledger(project))  # as today's main leaves it: no marker
    db.execute("PRAGMA application_id = 0")
    db.execute("PRAGMA user_version = 0")
    db.commit()
    db.close()
    again = project.run("send", "--date", ISSUE_DATE)
    assert again.returncode == 0, again.stderr
    assert "3 sent earlier" in again.stdout and "already sent" in again.stdout
    db = sqlite3.connect(_ledger(project))
    assert db.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
    db.close()


def test_a_file_with_only_the_feed_cache_opens_as_the_ledger(tmp_path: Path) -> None:
    path = tmp_path / "newsletter.sqlite3"
    db = sqlite3.connect(path)  # unmarked, as a feed-only run of today's main leaves it
    db.executescript(FEED_SCHEMA)
    db.close()
    SqliteFeedCache(path).close()
    ledger = SqliteLedger(path)
    assert ledger.suppress("l", "a@example.com", "test")
    ledger.close()
    with SqliteFeedCache(path) as cache:
        assert cache.get("https://example.com/feed") is None


def test_an_empty_file_is_refused_by_the_feed_cache_too(tmp_path: Path) -> None:
    path = tmp_path / "newsletter.sqlite3"
    path.touch()
    with pytest.raises(ConfigError, match="is empty"):
        SqliteFeedCache(path)
    assert path.read_bytes() == b""


def test_program_tables_name_every_table_the_program_creates() -> None:
    db = sqlite3.connect(":memory:")
    db.executescript(LEDGER_SCHEMA + SUPPRESSION_SCHEMA + FEED_SCHEMA)
    tables = {name for (name,) in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == PROGRAM_TABLES
