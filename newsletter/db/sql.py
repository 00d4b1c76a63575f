"""The ledger's SQL, written for SQLite, run on PostgreSQL.

The store methods (ledger.py, suppressions.py, readers/) write their SQL once, in the
subset both databases share, with `?` placeholders. `translate` turns a statement into
psycopg's words; the few SQLite idioms they use are rewritten here, once per statement
(cached), and anything else SQLite-only is refused loudly rather than run wrongly. Values
always travel as bound parameters: nothing here puts a value into SQL text.
"""

from __future__ import annotations

import functools
import re

_INSERT_OR_IGNORE = re.compile(r"^\s*INSERT\s+OR\s+IGNORE\s+INTO\b", re.IGNORECASE)
_INSTR = re.compile(r"\binstr\s*\(", re.IGNORECASE)
_ROWID_EQ = re.compile(r"\browid\s*=\s*%s", re.IGNORECASE)
_ROWID = re.compile(r"\browid\b", re.IGNORECASE)
# A parameter tested for NULL has no type PostgreSQL can infer: every such one is text.
_NULL_TEST = re.compile(r"(?<!%)%s(\s+IS\s+(?:NOT\s+)?NULL)", re.IGNORECASE)
_SQLITE_ONLY = re.compile(r"\b(?:OR\s+REPLACE|OR\s+ROLLBACK|OR\s+ABORT|OR\s+FAIL|"
                          r"sqlite_master|GLOB)\b", re.IGNORECASE)


class Untranslatable(ValueError):
    """A statement uses SQLite that has no PostgreSQL rewrite here."""


@functools.lru_cache(maxsize=1024)
def translate(sql: str) -> str | None:
    """`sql` (SQLite, `?` placeholders) for psycopg (`%s`); None for a statement that
    only means something to SQLite (a PRAGMA: secure_delete, wal_checkpoint)."""
    if sql.lstrip().upper().startswith("PRAGMA"):
        return None
    if _SQLITE_ONLY.search(sql):
        raise Untranslatable(f"SQLite-only SQL: {sql}")
    out = _placeholders(sql)
    if _INSERT_OR_IGNORE.match(out):
        out = _INSERT_OR_IGNORE.sub("INSERT INTO", out, count=1).rstrip().rstrip(";")
        out += " ON CONFLICT DO NOTHING"
    out = _INSTR.sub("strpos(", out)
    out = _ROWID_EQ.sub("ctid = CAST(%s AS tid)", out)
    out = _ROWID.sub("ctid::text", out)
    return _NULL_TEST.sub(r"CAST(%s AS TEXT)\1", out)


def _placeholders(sql: str) -> str:
    """`?` outside quotes → `%s`; every `%` doubled (psycopg's escape), quoted or not."""
    out: list[str] = []
    quote: str | None = None
    for char in sql:
        if quote is not None:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "?":
            out.append("%s")
            continue
        out.append("%%" if char == "%" else char)
    if quote is not None:
        raise Untranslatable(f"unbalanced quote in: {sql}")
    return "".join(out)
