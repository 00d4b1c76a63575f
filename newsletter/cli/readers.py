"""The readers' commands: `subscribers check|import|export` and `signup-form`.

`subscribers show` and `subscribers forget` (one reader's data) are in cli/reader_data.py.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import click

from newsletter.cli.common import App, cli, pass_app, user_errors, utcnow, warn
from newsletter.errors import ConfigError
from newsletter.models import SubscriberList
from newsletter.readers.columns import Plan, plan_import
from newsletter.readers.csvfile import read_table
from newsletter.readers.export import entries, to_csv, to_yaml
from newsletter.readers.form import signup_form
from newsletter.readers.roster import count_readers, merge_roster
from newsletter.readers.store import ReaderState
from newsletter.subscribers import load_roster


@cli.group()
def subscribers() -> None:
    """Subscriber lists: the file, sign-ups and imports."""


def count_lines(app: App) -> list[str]:
    """Per list: readers by origin (file, signup, import) and by state (confirmed,
    pending, paused, suppressed), as an issue would find them today."""
    roster = load_roster(app.settings.subscribers)
    ledger = app.ledger(create=False)
    merged = merge_roster(roster, ledger)
    day = app.date(None)
    lines = []
    for lst in merged.lists.values():
        rows = ledger.reader_rows(lst.id) if ledger else []
        suppressed = ledger.suppressed(lst.id) if ledger else {}
        counts = count_readers(lst, rows, suppressed, day)
        o, s = counts.origins, counts.states
        line = (f"{lst.id}: {sum(o.values())} readers — file {o['file']}, signup "
                f"{o['signup']}, import {o['import']}; {s['confirmed']} confirmed, "
                f"{s['pending']} pending, {s['paused']} paused, {s['suppressed']} suppressed")
        if s["unsubscribed"]:
            line += f", {s['unsubscribed']} unsubscribed in the file"
        lines.append(line)
    return lines


@subscribers.command("check")
@pass_app
@user_errors
def subscribers_check(app: App) -> None:
    """Validate the subscriber file and print counts per list: the file's, then every
    reader's by origin (file, signup, import) and state (confirmed, pending, paused,
    suppressed)."""
    roster = load_roster(app.settings.subscribers)
    warn(roster.warnings)
    for lst in roster.lists.values():
        active = lst.count_active()
        click.echo(f"{lst.id}: {len(lst.subscribers)} subscribers ({active} active, "
                   f"{len(lst.subscribers) - active} unsubscribed)")
    for line in count_lines(app):
        click.echo(line)
    click.echo(f"{roster.path}: OK")


@subscribers.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=True))
@click.option("--list", "list_id", metavar="LIST", required=True, help="The list to add to.")
@click.option("--status", "state", type=click.Choice(["pending", "confirmed"]),
              default="pending", show_default=True,
              help="What the imported readers are. Pending readers get no issue until they "
                   "confirm (by signing up on the form, which mails them the link); "
                   "`confirmed` is your word that each of them consented to get the "
                   "newsletter, which the law may ask you to prove.")
@pass_app
@user_errors
def subscribers_import(app: App, file: Path, list_id: str, state: ReaderState) -> None:
    """Add the readers of a CSV file to a list, in the database (subscribers.yaml is
    never written).

    Columns: email, name, topics, timezone, status; also those of the exports of Mailchimp,
    Substack, Buttondown and Ghost (see README). Rows of people who left in the old tool
    (unsubscribed, cleaned, subscribed_to_emails false…) become suppressions, so they are
    never mailed. Any mistake imports nothing: every problem is listed with its line.
    Addresses already in the file or the database are left as they are.
    """
    roster = load_roster(app.settings.subscribers)
    lst = roster.select(list_id)[0]
    table = read_table(file)
    plan = plan_import(table, lst, state)
    if plan.problems:
        raise ConfigError(problems=sorted(plan.problems, key=lambda p: p.line or 0))
    warn(plan.warnings)
    _print_columns(plan, lst)
    in_file = {s.email.lower() for s in lst.subscribers}
    readers = [(r, st) for r, st, _ in plan.readers if r.address.lower() not in in_file]
    suppressions = [(lst.id, left.address, {"source": "import", "file": table.name,
                                            "line": left.line, "detail": left.why},
                     left.reason)
                    for left in plan.left]
    ledger = app.ledger()
    assert ledger is not None
    already_gone = ledger.suppressed(lst.id)
    counts = ledger.import_batch(readers, suppressions)
    # Readers of the file it names are left out above; these stay unmailed here too.
    blocked = sum(1 for r, _ in readers if r.address.lower() in already_gone)
    pending = sum(1 for _, st in readers if st == "pending")
    parts = [f"{counts.added} reader{'s' if counts.added != 1 else ''} added"]
    if len(plan.readers) - len(readers):
        parts.append(f"{len(plan.readers) - len(readers)} already in {roster.path}")
    if counts.kept:
        parts.append(f"{counts.kept} already in the database (left as they are)")
    if counts.forgotten:
        parts.append(f"{counts.forgotten} asked to be forgotten (left out)")
    if plan.left:
        parts.append(f"{counts.suppressed} who left in the old tool suppressed"
                     + (f" ({counts.already_suppressed} were already)"
                        if counts.already_suppressed else ""))
    if blocked:
        parts.append(f"{blocked} of them suppressed here already (not mailed; see "
                     "`subscribers show`)")
    if plan.duplicates:
        parts.append(f"{plan.duplicates} duplicate row{'s' if plan.duplicates != 1 else ''} "
                     "ignored")
    rows = len(table.rows)
    click.echo(f"{lst.id}: {rows} row{'s' if rows != 1 else ''}: " + ", ".join(parts))
    if pending and counts.added:
        who = ("the readers added are pending" if state == "pending" else
               f"{pending} of the rows say pending (kept so)")
        click.echo(f"note: {who}: they get no issue until they "
                   f"confirm. This command mails nobody; a reader who signs up on the form "
                   f"(newsletter signup-form --list {lst.id}) gets the confirmation mail."
                   + (" If they consented in the old tool, import with --status confirmed "
                      "instead." if state == "pending" else ""))


def _print_columns(plan: Plan, lst: SubscriberList) -> None:
    used = ", ".join(f"{title} → {what.replace('_', ' ')}" for title, what in plan.used.items())
    click.echo(f"columns used: {used}")
    if plan.ignored:
        click.echo("columns ignored: " + ", ".join(plan.ignored))
    if plan.ignored_tags:
        tags = ", ".join(f"{tag} ({n})" for tag, n in plan.ignored_tags.most_common(20))
        more = len(plan.ignored_tags) - 20
        click.echo(f"tags that are no section of {lst.id} (not topics): {tags}"
                   + (f" and {more} more" if more > 0 else ""))


@subscribers.command("export")
@click.option("--list", "list_id", metavar="LIST", help="Only this list (default: every list).")
@click.option("--format", "fmt", type=click.Choice(["csv", "yaml"]), required=True,
              help="csv imports back with `subscribers import`; yaml loads as a subscriber "
                   "file.")
@click.option("--output", type=click.Path(path_type=Path),
              help="Write to this file (mode 600) instead of printing.")
@pass_app
@user_errors
def subscribers_export(app: App, list_id: str | None, fmt: str, output: Path | None) -> None:
    """Every reader of a list as the tool sees it: the file's and the database's, pending,
    paused and suppressed ones (with the reason and date), and each one's choices."""
    roster = load_roster(app.settings.subscribers)
    selected = roster.select(list_id)
    ledger = app.ledger(create=False)
    merged = merge_roster(roster, ledger)
    day = app.date(None)
    suppressions = ledger.suppressions() if ledger else []
    all_rows = ledger.reader_rows() if ledger else []
    per_list = []
    for lst in selected:
        rows = [r for r in all_rows if r.list_id == lst.id]
        # Readers of the other lists: their bounces and complaints are not this list's.
        elsewhere = frozenset(
            {s.email.lower() for other in merged.lists.values() if other.id != lst.id
             for s in other.subscribers}
            | {r.email for r in all_rows if r.list_id != lst.id})
        per_list.append((merged.lists[lst.id],
                         entries(merged.lists[lst.id], rows, suppressions, day, elsewhere)))
    if fmt == "csv":
        text = to_csv(item for _, items in per_list for item in items)
    else:
        text = to_yaml(per_list, f"{utcnow():%Y-%m-%d %H:%M} UTC")
    if output is None:
        click.echo(text, nl=False)
        return
    _refuse_own_files(app, output)
    _write_whole(output, text)
    count = sum(len(items) for _, items in per_list)
    click.echo(f"{count} addresses written to {output}", err=True)


def _refuse_own_files(app: App, output: Path) -> None:
    for own, what in ((app.settings.subscribers, "the subscriber file"),
                      (app.settings.ledger, "the database"), (app.config_path, "the settings")):
        if output.resolve() == own.resolve():
            raise ConfigError(f"is {what}: the export never replaces it", file=output,
                              field="--output", fix="give another file name, e.g. "
                                                    "backup/readers.csv")
    if output.is_dir():
        raise ConfigError("is a folder", file=output, field="--output",
                          fix="give a file name, e.g. backup/readers.csv")


def _write_whole(path: Path, text: str) -> None:
    """The whole file or none: a temporary file beside it, renamed over it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot be written: {err.strerror}", file=path, field="--output",
                          fix="check that the folder exists and can be written") from err


@cli.command("signup-form")
@click.option("--list", "list_id", metavar="LIST", required=True, help="The list to join.")
@click.option("--base-url", help="Where `serve` answers (default: newsletter.base_url).")
@pass_app
@user_errors
def signup_form_command(app: App, list_id: str, base_url: str | None) -> None:
    """Print an HTML sign-up form to put on your own site: it posts to `serve`
    (BASE/subscribe/LIST), which mails the confirmation link. No script; style it with the
    class nl-signup."""
    roster = load_roster(app.settings.subscribers)
    lst = roster.select(list_id)[0]
    base = base_url or app.settings.newsletter.base_url
    if not re.fullmatch(r"https?://[^\s\"'<>]+", base or ""):
        raise ConfigError(f"{base!r} is not an http(s) address", field="--base-url",
                          fix="e.g. --base-url https://news.example.com")
    click.echo(signup_form(lst, base, _translator(app, lst.locale)), nl=False)


def _translator(app: App, locale_name: str | None) -> Callable[[str], str]:
    """The reader pages' catalogs (yours in <templates>/web first), so that the snippet
    speaks the list's language as its pages do."""
    from babel import Locale, UnknownLocaleError
    from babel.support import Translations

    from newsletter.render import load_translations
    from newsletter.web.pages import BUILT_IN

    try:
        locale = Locale.parse((locale_name or app.settings.newsletter.locale).replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return lambda text: text
    own = load_translations(app.settings.templates / "web", locale)
    built_in = load_translations(BUILT_IN, locale)
    if isinstance(own, Translations):
        own.add_fallback(built_in)
        return own.gettext
    return built_in.gettext
