"""The program on PostgreSQL, end to end: `database: postgresql://…` and every command
that reads or writes the tables, as a user runs them (real processes, a real server)."""

from __future__ import annotations

import json
import os
from email import message_from_bytes, policy
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from newsletter.db.migrate import head
from newsletter.settings import load_settings
from newsletter.web import create_app
from tests.conftest import ISSUE_DATE, Project
from tests.web_server import call, running

SENT = "mail/morning-brief/" + ISSUE_DATE


def on_postgres(project: Project, url: str) -> None:
    settings = project.settings.read_text()
    project.settings.write_text(settings + f"database: {url}\n")


def rows(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def test_send_status_suppressions_and_export_keep_everything_in_postgres(
        project: Project, pg_url: str) -> None:
    on_postgres(project, pg_url)
    sent = project.run("send", "--date", ISSUE_DATE)
    assert sent.returncode == 0, sent.stderr
    assert sorted(p.name for p in (project.outbox / SENT).glob("*.eml")) == [
        "ada@example.com.eml", "linus@example.com.eml", "zoe@example.org.eml"]
    # Nothing but the mail itself on disk: no ledger file, no secret file.
    assert not (project.outbox / "newsletter.sqlite3").exists()
    assert not (project.outbox / "unsubscribe.key").exists()
    assert sorted(rows(pg_url, "SELECT email, status FROM deliveries WHERE status = 'sent'")) == [
        ("ada@example.com", "sent"), ("linus@example.com", "sent"),
        ("zoe@example.org", "sent")]
    assert rows(pg_url, "SELECT version_num FROM alembic_version") == [(head(),)]
    assert len(rows(pg_url, "SELECT value FROM secrets WHERE name = 'unsubscribe'")) == 1

    again = project.run("send", "--date", ISSUE_DATE)
    assert again.returncode == 0, again.stderr
    assert rows(pg_url, "SELECT sum(attempts) FROM deliveries") == [(3,)]  # nobody twice

    status = project.run("status", "--date", ISSUE_DATE)
    assert status.returncode == 0, status.stderr
    assert "3 sent" in status.stdout

    added = project.run("unsubscribe", "linus@example.com", "--list", "morning-brief")
    assert added.returncode == 0 and "will get no more" in added.stdout, added.stderr
    listed = project.run("suppressions", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [s["email"] for s in json.loads(listed.stdout)] == ["linus@example.com"]

    project.write("new.csv", "email,name\nnew@example.com,New Reader\n")
    imported = project.run("subscribers", "import", "new.csv", "--list", "morning-brief",
                           "--status", "confirmed")
    assert imported.returncode == 0, imported.stderr
    assert rows(pg_url, "SELECT email, origin, state FROM readers") == [
        ("new@example.com", "import", "confirmed")]
    exported = project.run("subscribers", "export", "--format", "csv")
    assert exported.returncode == 0, exported.stderr
    assert "new@example.com" in exported.stdout and "ada@example.com" in exported.stdout
    forgot = project.run("subscribers", "forget", "zoe@example.org", "--yes")
    assert forgot.returncode == 0, forgot.stderr
    assert not rows(pg_url, "SELECT 1 FROM deliveries WHERE email = 'zoe@example.org'")
    assert len(rows(pg_url, "SELECT digest FROM forgotten")) == 1


def test_a_one_click_unsubscribe_through_serve_is_kept_in_postgres(
        project: Project, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    on_postgres(project, pg_url)
    assert project.run("send", "--date", ISSUE_DATE).returncode == 0
    eml = project.outbox / SENT / "ada@example.com.eml"
    msg = message_from_bytes(eml.read_bytes(), policy=policy.default)
    link = urlsplit(str(msg["List-Unsubscribe"]).split(",")[0].strip().strip("<>"))
    # The secret the send stored in the database opens the link in another process.
    with running(create_app(load_settings(project.settings))) as base:
        answer = call(f"{base}{link.path}?{link.query}", "POST", b"List-Unsubscribe=One-Click")
    assert answer.status == 200 and "gets no more" in answer.body
    assert rows(pg_url, "SELECT list_id, email, reason FROM suppressions") == [
        ("morning-brief", "ada@example.com", "unsubscribed")]


def test_an_unreachable_database_is_one_line_and_a_failure(project: Project) -> None:
    # Nothing listens on port 9 (discard): refused at once. The password comes from the
    # environment, as it must, and is never shown.
    env = {"NEWSLETTER_DATABASE": "postgresql://postgres:hunter2secret@127.0.0.1:9/nowhere"}
    for command in (["send", "--date", ISSUE_DATE], ["status"], ["suppressions"],
                    ["db", "upgrade"], ["db", "status"]):
        done = project.run(*command, env=env)
        assert done.returncode != 0, command
        assert "Traceback" not in done.stderr, done.stderr
        assert "hunter2secret" not in done.stderr + done.stdout
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("error: ") and "cannot reach the database at " \
            "postgresql://postgres:***@127.0.0.1:9/nowhere: connection refused" in lines[0]


def test_two_sends_at_once_on_postgres_meet_the_same_lock(project: Project,
                                                         pg_url: str) -> None:
    from newsletter.db.locks import DatabaseLock
    from newsletter.db.url import parse_database

    on_postgres(project, pg_url)
    held = DatabaseLock(parse_database(pg_url), "send", "sending")
    held.acquire()
    try:
        done = project.run("send", "--date", ISSUE_DATE)
    finally:
        held.release()
    assert done.returncode != 0
    assert f"sending is locked by pid {os.getpid()} on " in done.stderr, done.stderr
    assert not list(Path(project.outbox).rglob("*.eml"))
    assert project.run("send", "--date", ISSUE_DATE).returncode == 0


def test_serve_answers_503_while_postgres_is_away_and_recovers(project: Project,
                                                               pg_url: str) -> None:
    from tests.pg import admin_connection

    on_postgres(project, pg_url)
    assert project.run("send", "--date", ISSUE_DATE).returncode == 0
    eml = project.outbox / SENT / "zoe@example.org.eml"
    msg = message_from_bytes(eml.read_bytes(), policy=policy.default)
    link = urlsplit(str(msg["List-Unsubscribe"]).split(",")[0].strip().strip("<>"))
    name = pg_url.rsplit("/", 1)[1]

    def away(allowed: bool) -> None:
        with admin_connection() as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s AND pid != pg_backend_pid()", (name,))

    with running(create_app(load_settings(project.settings))) as base:
        url = f"{base}{link.path}?{link.query}"
        away(False)
        try:
            answer = call(url, "POST", b"List-Unsubscribe=One-Click")
        finally:
            away(True)
        assert answer.status == 503, answer.body
        assert call(url, "POST", b"List-Unsubscribe=One-Click").status == 200  # reconnected
    assert rows(pg_url, "SELECT email FROM suppressions") == [("zoe@example.org",)]
