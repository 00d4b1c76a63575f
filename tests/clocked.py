"""`newsletter …` as a real process on a clock the test sets: python -m tests.clocked
CLOCK_FILE ARGS…, where CLOCK_FILE holds an ISO time (re-read whenever it changes).

The same three places the in-process `clock` fixture replaces (APScheduler's scheduler and
executor, newsletter.scheduler.clock) read the file instead; the scheduler's loop looks at
that clock every 50 ms (it would otherwise sleep until its next run by the real clock),
and the leader's timings are shortened so a standby takes over within a second or two.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path


def main(clock_file: str, *args: str) -> None:
    from apscheduler.executors import base as executors_base
    from apscheduler.schedulers import base as schedulers_base

    import newsletter.scheduler as scheduler_module
    from newsletter.workers import leader

    path = Path(clock_file)
    seen: dict[str, object] = {}

    def now() -> dt.datetime:
        stamp = os.stat(path).st_mtime_ns
        if seen.get("stamp") != stamp:
            seen["stamp"], seen["now"] = stamp, dt.datetime.fromisoformat(
                path.read_text().strip())
        value = seen["now"]
        assert isinstance(value, dt.datetime)
        return value

    class FakeDatetime(dt.datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def,override]
            return now().astimezone(tz) if tz else now().replace(tzinfo=None)

    schedulers_base.datetime = FakeDatetime  # type: ignore[misc]
    executors_base.datetime = FakeDatetime  # type: ignore[misc]
    scheduler_module.clock = now  # type: ignore[assignment]
    process_jobs = schedulers_base.BaseScheduler._process_jobs

    def poll(self):  # type: ignore[no-untyped-def]
        wait = process_jobs(self)
        return 0.05 if wait is None else min(wait, 0.05)

    schedulers_base.BaseScheduler._process_jobs = poll  # type: ignore[method-assign]
    leader.POLL_SECONDS, leader.CHECK_SECONDS = 0.2, 0.2
    leader.FENCE_SECONDS, leader.RELEASE_SECONDS = 2.0, 4.0

    from newsletter.cli import cli

    sys.argv = ["newsletter", *args]
    cli(prog_name="newsletter")


if __name__ == "__main__":
    main(*sys.argv[1:])
