"""What every command shares: the group, the app state, the error wrapper, dates."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from newsletter.addresses import InvalidAddress, normalize_address
from newsletter.db import open_ledger
from newsletter.digest import (
    Inputs,
    issue_date,
    load_inputs,
)
from newsletter.errors import ConfigError, NewsletterError
from newsletter.ledger import SqliteLedger
from newsletter.settings import (
    CONFIG_VARIABLE,
    DEFAULT_CONFIG,
    Settings,
    load_settings,
)

F = TypeVar("F", bound=Callable[..., Any])
EXIT_FAILED_DELIVERIES = 1
# Where `dkim keygen` puts keys by default: a folder the project's .gitignore covers.
DKIM_KEY_DIR = Path("config/dkim")


class IssueDate(click.DateTime):
    """A YYYY-MM-DD date within the years articles may carry (1970–2999): outside them,
    date arithmetic (max_age_days back, a day forward) would overflow."""

    FIRST, LAST = dt.datetime(1970, 1, 1), dt.datetime(2999, 12, 31)

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        when = super().convert(value, param, ctx)
        if not self.FIRST <= when <= self.LAST:
            self.fail(f"{when.date().isoformat()} is out of range: an issue date is between "
                      f"{self.FIRST.date()} and {self.LAST.date()}", param, ctx)
        return when


class Seconds(click.ParamType):
    """A finite, non-negative number of seconds up to `most` (no nan, no inf)."""

    name = "seconds"

    def __init__(self, most: float) -> None:
        self.most = most

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not (math.isfinite(seconds) and 0 <= seconds <= self.most):
            self.fail(f"{value!r} is not a number of seconds from 0 to {self.most:g}",
                      param, ctx)
        return seconds


DATE = IssueDate(formats=["%Y-%m-%d"])


def user_errors(command: F) -> F:
    """Turn a `NewsletterError` into `error: …` lines on stderr and its exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except NewsletterError as err:
            for problem in err.problems:
                click.echo(f"error: {problem}", err=True)
            sys.exit(err.exit_code)

    return wrapper  # type: ignore[return-value]


class App:
    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self._settings: Settings | None = None
        self._ledger: SqliteLedger | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings

    def ledger(self, create: bool = True) -> SqliteLedger | None:
        """The delivery ledger; None if it does not exist and `create` is False."""
        # lexists: a link to a ledger that is not there (a mount gone) is refused when
        # opened, never taken for "no ledger yet" (which would compose sent articles again).
        if self._ledger is None and create:
            self._ledger = open_ledger(self.settings)
        elif self._ledger is None and (self.settings.database_config.is_postgres
                                       or os.path.lexists(self.settings.ledger)):
            # Only read: a ledger that cannot be written (read-only, a full disk) still is.
            self._ledger = open_ledger(self.settings, for_reading=True)
        return self._ledger

    def inputs(self) -> Inputs:
        inputs = load_inputs(self.settings)
        warn(inputs.warnings)
        return inputs

    def date(self, value: dt.datetime | None) -> dt.date:
        return value.date() if value else issue_date(self.settings, utcnow())


pass_app = click.make_pass_decorator(App)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def warn(warnings: list[Any]) -> None:
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              envvar=CONFIG_VARIABLE,
              default=DEFAULT_CONFIG, show_default=True,
              help="Settings file (also NEWSLETTER_CONFIG).")
@click.version_option(package_name="newsletter")
@click.pass_context
def cli(ctx: click.Context, config_path: Path) -> None:
    """Compose a daily digest from your articles and deliver it to your subscriber lists.

    Dates are YYYY-MM-DD and default to today in the schedule's time zone. Without --list,
    a command acts on every list in the subscriber file. Exit status: 0 success, 1 some
    deliveries failed, 2 a mistake in the input (the message says where and how to fix it).
    """
    ctx.obj = App(config_path)


def parse_address(value: str, option: str) -> str:
    try:
        return normalize_address(value)
    except InvalidAddress as err:
        raise ConfigError(f"invalid address {value!r}: {err}", field=option) from err


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and Ctrl-C finish the message in flight, record it, then stop the run."""
    def handler(signum: int, frame: object) -> None:
        if stop.is_set():  # a second Ctrl-C: the user really means it
            raise KeyboardInterrupt
        click.echo(f"{signal.Signals(signum).name}: finishing the message in flight, then "
                   "stopping", err=True)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
