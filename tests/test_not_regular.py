"""A FIFO, /dev/zero, a folder or a socket where a file belongs: one error line, exit 2, fast.

Each command runs with its own short timeout: on a hang the test fails in seconds, and it
asserts the error line, not merely that the command ended.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ISSUE_DATE, REPO, Project, clean_env

GOOD_FEED = REPO / "articles" / "feeds" / "harbourton-events.xml"

ZERO = Path("/dev/zero")
pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo") or not ZERO.exists(),
                                reason="needs FIFOs and /dev/zero")


def _run(project: Project, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "newsletter", *args], cwd=project.root,
                          env=clean_env(), capture_output=True, text=True, timeout=15)


def _error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors, result.stderr
    return errors[0]


def _fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


@pytest.fixture
def unix_socket(project: Project) -> Iterator[Path]:
    path = project.root / "config" / "sock.yaml"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        yield path


def _set(project: Project, old: str, new: str) -> None:
    text = project.settings.read_text()
    assert old in text
    project.settings.write_text(text.replace(old, new))


@pytest.mark.parametrize("kind", ["fifo", "zero", "folder"])
def test_subscriber_file_that_is_not_regular(project: Project, kind: str) -> None:
    target = {"fifo": lambda: _fifo(project.root / "config" / "readers.yaml"),
              "zero": lambda: ZERO,
              "folder": lambda: project.root / "config"}[kind]()
    _set(project, "subscribers: config/subscribers.yaml", f"subscribers: {target}")
    line = _error_line(_run(project, "subscribers", "check"))
    expected = {"fifo": "subscriber file is a FIFO (named pipe), not a regular file",
                "zero": "subscriber file is a character device, not a regular file",
                "folder": "subscriber file is a folder, not a file"}[kind]
    assert line.startswith(f"error: {target}: {expected}"), line
    assert _error_line(_run(project, "send", "--date", ISSUE_DATE)) == line


def test_subscriber_file_that_is_a_socket(project: Project, unix_socket: Path) -> None:
    _set(project, "subscribers: config/subscribers.yaml", f"subscribers: {unix_socket}")
    line = _error_line(_run(project, "subscribers", "check"))
    assert line.startswith(f"error: {unix_socket}: subscriber file is a socket, not a regular "
                           "file"), line


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_settings_file_that_is_not_regular(project: Project, kind: str) -> None:
    target = _fifo(project.root / "config" / "fifo.yaml") if kind == "fifo" else ZERO
    line = _error_line(_run(project, "--config", str(target), "config", "show"))
    assert line.startswith(f"error: {target}: settings file is a "), line
    assert "not a regular file" in line


@pytest.mark.parametrize("kind", ["fifo", "zero"])
@pytest.mark.parametrize("where", ["in the folder", "named in articles.paths"])
def test_article_file_that_is_not_regular(project: Project, kind: str, where: str) -> None:
    article = project.articles / "2026-11-24-pipe.md"
    if kind == "fifo":
        _fifo(article)
    else:
        article.symlink_to(ZERO)
    if where != "in the folder":
        _set(project, "paths: [articles]", f"paths: [{article}]")
    named = article if where != "in the folder" else "articles/2026-11-24-pipe.md"
    line = _error_line(_run(project, "compose", "--date", ISSUE_DATE))
    assert line.startswith(f"error: {named}: article is a "), line
    assert "not a regular file" in line


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_local_feed_that_is_not_regular(project: Project, kind: str) -> None:
    target = _fifo(project.root / "feed.xml") if kind == "fifo" else ZERO
    _set(project, "paths: [articles]", f'paths: []\n  feeds: ["{target}"]')
    line = _error_line(_run(project, "compose", "--date", ISSUE_DATE))
    assert "articles.feeds" in line, line
    result = _run(project, "compose", "--date", ISSUE_DATE)
    assert f"{target}: articles.feeds: feed file is a " in result.stderr, result.stderr
    # Beside a feed that works the feed is a warning, and the issue goes on.
    _set(project, f'feeds: ["{target}"]', f'feeds: ["{target}", "{GOOD_FEED}"]')
    result = _run(project, "compose", "--date", ISSUE_DATE)
    assert result.returncode == 0, result.stderr
    assert f"warning: {target}: articles.feeds: feed file is a " in result.stderr


def test_local_feed_has_the_fetched_feeds_size_cap(project: Project) -> None:
    big = project.root / "big.xml"
    with big.open("wb") as file:
        file.write(b'<?xml version="1.0"?><rss version="2.0"><channel><title>Big</title>')
        file.truncate(10 * 1024 * 1024 + 1)  # a sparse file: no 10 MB written to the disk
    _set(project, "max_age_days: 2", f'max_age_days: 2\n  feeds: ["{big}", "{GOOD_FEED}"]')
    result = _run(project, "compose", "--date", ISSUE_DATE)
    assert result.returncode == 0, result.stderr
    assert f"warning: {big}: articles.feeds: feed file is larger than 10 MB" in result.stderr


def test_article_file_has_a_size_cap(project: Project) -> None:
    big = project.articles / "2026-11-24-huge.md"
    with big.open("wb") as file:
        file.write(b"---\ntitle: Huge\npublished: 2026-11-24\n---\n")
        file.truncate(10 * 1024 * 1024 + 1)
    line = _error_line(_run(project, "compose", "--date", ISSUE_DATE))
    assert line.startswith("error: articles/2026-11-24-huge.md: article is larger than 10 MB"), line
