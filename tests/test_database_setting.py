"""The `database:` setting (issue 13): a SQLite path or a postgresql:// URL, `ledger:` its
old name; a password never in the settings file, never printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.db.url import parse_database
from newsletter.settings import Settings
from tests.conftest import Project


def test_a_path_is_the_sqlite_file_and_ledger_its_old_name() -> None:
    assert Settings(database="data/nl.sqlite3").ledger == Path("data/nl.sqlite3")
    assert Settings(ledger=Path("old.sqlite3")).database_config.path == Path("old.sqlite3")
    assert not Settings().database_config.is_postgres
    with pytest.raises(ValueError, match="two different files"):
        Settings(database="a.sqlite3", ledger=Path("b.sqlite3"))


def test_a_postgresql_url_is_taken_for_psycopg_and_masked_for_display() -> None:
    db = Settings(database="postgresql://nl:pw@db.example/letters").database_config
    assert db.is_postgres and db.path is None
    assert db.sqlalchemy_url == "postgresql+psycopg://nl:pw@db.example/letters"
    assert db.libpq_url == "postgresql://nl:pw@db.example/letters"
    assert db.display() == "postgresql://nl:***@db.example/letters"
    masked = Settings(database="postgresql://nl:pw@db.example/letters").masked()
    assert masked["database"] == "postgresql://nl:***@db.example/letters"


@pytest.mark.parametrize(("value", "words"), [
    ("mysql://root@localhost/nl", "mysql:// is not supported"),
    ("postgresql://localhost", "names no database"),
    ("postgresql://localhost:port/x", "port that is not a number"),
    ("   ", "is empty"),
])
def test_what_is_not_a_database_says_what_to_write(value: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_database(value)


def test_a_password_in_the_settings_file_is_refused_and_not_echoed(project: Project) -> None:
    project.settings.write_text(project.settings.read_text()
                                + "database: postgresql://nl:hunter2@db.example/letters\n")
    result = project.run("config", "show")
    assert result.returncode == 2, result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert "database: secrets don't belong in the settings file" in result.stderr
    assert "NEWSLETTER_DATABASE" in result.stderr


def test_the_url_from_the_environment_is_shown_masked(project: Project) -> None:
    result = project.run("config", "show",
                         env={"NEWSLETTER_DATABASE": "postgresql://nl:hunter2@db.example/x"})
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout and "postgresql://nl:***@db.example/x" in result.stdout


def test_a_crlf_in_the_url_is_refused(project: Project) -> None:
    result = project.run("config", "show",
                         env={"NEWSLETTER_DATABASE": "postgresql://db.example/x\r\nX: y"})
    assert result.returncode == 2 and "NEWSLETTER_DATABASE" in result.stderr
