"""Seeing and undoing suppressions: `newsletter suppressions` and `newsletter resubscribe`.

What these print comes partly from remote servers (a bounce's diagnostic, a provider's
reason): every field passes `shown`, so no control character or escape sequence reaches
the terminal.
"""

from __future__ import annotations

import datetime as dt
import json
import unicodedata
from collections.abc import Sequence
from typing import Any

import click

from newsletter.cli.common import App, cli, parse_address, pass_app, user_errors
from newsletter.errors import NewsletterError
from newsletter.ledger import ALL_LISTS
from newsletter.subscribers import Roster, load_roster
from newsletter.suppressions import Lifted, Suppression

# Characters a terminal may act on or that hide text: controls (ESC, CR, BEL, C1), format
# characters (bidi overrides, zero-width), separators, private use, unassigned.
_UNSAFE = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn"})
_DIAGNOSTIC_CHARS = 120  # in the table; --json gives all of it


class NothingToLift(NewsletterError):
    """`resubscribe` of an address that is not suppressed: likely a typo, so not silent."""

    exit_code = 1


class NeedsForce(NewsletterError):
    """`resubscribe` of a complaint without `--force`."""

    exit_code = 1


def shown(text: str, limit: int | None = None) -> str:
    """`text` safe for a terminal: unsafe characters as visible escapes, one line, at most
    `limit` characters."""
    out = []
    for ch in text:
        if unicodedata.category(ch) in _UNSAFE:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
                       if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    safe = "".join(out)
    return safe if limit is None or len(safe) <= limit else safe[:limit - 1] + "…"


def list_label(list_id: str) -> str:
    return "every list" if list_id == ALL_LISTS else shown(list_id)


def day(stamp: str) -> str:
    """An ISO time from the ledger as `YYYY-MM-DD HH:MM` UTC."""
    try:
        when = dt.datetime.fromisoformat(stamp)
    except ValueError:
        return shown(stamp, 25)
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC)
    return f"{when:%Y-%m-%d %H:%M}"


def evidence_text(s: Suppression, limit: int | None = _DIAGNOSTIC_CHARS) -> str:
    """The evidence on one line: status, issue, source, count, then the server's words."""
    e = s.evidence
    parts = []
    if e.get("status"):
        parts.append(f"status {e['status']}")
    if e.get("issue"):
        parts.append(f"issue {e['issue']}")
    if e.get("source") or e.get("via"):
        parts.append(f"via {e.get('source') or e.get('via')}")
    if e.get("count"):
        parts.append(f"{e['count']} soft bounces")
    words = e.get("diagnostic") or e.get("reply") or e.get("detail")
    text = shown("; ".join(parts))
    if words:
        quoted = shown(" ".join(words.split()), limit)
        text = f"{text}; “{quoted}”" if text else f"“{quoted}”"
    return text or "-"


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  "
            + row[-1] for row in rows]


def _json(s: Suppression) -> dict[str, Any]:
    return {"email": s.email, "list": s.list_id, "reason": s.reason, "date": s.created,
            "evidence": s.evidence}


def _lifted_json(item: Lifted) -> dict[str, Any]:
    return {**_json(item.suppression), "lifted": item.lifted, "note": item.note}


@cli.command("suppressions")
@click.option("--list", "list_id", metavar="LIST",
              help="Only this list's suppressions (and those of every list).")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON array, one object per suppression.")
@click.option("--history", is_flag=True,
              help="Also the suppressions lifted by `resubscribe`, with their notes.")
@pass_app
@user_errors
def suppressions(app: App, list_id: str | None, as_json: bool, history: bool) -> None:
    """Every suppressed address: its list, reason, date and evidence.

    Reasons: unsubscribed, hard-bounce, soft-bounces, complaint, refused (a 5xx at RCPT).
    """
    if list_id is not None:
        load_roster(app.settings.subscribers).select(list_id)  # the list must exist
    ledger = app.ledger(create=False)
    current = ledger.suppressions(list_id) if ledger else []
    lifted = ledger.resubscriptions() if ledger and history else []
    if list_id is not None:
        lifted = [x for x in lifted if x.suppression.list_id in (list_id, ALL_LISTS)]
    if as_json:
        data = [_json(s) for s in current] + [_lifted_json(x) for x in lifted]
        # ensure_ascii: no byte of a remote server's text reaches the terminal raw.
        click.echo(json.dumps(data, indent=2, ensure_ascii=True))
        return
    if not current:
        click.echo("no suppressions" + (f" for list {list_id!r}" if list_id else ""))
    else:
        rows: list[tuple[str, ...]] = [("ADDRESS", "LIST", "REASON", "SINCE", "EVIDENCE")]
        rows += [(shown(s.email), list_label(s.list_id), shown(s.reason), day(s.created),
                  evidence_text(s)) for s in current]
        for line in _table(rows):
            click.echo(line.rstrip())
        click.echo(f"{len(current)} suppressed")
    if history:
        click.echo("")
        if not lifted:
            click.echo("nothing lifted yet")
            return
        past: list[tuple[str, ...]] = [("ADDRESS", "LIST", "WAS", "SINCE", "LIFTED", "NOTE")]
        past += [(shown(x.suppression.email), list_label(x.suppression.list_id),
                  shown(x.suppression.reason), day(x.suppression.created), day(x.lifted),
                  shown(x.note) or "-") for x in lifted]
        for line in _table(past):
            click.echo(line.rstrip())


@cli.command("resubscribe")
@click.argument("email")
@click.option("--list", "list_id", metavar="LIST",
              help="Only this list's suppression (and one of every list); default: all.")
@click.option("--note", default="", help="Why (kept with the lifted suppression).")
@click.option("--force", is_flag=True,
              help="Also lift a complaint (the reader marked an issue as spam).")
@pass_app
@user_errors
def resubscribe(app: App, email: str, list_id: str | None, note: str, force: bool) -> None:
    """Lift the suppression(s) of EMAIL, so that later issues reach it again.

    The suppression and the note are kept (`suppressions --history`). A suppression of
    every list is lifted for every list, also with --list. A complaint is lifted only with
    --force: mail to someone who called it spam counts against the sender at Gmail and
    Yahoo, so do it only when the reader asked to be back.
    """
    address = parse_address(email, "EMAIL")
    roster = load_roster(app.settings.subscribers)
    if list_id is not None:
        roster.select(list_id)  # the list must exist
    ledger = app.ledger(create=False)
    found = [s for s in ledger.suppressions(list_id) if s.email == address.lower()] \
        if ledger else []
    where = f" on list {list_id!r}" if list_id else ""
    if not found:
        listed = any(s.email.lower() == address.lower()
                     for lst in roster.lists.values() for s in lst.subscribers)
        raise NothingToLift(
            f"{address} is not suppressed{where}: nothing lifted", field="EMAIL",
            fix="`newsletter suppressions` lists who is" + (
                "" if listed else f"; {address} is in no list of {roster.path} either "
                "(a typo?)"))
    complaints = [s for s in found if s.reason == "complaint"]
    if complaints and not force:
        s = complaints[0]
        raise NeedsForce(
            f"{address} complained{_about(s)} on {day(s.created)}: mailing someone who "
            "marked an issue as spam counts against your sender reputation (Gmail and "
            "Yahoo reject bulk mail over a 0.3 % complaint rate); nothing lifted",
            field="EMAIL", fix="only if the reader asked to be back, add --force")
    assert ledger is not None
    lifted = ledger.resubscribe(address, list_id, note)
    for s in lifted:
        click.echo(f"lifted: {shown(s.email)} on {list_label(s.list_id)} — was {s.reason} "
                   f"since {day(s.created)} ({evidence_text(s)})")
        if s.reason == "hard-bounce":
            click.echo("  note: a hard bounce said the mailbox did not exist; if it still "
                       "does not, the next issue bounces again", err=True)
    _warn_inactive(roster, address, {s.list_id for s in lifted})


def _about(s: Suppression) -> str:
    issue = s.evidence.get("issue")
    return f" about {shown(issue)}" if issue else ""


def _warn_inactive(roster: Roster, address: str, lists: set[str]) -> None:
    """The suppression is lifted, but the subscriber file decides who is a reader."""
    names = sorted(roster.lists) if ALL_LISTS in lists else sorted(lists)
    if not any(s.email.lower() == address.lower() for name in names
               if name in roster.lists for s in roster.lists[name].active):
        click.echo(f"  note: {address} is not an active subscriber of "
                   f"{', '.join(names) or 'any list'} in {roster.path}, so no issue reaches "
                   "it until it is", err=True)
