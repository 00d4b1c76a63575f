"""What `subscribers forget` does inside its one transaction (`ReaderStore.forget`): delete
every row of the address, keep its deliveries counted under the digest, take it out of
what other readers' records say, and keep the digest (and whether they had complained).
"""

from __future__ import annotations

import re
import sqlite3

# Where a remote server's words about another reader may name an address (a forwarder's
# bounce): (table, column).
_WORDS = (("events", "diagnostic"), ("suppressions", "evidence"),
          ("resubscriptions", "evidence"), ("resubscriptions", "note"),
          ("deliveries", "reply"), ("readers", "consent"))
_ROWS = ("readers", "confirmation_mails", "events", "resubscriptions", "suppressions")


def erase(db: sqlite3.Connection, email: str, mailbox: str, digest: str, stamp: str
          ) -> dict[str, int]:
    """Forget lower-cased `email` in transaction `db`; rows changed per table. `mailbox`
    is its `mailbox_key`, under which the hourly confirmation mail is kept."""
    # A complaint is lifted by the publisher alone, never by a sign-up of theirs: that
    # much is kept, under the digest, of the suppression the erasure removes.
    if db.execute("SELECT 1 FROM suppressions WHERE email = ? AND reason = 'complaint'",
                  (email,)).fetchone():
        db.execute("INSERT OR IGNORE INTO forgotten_complaints (digest, created) "
                   "VALUES (?, ?)", (digest, stamp))
    removed = {table: db.execute(f"DELETE FROM {table} WHERE email = ?",
                                 (mailbox if table == "confirmation_mails" else email,)
                                 ).rowcount
               for table in _ROWS}
    # The deliveries stay, counted in `status`, under the digest instead of the address
    # (its Message-ID names no address: it is a digest too).
    # (What SQLite's UPDATE OR REPLACE did, in SQL PostgreSQL speaks too: a row already
    # under the digest for the same issue, from an earlier erasure, gives way.)
    forgotten = f"forgotten:{digest[:16]}"
    db.execute("DELETE FROM deliveries WHERE email = ? AND issue_id IN "
               "(SELECT issue_id FROM deliveries WHERE email = ?)", (forgotten, email))
    removed["deliveries"] = db.execute(
        "UPDATE deliveries SET email = ?, reply = '' WHERE email = ?",
        (forgotten, email)).rowcount
    scrubbed = scrub(db, email)
    if scrubbed:
        removed["named in other readers' records"] = scrubbed
    db.execute("INSERT OR IGNORE INTO forgotten (digest, created) VALUES (?, ?)",
               (digest, stamp))
    return removed


def scrub(db: sqlite3.Connection, email: str) -> int:
    """Take `email` out of the words kept about other readers; rows changed."""
    pattern = re.compile(re.escape(email), re.IGNORECASE)
    changed = 0
    for table, column in _WORDS:
        rows = db.execute(f"SELECT rowid, {column} FROM {table} "
                          f"WHERE instr(lower({column}), ?) > 0", (email,)).fetchall()
        for rowid, text in rows:  # (PostgreSQL: ctid, see db/sql.py)
            db.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?",
                       (pattern.sub("[forgotten]", text), rowid))
            changed += 1
    return changed
