"""The policy's limits on what an event may suppress: soft bounces about us (blocklists,
policy) never add up to a suppression, and a complaint named only by an unsubscribe link
suppresses on that list alone."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from newsletter import verp
from newsletter.inbound.events import Event
from newsletter.inbound.policy import apply_event
from newsletter.inbound.settings import BouncesSection
from newsletter.ledger import ALL_LISTS, SqliteLedger
from newsletter.message import message_id

SECRET = "a-long-test-secret-for-the-policy-scope"
BASE = "bounces@bounce.example.com"


def _ledger(tmp_path: Path, issues: int) -> SqliteLedger:
    ledger = SqliteLedger(tmp_path / "newsletter.sqlite3")
    for n in range(issues):
        issue = f"mb/2026-11-{10 + n}"
        ledger.record_issue(issue, "mb", dt.date(2026, 11, 10 + n), ["a"])
        ledger.plan(issue, [("ada@example.com",
                             message_id(issue, "ada@example.com", "example.com"), "pending")])
        ledger.record(issue, "ada@example.com", "sent", "250 ok")
    return ledger


def _bounce(n: int, status: str) -> Event:
    tagged = verp.read_address(SECRET, BASE, verp.address(
        BASE, SECRET, "b", f"mb/2026-11-{10 + n}", "ada@example.com"))
    return Event("mailbox", f"e{n}", "bounce-soft", verp=tagged, status=status)


def test_blocklist_bounces_never_add_up_to_a_suppression(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path, 5)
    policy = BouncesSection(soft_limit=3)
    for n, status in enumerate(("5.7.1", "4.7.0", "5.3.4", "5.6.0", "4.5.0")):
        assert apply_event(ledger, _bounce(n, status), policy).outcome == "counted"
    assert ledger.suppressions() == [] and len(ledger.events()) == 5


def test_full_mailbox_bounces_do_add_up(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path, 3)
    policy = BouncesSection(soft_limit=3)
    outcomes = [apply_event(ledger, _bounce(n, s), policy).outcome
                for n, s in enumerate(("4.2.2", "5.2.2", "4.4.7"))]
    assert outcomes == ["counted", "counted", "suppressed"]
    [suppression] = ledger.suppressions()
    assert (suppression.list_id, suppression.reason) == (ALL_LISTS, "soft-bounces")


def test_a_complaint_named_only_by_the_link_suppresses_on_that_list(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path, 1)
    applied = apply_event(ledger, Event("mailbox", "c1", "complaint",
                                        list_token=("mb", "ada@example.com")), BouncesSection())
    assert applied.outcome == "suppressed"
    assert [(s.list_id, s.reason) for s in ledger.suppressions()] == [("mb", "complaint")]


def test_a_complaint_with_the_return_path_token_suppresses_everywhere(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path, 1)
    tagged = verp.read_address(SECRET, BASE, verp.address(BASE, SECRET, "b", "mb/2026-11-10",
                                                          "ada@example.com"))
    applied = apply_event(ledger, Event("mailbox", "c2", "complaint", verp=tagged),
                          BouncesSection())
    assert applied.outcome == "suppressed"
    assert [(s.list_id, s.reason) for s in ledger.suppressions()] == [(ALL_LISTS, "complaint")]
