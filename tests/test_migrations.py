"""Schema migrations: a ledger made by the program before them (tests/fixtures, made by
make_old_ledger.py at commit ca5dad6) upgrades in place; an empty PostgreSQL database is
brought to head on first use; `newsletter db upgrade` and `db status` say what they did;
a database at another revision is refused with what to do."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, inspect

from newsletter.db.migrate import head, revisions, verdict
from newsletter.db.schema import metadata
from tests.conftest import REPO, Project, clean_env
from tests.fixtures.make_old_ledger import ISSUE_DATE, write_project

OLD = Path(__file__).parent / "fixtures" / "ledger-ca5dad6.sqlite3"
TABLES = ("issues", "issue_variants", "issue_articles", "deliveries", "suppressions",
          "events", "resubscriptions", "webhook_tokens", "readers", "confirmation_mails",
          "forgotten", "forgotten_complaints", "feed_cache", "feed_entries", "feed_aliases")


def counts(path: Path) -> dict[str, int]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    finally:
        db.close()


def revision_of(path: Path) -> str | None:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    except sqlite3.OperationalError:
        return None
    finally:
        db.close()


@pytest.fixture
def old_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    """The project the fixture's ledger was made in, with that ledger (a copy)."""
    root = tmp_path / "old"
    root.mkdir()
    write_project(root, REPO / "templates")
    (root / "outbox").mkdir()
    shutil.copyfile(OLD, root / "outbox" / "newsletter.sqlite3")
    monkeypatch.chdir(root)
    return Project(root)


def test_the_fixture_is_a_ledger_from_before_migrations(tmp_path: Path) -> None:
    copy = tmp_path / "old.sqlite3"  # opening the fixture itself would leave -shm beside it
    shutil.copyfile(OLD, copy)
    assert revision_of(copy) is None
    assert all(counts(copy).values()), counts(copy)  # every table has rows


def test_an_old_ledger_upgrades_in_place_and_sends_nobody_twice(old_project: Project) -> None:
    ledger = old_project.outbox / "newsletter.sqlite3"
    before = counts(ledger)
    sent = old_project.run("send", "--date", ISSUE_DATE)
    assert sent.returncode == 0, sent.stderr
    assert not list(old_project.outbox.rglob("*.eml"))  # everyone had it
    assert revision_of(ledger) == head()
    assert counts(ledger) == before
    db = sqlite3.connect(ledger)
    assert db.execute("SELECT email, status, attempts FROM deliveries ORDER BY email"
                      ).fetchall() == [("ada@example.com", "sent", 1),
                                       ("gone@example.com", "skipped", 0),
                                       ("linus@example.com", "sent", 1),
                                       ("zoe@example.org", "sent", 1)]
    db.close()
    status = old_project.run("status", "--date", ISSUE_DATE)
    assert status.returncode == 0, status.stderr
    assert "3 sent" in status.stdout
    listed = old_project.run("suppressions")
    assert listed.returncode == 0 and "linus@example.com" in listed.stdout
    upgraded = old_project.run("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"already at schema revision {head()}" in upgraded.stdout


def test_db_upgrade_on_an_old_ledger_says_from_and_to(old_project: Project) -> None:
    status = old_project.run("db", "status")
    assert "schema revision none" in status.stdout and "upgraded in place" in status.stdout
    done = old_project.run("db", "upgrade")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(f"upgraded from schema revision none to {head()}")
    assert "up to date" in old_project.run("db", "status").stdout


@pytest.fixture
def immutable_old_ledger(old_project: Project) -> Iterator[Path]:
    if shutil.which("chattr") is None or subprocess.run(["id", "-u"], capture_output=True,
                                                        text=True).stdout.strip() != "0":
        pytest.skip("needs root to make the ledger immutable (chattr +i)")
    path = old_project.outbox / "newsletter.sqlite3"
    subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_an_old_ledger_that_cannot_be_written_is_still_read(
        old_project: Project, immutable_old_ledger: Path) -> None:
    status = old_project.run("status", "--date", ISSUE_DATE)
    assert status.returncode == 0, status.stderr
    assert "3 sent" in status.stdout
    listed = old_project.run("suppressions")
    assert listed.returncode == 0 and "linus@example.com" in listed.stdout, listed.stderr
    export = old_project.run("subscribers", "export", "--format", "csv")
    assert export.returncode == 0, export.stderr
    assert revision_of(immutable_old_ledger) is None  # nothing was written


def test_a_new_sqlite_ledger_is_stamped_head_without_loading_alembic(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    code = ("import sys; from pathlib import Path; from newsletter.ledger import SqliteLedger; "
            f"SqliteLedger(Path({str(path)!r})).close(); "
            f"SqliteLedger(Path({str(path)!r})).close(); print('alembic' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=clean_env(), check=True)
    assert done.stdout.strip() == "False"
    assert revision_of(path) == head()


def test_the_sqlite_schema_scripts_and_the_migrations_make_the_same_tables(
        tmp_path: Path) -> None:
    from newsletter.ledger import SqliteLedger
    from newsletter.sources.feedcache import SqliteFeedCache

    scripts = tmp_path / "scripts.sqlite3"
    SqliteLedger(scripts).close()
    SqliteFeedCache(scripts).close()
    migrated = tmp_path / "migrated.sqlite3"
    from newsletter.db.migrate import upgrade_sqlite

    assert upgrade_sqlite(migrated) == (None, head())

    def shape(path: Path) -> dict[str, object]:
        db = sqlite3.connect(path)
        try:
            tables = {n for (n,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")} - {"alembic_version"}
            return {t: sorted((row[1], row[2].upper(), row[3] or row[5], row[5])
                              for row in db.execute(f"PRAGMA table_info({t})"))
                    for t in tables} | {"indexes": sorted(n for (n,) in db.execute(
                        "SELECT name FROM sqlite_master WHERE type = 'index' "
                        "AND name NOT LIKE 'sqlite_%'"))}
        finally:
            db.close()

    made_by_scripts = shape(scripts)
    made_by_scripts.pop("secrets", None)
    migrated_shape = shape(migrated)
    assert migrated_shape.pop("secrets")  # PostgreSQL's shared secret; SQLite keeps a file
    assert made_by_scripts == migrated_shape


def test_an_empty_postgres_database_gets_every_table_once_from_two_machines_at_once(
        pg_url: str) -> None:
    code = ("from newsletter.db import parse_database; from newsletter.db.pgledger import "
            f"PgLedger; PgLedger(parse_database({pg_url!r}))")
    starting = [subprocess.Popen([sys.executable, "-c", code], env=clean_env(),
                                 stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for process in starting:
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
    engine = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            indexes = {i["name"] for i in inspect(conn).get_indexes("deliveries")}
    finally:
        engine.dispose()
    assert set(metadata.tables) | {"alembic_version"} <= tables  # (later revisions add more)
    assert {"deliveries_key", "deliveries_message_id", "deliveries_status"} <= indexes
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(head(),)]
        # The delivery-key lookup uses its expression index.
        plan = conn.execute(
            "EXPLAIN SELECT 1 FROM deliveries WHERE substr(message_id, strpos(message_id, "
            "'@') - 20, 20) = 'x'").fetchall()
    assert "deliveries_key" in " ".join(row[0] for row in plan)


def pg_project(project: Project, url: str) -> Project:
    project.settings.write_text(project.settings.read_text() + f"database: {url}\n")
    return project


def test_db_upgrade_on_postgres_says_from_and_to(project: Project, pg_url: str) -> None:
    pg_project(project, pg_url)
    assert "made on first use" in project.run("db", "status").stdout
    done = project.run("db", "upgrade")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{pg_url}: upgraded from schema revision none to {head()}"
    again = project.run("db", "upgrade")
    assert again.stdout.strip() == f"{pg_url}: already at schema revision {head()} (the newest)"
    assert "up to date" in project.run("db", "status").stdout


def test_a_database_at_a_revision_this_program_does_not_know_is_refused(
        project: Project, pg_url: str) -> None:
    pg_project(project, pg_url)
    assert project.run("db", "upgrade").returncode == 0
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    for command in (["send", "--date", "2026-11-24"], ["status"], ["db", "upgrade"]):
        done = project.run(*command)
        assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
        assert "at schema revision 9999, which this program does not know" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_database_behind_head_says_to_run_db_upgrade(project: Project, pg_url: str) -> None:
    error = verdict(revisions()[0], "the-db")
    if len(revisions()) == 1:
        assert error is None  # the baseline is head: nothing can be behind it yet
        return
    assert error is not None and "run `newsletter db upgrade`" in str(error)
    pg_project(project, pg_url)
    assert project.run("db", "upgrade").returncode == 0
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE alembic_version SET version_num = %s", (revisions()[-2],))
    done = project.run("status")
    assert done.returncode != 0 and "run `newsletter db upgrade`" in done.stderr, done.stderr


def test_db_copy_moves_an_old_ledger_into_postgres_and_nobody_gets_it_twice(
        old_project: Project, pg_url: str) -> None:
    from newsletter.secret import unsubscribe_secret
    from newsletter.settings import load_settings

    sqlite_file = old_project.outbox / "newsletter.sqlite3"
    old_secret = unsubscribe_secret(load_settings(old_project.settings))  # its key file
    before = counts(sqlite_file)
    old_project.settings.write_text(old_project.settings.read_text()
                                    + f"database: {pg_url}\n")
    copied = old_project.run("db", "copy", str(sqlite_file))
    assert copied.returncode == 0, copied.stderr
    assert f"copied {sum(before.values())} rows from {sqlite_file} to {pg_url}; the " \
        "unsubscribe secret too" in copied.stdout
    with psycopg.connect(pg_url) as conn:
        for table, count in before.items():
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (count,), table
        body = conn.execute("SELECT body FROM feed_cache").fetchone()[0]
    assert body.startswith(b"<rss")
    assert unsubscribe_secret(load_settings(old_project.settings)) == old_secret
    sent = old_project.run("send", "--date", ISSUE_DATE)
    assert sent.returncode == 0, sent.stderr
    assert not list(old_project.outbox.rglob("*.eml"))
    again = old_project.run("db", "copy", str(sqlite_file))
    assert again.returncode != 0 and "already holds rows" in again.stderr
    assert counts(sqlite_file) == before  # the source is only read
