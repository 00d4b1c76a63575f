"""Print one line per message instead of delivering it (dry runs, and `--backend console`).

Nothing is delivered, so nothing is recorded: the ledger and the archive stay as they were.
"""

from __future__ import annotations

import sys
from typing import TextIO

from newsletter.delivery.base import DeliveryBackend, DeliveryResult
from newsletter.message import OutgoingMessage
from newsletter.settings import Settings


class ConsoleBackend(DeliveryBackend):
    name = "console"
    idempotent = True
    delivers = False

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    @classmethod
    def from_settings(cls, settings: Settings, stream: TextIO) -> ConsoleBackend:
        return cls(stream)

    def send(self, message: OutgoingMessage) -> DeliveryResult:
        size = len(message.data) / 1024
        print(f"  {message.recipient:<32} {size:6.1f} KB  {message.subject}", file=self.stream)
        return DeliveryResult(message.recipient, message.message_id, "sent", "printed")
