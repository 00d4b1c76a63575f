"""`newsletter bounces …`: what comes back by mail."""

from __future__ import annotations

import click

from newsletter.cli.common import App, cli, pass_app, user_errors, warn


@cli.group()
def bounces() -> None:
    """Bounces, complaints and mailto unsubscribes that come back by mail."""


@bounces.command("fetch")
@pass_app
@user_errors
def bounces_fetch(app: App) -> None:
    """Read the bounce mailbox (bounces.imap or bounces.maildir) once.

    Hard bounces and complaints suppress the reader at once, soft bounces count towards
    bounces.soft_limit, mailto unsubscribes suppress the reader on their list; auto-replies
    and delay notices are ignored. Handled mail is moved to the processed folder (or
    flagged); mail that is not understood or not ours (no valid token) is left where it is
    and listed, at each fetch, for you to read. Fetching again changes nothing.

    Exit status: 0 when the mailbox was read (mail left in place is a report, not a
    failure), 1 when the server failed (down, refused the connection, timed out, broke
    off; try again later), 2 on a mistake in the settings (login refused, missing folder or
    Maildir, untrusted certificate, nothing configured).
    """
    from newsletter.inbound.fetch import run_fetch

    settings = app.settings
    report = run_fetch(settings)
    warn(report.warnings)
    click.echo(f"bounces fetch: {report.summary()}")
    for line in report.left_lines():
        click.echo(f"  {line}")
    if report.left:
        click.echo(f"  (mail left in {report.folder} is not an error: it stays there for you "
                   "to read, and each fetch lists it again until you move or delete it)")
