"""Readers in the database (issue 12's foundation): sign-ups, confirmation, choices, the
merged list a send goes to, and forgetting."""

from __future__ import annotations

import datetime as dt
import threading
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from newsletter.ledger import SqliteLedger
from newsletter.readers.roster import load_readers
from newsletter.readers.store import Choices, NewReader
from newsletter.readers.tokens import (
    confirm_token,
    preferences_token,
    read_confirm_token,
    read_preferences_token,
)
from newsletter.settings import load_settings
from newsletter.unsubscribe import opaque_token, read_token
from tests.conftest import ISSUE_DATE, Project
from tests.stores import LedgerFactory

LIST = "morning-brief"


def ledger_of(project: Project) -> SqliteLedger:
    return SqliteLedger(load_settings(project.settings).ledger)


def sent_to(project: Project) -> set[str]:
    found = set()
    for path in project.outbox.rglob("*.eml"):
        found.add(message_from_bytes(path.read_bytes(), policy=policy.default)["To"].addresses[0]
                  .addr_spec.lower())
    return found


def test_concurrent_duplicate_sign_ups_end_as_one_reader(new_ledger: LedgerFactory) -> None:
    ledger = new_ledger()
    results: list[str] = []
    barrier = threading.Barrier(8)

    def join() -> None:
        barrier.wait()
        results.append(ledger.sign_up(NewReader(LIST, "New@Example.com", "New"))[0])

    threads = [threading.Thread(target=join) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["new"] + ["pending"] * 7
    assert [r.email for r in ledger.reader_rows(LIST)] == ["new@example.com"]


def test_a_confirmation_nonce_works_once_and_a_new_sign_up_kills_the_old_link(
        new_ledger: LedgerFactory) -> None:
    ledger = new_ledger()
    _, row = ledger.sign_up(NewReader(LIST, "a@example.com"))
    assert row is not None and row.nonce
    assert ledger.confirm(LIST, "a@example.com", "not-it") == "invalid"
    assert ledger.confirm(LIST, "a@example.com", row.nonce) == "confirmed"
    assert ledger.confirm(LIST, "a@example.com", row.nonce) == "already"
    # The reader leaves; the old link must not bring them back.
    ledger.suppress(LIST, "a@example.com", "unsubscribed")
    assert ledger.confirm(LIST, "a@example.com", row.nonce) == "invalid"
    result, again = ledger.sign_up(NewReader(LIST, "a@example.com"))
    assert result == "new" and again is not None and again.nonce != row.nonce
    assert ledger.confirm(LIST, "a@example.com", row.nonce) == "invalid"
    assert ledger.confirm(LIST, "a@example.com", again.nonce) == "confirmed"
    assert not ledger.is_suppressed(LIST, "a@example.com")  # their own new yes lifts it
    assert [x.note for x in ledger.resubscriptions("a@example.com")] == ["confirmed sign-up"]


def test_a_confirmed_sign_up_does_not_lift_a_complaint(new_ledger: LedgerFactory) -> None:
    ledger = new_ledger()
    ledger.suppress("*", "c@example.com", "complaint")
    _, row = ledger.sign_up(NewReader(LIST, "c@example.com"))
    assert row is not None and row.nonce
    assert ledger.confirm(LIST, "c@example.com", row.nonce) == "confirmed"
    assert ledger.is_suppressed(LIST, "c@example.com")


def test_one_confirmation_mail_an_hour_per_address(new_ledger: LedgerFactory) -> None:
    ledger = new_ledger()
    t0 = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
    assert ledger.claim_confirmation_mail("x@example.com", now=t0)
    assert not ledger.claim_confirmation_mail("X@example.com", now=t0 + dt.timedelta(minutes=59))
    assert ledger.claim_confirmation_mail("x@example.com", now=t0 + dt.timedelta(minutes=61))
    ledger.release_confirmation_mail("x@example.com")
    assert ledger.claim_confirmation_mail("x@example.com", now=t0 + dt.timedelta(minutes=62))


def test_tokens_are_bound_to_their_use() -> None:
    secret = "s" * 32
    pref = preferences_token(secret, LIST, "Ada@Example.com")
    assert read_preferences_token(secret, pref) == (LIST, "ada@example.com")
    assert read_preferences_token("t" * 32, pref) is None
    assert read_token(secret, pref) is None  # no unsubscribe token
    assert read_preferences_token(secret, opaque_token(secret, LIST, "ada@example.com")) is None
    conf = confirm_token(secret, LIST, "ada@example.com", "nonce", 1_800_000_000)
    found = read_confirm_token(secret, conf)
    assert found is not None and (found.nonce, found.issued) == ("nonce", 1_800_000_000)
    assert read_preferences_token(secret, conf) is None
    assert read_confirm_token(secret, conf[:-2] + ("A" if conf[-2] != "A" else "B") + conf[-1]
                              ) is None


def test_the_send_goes_to_file_readers_and_confirmed_sign_ups_with_their_choices(
        project: Project) -> None:
    ledger = ledger_of(project)
    ledger.sign_up(NewReader(LIST, "pending@example.net"))
    ledger.sign_up(NewReader(LIST, "joined@example.net", "Jo Ined"), confirmed=True)
    ledger.import_readers([NewReader(LIST, "imported@example.net")], "confirmed")
    ledger.choose(LIST, "linus@example.com", Choices(paused_until=dt.date(2026, 12, 31)))
    ledger.choose(LIST, "ada@example.com", Choices(name="Countess Ada"))
    ledger.close()
    result = project.run("send", "--date", ISSUE_DATE)
    assert result.returncode == 0, result.stderr
    got = sent_to(project)
    assert got == {"ada@example.com", "zoe@example.org", "joined@example.net",
                   "imported@example.net"}
    ada = next(p for p in project.outbox.rglob("*.eml") if "ada@" in p.name)
    assert "Countess Ada" in str(message_from_bytes(ada.read_bytes(), policy=policy.default)["To"])
    assert "1 paused" in result.stdout
    deliveries = ledger_of(project).deliveries(f"{LIST}/{ISSUE_DATE}")
    assert deliveries["linus@example.com"].status == "skipped"


def test_a_forgotten_reader_is_never_mailed_even_if_the_file_still_names_them(
        project: Project) -> None:
    ledger = ledger_of(project)
    ledger.suppress("*", "ada@example.com", "complaint")
    removed = ledger.forget("ada@example.com")
    assert removed["suppressions"] == 1
    assert ledger.sign_up(NewReader(LIST, "ada@example.com"))[0] == "forgotten"
    assert not any("ada@" in r.email for r in ledger.reader_rows())
    ledger.close()
    roster = load_readers(load_settings(project.settings))
    assert "ada@example.com" not in {s.email for s in roster.lists[LIST].subscribers}
    assert any("forgotten" in str(w) for w in roster.warnings)
    result = project.run("send", "--date", ISSUE_DATE)
    assert result.returncode == 0, result.stderr
    assert "ada@example.com" not in sent_to(project)


@pytest.mark.parametrize("path", ["html", "txt"])
def test_every_message_links_to_the_readers_preference_page(project: Project,
                                                             path: str) -> None:
    assert project.run("send", "--date", ISSUE_DATE).returncode == 0
    ada = next(p for p in project.outbox.rglob("*.eml") if "ada@" in p.name)
    msg = message_from_bytes(ada.read_bytes(), policy=policy.default)
    part = msg.get_body(("html",) if path == "html" else ("plain",))
    assert part is not None
    body = part.get_content()
    token = body.split("/preferences?token=")[1].split('"')[0].split()[0]
    from newsletter.secret import unsubscribe_secret
    secret = unsubscribe_secret(load_settings(project.settings))
    assert read_preferences_token(secret, token) == (LIST, "ada@example.com")


def test_sign_ups_nobody_confirmed_are_purged_once_their_links_expired(
        new_ledger: LedgerFactory) -> None:
    ledger = new_ledger()
    ledger.sign_up(NewReader(LIST, "old@example.com"))
    ledger.sign_up(NewReader(LIST, "asked-again@example.com"))
    ledger.sign_up(NewReader(LIST, "fresh@example.com"))
    ledger.sign_up(NewReader(LIST, "kept@example.com"), confirmed=True)
    ledger.import_readers([NewReader(LIST, "imported@example.com")], "pending")
    with ledger._transaction() as db:  # three days ago
        db.execute("UPDATE readers SET updated = '2000-01-01T00:00:00+00:00' "
                   "WHERE email != 'fresh@example.com'")
    # Asking again makes the pending row new: its new mail's link must still work.
    assert ledger.sign_up(NewReader(LIST, "asked-again@example.com"))[0] == "pending"
    assert ledger.purge_unconfirmed(49) == 1
    assert sorted(r.email for r in ledger.reader_rows(LIST)) == [
        "asked-again@example.com", "fresh@example.com", "imported@example.com",
        "kept@example.com"]


def test_nothing_that_comes_back_after_forget_stores_the_address_again(tmp_path: Path) -> None:
    """A bounce, a complaint or a provider's event about an old issue, and `newsletter
    unsubscribe`, arrive after `forget`: they must not write the address back."""
    from newsletter.suppressions import Consequence, StoredEvent

    path = tmp_path / "l.sqlite3"
    ledger = SqliteLedger(path)
    ledger.suppress(LIST, "gone@example.com", "unsubscribed")
    ledger.forget("gone@example.com")
    assert not ledger.suppress("*", "Gone@example.com", "unsubscribed", {"via": "cli"})
    new, _, suppressed = ledger.record_event(
        StoredEvent("mailbox:1", "mailbox", "bounce-hard", "gone@example.com", LIST,
                    f"{LIST}/{ISSUE_DATE}", "5.1.1", "550 <gone@example.com>: no such user"),
        Consequence("*", "hard-bounce", {"diagnostic": "gone@example.com unknown"}))
    assert new and not suppressed
    assert ledger.event_counts(f"{LIST}/{ISSUE_DATE}") == {"bounce-hard": 1}  # still counted
    assert ledger.suppressions() == []
    # A reader who came back by confirming a sign-up is a reader again: their bounces count.
    _, row = ledger.sign_up(NewReader(LIST, "back@example.com"))
    ledger.forget("back@example.com")
    _, row = ledger.sign_up(NewReader(LIST, "back@example.com"))
    assert row is not None and row.nonce
    assert ledger.confirm(LIST, "back@example.com", row.nonce) == "confirmed"
    assert ledger.suppress(LIST, "back@example.com", "unsubscribed")
    ledger._query("PRAGMA wal_checkpoint(TRUNCATE)")
    ledger.close()
    data = path.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("l.sqlite3-*"))
    assert b"gone@example.com" not in data.lower()
