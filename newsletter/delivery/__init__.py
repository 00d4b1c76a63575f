"""Delivery backends, chosen by name from `BACKENDS`."""

from __future__ import annotations

import sys
from typing import TextIO

from newsletter.delivery.base import DeliveryBackend, DeliveryResult
from newsletter.delivery.console import ConsoleBackend
from newsletter.delivery.file import FileBackend
from newsletter.delivery.smtp import SmtpBackend
from newsletter.errors import ConfigError
from newsletter.settings import Settings

BACKENDS: dict[str, type[DeliveryBackend]] = {
    backend.name: backend for backend in (FileBackend, SmtpBackend, ConsoleBackend)
}

__all__ = ["BACKENDS", "DeliveryBackend", "DeliveryResult", "create_backend"]


def create_backend(name: str, settings: Settings, stream: TextIO | None = None) -> DeliveryBackend:
    """The backend called `name`, configured from its own settings section."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown delivery backend {name!r}", field="delivery.backend",
                          fix="use one of: " + ", ".join(BACKENDS))
    return BACKENDS[name].from_settings(settings, stream or sys.stdout)
