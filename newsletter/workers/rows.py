"""The SQL of batches and leases on the `deliveries` table (PostgreSQL, bound parameters).

Every lease is compared with the database's clock (`now()`), never a worker's: two
machines whose clocks disagree still agree on whose a row is.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, text

from newsletter.ledger import DeliveryStatus

_UNSENT = "status IN ('pending', 'failed-temporary')"


@dataclass(frozen=True)
class Claimed:
    """One delivery a worker holds: what its message needs."""

    email: str  # the ledger's key (lower-cased)
    address: str  # as the reader gave it
    name: str | None
    variant: str


def queueing_lock(issue_id: str, batch: int) -> str:
    """procrastinate's queueing lock of one batch: two sends never queue it twice."""
    return f"newsletter:{issue_id}#{batch}"


def store_templates(conn: Connection, issue_id: str, variants: dict[str, str]) -> None:
    """Keep each variant's serialized templates (the latest render wins)."""
    conn.execute(text(
        "INSERT INTO issue_templates (issue_id, variant, data) VALUES (:i, :v, :d) "
        "ON CONFLICT (issue_id, variant) DO UPDATE SET data = excluded.data, created = now()"),
        [{"i": issue_id, "v": key, "d": data} for key, data in variants.items()])


def load_templates(conn: Connection, issue_id: str) -> dict[str, str]:
    rows = conn.execute(text("SELECT variant, data FROM issue_templates WHERE issue_id = :i"),
                        {"i": issue_id})
    return {str(variant): str(data) for variant, data in rows}


def set_personal(conn: Connection, issue_id: str,
                 rows: Iterable[tuple[str, str, str | None, str]]) -> None:
    """Store (address, name, variant) on the unsent rows of (email, address, name, variant),
    a thousand rows a statement (the readers may be a stream of millions)."""
    statement = text("UPDATE deliveries SET address = :a, name = :n, variant = :v "
                     f"WHERE issue_id = :i AND email = :e AND {_UNSENT}")
    todo = iter(rows)
    while chunk := list(itertools.islice(todo, 1000)):
        conn.execute(statement, [{"i": issue_id, "e": email.lower(), "a": address, "n": name,
                                  "v": variant} for email, address, name, variant in chunk])


def assign_batches(conn: Connection, issue_id: str, size: int) -> list[int]:
    """Put unsent rows that have no batch yet into new batches of `size`; every batch of
    the issue with unsent rows. Two sends at once take turns (a transaction lock)."""
    conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                 {"k": "newsletter-batches:" + issue_id})
    conn.execute(text(
        "WITH base AS (SELECT coalesce(max(batch), 0) AS b FROM deliveries "
        "              WHERE issue_id = :i), "
        "     todo AS (SELECT email, row_number() OVER (ORDER BY email) - 1 AS n "
        "              FROM deliveries WHERE issue_id = :i AND batch IS NULL "
        f"             AND address IS NOT NULL AND {_UNSENT}) "
        "UPDATE deliveries d SET batch = base.b + 1 + todo.n / :size "
        "FROM todo, base WHERE d.issue_id = :i AND d.email = todo.email"),
        {"i": issue_id, "size": size})
    return [int(str(b)) for (b,) in conn.execute(text(
        f"SELECT DISTINCT batch FROM deliveries WHERE issue_id = :i AND {_UNSENT} "
        "AND batch IS NOT NULL ORDER BY batch"), {"i": issue_id})]


def claim(conn: Connection, issue_id: str, batch: int, owner: str, lease: float
          ) -> list[Claimed]:
    """Take the batch's unsent rows whose lease is free, ended, or already ours."""
    rows = conn.execute(text(
        "UPDATE deliveries SET lease_owner = :o, "
        "       lease_until = now() + make_interval(secs => :s) "
        f"WHERE issue_id = :i AND batch = :b AND {_UNSENT} AND address IS NOT NULL "
        "  AND (lease_until IS NULL OR lease_until < now() OR lease_owner = :o) "
        "RETURNING email, address, name, variant"),
        {"i": issue_id, "b": batch, "o": owner, "s": lease})
    return sorted((Claimed(r.email, r.address, r.name, r.variant) for r in rows),
                  key=lambda c: c.email)


def renew(conn: Connection, issue_id: str, batch: int, owner: str, lease: float) -> int:
    """Extend our lease on the batch's unsent rows; how many are still ours."""
    return conn.execute(text(
        "UPDATE deliveries SET lease_until = now() + make_interval(secs => :s) "
        f"WHERE issue_id = :i AND batch = :b AND lease_owner = :o AND {_UNSENT} "
        "  AND lease_until >= now()"),
        {"i": issue_id, "b": batch, "o": owner, "s": lease}).rowcount


def release(conn: Connection, issue_id: str, batch: int, owner: str) -> None:
    """Give our unsent rows back at once (a worker told to stop), for the next claim."""
    conn.execute(text(
        "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL "
        "WHERE issue_id = :i AND batch = :b AND lease_owner = :o"),
        {"i": issue_id, "b": batch, "o": owner})


def record(conn: Connection, issue_id: str, outcomes: Iterable[tuple[str, DeliveryStatus, str]]
           ) -> None:
    """The servers' replies, as the ledger's `record` stores them."""
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    params = [{"s": status, "r": reply, "u": stamp, "i": issue_id, "e": email.lower()}
              for email, status, reply in outcomes]
    if params:
        conn.execute(text(
            "UPDATE deliveries SET status = :s, reply = :r, attempts = attempts + 1, "
            "updated = :u WHERE issue_id = :i AND email = :e"), params)


def reset(conn: Connection, issue_id: str, emails: Iterable[str]) -> None:
    """Pending again (a pause: the failures that caused it are no evidence)."""
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    params = [{"u": stamp, "i": issue_id, "e": e.lower()} for e in emails]
    if params:
        conn.execute(text(
            "UPDATE deliveries SET status = 'pending', attempts = 0, updated = :u "
            "WHERE issue_id = :i AND email = :e AND status != 'skipped'"), params)


def complete_if_done(conn: Connection, issue_id: str) -> bool:
    """Mark the issue complete when no row of it is unsent (on the database's view)."""
    return bool(conn.execute(text(
        "UPDATE issues SET state = 'complete', note = '' WHERE issue_id = :i "
        "AND state = 'sending' AND NOT EXISTS (SELECT 1 FROM deliveries "
        f"WHERE issue_id = :i AND {_UNSENT})"), {"i": issue_id}).rowcount)


def pause(conn: Connection, issue_id: str, note: str) -> None:
    conn.execute(text("UPDATE issues SET state = 'paused', note = :n WHERE issue_id = :i"),
                 {"i": issue_id, "n": note})


def list_of(conn: Connection, issue_id: str) -> str | None:
    return conn.execute(text("SELECT list_id FROM issues WHERE issue_id = :i"),
                        {"i": issue_id}).scalar()


def orphaned(engine: Engine) -> list[tuple[str, int]]:
    """Batches of issues still sending whose unsent rows nobody holds (a lease that ended
    or was given back): they need a job again."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT DISTINCT d.issue_id, d.batch FROM deliveries d "
            "JOIN issues i ON i.issue_id = d.issue_id "
            f"WHERE i.state = 'sending' AND d.batch IS NOT NULL AND d.{_UNSENT} "
            "  AND d.address IS NOT NULL "
            "  AND (d.lease_until IS NULL OR d.lease_until < now()) "
            "ORDER BY d.issue_id, d.batch"))
        return [(str(issue_id), int(str(batch))) for issue_id, batch in rows]


SEND_OWNER = "send/"  # an in-process send's lease owner; no host name holds a "/"


def hold(conn: Connection, issue_id: str, emails: list[str], owner: str, lease: float
         ) -> set[str]:
    """An in-process `send`'s claim: lease those of `emails` (lower-cased) that are unsent
    and free; the ones now ours. The others are a worker's.

    The caller holds the send lock, so no other in-process send is running: a lease another
    send left (it was killed before it gave its rows back) is free now, not in two minutes.
    A scheduler that takes over from a leader killed mid-send sends the rest at once."""
    return {str(e) for (e,) in conn.execute(text(
        "UPDATE deliveries SET lease_owner = :o, "
        "       lease_until = now() + make_interval(secs => :s) "
        f"WHERE issue_id = :i AND email = ANY(:emails) AND {_UNSENT} "
        "  AND (lease_until IS NULL OR lease_until < now() OR lease_owner = :o "
        "       OR starts_with(lease_owner, :sends)) "
        "RETURNING email"), {"i": issue_id, "emails": emails, "o": owner, "s": lease,
                             "sends": SEND_OWNER})}


def renew_all(conn: Connection, issue_id: str, owner: str, lease: float) -> int:
    """Extend every lease `owner` holds on the issue's unsent rows."""
    return conn.execute(text(
        "UPDATE deliveries SET lease_until = now() + make_interval(secs => :s) "
        f"WHERE issue_id = :i AND lease_owner = :o AND {_UNSENT}"),
        {"i": issue_id, "o": owner, "s": lease}).rowcount


def release_all(conn: Connection, issue_id: str, owner: str) -> None:
    conn.execute(text("UPDATE deliveries SET lease_owner = NULL, lease_until = NULL "
                      "WHERE issue_id = :i AND lease_owner = :o"),
                 {"i": issue_id, "o": owner})
