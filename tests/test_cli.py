"""The command line, end to end on a project folder: the happy paths."""

from __future__ import annotations

import datetime as dt
import json
from email import message_from_bytes, policy

from tests.conftest import ISSUE_DATE, Project


def test_send_writes_one_eml_per_active_subscriber(project: Project) -> None:
    result = project.run("send", "--date", ISSUE_DATE)
    assert result.returncode == 0, result.stderr
    folder = project.outbox / "mail" / "morning-brief" / ISSUE_DATE
    assert sorted(p.name for p in folder.iterdir()) == [
        "ada@example.com.eml", "linus@example.com.eml", "zoe@example.org.eml"]
    assert result.stdout.strip() == (
        "morning-brief/2026-11-24 [file]: 3 sent, 1 skipped (unsubscribed), 0 failed")
    msg = message_from_bytes((folder / "ada@example.com.eml").read_bytes(), policy=policy.default)
    assert msg["To"] == "Ada Lovelace <ada@example.com>"
    assert "Good morning, Ada." in msg.get_body(("plain",)).get_content()


def test_send_twice_rewrites_the_same_files(project: Project) -> None:
    project.run("send", "--date", ISSUE_DATE)
    project.run("send", "--date", ISSUE_DATE)
    assert len(list(project.outbox.rglob("*.eml"))) == 3
    assert not list(project.outbox.rglob("*.part"))


def test_dry_run_prints_and_writes_nothing(project: Project) -> None:
    result = project.run("send", "--date", ISSUE_DATE, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "ada@example.com" in result.stdout and "[dry run]: 3 to send" in result.stdout
    assert not project.outbox.exists() or not list(project.outbox.rglob("*.eml"))


def test_test_send_to_file_backend_is_kept_apart(project: Project) -> None:
    result = project.run("send", "--date", ISSUE_DATE, "--to", "editor@example.net")
    assert result.returncode == 0, result.stderr
    [path] = project.outbox.rglob("*.eml")
    assert path == project.outbox / "test" / "morning-brief" / ISSUE_DATE / "editor@example.net.eml"
    assert "[test send]: 1 sent" in result.stdout


def test_several_lists_and_list_filter(project: Project) -> None:
    project.subscribers.write_text(project.subscribers.read_text() + (
        "  weekly:\n    title: Weekly\n    subscribers:\n      - bob@example.net\n"))
    result = project.run("send", "--date", ISSUE_DATE)
    assert result.returncode == 0, result.stderr
    assert (project.outbox / "mail" / "weekly" / ISSUE_DATE / "bob@example.net.eml").exists()
    compose = project.run("compose", "--date", ISSUE_DATE, "--json")
    assert [issue["list"] for issue in json.loads(compose.stdout)] == ["morning-brief", "weekly"]
    only = project.run("compose", "--date", ISSUE_DATE, "--json", "--list", "weekly")
    assert json.loads(only.stdout)["id"] == "weekly/2026-11-24"


def test_preview_writes_html_and_text(project: Project) -> None:
    result = project.run("preview", "--date", ISSUE_DATE)
    assert result.returncode == 0, result.stderr
    html = project.outbox / "preview" / "morning-brief" / f"{ISSUE_DATE}.html"
    text = html.with_suffix(".txt")
    assert result.stdout.split() == [str(html.relative_to(project.root)),
                                     str(text.relative_to(project.root))]
    assert "Harbour bridge reopens after repairs" in html.read_text()
    assert "Good morning, reader." in text.read_text()
    general = html.read_bytes()
    personal = project.run("preview", "--date", ISSUE_DATE, "--subscriber", "ZOE@example.org")
    assert personal.returncode == 0, personal.stderr
    # The reader's copy has a file of its own; the general preview is left as it was.
    own = html.with_name(f"{ISSUE_DATE}.zoe@example.org.html")
    assert personal.stdout.split() == [str(own.relative_to(project.root)),
                                       str(own.with_suffix(".txt").relative_to(project.root))]
    assert "Good morning, Zoë." in own.read_text()
    assert html.read_bytes() == general and "Zoë" not in html.read_text()


def test_compose_json_and_explain(project: Project) -> None:
    result = project.run("compose", "--date", ISSUE_DATE, "--json")
    issue = json.loads(result.stdout)
    assert issue["lead"]["title"] == "Harbour bridge reopens after repairs"
    assert issue["lead"]["body"].startswith("The swing bridge reopened at dawn")
    assert [h["title"] for h in issue["headlines"]] == [
        "Ferry timetable changes from Monday", "Museum opens a gallery of ship models"]
    explain = project.run("compose", "--date", ISSUE_DATE, "--explain")
    assert "most recent article with a body" in explain.stdout
    assert "same section (city) +0.3" in explain.stdout
    assert "An old story" in explain.stdout and "older than max_age_days (2)" in explain.stdout


def test_subscribers_check_and_config_show(project: Project) -> None:
    check = project.run("subscribers", "check")
    assert check.returncode == 0
    assert "morning-brief: 4 subscribers (3 active, 1 unsubscribed)" in check.stdout
    show = project.run("config", "show", env={"NEWSLETTER_SMTP__HOST": "relay.example.net"})
    assert show.returncode == 0 and "host: relay.example.net" in show.stdout


def test_every_command_explains_itself(project: Project) -> None:
    for command in (["preview"], ["send"], ["schedule"], ["compose"], ["subscribers", "check"],
                    ["config", "show"]):
        result = project.run(*command, "--help")
        assert result.returncode == 0 and "Usage: newsletter" in result.stdout
        assert len(result.stdout.splitlines()) > 4


def test_a_personal_preview_name_is_a_safe_file_name_of_its_own() -> None:
    from newsletter.cli.issue import _reader_page

    day = dt.date(2026, 11, 24)
    assert _reader_page(day, "ada@example.com") == "2026-11-24.ada@example.com"
    odd, plain = _reader_page(day, "a/b@example.com"), _reader_page(day, "a_b@example.com")
    assert "/" not in odd and odd != plain and len(_reader_page(day, "x" * 64 + "@" + "d" * 180
                                                                + ".com")) < 140
