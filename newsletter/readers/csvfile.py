"""Read a CSV file of readers (`subscribers import`): bytes → text → rows, with limits.

A CSV comes from another tool or a spreadsheet and is not trusted: it must be a regular
file of at most `MAX_BYTES`, UTF-8 (with or without a BOM) or UTF-16 with a BOM, with
cells of at most `MAX_CELL` characters. Anything else is one `ConfigError` naming the file
(and the line) and how to fix it. The delimiter is the one of `,` `;` and tab that the
header line holds most of (Excel writes `;` where the decimal mark is a comma).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from newsletter.errors import ConfigError

MAX_BYTES = 200 * 1024 * 1024
MAX_CELL = 64 * 1024
DELIMITERS = (",", ";", "\t")
_UTF8_FIX = ("re-save it as UTF-8 (Excel: Save As → \"CSV UTF-8\"; LibreOffice: Save As → "
             "Character set \"Unicode (UTF-8)\")")


@dataclass(frozen=True)
class Table:
    """A CSV file's header and rows, each row with the line it starts on."""

    name: str
    header: tuple[str, ...]
    rows: tuple[tuple[int, tuple[str, ...]], ...]
    delimiter: str


def read_table(path: Path) -> Table:
    """Read `path` as a CSV table; one `ConfigError` for whatever keeps it from being one."""
    return parse_table(decode(read_bytes(path), str(path)), str(path))


def read_bytes(path: Path, limit: int = MAX_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes. O_NONBLOCK: a FIFO named by
    mistake is refused, not waited on."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError as err:
        raise ConfigError("file not found", file=path, fix="check the path") from err
    except IsADirectoryError as err:
        raise ConfigError("is a folder, not a CSV file", file=path,
                          fix="give the path of the .csv file") from err
    except OSError as err:
        raise ConfigError(f"cannot be read: {err.strerror}", file=path) from err
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ConfigError("is not a regular file (a folder, a device or a pipe)",
                          file=path, fix="give the path of the .csv file")
    with os.fdopen(fd, "rb") as handle:
        if info.st_size > limit:
            raise ConfigError(f"is {info.st_size:,} bytes, more than the {limit:,} allowed",
                              file=path, fix="split it into smaller files and import each")
        try:
            data = handle.read(limit + 1)
        except OSError as err:
            raise ConfigError(f"cannot be read: {err.strerror}", file=path) from err
    if len(data) > limit:  # it grew while we read
        raise ConfigError(f"is more than the {limit:,} bytes allowed", file=path,
                          fix="split it into smaller files and import each")
    return data


def decode(data: bytes, name: str) -> str:
    """UTF-8 (a BOM dropped), or UTF-16 when it starts with its BOM."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as err:
            raise ConfigError(f"is not valid UTF-16 at byte {err.start}", file=name,
                              fix=_UTF8_FIX) from err
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ConfigError(
            f"is not UTF-8: byte {err.start} (0x{data[err.start]:02x}), on line {line} (likely "
            "a Latin-1 or Windows-1252 file); nothing imported", file=name, line=line,
            fix=_UTF8_FIX) from err


def delimiter_of(first_line: str) -> str:
    """The delimiter the header line uses most (outside quotes); `,` when none."""
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted = False
    for char in first_line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def parse_table(text: str, name: str) -> Table:
    """The rows of CSV `text`; the first non-empty row is the header."""
    delimiter = delimiter_of(text.split("\n", 1)[0])
    header: tuple[str, ...] | None = None
    rows: list[tuple[int, tuple[str, ...]]] = []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    line = 1
    with _cell_limit(MAX_CELL):
        while True:
            start = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                line = reader.line_num or start
                why = str(err)
                if "field larger" in why:
                    why = f"a cell is longer than {MAX_CELL:,} characters"
                raise ConfigError(f"is not a CSV file here: {why}", file=name, line=line,
                                  fix="check the quotes on this line, or re-export the file "
                                      "as CSV") from err
            if not any(cell.strip() for cell in cells):
                continue
            if header is None:
                header = tuple(cell.strip().lstrip("\ufeff") for cell in cells)
                continue
            rows.append((start, tuple(cells)))
    if header is None:
        raise ConfigError("is empty: no header row", file=name, line=1,
                          fix="the first line names the columns, e.g. email,name")
    return Table(name, header, tuple(rows), delimiter)


@contextlib.contextmanager
def _cell_limit(limit: int) -> Iterator[None]:
    # The csv module's limit is process-wide; set it for this read only.
    before = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(before)
