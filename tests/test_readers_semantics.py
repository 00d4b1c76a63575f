"""What the merged roster means in the combinations a new user runs into: counts that add
up, an export that imports back without weakening a suppression, a forget that leaves no
copy of the address in the database file, and a forgotten reader's fresh consent."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

from newsletter.ledger import SqliteLedger
from newsletter.readers.roster import count_readers, merge_roster
from newsletter.readers.store import Choices, NewReader
from newsletter.settings import load_settings
from newsletter.subscribers import load_roster
from newsletter.suppressions import StoredEvent
from tests.conftest import Project

LIST = "morning-brief"
FILE = """\
lists:
  morning-brief:
    title: The Morning Brief
    sections: [city, culture]
    subscribers:
      - email: ada@example.com
      - email: grace@example.com
        status: unsubscribed
  evening-brief:
    title: The Evening Brief
    subscribers:
      - ada@example.com
"""
DAY = dt.date(2026, 12, 2)


def roster_of(tmp_path: Path) -> Path:
    path = tmp_path / "subscribers.yaml"
    path.write_text(FILE, encoding="utf-8")
    return path


def test_a_pending_sign_up_of_a_reader_the_file_has_is_counted_once(tmp_path: Path) -> None:
    # grace is `status: unsubscribed` in the file and signs up again (not confirmed yet):
    # one person, not a file reader plus a sign-up.
    ledger = SqliteLedger(tmp_path / "l.sqlite3")
    ledger.sign_up(NewReader(LIST, "grace@example.com", "Grace"))
    merged = merge_roster(load_roster(roster_of(tmp_path)), ledger).lists[LIST]
    counts = count_readers(merged, ledger.reader_rows(LIST), ledger.suppressed(LIST), DAY)
    assert sum(counts.origins.values()) == 2 == sum(counts.states.values())
    # Once confirmed, the file's "unsubscribed" gives way to her own new consent.
    row = ledger.reader_row(LIST, "grace@example.com")
    assert row is not None and row.nonce
    assert ledger.confirm(LIST, "grace@example.com", row.nonce) == "confirmed"
    merged = merge_roster(load_roster(roster_of(tmp_path)), ledger).lists[LIST]
    assert [s.email for s in merged.active] == ["ada@example.com", "grace@example.com"]
    counts = count_readers(merged, ledger.reader_rows(LIST), ledger.suppressed(LIST), DAY)
    assert counts.states["confirmed"] == 2 and sum(counts.origins.values()) == 2


def test_a_pending_reader_who_is_suppressed_counts_as_suppressed_as_export_says(
        tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "l.sqlite3")
    ledger.suppress(LIST, "left@example.com", "complaint", {})
    ledger.import_readers([NewReader(LIST, "left@example.com")], "pending")
    merged = merge_roster(load_roster(roster_of(tmp_path)), ledger).lists[LIST]
    counts = count_readers(merged, ledger.reader_rows(LIST), ledger.suppressed(LIST), DAY)
    assert counts.states["pending"] == 0 and counts.states["suppressed"] == 1


def test_export_then_import_keeps_a_complaint_a_complaint(project: Project,
                                                          tmp_path: Path) -> None:
    # A complaint is never lifted by a sign-up; moving to a new install by export/import
    # must not turn it into a plain unsubscribe that a confirmed sign-up lifts.
    project.write("config/subscribers.yaml", FILE)
    db = SqliteLedger(load_settings(project.settings).ledger)
    db.suppress(LIST, "ada@example.com", "complaint", {"source": "test"})
    db.close()
    out = tmp_path / "backup.csv"
    assert project.run("subscribers", "export", "--list", LIST, "--format", "csv",
                       "--output", str(out)).returncode == 0
    fresh_db = SqliteLedger(load_settings(project.settings).ledger)
    fresh_db.forget("nobody@example.com")  # keeps the file; clear the suppression by hand
    fresh_db.close()
    raw = sqlite3.connect(load_settings(project.settings).ledger)
    raw.execute("DELETE FROM suppressions")
    raw.commit()
    raw.close()
    imported = project.run("subscribers", "import", str(out), "--list", LIST)
    assert imported.returncode == 0, imported.stderr
    db = SqliteLedger(load_settings(project.settings).ledger)
    reasons = {s.email: s.reason for s in db.suppressions(LIST)}
    assert reasons["ada@example.com"] == "complaint"
    # And a confirmed sign-up does not lift it.
    db.sign_up(NewReader(LIST, "ada@example.com"), confirmed=True)
    assert db.is_suppressed(LIST, "ada@example.com")


def _bytes_of(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*")
                    if p.is_file())


def test_forget_leaves_no_copy_of_the_address_in_the_database_files(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    ledger = SqliteLedger(path)
    for n in range(30):
        ledger.sign_up(NewReader(LIST, f"other{n}@example.com", f"Other {n}"), confirmed=True)
    ledger.sign_up(NewReader(LIST, "Secret.Person@example.com", "Secret Person"),
                   confirmed=True)
    ledger.sign_up(NewReader("evening-brief", "secret.person@example.com"))
    ledger.suppress("*", "secret.person@example.com", "hard-bounce",
                    {"diagnostic": "550 5.1.1 <secret.person@example.com> unknown"})
    # A forwarder's bounce, attributed to another reader, names the forgotten address.
    ledger.record_event(StoredEvent("mailbox:1", "mailbox", "bounce-soft",
                                    "other1@example.com", LIST, "",
                                    "4.2.2", "452 <Secret.Person@example.com> is full"))
    ledger.suppress(LIST, "other2@example.com", "hard-bounce",
                    {"diagnostic": "forwarded to secret.person@example.com: 550"})
    # As with an SQLite built without SECURE_DELETE (Debian's has it), the old rows in
    # the main file: only forget's own pragma zeroes them.
    ledger._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ledger._db.execute("PRAGMA secure_delete = OFF")
    ledger.forget("secret.person@example.com")
    assert ledger.is_forgotten("SECRET.person@example.com")
    data = _bytes_of(path).lower()
    assert b"secret.person" not in data
    assert b"secret person" not in data
    # The other readers' records stay, with the address taken out of their words.
    assert ledger.events("other1@example.com")[0].diagnostic.startswith("452 <")
    assert ledger.is_suppressed(LIST, "other2@example.com")
    ledger.close()


def test_forgotten_then_signs_up_again_is_a_fresh_consent_only_once_confirmed(
        tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "l.sqlite3")
    ledger.sign_up(NewReader(LIST, "ada@example.com"), confirmed=True)
    ledger.forget("ada@example.com")
    # An import (the old tool's word) and a single opt-in sign-up (no proof it is them)
    # stay refused.
    assert ledger.import_readers([NewReader(LIST, "ada@example.com")], "confirmed") == (0, 1)
    assert ledger.sign_up(NewReader(LIST, "ada@example.com"), confirmed=True)[0] == "forgotten"
    assert ledger.is_forgotten("ada@example.com")
    # A double opt-in sign-up waits, pending and never mailed, until they confirm.
    result, row = ledger.sign_up(NewReader(LIST, "ada@example.com", "Ada"))
    assert result == "new" and row is not None and row.state == "pending" and row.nonce
    merged = merge_roster(load_roster(roster_of(tmp_path)), ledger).lists[LIST]
    assert "ada@example.com" not in {s.email for s in merged.active}
    assert ledger.is_forgotten("ada@example.com")
    assert ledger.confirm(LIST, "ada@example.com", row.nonce) == "confirmed"
    assert not ledger.is_forgotten("ada@example.com", LIST)
    merged = merge_roster(load_roster(roster_of(tmp_path)), ledger)
    assert [s.email for s in merged.lists[LIST].active].count("ada@example.com") == 1
    # Her consent is to this list: the file's other list still names her, and stays
    # without her (the publisher was told to delete that entry).
    assert ledger.is_forgotten("ada@example.com", "evening-brief")
    assert "ada@example.com" not in {s.email for s in merged.lists["evening-brief"].active}
    assert ledger.import_readers([NewReader("evening-brief", "ada@example.com")],
                                 "confirmed") == (0, 1)


def test_a_forgotten_reader_who_had_complained_cannot_end_the_erasure_by_signing_up(
        tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "l.sqlite3")
    ledger.suppress("*", "ada@example.com", "complaint", {})
    ledger.forget("ada@example.com")
    assert ledger.sign_up(NewReader(LIST, "ada@example.com"))[0] == "forgotten"
    assert ledger.reader_rows() == [] and ledger.is_forgotten("ada@example.com")


def test_a_list_export_holds_no_reader_of_another_list(project: Project) -> None:
    project.write("config/subscribers.yaml", FILE.replace("      - ada@example.com\n",
                                                          "      - eve@example.com\n"))
    db = SqliteLedger(load_settings(project.settings).ledger)
    db.suppress("*", "eve@example.com", "hard-bounce", {"diagnostic": "550 eve unknown"})
    db.sign_up(NewReader("evening-brief", "sig@example.com", "Sig"), confirmed=True)
    db.suppress("*", "sig@example.com", "complaint", {})
    db.suppress("*", "old@example.com", "complaint", {})  # on no list any more: kept
    db.close()
    morning = project.run("subscribers", "export", "--list", LIST, "--format", "csv")
    assert morning.returncode == 0, morning.stderr
    assert "eve@" not in morning.stdout and "sig@" not in morning.stdout
    assert "old@example.com" in morning.stdout and "ada@example.com" in morning.stdout
    evening = project.run("subscribers", "export", "--list", "evening-brief",
                          "--format", "yaml")
    assert "eve@example.com" in evening.stdout and "sig@example.com" in evening.stdout
    assert "ada@" not in evening.stdout


def test_a_reader_removed_from_the_file_with_choices_left_can_join_again(
        tmp_path: Path) -> None:
    # ada and grace chose topics on the preference page (a "file" row of overrides); then
    # the publisher replaced ada with linus and marked grace unsubscribed (she is). Signing
    # up, or being imported, makes them readers again: never "already subscribed" while
    # they get nothing.
    path = roster_of(tmp_path)
    ledger = SqliteLedger(tmp_path / "l.sqlite3")
    ledger.choose(LIST, "ada@example.com", Choices(topics=("city",)))
    ledger.choose(LIST, "grace@example.com", Choices(topics=("culture",)))
    path.write_text(FILE.replace("email: ada@", "email: linus@"), encoding="utf-8")
    merged = merge_roster(load_roster(path), ledger).lists[LIST]
    assert [s.email for s in merged.active] == ["linus@example.com"]
    for email in ("ada@example.com", "grace@example.com"):
        result, row = ledger.sign_up(NewReader(LIST, email))
        assert result == "new" and row is not None and row.state == "pending" and row.nonce
        assert ledger.confirm(LIST, email, row.nonce) == "confirmed"
    merged = merge_roster(load_roster(path), ledger).lists[LIST]
    assert sorted(s.email for s in merged.active) == [
        "ada@example.com", "grace@example.com", "linus@example.com"]
    # A sign-up's choices are the form's: the old override rows' topics are gone.
    assert all(s.topics == () for s in merged.active)


def test_an_import_of_a_reader_removed_from_the_file_with_choices_left_adds_them(
        tmp_path: Path) -> None:
    path = roster_of(tmp_path)
    ledger = SqliteLedger(tmp_path / "l.sqlite3")
    ledger.choose(LIST, "ada@example.com", Choices(topics=("city",)))
    path.write_text(FILE.replace("email: ada@", "email: linus@"), encoding="utf-8")
    assert ledger.import_readers([NewReader(LIST, "ada@example.com", "Ada")], "confirmed") \
        == (1, 0)
    merged = merge_roster(load_roster(path), ledger).lists[LIST]
    ada = next(s for s in merged.active if s.email == "ada@example.com")
    assert (ada.origin, ada.name, ada.topics) == ("import", "Ada", ("city",))


def test_a_resend_after_forget_or_removal_leaves_nobody_pending_for_ever(
        project: Project) -> None:
    assert project.run("send", "--date", "2026-11-24").returncode == 0
    assert project.run("subscribers", "forget", "ada@example.com", "--yes").returncode == 0
    project.write("config/subscribers.yaml", project.subscribers.read_text(
        encoding="utf-8").replace("      - linus@example.com\n", ""))
    resent = project.run("send", "--date", "2026-11-24", "--resend")
    assert resent.returncode == 0, resent.stderr
    status = project.run("status")
    assert "morning-brief/2026-11-24 [complete]: 3 sent, 0 pending" in status.stdout, \
        status.stdout


def test_an_import_says_which_readers_stay_suppressed(project: Project, tmp_path: Path) -> None:
    db = SqliteLedger(load_settings(project.settings).ledger)
    db.suppress("*", "bounced@example.com", "hard-bounce", {})
    db.close()
    csv_file = tmp_path / "members.csv"
    csv_file.write_text("email\nbounced@example.com\nnew@example.com\n", encoding="utf-8")
    result = project.run("subscribers", "import", str(csv_file), "--list", LIST,
                         "--status", "confirmed")
    assert result.returncode == 0, result.stderr
    assert "2 readers added" in result.stdout
    assert "1 of them suppressed here already (not mailed" in result.stdout


def test_show_says_a_forgotten_reader_came_back_to_one_list(project: Project) -> None:
    db = SqliteLedger(load_settings(project.settings).ledger)
    db.forget("new@example.com")
    _, row = db.sign_up(NewReader(LIST, "new@example.com"))
    assert row is not None and row.nonce
    assert db.confirm(LIST, "new@example.com", row.nonce) == "confirmed"
    db.close()
    shown = project.run("subscribers", "show", "new@example.com")
    assert shown.returncode == 0, shown.stderr
    assert f"never mailed again, but on {LIST}, which it joined again" in shown.stdout


def test_every_combination_is_mailed_once_or_not_at_all(project: Project) -> None:
    project.write("config/subscribers.yaml", """\
lists:
  morning-brief:
    title: The Morning Brief
    subscribers:
      - email: ada@example.com          # signed up by hand after joining on the form
      - email: grace@example.com        # unsubscribed here, then signed up and confirmed
        status: unsubscribed
      - email: linus@example.com        # unsubscribed here; a pending sign-up only
        status: unsubscribed
      - email: zoe@example.org          # paused on the preference page
      - email: Kim@Example.com          # a time zone of her own
""")
    db = SqliteLedger(load_settings(project.settings).ledger)
    db.sign_up(NewReader(LIST, "ADA@example.com", "Ada"), confirmed=True)
    _, row = db.sign_up(NewReader(LIST, "grace@example.com"))
    assert row is not None and row.nonce
    db.confirm(LIST, "grace@example.com", row.nonce)
    db.sign_up(NewReader(LIST, "linus@example.com"))
    db.choose(LIST, "zoe@example.org", Choices(paused_until=dt.date(2099, 1, 1)))
    db.choose(LIST, "kim@example.com", Choices(timezone="Asia/Tokyo"))
    db.import_readers([NewReader(LIST, "pending@example.com")], "pending")
    db.suppress(LIST, "gone@example.com", "unsubscribed", {})
    db.import_readers([NewReader(LIST, "gone@example.com")], "confirmed")
    db.close()
    tokyo = project.run("send", "--date", "2026-11-24", "--timezone", "Asia/Tokyo")
    assert tokyo.returncode == 0, tokyo.stderr
    assert sent_once(project) == ["kim@example.com"]
    rest = project.run("send", "--date", "2026-11-24")
    assert rest.returncode == 0, rest.stderr
    assert sent_once(project) == ["ada@example.com", "grace@example.com", "kim@example.com"]
    again = project.run("send", "--date", "2026-11-24", "--resend")
    assert again.returncode == 0, again.stderr
    assert sent_once(project) == ["ada@example.com", "grace@example.com", "kim@example.com"]
    status = project.run("status")
    assert "morning-brief: 7 readers — file 5, signup 0, import 2; 3 confirmed, 1 pending, " \
           "1 paused, 1 suppressed, 1 unsubscribed in the file" in status.stdout, status.stdout


def sent_once(project: Project) -> list[str]:
    """Who has mail in the outbox, each exactly once (a second file would be a copy)."""
    from email import message_from_bytes, policy

    found: list[str] = []
    for path in sorted(project.outbox.glob("mail/**/*.eml")):
        msg = message_from_bytes(path.read_bytes(), policy=policy.default)
        found.append(msg["To"].addresses[0].addr_spec.lower())
    assert len(found) == len(set(found))
    return sorted(found)


def test_topics_the_publisher_removed_from_the_sections_are_dropped(tmp_path: Path) -> None:
    path = roster_of(tmp_path)
    ledger = SqliteLedger(tmp_path / "l.sqlite3")
    ledger.choose(LIST, "ada@example.com", Choices(topics=("city", "culture")))
    ledger.sign_up(NewReader(LIST, "new@example.com", topics=("culture",)), confirmed=True)
    path.write_text(FILE.replace("sections: [city, culture]", "sections: [city, sport]"),
                    encoding="utf-8")
    merged = merge_roster(load_roster(path), ledger).lists[LIST]
    topics = {s.email: s.topics for s in merged.active}
    # What is left of their choice; nothing left is the whole issue, never no issue.
    assert topics == {"ada@example.com": ("city",), "new@example.com": ()}
