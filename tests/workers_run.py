"""Run `newsletter` in a child process for the workers' tests; the real RelayGate when it is
on this branch, else the clearly named stand-in (tests/standin_limits.py)."""

import sys

try:
    import newsletter.workers.limits  # noqa: F401
except ImportError:
    import tests.standin_limits

    sys.modules["newsletter.workers.limits"] = tests.standin_limits

from newsletter.cli import main

if __name__ == "__main__":
    sys.argv[0] = "newsletter"
    main()
