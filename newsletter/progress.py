"""Progress of a send: a live bar on a terminal, a few plain lines anywhere else (cron, CI)."""

from __future__ import annotations

import time
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from newsletter.delivery import DeliveryResult
from newsletter.models import Issue

# Small runs need no progress lines: the summary at the end says it all.
QUIET_BELOW = 10


class SendProgress:
    """Counts results of the issue being sent and shows them as they come."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._issue = ""
        self._total = self._done = self._sent = self._failed = 0
        self._started = time.monotonic()
        self._next_line = 0

    def __enter__(self) -> SendProgress:
        if self.tty:
            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[sent]} sent, {task.fields[failed]} failed, "
                           "{task.fields[rate]:.1f} msg/s"),
                TimeElapsedColumn(), console=Console(file=self.stream), transient=True)
            self._bar.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()

    def start(self, issue: Issue, total: int) -> None:
        self._issue, self._total = issue.id, total
        self._done = self._sent = self._failed = 0
        self._started = time.monotonic()
        self._next_line = max(1, total // 10)
        if self._bar is not None:
            self._task = self._bar.add_task(issue.id, total=total, sent=0, failed=0, rate=0.0)

    def advance(self, result: DeliveryResult) -> None:
        self._done += 1
        self._sent += result.ok
        self._failed += not result.ok
        rate = self._done / max(time.monotonic() - self._started, 1e-6)
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, advance=1, sent=self._sent, failed=self._failed,
                             rate=rate)
        elif self._total >= QUIET_BELOW and (self._done >= self._next_line
                                             or self._done == self._total):
            self._next_line += max(1, self._total // 10)
            print(f"{self._issue}: {self._done}/{self._total} done, {self._sent} sent, "
                  f"{self._failed} failed, {rate:.1f} msg/s", file=self.stream, flush=True)
