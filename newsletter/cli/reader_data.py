"""One reader's data: `subscribers show EMAIL` (everything kept) and `subscribers forget
EMAIL` (remove it, keeping only a digest so that the address is never mailed again).

Names, choices and the remote servers' words are not ours: everything printed passes
`shown`, so no control character or escape sequence reaches the terminal.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path

import click

from newsletter.cli.common import App, parse_address, pass_app, user_errors
from newsletter.cli.issue import _reader_page
from newsletter.cli.readers import subscribers
from newsletter.cli.suppressions import day, evidence_text, list_label, shown
from newsletter.delivery.file import file_name
from newsletter.errors import ConfigError, NewsletterError
from newsletter.ledger import SqliteLedger
from newsletter.readers.store import ReaderRow, came_back
from newsletter.subscribers import Roster, load_roster


class UnknownReader(NewsletterError):
    """`show` of an address the tool knows nothing of: likely a typo."""

    exit_code = 1


def _file_entries(roster: Roster, address: str) -> list[tuple[str, int | None, str]]:
    """(list, line, status) of each entry of `address` in the subscriber file."""
    key = address.lower()
    return [(lst.id, s.line, s.status) for lst in roster.lists.values()
            for s in lst.subscribers if s.email.lower() == key]


def _row_text(row: ReaderRow) -> list[str]:
    lines = [f"database: origin {row.origin}, {row.state}, since {day(row.created)}, "
             f"changed {day(row.updated)}"]
    choices = []
    if row.name is not None:
        choices.append(f"name “{shown(row.name, 200)}”" if row.name else "name cleared")
    if row.topics is not None:
        choices.append("topics " + (shown(", ".join(row.topics)) or "(the whole issue)"))
    if row.timezone is not None:
        choices.append(f"time zone {shown(row.timezone) or '(the list’s)'}")
    if row.paused_until is not None:
        choices.append(f"paused until {row.paused_until}")
    if choices:
        lines.append("  choices: " + "; ".join(choices))
    if row.consent:
        lines.append("  consent: " + shown(json.dumps(row.consent, ensure_ascii=False), 400))
    return lines


@subscribers.command("show")
@click.argument("email")
@pass_app
@user_errors
def subscribers_show(app: App, email: str) -> None:
    """Everything kept about EMAIL: per list its entry in the file, its row in the
    database (origin, state, choices, consent), suppressions with their evidence, lifted
    ones, bounces and complaints, deliveries and confirmation mails."""
    address = parse_address(email, "EMAIL")
    key = address.lower()
    roster = load_roster(app.settings.subscribers)
    ledger = app.ledger(create=False)
    found = False
    for list_id, line, status in _file_entries(roster, address):
        found = True
        click.echo(f"{shown(list_id)}: in {roster.path}:{line}"
                   + (" (status: unsubscribed)" if status == "unsubscribed" else ""))
    if ledger is None:
        if not found:
            raise UnknownReader(f"{address} is in no list and not in the database",
                                field="EMAIL", fix="check the spelling")
        return
    for row in ledger.rows_of(key):
        found = True
        click.echo(f"{shown(row.list_id)}:")
        for text in _row_text(row):
            click.echo(f"  {text}")
    for s in ledger.suppressions():
        if s.email == key:
            found = True
            click.echo(f"suppressed on {list_label(s.list_id)}: {shown(s.reason)} since "
                       f"{day(s.created)} ({evidence_text(s, 300)})")
    for lifted in ledger.resubscriptions(key):
        found = True
        was = lifted.suppression
        click.echo(f"lifted on {list_label(was.list_id)} {day(lifted.lifted)}: was "
                   f"{shown(was.reason)} since {day(was.created)}"
                   + (f" — “{shown(lifted.note, 200)}”" if lifted.note else ""))
    for event in ledger.events(key):
        found = True
        about = f" about {shown(event.issue_id)}" if event.issue_id else ""
        words = f": “{shown(' '.join(event.diagnostic.split()), 200)}”" \
            if event.diagnostic else ""
        click.echo(f"event {day(event.received)}: {shown(event.kind)}{about} via "
                   f"{shown(event.source)}"
                   + (f", status {shown(event.status)}" if event.status else "") + words)
    found = _print_deliveries(ledger, key) or found
    sent = ledger.confirmation_mail_sent(key)
    if sent:
        found = True
        click.echo(f"confirmation mail: last sent {day(sent)}")
    if ledger.is_forgotten(key):
        found = True
        back = [row.list_id for row in ledger.rows_of(key) if came_back(row)]
        click.echo(f"{address} asked to be forgotten: only a digest of it is kept, and it "
                   "is never mailed again"
                   + (f", but on {', '.join(shown(b) for b in back)}, which it joined "
                      "again by confirming a sign-up" if back else ""))
    if not found:
        raise UnknownReader(f"{address} is in no list and nothing is kept about it",
                            field="EMAIL", fix="check the spelling")


def _print_deliveries(ledger: SqliteLedger, key: str) -> bool:
    found = False
    for issue_id, status, attempts, reply, updated in ledger.deliveries_of(key):
        found = True
        words = f" — “{shown(reply, 120)}”" if reply and status.startswith("failed") else ""
        click.echo(f"delivery {shown(issue_id)}: {status} {day(updated)} ({attempts} "
                   f"attempt{'s' if attempts != 1 else ''}){words}")
    return found


def outbox_files(outbox: Path, address: str) -> list[Path]:
    """Files in the outbox named after `address`: its messages (`<address>.eml`, in
    mail/, test/ or wherever a backend put one) and its personal previews."""
    eml = f"{file_name(address)}.eml"
    preview = _reader_page(dt.date(2000, 1, 1), address).split(".", 1)[1]
    found = []
    for folder, _, names in os.walk(outbox):  # never follows links out of the outbox
        for name in names:
            if name == eml or name.endswith((f".{preview}.html", f".{preview}.txt")):
                found.append(Path(folder) / name)
    return sorted(found)


@subscribers.command("forget")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask (needed when not at a terminal).")
@click.option("--delete-outbox", is_flag=True,
              help="Also delete the files in the outbox that hold mail to EMAIL.")
@pass_app
@user_errors
def subscribers_forget(app: App, email: str, yes: bool, delete_outbox: bool) -> None:
    """Remove every personal datum kept about EMAIL in the database (a reader's right to
    erasure), keeping only a digest of the address, so that it is never mailed again.

    Deliveries stay counted under the digest. subscribers.yaml is yours and never
    written: an entry there is reported, and not mailed.
    """
    address = parse_address(email, "EMAIL")
    if not yes:
        if not sys.stdin.isatty():
            raise NewsletterError(f"forgetting {address} cannot be undone: nothing done",
                                  field="EMAIL", fix="add --yes")
        click.confirm(f"Forget {address}? This cannot be undone", abort=True)
    try:
        roster: Roster | None = load_roster(app.settings.subscribers)
    except ConfigError as err:  # a broken file must not hold up an erasure
        roster = None
        click.echo(f"warning: {err.problems[0]} (so not checked for {address})", err=True)
    ledger = app.ledger()
    assert ledger is not None
    removed = ledger.forget(address)
    click.echo(f"{address} forgotten; only a digest is kept, so it is never mailed again "
               "(unless they sign up again and confirm: a fresh consent)")
    for table, count in removed.items():
        if count:
            what = "kept under the digest" if table == "deliveries" else "removed"
            click.echo(f"  {table}: {count} {what}")
    if not any(removed.values()):
        click.echo("  the database held nothing else about it")
    for list_id, line, _ in _file_entries(roster, address) if roster else []:
        assert roster is not None
        click.echo(f"note: {roster.path}:{line} still lists it in {list_id}; it is not "
                   "mailed, but delete the entry (the tool never edits that file)", err=True)
    files = outbox_files(app.settings.delivery.outbox, address)
    for path in files:
        if delete_outbox:
            path.unlink(missing_ok=True)
            click.echo(f"  deleted {path}")
        else:
            click.echo(f"  in the outbox: {path}")
    if files and not delete_outbox:
        click.echo(f"note: {len(files)} files in the outbox hold mail to {address}; "
                   "run again with --delete-outbox (and --yes) to delete them", err=True)
