"""Run the `newsletter` command, counting premailer calls (written to $BENCH_COUNT_FILE)."""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path

import newsletter.render as render_module
from newsletter.cli import main

calls = 0
_transform = render_module.Premailer.transform


def _counting(self, *args, **kwargs):  # type: ignore[no-untyped-def]
    global calls
    calls += 1
    return _transform(self, *args, **kwargs)


render_module.Premailer.transform = _counting  # type: ignore[method-assign]
def _report() -> None:
    # VmHWM is this process's own peak (ru_maxrss would include the benchmark's memory,
    # inherited through fork before exec).
    status = Path("/proc/self/status").read_text()
    peak_kb = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))
    Path(os.environ["BENCH_COUNT_FILE"]).write_text(f"{calls} {peak_kb}")


atexit.register(_report)
sys.argv[0] = "newsletter"
main()
