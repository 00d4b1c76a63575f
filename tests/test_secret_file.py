"""The generated unsubscribe secret against a hostile or careless ledger folder: a planted
symlink, a dangling one, a FIFO, and a file others can read."""

from __future__ import annotations

import os
import stat

import pytest

from tests.conftest import ISSUE_DATE, Project

GOOD = b"x" * 43 + b"\n"


def error_line(result) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = [x for x in result.stderr.splitlines() if not x.startswith("warning:")]
    return line


@pytest.mark.parametrize("dangling", [False, True])
def test_a_symlink_at_the_secret_file_is_refused(project: Project, dangling: bool) -> None:
    # A file anyone can read (or create later) must not become the key to every link.
    known = project.root / "known.txt"
    if not dangling:
        known.write_bytes(GOOD)
    project.outbox.mkdir()
    (project.outbox / "unsubscribe.key").symlink_to(known)
    for command in (("check", "--date", ISSUE_DATE), ("serve",)):
        line = error_line(project.run(*command))
        assert line.startswith("error: outbox/unsubscribe.key: unsubscribe.secret: the "
                               "unsubscribe secret file is a symbolic link — ")
        assert "xxxx" not in line
    assert not dangling or not known.exists()  # nothing was written through the link
    assert not list(project.outbox.rglob("*.eml"))


def test_a_fifo_at_the_secret_file_is_refused_without_hanging(project: Project) -> None:
    project.outbox.mkdir()
    os.mkfifo(project.outbox / "unsubscribe.key")
    line = error_line(project.run("check", "--date", ISSUE_DATE))
    assert "the unsubscribe secret file is not a regular file" in line


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o666, 0o604])
def test_a_secret_file_others_can_read_is_made_private(project: Project, mode: int) -> None:
    project.outbox.mkdir()
    key = project.outbox / "unsubscribe.key"
    key.write_bytes(GOOD)
    key.chmod(mode)
    result = project.run("check", "--date", ISSUE_DATE)
    assert "Traceback" not in result.stderr
    assert result.returncode in (0, 1), result.stderr
    assert stat.S_IMODE(key.stat().st_mode) == mode & 0o700
    assert key.read_bytes() == GOOD


def test_a_new_secret_file_is_private(project: Project) -> None:
    assert project.run("check", "--date", ISSUE_DATE).returncode in (0, 1)
    assert stat.S_IMODE((project.outbox / "unsubscribe.key").stat().st_mode) == 0o600


@pytest.mark.parametrize("value", ["changeme", "x", "0123456789abcde"])
def test_a_configured_secret_too_short_to_resist_guessing_is_an_error(project: Project,
                                                                      value: str) -> None:
    env = {"NEWSLETTER_UNSUBSCRIBE__SECRET": value}
    for command in (("check", "--date", ISSUE_DATE), ("serve",),
                    ("send", "--date", ISSUE_DATE)):
        line = error_line(project.run(*command, env=env))
        assert line.startswith("error: NEWSLETTER_UNSUBSCRIBE__SECRET: the unsubscribe secret "
                               f"is too short ({len(value)} characters; at least 16) — ")
        assert len(value) < 8 or value not in line  # never shown
    assert not list(project.outbox.rglob("*.eml"))
