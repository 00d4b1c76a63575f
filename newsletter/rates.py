"""What came back from one issue, as counts and as rates against the mailbox providers'
thresholds (shown by `newsletter status`).

- Complaints, per message delivered: Gmail and Yahoo require bulk senders to stay under
  0.3 % and Gmail advises under 0.1 % (Gmail's "Email sender guidelines",
  support.google.com/a/answer/81126; Yahoo's sender best practices). Amazon SES also
  reviews an account at 0.1 %.
- Bounces, per message sent (hard bounces and refusals at RCPT; soft bounces are
  transient and not counted, as SES does not): Amazon SES puts an account under review at
  5 % and advises staying under 2 % (the SES Developer Guide, "Amazon SES sending review
  process FAQs"); most ESPs warn near 2 % too.
"""

from __future__ import annotations

from dataclasses import dataclass

COMPLAINT_LIMIT = 0.003
COMPLAINT_ADVISED = 0.001
BOUNCE_REVIEW = 0.05
BOUNCE_ADVISED = 0.02


@dataclass(frozen=True)
class CameBack:
    """One issue's outcome: readers per kind (each reader counted once)."""

    sent: int  # accepted by the server
    refused: int = 0  # refused at RCPT (or after DATA) for good: failed-permanent
    hard: int = 0
    soft: int = 0
    complaints: int = 0
    unsubscribed: int = 0

    @property
    def anything(self) -> bool:
        return any((self.refused, self.hard, self.soft, self.complaints, self.unsubscribed))

    @property
    def bounces(self) -> int:
        return self.hard + self.refused

    @property
    def attempted(self) -> int:
        # A refused message was sent and bounced at once: it counts in the bounce rate.
        return self.sent + self.refused

    @property
    def bounce_rate(self) -> float | None:
        return self.bounces / self.attempted if self.attempted else None

    @property
    def complaint_rate(self) -> float | None:
        return self.complaints / self.sent if self.sent else None


def bounce_verdict(rate: float | None) -> str:
    if rate is None:
        return "nothing sent"
    if rate >= BOUNCE_REVIEW:
        return "over the 5 % at which Amazon SES reviews an account"
    if rate >= BOUNCE_ADVISED:
        return "over the 2 % that Amazon SES and most providers advise"
    return "ok (under 2 %)"


def complaint_verdict(rate: float | None) -> str:
    if rate is None:
        return "nothing delivered"
    if rate >= COMPLAINT_LIMIT:
        return "over Gmail's and Yahoo's 0.3 % complaint limit"
    if rate >= COMPLAINT_ADVISED:
        return "over the 0.1 % Gmail advises (the limit is 0.3 %)"
    return "ok (under 0.1 %)"


def _percent(rate: float | None, places: int) -> str:
    return "-" if rate is None else f"{rate * 100:.{places}f} %"


def lines(back: CameBack) -> list[str]:
    """The lines `status` prints under an issue's counts."""
    soft = f"; {back.soft} soft, not counted" if back.soft else ""
    out = [f"bounces: {back.bounces} of {back.attempted} ({_percent(back.bounce_rate, 1)}: "
           f"{back.hard} hard, {back.refused} refused{soft}) — "
           f"{bounce_verdict(back.bounce_rate)}",
           f"complaints: {back.complaints} of {back.sent} "
           f"({_percent(back.complaint_rate, 2)}) — {complaint_verdict(back.complaint_rate)}"]
    if back.unsubscribed:
        rate = back.unsubscribed / back.sent if back.sent else None
        out.append(f"unsubscribed: {back.unsubscribed} of {back.sent} ({_percent(rate, 1)})")
    return out
