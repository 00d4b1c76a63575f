"""The readers' commands through the real CLI: export (round trips, CSV injection, --output),
show, forget, signup-form and the counts by origin and state."""

from __future__ import annotations

import csv
import datetime as dt
import io
import stat
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

from newsletter.readers.store import Choices, NewReader
from newsletter.settings import load_settings
from newsletter.subscribers import load_roster
from tests.conftest import ISSUE_DATE, Project, clean_env
from tests.readers_project import LIST, SECTIONS_YAML, ledger

FORMULA_NAME = "=HYPERLINK(\"http://evil.example\",\"click\")"


def populate(project: Project) -> None:
    """One reader of each kind: a paused file reader, a suppressed one, a confirmed
    sign-up with a formula for a name, a pending import."""
    db = ledger(project)
    db.choose(LIST, "ada@example.com", Choices(paused_until=dt.date(2099, 1, 1)))
    db.suppress(LIST, "linus@example.com", "unsubscribed", {"via": "test"})
    db.sign_up(NewReader(LIST, "sig@example.net", FORMULA_NAME, ("city",), "Asia/Tokyo"),
               confirmed=True)
    db.import_readers([NewReader(LIST, "pen@example.net", "Pen")], "pending")
    db.close()


def test_check_and_status_count_readers_by_origin_and_state(proj: Project) -> None:
    populate(proj)
    expected = ("morning-brief: 4 readers — file 2, signup 1, import 1; 1 confirmed, "
                "1 pending, 1 paused, 1 suppressed")
    check = proj.run("subscribers", "check")
    assert check.returncode == 0, check.stderr
    assert "morning-brief: 2 subscribers (2 active, 0 unsubscribed)" in check.stdout
    assert expected in check.stdout
    status = proj.run("status")
    assert status.returncode == 0 and status.stdout.count(expected) == 1


def test_a_confirmed_sign_up_in_a_zone_of_its_own_gets_its_run(proj: Project) -> None:
    populate(proj)
    jobs = proj.run("schedule", "--list-jobs")
    assert jobs.returncode == 0, jobs.stderr
    assert "Asia/Tokyo" in jobs.stdout


def test_csv_export_guards_formulas_and_imports_back_in_a_fresh_project(
        proj: Project) -> None:
    populate(proj)
    result = proj.run("subscribers", "export", "--list", LIST, "--format", "csv",
                      "--output", "backup.csv")
    assert result.returncode == 0, result.stderr
    backup = proj.root / "backup.csv"
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600  # personal data
    table = list(csv.DictReader(io.StringIO(backup.read_text(encoding="utf-8"))))
    by_email = {row["email"]: row for row in table}
    assert set(by_email) == {"ada@example.com", "linus@example.com", "sig@example.net",
                             "pen@example.net"}
    assert by_email["sig@example.net"]["name"] == "'" + FORMULA_NAME  # never a formula
    assert by_email["ada@example.com"]["state"] == "paused"
    assert by_email["linus@example.com"]["state"] == "suppressed"
    assert by_email["linus@example.com"]["suppressed_reason"] == "unsubscribed"
    assert by_email["pen@example.net"]["status"] == "pending"
    assert by_email["sig@example.net"]["topics"] == "city"
    assert by_email["sig@example.net"]["confirmed"]  # the consent's time goes along
    # A fresh project: the same list, nobody in the file, no database.
    (proj.root / load_settings(proj.settings).ledger).unlink()
    proj.write("config/subscribers.yaml", SECTIONS_YAML.split("    subscribers:")[0]
               + "    subscribers: []\n")
    again = proj.run("subscribers", "import", "backup.csv", "--list", LIST, "--status",
                     "confirmed")
    assert again.returncode == 0, again.stderr
    db = ledger(proj)
    rows = {r.email: r for r in db.reader_rows(LIST)}
    assert rows["sig@example.net"].name == FORMULA_NAME  # the apostrophe came off again
    assert rows["sig@example.net"].topics == ("city",)
    assert rows["sig@example.net"].timezone == "Asia/Tokyo"
    assert rows["pen@example.net"].state == "pending"
    assert rows["ada@example.com"].state == "confirmed"
    assert "linus@example.com" not in rows and db.is_suppressed(LIST, "linus@example.com")
    db.close()


def test_yaml_export_loads_back_as_a_subscriber_file(proj: Project) -> None:
    populate(proj)
    result = proj.run("subscribers", "export", "--format", "yaml")
    assert result.returncode == 0, result.stderr
    path = proj.write("exported.yaml", result.stdout)
    roster = load_roster(path)
    readers = {s.email: s for s in roster.lists[LIST].subscribers}
    assert set(readers) == {"ada@example.com", "linus@example.com", "sig@example.net"}
    assert readers["linus@example.com"].status == "unsubscribed"
    assert readers["sig@example.net"].name == FORMULA_NAME
    assert readers["sig@example.net"].topics == ("city",)
    assert readers["sig@example.net"].timezone == "Asia/Tokyo"
    assert roster.lists[LIST].sections == ("city", "culture")
    # Pending: a comment, never an entry (a subscriber file has no "pending").
    assert "# pending, gets no issue before confirming: pen@example.net" in result.stdout


def test_export_never_replaces_the_subscriber_file(proj: Project) -> None:
    before = proj.subscribers.read_text()
    result = proj.run("subscribers", "export", "--format", "yaml", "--output",
                      "config/subscribers.yaml")
    assert result.returncode == 2 and "is the subscriber file" in result.stderr
    assert proj.subscribers.read_text() == before


def test_show_prints_everything_and_escapes_what_a_reader_typed(proj: Project) -> None:
    db = ledger(proj)
    hostile = "\x1b[2J\x1b]0;pwned\x07Eve \u202eevil"
    db.sign_up(NewReader(LIST, "eve@example.net", hostile, ("culture",)), confirmed=True)
    db.close()
    sent = proj.run("send", "--date", ISSUE_DATE)
    assert sent.returncode == 0, sent.stderr
    proj.run("unsubscribe", "eve@example.net", "--list", LIST)
    shown = proj.run("subscribers", "show", "EVE@example.net")
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "\\x1b[2J" in out and "\\u202e" in out
    assert "origin signup, confirmed" in out and "topics culture" in out
    assert f"delivery {LIST}/{ISSUE_DATE}: sent" in out
    assert f"suppressed on {LIST}: unsubscribed" in out
    file_reader = proj.run("subscribers", "show", "ada@example.com")
    assert f"{LIST}: in config/subscribers.yaml:6" in file_reader.stdout


def test_show_of_an_unknown_address_says_so(proj: Project) -> None:
    result = proj.run("subscribers", "show", "nobody@example.net")
    assert result.returncode == 1
    assert "nobody@example.net is in no list" in result.stderr


def test_forget_then_send_does_not_mail_them(proj: Project) -> None:
    result = proj.run("subscribers", "forget", "ada@example.com", "--yes")
    assert result.returncode == 0, result.stderr
    assert "ada@example.com forgotten" in result.stdout
    assert "config/subscribers.yaml:6 still lists it" in result.stderr
    sent = proj.run("send", "--date", ISSUE_DATE)
    assert sent.returncode == 0, sent.stderr
    assert {p.stem for p in proj.outbox.rglob("*.eml")} == {"linus@example.com"}
    assert "asked to be forgotten" in sent.stderr


def test_forget_reports_and_deletes_the_outbox_mail(proj: Project) -> None:
    db = ledger(proj)
    db.sign_up(NewReader(LIST, "fay@example.net", "Fay"), confirmed=True)
    db.close()
    proj.run("send", "--date", ISSUE_DATE)
    mail = proj.outbox / "mail" / LIST / ISSUE_DATE / "fay@example.net.eml"
    assert mail.exists()
    first = proj.run("subscribers", "forget", "fay@example.net", "--yes")
    assert f"in the outbox: {Path('outbox/mail') / LIST / ISSUE_DATE}" in first.stdout
    assert "readers: 1 removed" in first.stdout and "deliveries: 1 kept under the digest" \
        in first.stdout
    assert mail.exists()
    second = proj.run("subscribers", "forget", "fay@example.net", "--yes", "--delete-outbox")
    assert second.returncode == 0 and not mail.exists()
    shown = proj.run("subscribers", "show", "fay@example.net")
    assert "asked to be forgotten" in shown.stdout and "Fay" not in shown.stdout


def test_forget_without_yes_away_from_a_terminal_refuses(proj: Project) -> None:
    result = subprocess.run([sys.executable, "-m", "newsletter", "subscribers", "forget",
                             "ada@example.com"], cwd=proj.root, env=clean_env(),
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "add --yes" in result.stderr
    db = ledger(proj)
    assert not db.is_forgotten("ada@example.com")
    db.close()


class _Form(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None], list[str]]] = []
        self.open: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        info = dict(attrs)
        self.tags.append((tag, info, [t for t, _ in self.open]))
        if tag not in ("input", "br"):
            self.open.append((tag, info))

    def handle_endtag(self, tag: str) -> None:
        while self.open and self.open.pop()[0] != tag:
            pass


def test_signup_form_is_labelled_escaped_and_hides_the_honeypot(proj: Project) -> None:
    proj.write("config/subscribers.yaml", SECTIONS_YAML.replace(
        "The Morning Brief", "'Tom & Jerry <b>'"))
    result = proj.run("signup-form", "--list", LIST)
    assert result.returncode == 0, result.stderr
    html = result.stdout
    assert "<script" not in html and "Tom &amp; Jerry &lt;b&gt;" in html
    parser = _Form()
    parser.feed(html)
    forms = [info for tag, info, _ in parser.tags if tag == "form"]
    assert forms == [{"class": "nl-signup", "method": "post",
                      "action": f"https://news.example.com/subscribe/{LIST}"}]
    labels = {info["for"] for tag, info, _ in parser.tags if tag == "label"}
    inputs = [info for tag, info, _ in parser.tags if tag == "input"]
    assert all(i["id"] in labels for i in inputs)
    by_name = {}
    for i in inputs:
        by_name.setdefault(i["name"], []).append(i)
    email = by_name["email"][0]
    assert email["type"] == "email" and "required" in email and email["autocomplete"] == "email"
    assert [i["value"] for i in by_name["topics"]] == ["city", "culture"]
    honeypot = by_name["website"][0]
    assert honeypot["tabindex"] == "-1" and honeypot["autocomplete"] == "off"
    wrapper = next(info for tag, info, _ in parser.tags
                   if tag == "div" and info.get("aria-hidden") == "true")
    assert "left:-10000px" in (wrapper["style"] or "")
    inside = next(parents for tag, info, parents in parser.tags
                  if tag == "input" and info["name"] == "website")
    assert "div" in inside
    assert any(tag == "button" and info["type"] == "submit" for tag, info, _ in parser.tags)


def test_signup_form_of_an_unknown_list_is_one_line(proj: Project) -> None:
    result = proj.run("signup-form", "--list", "nope")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "unknown list 'nope'" in result.stderr
