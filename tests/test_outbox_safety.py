"""What `send` writes where and what it records: list names cannot reach the outbox's own
folders, printing is not delivering, and a test copy is the issue the readers got."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from newsletter.ledger import SqliteLedger
from tests.conftest import ISSUE_DATE, Project

ACTIVE = ["ada@example.com.eml", "linus@example.com.eml", "zoe@example.org.eml"]
# Names the outbox uses itself, as list names, beside an ordinary list.
OWN_NAMES = ["archive", "preview", "test", "mail"]


def _parse(path: Path) -> EmailMessage:
    return message_from_bytes(path.read_bytes(), policy=policy.default)  # type: ignore[return-value]


def test_lists_named_like_the_outboxs_folders_stay_in_their_own(project: Project) -> None:
    project.subscribers.write_text(project.subscribers.read_text() + "".join(
        f"  {name}:\n    title: List {name.title()}\n    subscribers:\n"
        f"      - reader@{name}.example\n" for name in OWN_NAMES))
    lists = ["morning-brief", *OWN_NAMES]
    assert project.run("preview", "--date", ISSUE_DATE).returncode == 0
    sent = project.run("send", "--date", ISSUE_DATE)
    assert sent.returncode == 0, sent.stderr
    test = project.run("send", "--date", ISSUE_DATE, "--to", "editor@example.net")
    assert test.returncode == 0, test.stderr
    outbox = project.outbox

    # Every top-level name is the program's own; lists are the folders one level down.
    assert {p.name for p in outbox.iterdir()} <= {
        "mail", "test", "archive", "preview", "newsletter.sqlite3", "newsletter.sqlite3-wal",
        "newsletter.sqlite3-shm", "newsletter.sqlite3.lock", "unsubscribe.key"}
    emls = sorted(p.relative_to(outbox) for p in outbox.rglob("*.eml"))
    assert all(p.parts[0] in ("mail", "test") and p.parts[1] in lists and len(p.parts) == 4
               for p in emls), emls
    assert len([p for p in emls if p.parts[0] == "mail"]) == 3 + len(OWN_NAMES)
    assert len([p for p in emls if p.parts[0] == "test"]) == len(lists)
    assert sorted(p.name for p in (outbox / "mail" / "archive" / ISSUE_DATE).iterdir()) == [
        "reader@archive.example.eml"]
    # What `serve` publishes holds pages only, and each list's pages are its own.
    assert {p.suffix for p in (outbox / "archive").rglob("*") if p.is_file()} == {".html"}
    assert {p.parent.name for p in (outbox / "archive").rglob("*.html")} == set(lists)
    for name in lists:
        title = "The Morning Brief" if name == "morning-brief" else f"List {name.title()}"
        page = (outbox / "archive" / name / f"{ISSUE_DATE}.html").read_text(encoding="utf-8")
        index = (outbox / "archive" / name / "index.html").read_text(encoding="utf-8")
        preview = (outbox / "preview" / name / f"{ISSUE_DATE}.html").read_text(encoding="utf-8")
        assert title in page and title in index and title in preview
    assert not list((outbox / "preview").rglob("*.eml"))


def test_console_send_records_nothing_so_the_real_send_reaches_everyone(
        project: Project) -> None:
    printed = project.run("send", "--date", ISSUE_DATE, "--backend", "console")
    assert printed.returncode == 0, printed.stderr
    assert "ada@example.com" in printed.stdout
    assert not list(project.outbox.rglob("*.eml")) and not list(project.outbox.rglob("*.html"))
    ledger_file = project.outbox / "newsletter.sqlite3"
    if ledger_file.exists():
        ledger = SqliteLedger(ledger_file)
        try:
            assert "sent" not in ledger.statuses(f"morning-brief/{ISSUE_DATE}").values()
        finally:
            ledger.close()
    assert "[dry run]: 3 to send" in printed.stdout  # what it printed, not "sent"

    sent = project.run("send", "--date", ISSUE_DATE)
    assert sent.returncode == 0, sent.stderr
    assert "[file]: 3 sent" in sent.stdout
    folder = project.outbox / "mail" / "morning-brief" / ISSUE_DATE
    assert sorted(p.name for p in folder.iterdir()) == ACTIVE


def test_a_test_copy_of_a_sent_issue_is_the_issue_as_sent(project: Project) -> None:
    assert project.run("send", "--date", ISSUE_DATE).returncode == 0
    # After the send, a new story arrives that a fresh composition would lead with.
    project.write("articles/2026-11-24-late.md", """\
        ---
        title: Late news that nobody got
        url: https://news.example.com/2026/11/late
        published: 2026-11-24T07:30:00+00:00
        section: city
        lead: true
        ---
        It came after the issue went out.
        """)
    test = project.run("send", "--date", ISSUE_DATE, "--to", "editor@example.net")
    assert test.returncode == 0, test.stderr
    [copy_path] = project.outbox.rglob("editor@example.net.eml")
    [real_path] = project.outbox.rglob("ada@example.com.eml")
    real, copy = _parse(real_path), _parse(copy_path)
    assert copy["Subject"] == f"[TEST] {real['Subject']}"
    text = copy.get_body(("plain",)).get_content()
    assert "Late news that nobody got" not in text
    headlines = [t for t in ("Harbour bridge reopens", "Ferry timetable changes",
                             "Museum opens a gallery") if t in real.get_body(("plain",))
                 .get_content()]
    assert headlines and all(t in text for t in headlines)


def test_addresses_that_share_a_safe_form_get_files_of_their_own(project: Project) -> None:
    """`a&b@` and `a_b@` are both valid and both become `a_b@` as a plain file name; an
    address of 254 characters would not fit one with `.eml`: every reader gets a file."""
    long_address = "l" * 64 + "@" + ".".join(["d" * 60] * 3) + ".examp"
    readers = ["a&b@example.com", "a_b@example.com", "a/b@example.com", long_address]
    project.subscribers.write_text(
        "lists:\n  morning-brief:\n    title: The Morning Brief\n    subscribers:\n"
        + "".join(f'      - "{r}"\n' for r in readers))
    sent = project.run("send", "--date", ISSUE_DATE)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    files = list((project.outbox / "mail" / "morning-brief" / ISSUE_DATE).glob("*.eml"))
    assert len(files) == len(readers)
    assert not any(f.name.startswith(".") for f in files)
    to = {message_from_bytes(f.read_bytes(), policy=policy.default)["To"].addresses[0]
          .addr_spec for f in files}
    assert to == set(readers)
