"""Seeing and undoing: `suppressions`, `resubscribe`, the rates in `status`, the soft-bounce
policy, and a ledger of the previous version. Events go through the real path
(`policy.apply_event`) with real VERP tokens; the CLI runs as `python -m newsletter`."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter import rates
from newsletter.inbound.events import Event
from newsletter.inbound.policy import apply_event
from newsletter.inbound.settings import BouncesSection
from newsletter.ledger import SqliteLedger
from newsletter.sqlitefile import APPLICATION_ID
from newsletter.verp import Tagged, delivery_key
from tests.conftest import ISSUE_DATE, Project
from tests.smtp_server import Sink, free_port, start_server

ISSUE = f"morning-brief/{ISSUE_DATE}"
# What a hostile server can put in a diagnostic: a colour, a window title with BEL, a
# carriage return that rewrites the line, a C1 CSI, a right-to-left override, zero-width.
HOSTILE = ("550 5.1.1 no such user \x1b[31mRED\x1b[0m \x1b]0;owned\x07 \rOVER "
           "\x9b2J \u202eevil\u200b \x7fend")


def _ledger(project: Project) -> SqliteLedger:
    return SqliteLedger(project.outbox / "newsletter.sqlite3")


@pytest.fixture
def sent(project: Project) -> Project:
    result = project.run("send", "--date", ISSUE_DATE)
    assert result.returncode == 0, result.stderr
    return project


def _event(kind: str, email: str, n: int, issue: str = ISSUE, **more: str) -> Event:
    return Event(source="mailbox", event_id=f"mailbox:{kind}:{email}:{n}", kind=kind,  # type: ignore[arg-type]
                 verp=Tagged("b", delivery_key(issue, email)), **more)


def _apply(project: Project, *events: Event, bounces: BouncesSection | None = None) -> list:
    ledger = _ledger(project)
    try:
        return [apply_event(ledger, e, bounces or BouncesSection()) for e in events]
    finally:
        ledger.close()


def _safe_for_a_terminal(text: str) -> None:
    for ch in text:
        assert ch == "\n" or unicodedata.category(ch) not in ("Cc", "Cf"), repr(ch)


# --- newsletter suppressions ------------------------------------------------------------

def test_no_ledger_yet_is_no_suppressions(project: Project) -> None:
    result = project.run("suppressions")
    assert (result.returncode, result.stdout, result.stderr) == (0, "no suppressions\n", "")
    assert json.loads(project.run("suppressions", "--json").stdout) == []
    assert not (project.outbox / "newsletter.sqlite3").exists()  # looking creates nothing


def test_an_unknown_list_is_one_line(sent: Project) -> None:
    result = sent.run("suppressions", "--list", "evening-brief")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert "unknown list 'evening-brief'" in line and "morning-brief" in line


def test_every_reason_with_its_evidence_as_a_table_and_as_json(sent: Project) -> None:
    _apply(sent, _event("bounce-hard", "ada@example.com", 1, status="5.1.1",
                        diagnostic="550 5.1.1 <ada@example.com>: user unknown"),
           _event("complaint", "zoe@example.org", 1))
    result = sent.run("unsubscribe", "linus@example.com", "--list", "morning-brief")
    assert result.returncode == 0
    ledger = _ledger(sent)
    ledger.suppress("morning-brief", "old@example.net", "refused",
                    {"issue": ISSUE, "reply": "550 5.1.1 mailbox unavailable",
                     "source": "smtp"})
    ledger.close()

    result = sent.run("suppressions")
    assert result.returncode == 0, result.stderr
    header, *rows, total = result.stdout.splitlines()
    assert header.split() == ["ADDRESS", "LIST", "REASON", "SINCE", "EVIDENCE"]
    assert total == "4 suppressed"
    by_address = {row.split()[0]: row for row in rows}
    ada = by_address["ada@example.com"]
    assert "every list" in ada and "hard-bounce" in ada
    assert "status 5.1.1" in ada and f"issue {ISSUE}" in ada and "via mailbox" in ada
    assert "“550 5.1.1 <ada@example.com>: user unknown”" in ada
    assert "complaint" in by_address["zoe@example.org"]
    assert "morning-brief" in by_address["linus@example.com"]
    assert "unsubscribed" in by_address["linus@example.com"]
    assert "via newsletter unsubscribe" in by_address["linus@example.com"]
    assert "refused" in by_address["old@example.net"]
    assert "“550 5.1.1 mailbox unavailable”" in by_address["old@example.net"]
    # Columns line up: each row's REASON starts where the header's does.
    column = header.index("REASON")
    assert all(row[column:].split()[0] in {"hard-bounce", "complaint", "unsubscribed",
                                           "refused"} for row in rows)
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    assert all(today in row for row in rows)

    data = json.loads(sent.run("suppressions", "--json").stdout)
    assert len(data) == 4
    [ada_json] = [d for d in data if d["email"] == "ada@example.com"]
    assert ada_json["list"] == "*" and ada_json["reason"] == "hard-bounce"
    assert ada_json["evidence"]["status"] == "5.1.1"
    assert ada_json["evidence"]["issue"] == ISSUE
    assert ada_json["evidence"]["kind"] == "bounce-hard"
    assert dt.datetime.fromisoformat(ada_json["date"]).tzinfo is not None


def test_list_shows_that_lists_suppressions_and_those_of_every_list(sent: Project) -> None:
    _apply(sent, _event("bounce-hard", "ada@example.com", 1))
    sent.write("config/subscribers.yaml", sent.subscribers.read_text()
               + "  evening-brief:\n    title: The Evening Brief\n"
                 "    subscribers: [eve@example.com]\n")
    ledger = _ledger(sent)
    ledger.suppress("evening-brief", "eve@example.com", "unsubscribed", {"via": "test"})
    ledger.close()
    morning = sent.run("suppressions", "--list", "morning-brief").stdout
    assert "ada@example.com" in morning and "eve@example.com" not in morning
    evening = sent.run("suppressions", "--list", "evening-brief").stdout
    assert "ada@example.com" in evening and "eve@example.com" in evening


def test_a_remote_servers_text_cannot_reach_the_terminal_raw(sent: Project) -> None:
    _apply(sent, _event("bounce-hard", "ada@example.com", 1, status="5.1.1",
                        diagnostic=HOSTILE))
    ledger = _ledger(sent)
    # Straight into the ledger too (an earlier version, another source): no filter before.
    ledger.suppress("morning-brief", "zoe@example.org", "refused",
                    {"issue": ISSUE, "reply": HOSTILE, "source": "smtp"})
    ledger.close()
    for args in (["suppressions"], ["suppressions", "--json"], ["suppressions", "--history"],
                 ["resubscribe", "zoe@example.org"], ["status"]):
        result = sent.run(*args)
        assert result.returncode == 0, (args, result.stderr)
        _safe_for_a_terminal(result.stdout + result.stderr)
        assert "\x1b" not in result.stdout and "\x9b" not in result.stdout
    table = sent.run("suppressions").stdout
    # Shown as escapes, so the reader sees that something odd was there.
    assert "\\x1b[31mRED" in table and "\\u202eevil" in table and "\\x9b2J" in table
    assert "\r" not in table and " OVER " in table  # a line break is a space
    data = json.loads(sent.run("suppressions", "--json").stdout)
    assert data[0]["evidence"]["diagnostic"] == " ".join(HOSTILE.split())  # kept, escaped


# --- newsletter resubscribe -------------------------------------------------------------

def test_resubscribe_lifts_keeps_the_note_and_the_reader_gets_the_next_issue(
        sent: Project) -> None:
    _apply(sent, _event("bounce-hard", "ada@example.com", 1, status="5.1.1"))
    result = sent.run("resubscribe", "ADA@example.com", "--note", "new mailbox, asked by phone")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("lifted: ada@example.com on every list — was hard-bounce ")
    assert "status 5.1.1" in result.stdout
    assert "hard bounce said the mailbox did not exist" in result.stderr
    ledger = _ledger(sent)
    try:
        assert not ledger.is_suppressed("morning-brief", "ada@example.com")
        [lifted] = ledger.resubscriptions("ada@example.com")
        assert lifted.note == "new mailbox, asked by phone"
        assert lifted.suppression.reason == "hard-bounce"
        assert lifted.suppression.evidence["status"] == "5.1.1"
    finally:
        ledger.close()
    assert sent.run("suppressions").stdout == "no suppressions\n"
    history = sent.run("suppressions", "--history").stdout
    assert "nothing lifted" not in history
    [row] = [line for line in history.splitlines() if line.startswith("ada@")]
    assert "hard-bounce" in row and "new mailbox, asked by phone" in row
    [lifted_json] = json.loads(sent.run("suppressions", "--json", "--history").stdout)
    assert lifted_json["note"] == "new mailbox, asked by phone" and lifted_json["lifted"]
    # The next issue reaches ada again.
    sent.write("articles/2026-11-25-next.md",
               "---\ntitle: Next day\npublished: 2026-11-25T05:00:00+00:00\n---\nNews.\n")
    assert sent.run("send", "--date", "2026-11-25").returncode == 0
    assert (sent.outbox / "mail/morning-brief/2026-11-25/ada@example.com.eml").exists()


def test_nothing_to_lift_is_said_and_exits_1(sent: Project) -> None:
    result = sent.run("resubscribe", "ada@example.com")
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert "ada@example.com is not suppressed: nothing lifted" in line
    assert "typo" not in line  # ada is in the subscriber file
    typo = sent.run("resubscribe", "adaa@example.com")
    assert typo.returncode == 1 and "(a typo?)" in typo.stderr
    assert sent.run("resubscribe", "not-an-address").returncode == 2
    assert sent.run("resubscribe", "ada@example.com", "--list", "nope").returncode == 2


def test_a_complaint_is_lifted_only_with_force(sent: Project) -> None:
    _apply(sent, _event("complaint", "zoe@example.org", 1))
    result = sent.run("resubscribe", "zoe@example.org")
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert "complained" in line and "--force" in line and "nothing lifted" in line
    ledger = _ledger(sent)
    assert ledger.is_suppressed("morning-brief", "zoe@example.org")
    ledger.close()
    forced = sent.run("resubscribe", "zoe@example.org", "--force", "--note", "wrote to us")
    assert forced.returncode == 0, forced.stderr
    assert "was complaint" in forced.stdout


def test_with_list_only_that_lists_suppression_is_lifted(sent: Project) -> None:
    sent.write("config/subscribers.yaml", sent.subscribers.read_text()
               + "  evening-brief:\n    title: The Evening Brief\n"
                 "    subscribers: [linus@example.com]\n")
    for lst in ("morning-brief", "evening-brief"):
        assert sent.run("unsubscribe", "linus@example.com", "--list", lst).returncode == 0
    result = sent.run("resubscribe", "linus@example.com", "--list", "evening-brief")
    assert result.returncode == 0
    assert "on evening-brief — was unsubscribed" in result.stdout
    ledger = _ledger(sent)
    try:
        assert ledger.is_suppressed("morning-brief", "linus@example.com")
        assert not ledger.is_suppressed("evening-brief", "linus@example.com")
    finally:
        ledger.close()


def test_resubscribing_someone_the_subscriber_file_marks_unsubscribed_says_so(
        sent: Project) -> None:
    assert sent.run("unsubscribe", "grace@example.com").returncode == 0
    result = sent.run("resubscribe", "grace@example.com")
    assert result.returncode == 0
    assert "not an active subscriber of morning-brief" in result.stderr


# --- the soft-bounce policy -------------------------------------------------------------

@pytest.fixture
def three_issues(tmp_path: Path) -> Iterator[SqliteLedger]:
    """A ledger with three issues sent to ada (one soft bounce per issue counts)."""
    ledger = SqliteLedger(tmp_path / "ledger.sqlite3")
    for day in (24, 25, 26):
        issue = f"morning-brief/2026-11-{day}"
        ledger.record_issue(issue, "morning-brief", dt.date(2026, 11, day), [])
        key = delivery_key(issue, "ada@example.com")
        ledger.plan(issue, [("ada@example.com", f"<m.{key}@example.com>", "sent")])
    yield ledger
    ledger.close()


def _soft(n: int, day: int) -> Event:
    return _event("bounce-soft", "ada@example.com", n, issue=f"morning-brief/2026-11-{day}",
                  status="4.2.2", diagnostic="452 4.2.2 mailbox full")


T0 = dt.datetime(2026, 11, 24, 8, 0, tzinfo=dt.UTC)


def test_soft_bounces_suppress_at_the_limit_within_the_window(
        three_issues: SqliteLedger) -> None:
    policy = BouncesSection(soft_limit=3, soft_days=14)
    outcomes = [apply_event(three_issues, _soft(n, 24 + n), policy,
                            now=T0 + dt.timedelta(days=n)) for n in range(3)]
    assert [a.outcome for a in outcomes] == ["counted", "counted", "suppressed"]
    assert outcomes[2].reason == "soft-bounces"
    [s] = three_issues.suppressions()
    assert (s.list_id, s.reason, s.evidence["count"]) == ("*", "soft-bounces", "3")
    assert s.evidence["status"] == "4.2.2"
    # The same report again changes nothing.
    assert apply_event(three_issues, _soft(2, 26), policy).outcome == "duplicate"


def test_soft_bounces_of_one_issue_count_once_and_old_ones_drop_out(
        three_issues: SqliteLedger) -> None:
    policy = BouncesSection(soft_limit=2, soft_days=14)
    # Two reports about the same issue: one bad morning, not two.
    for n in range(2):
        assert apply_event(three_issues, _soft(n, 24), policy, now=T0).outcome == "counted"
    # The next one comes 20 days later: the first is out of the window.
    later = apply_event(three_issues, _soft(5, 25), policy, now=T0 + dt.timedelta(days=20))
    assert later.outcome == "counted"
    assert three_issues.suppressions() == []


def test_resubscribe_starts_the_soft_bounce_count_again(three_issues: SqliteLedger) -> None:
    policy = BouncesSection(soft_limit=2, soft_days=14)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    assert apply_event(three_issues, _soft(0, 24), policy, now=now).outcome == "counted"
    assert apply_event(three_issues, _soft(1, 25), policy, now=now).outcome == "suppressed"
    assert [s.reason for s in three_issues.resubscribe("ada@example.com", None, "fixed")] \
        == ["soft-bounces"]
    # Both earlier soft bounces are within 14 days, but before the resubscription.
    later = now + dt.timedelta(seconds=10)
    assert apply_event(three_issues, _soft(2, 26), policy, now=later).outcome == "counted"
    assert not three_issues.is_suppressed("morning-brief", "ada@example.com")


# --- status: bounces and complaints against the thresholds ------------------------------

def test_status_shows_bounces_and_complaints_as_counts_and_rates(project: Project) -> None:
    sink, port = Sink(), free_port()
    sink.refuse.add("linus@example.com")
    controller = start_server(sink, port=port)
    try:
        result = project.run("send", "--date", ISSUE_DATE, "--backend", "smtp",
                             env={"NEWSLETTER_SMTP__PORT": str(port),
                                  "NEWSLETTER_SMTP__SECURITY": "none"})
    finally:
        controller.stop()
    assert result.returncode == 1  # linus refused
    _apply(project, _event("bounce-hard", "ada@example.com", 1, status="5.1.1"),
           _event("complaint", "zoe@example.org", 1),
           _event("unsubscribed", "zoe@example.org", 2))
    status = project.run("status")
    assert status.returncode == 0, status.stderr
    # The readers' counts (issue 12) come first, one line per list.
    lines = [line for line in status.stdout.splitlines() if " readers — " not in line]
    assert lines[0] == f"{ISSUE} [sending]: 2 sent, 0 pending, 1 failed, 1 skipped"
    assert ("  bounces: 2 of 3 (66.7 %: 1 hard, 1 refused) — over the 5 % at which Amazon "
            "SES reviews an account") in lines
    assert ("  complaints: 1 of 2 (50.00 %) — over Gmail's and Yahoo's 0.3 % complaint "
            "limit") in lines
    assert "  unsubscribed: 1 of 2 (50.0 %)" in lines
    assert ("  failed-permanent: linus@example.com after 1 attempt(s): 550 5.1.1 mailbox "
            "unavailable") in lines


def test_status_without_anything_back_and_without_a_bounce_address_is_as_before(
        sent: Project) -> None:
    status = sent.run("status")
    assert status.stdout.split("\n", 1)[1] == \
        f"{ISSUE} [complete]: 3 sent, 0 pending, 0 failed, 1 skipped\n"
    with_bounces = sent.run("status", env={"NEWSLETTER_BOUNCES__ADDRESS":
                                           "bounces@bounce.example.com"})
    assert "  bounces: 0 of 3 (0.0 %: 0 hard, 0 refused) — ok (under 2 %)" in with_bounces.stdout
    assert "  complaints: 0 of 3 (0.00 %) — ok (under 0.1 %)" in with_bounces.stdout


@pytest.mark.parametrize(("back", "bounce", "complaint"), [
    (rates.CameBack(sent=1000), "ok", "ok"),
    (rates.CameBack(sent=1000, hard=19, complaints=0), "ok", "ok"),
    (rates.CameBack(sent=990, refused=10, hard=10), "over the 2 %", "ok"),
    (rates.CameBack(sent=1000, hard=49, soft=300), "over the 2 %", "ok"),
    (rates.CameBack(sent=950, refused=50), "over the 5 %", "ok"),
    (rates.CameBack(sent=1000, complaints=1), "ok", "over the 0.1 % Gmail advises"),
    (rates.CameBack(sent=1000, complaints=2), "ok", "over the 0.1 % Gmail advises"),
    (rates.CameBack(sent=1000, complaints=3), "ok", "over Gmail's and Yahoo's 0.3 %"),
    (rates.CameBack(sent=0, refused=4), "over the 5 %", "nothing delivered"),
])
def test_thresholds(back: rates.CameBack, bounce: str, complaint: str) -> None:
    bounces, complaints = rates.lines(back)[:2]
    assert bounces.split(" — ")[1].startswith(bounce)
    assert complaints.split(" — ")[1].startswith(complaint)


# --- a ledger of the previous version ---------------------------------------------------

# The schema of commit 6e9aa1b (newsletter/ledger.py), before evidence and events.
OLD_SCHEMA = """
CREATE TABLE issues (issue_id TEXT PRIMARY KEY, list_id TEXT NOT NULL, date TEXT NOT NULL,
    articles TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'sending',
    note TEXT NOT NULL DEFAULT '', created TEXT NOT NULL);
CREATE TABLE issue_variants (issue_id TEXT NOT NULL, topics TEXT NOT NULL,
    articles TEXT NOT NULL, created TEXT NOT NULL, PRIMARY KEY (issue_id, topics));
CREATE TABLE issue_articles (issue_id TEXT NOT NULL, article_id TEXT NOT NULL,
    data TEXT NOT NULL, PRIMARY KEY (issue_id, article_id));
CREATE TABLE deliveries (issue_id TEXT NOT NULL, email TEXT NOT NULL,
    message_id TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    reply TEXT NOT NULL DEFAULT '', created TEXT NOT NULL, updated TEXT NOT NULL,
    PRIMARY KEY (issue_id, email));
CREATE INDEX deliveries_status ON deliveries (issue_id, status);
CREATE TABLE suppressions (list_id TEXT NOT NULL, email TEXT NOT NULL,
    reason TEXT NOT NULL, created TEXT NOT NULL, PRIMARY KEY (list_id, email));
"""
OLD_REASONS = {
    "zoe@example.org": "one-click unsubscribe",
    "linus@example.com": "unsubscribed with newsletter unsubscribe",
    "ada@example.com": "morning-brief/2026-11-20: 550 5.1.1 <ada@example.com>: no such user",
}


@pytest.fixture
def old_ledger(project: Project) -> Path:
    path = project.outbox / "newsletter.sqlite3"
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute("PRAGMA user_version = 1")
    db.executemany("INSERT INTO suppressions VALUES ('morning-brief', ?, ?, "
                   "'2026-11-20T07:00:00+00:00')", OLD_REASONS.items())
    db.commit()
    db.close()
    return path


def test_an_old_ledger_read_only_still_shows_its_suppressions(old_ledger: Path) -> None:
    ledger = SqliteLedger(old_ledger, read_only=True)
    try:
        assert {s.email: s.reason for s in ledger.suppressions()} == OLD_REASONS
        assert ledger.event_counts(ISSUE) == {} and ledger.resubscriptions() == []
    finally:
        ledger.close()


def test_an_old_ledger_opens_and_its_suppressions_keep_working(project: Project,
                                                               old_ledger: Path) -> None:
    data = {d["email"]: d for d in json.loads(project.run("suppressions", "--json").stdout)}
    assert {e: (d["reason"], d["evidence"]) for e, d in data.items()} == {
        "zoe@example.org": ("unsubscribed", {"detail": "one-click unsubscribe"}),
        "linus@example.com": ("unsubscribed",
                              {"detail": "unsubscribed with newsletter unsubscribe"}),
        "ada@example.com": ("refused", {"detail": OLD_REASONS["ada@example.com"]}),
    }
    table = project.run("suppressions").stdout
    assert "2026-11-20 07:00" in table and "“one-click unsubscribe”" in table
    # They still hold: the next issue goes to none of them.
    result = project.run("send", "--date", ISSUE_DATE)
    assert result.returncode == 0, result.stderr
    folder = project.outbox / "mail/morning-brief" / ISSUE_DATE
    assert not folder.exists() or list(folder.iterdir()) == []
    assert "0 sent, 1 skipped (unsubscribed), 3 suppressed" in result.stdout
    # And can be lifted like new ones.
    lifted = project.run("resubscribe", "ada@example.com", "--note", "fixed")
    assert lifted.returncode == 0 and "was refused" in lifted.stdout
    assert "no such user" in lifted.stdout
