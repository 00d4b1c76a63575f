"""The one interface every delivery backend implements.

A backend is opened once per run (`with backend:`), receives finished messages one at a
time from `digest.run_send` and answers each with a `DeliveryResult`. A refusal that
concerns one recipient is a failed result and the run goes on; a fault that stops every
delivery (server unreachable, login refused, disk full) raises `DeliveryError`, and so does
a refusal of the message itself (`MessageRefused`): every reader would get the same answer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar, Literal, TextIO

from newsletter.errors import DeliveryError
from newsletter.message import OutgoingMessage

if TYPE_CHECKING:
    from newsletter.settings import Settings

ResultStatus = Literal["sent", "failed-temporary", "failed-permanent"]


@dataclass(frozen=True)
class DeliveryResult:
    recipient: str
    message_id: str
    status: ResultStatus
    reply: str = ""  # the server's answer, or where the message was written

    @property
    def ok(self) -> bool:
        return self.status == "sent"


def failure_status(code: int) -> ResultStatus:
    """SMTP 5xx is final; 4xx (and anything unexpected) may work later."""
    return "failed-permanent" if 500 <= code < 600 else "failed-temporary"


class MessageRefused(DeliveryError):
    """The server refused the message (its content, size or sender), not the recipient:
    nobody is to blame or to suppress, and sending it to the next reader is pointless."""


class DeliveryBackend(ABC):
    name: ClassVar[str]
    # Delivering the same message twice has the effect of once (a file written again):
    # its ledger records may then be batched, since a re-run after a crash duplicates nothing.
    idempotent: ClassVar[bool] = False
    # Whether `send` delivers the message to the reader. A backend that only shows it (the
    # console) must leave the ledger alone: what it printed nobody received.
    delivers: ClassVar[bool] = True
    # Messages a second on this one connection (0: no limit). The send loop keeps to it,
    # waiting on its stop event, so that a signal ends the wait at once.
    rate_per_connection: float = 0

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Settings, stream: TextIO) -> DeliveryBackend:
        """Build the backend from its own section of the settings."""

    def open(self) -> None:  # noqa: B027 - most backends need no set-up
        """Acquire what the run needs (a connection, a folder). Called once per run."""

    def close(self) -> None:  # noqa: B027
        """Release it; must be safe to call after a failed `open`."""

    @abstractmethod
    def send(self, message: OutgoingMessage) -> DeliveryResult:
        """Deliver one message."""

    @property
    def lookahead(self) -> bool:
        """Whether `announce` helps: the backend can start the next message early."""
        return False

    def announce(self, following: OutgoingMessage) -> None:  # noqa: B027
        """`following` is the next message `send` will get (SMTP writes its commands
        behind this message's body). The caller then sends exactly it next, or closes."""

    def __enter__(self) -> DeliveryBackend:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
