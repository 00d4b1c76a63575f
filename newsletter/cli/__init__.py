"""The `newsletter` command: the only place that prints or exits.

One module per group of commands; importing them registers their commands on `cli`.
"""

from newsletter.cli import (  # noqa: F401  (registers the commands)
    admin,
    bounces,
    db,
    issue,
    reader_data,
    readers,
    suppressions,
)
from newsletter.cli.common import cli

__all__ = ["cli", "main"]


def main() -> None:
    cli(prog_name="newsletter")
