"""Header lines from a real send: never over 998 octets, never a header made by content, and
an absurd headline is an error in `check` (and so stops `send`)."""

from __future__ import annotations

from email import message_from_bytes, policy

import pytest

from tests.conftest import ISSUE_DATE, Project

BRIDGE = "title: Harbour bridge reopens after repairs\n"


def _retitle(project: Project, title: str) -> None:
    path = project.articles / "2026-11-24-bridge.md"
    text = path.read_text(encoding="utf-8")
    assert BRIDGE in text
    path.write_text(text.replace(BRIDGE, f"title: '{title}'\n"), encoding="utf-8")


@pytest.mark.parametrize("title", ["x" * 1200, ("Harbour bridge reopens " * 55).strip()])
def test_an_absurd_headline_is_a_check_error_and_folds_when_forced(
        project: Project, title: str) -> None:
    _retitle(project, title)
    checked = project.run("check", "--date", ISSUE_DATE)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    [error] = [line.strip() for line in checked.stdout.splitlines() if "subject is" in line]
    assert error.startswith(f"error: the subject is {len('The Morning Brief: ') + len(title)}"
                            " characters, over 200")
    refused = project.run("send", "--date", ISSUE_DATE)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert not list(project.outbox.rglob("*.eml"))
    forced = project.run("send", "--date", ISSUE_DATE, "--force")
    assert forced.returncode == 0, forced.stderr
    emls = list(project.outbox.rglob("*.eml"))
    assert len(emls) == 3
    for eml in emls:
        data = eml.read_bytes()
        assert max(len(line) for line in data.split(b"\r\n")) <= 998
        assert message_from_bytes(data, policy=policy.default)["Subject"] == (
            f"The Morning Brief: {title}")


def test_a_long_but_plausible_headline_is_only_a_warning(project: Project) -> None:
    _retitle(project, ("Harbour bridge reopens " * 6).strip())  # 137 characters
    checked = project.run("check", "--date", ISSUE_DATE)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "warning: the subject is 156 characters" in checked.stdout
