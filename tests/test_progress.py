"""Progress on `send`: a live bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io

from newsletter.delivery import DeliveryResult
from newsletter.progress import SendProgress
from tests.test_render import ISSUE


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _results(n: int) -> list[DeliveryResult]:
    return [DeliveryResult(f"r{i}@example.com", f"<{i}@x>",
                           "failed-permanent" if i == 3 else "sent") for i in range(n)]


def test_plain_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    with SendProgress(stream) as progress:
        progress.start(ISSUE, 20)
        for result in _results(20):
            progress.advance(result)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10  # every tenth, not one per message
    assert lines[-1].startswith("brief/2026-11-24: 20/20 done, 19 sent, 1 failed, ")
    assert lines[-1].endswith(" msg/s")


def test_a_bar_on_a_terminal() -> None:
    stream = _Terminal()
    with SendProgress(stream) as progress:
        progress.start(ISSUE, 5)
        for result in _results(5):
            progress.advance(result)
        assert progress._bar is not None
        task = progress._bar.tasks[0]
        assert (task.completed, task.fields["sent"], task.fields["failed"]) == (5, 4, 1)
        assert "r4@example.com" not in stream.getvalue()  # counts, not a line per message
