"""The base of every settings section: one-line text, no empty paths, no unknown keys.

Its own module so that sections kept beside the code they configure (`inbound.settings`)
can build on it without importing `settings`, which imports them.
"""

from __future__ import annotations

import ipaddress
import unicodedata
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationInfo, field_validator

# Line and paragraph separators that are not in Unicode's Cc category but still break lines.
_LINE_BREAKS = frozenset("\u2028\u2029")


def control_character(text: str) -> str | None:
    """The first control character in `text`, as `U+000D`, or None.

    Settings and titles end up in headers, links and file names: a CR/LF there could add
    headers (Bcc:) to every message, so one-line text must be exactly that.
    """
    for char in text:
        if char in _LINE_BREAKS or unicodedata.category(char) == "Cc":
            return f"U+{ord(char):04X}"
    return None


def _is_path(annotation: Any) -> bool:
    """Whether a field holds a path: Path, Path | None or list[Path]."""
    return annotation is Path or Path in get_args(annotation)


def _one_line(model: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """Refuse a control character in a text setting (or a list of them), and an empty path
    (it would mean the current folder); secrets may span lines (a PEM key) and are never
    shown, so they are left alone."""
    field = model.model_fields.get(info.field_name or "")
    annotation = field.annotation if field else None
    if annotation is SecretStr or SecretStr in get_args(annotation):
        return value
    if _is_path(annotation):
        for text in value if isinstance(value, list | tuple) else (value,):
            if isinstance(text, str) and not text.strip():
                raise ValueError("is empty; give a file or folder path")
    for text in value if isinstance(value, list | tuple) else (value,):
        if isinstance(text, str) and (char := control_character(text)) is not None:
            raise ValueError(f"contains a control character ({char}); settings that reach "
                             "headers and links must be one line of plain text")
    return value


class _Section(BaseModel):
    # No nan or inf for float settings: a wait of inf seconds hangs, nan compares false.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_control_characters(cls, value: Any, info: ValidationInfo) -> Any:
        return _one_line(cls, value, info)


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine (localhost, 127.0.0.0/8 or ::1) by name or address."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
