"""Benchmark: what the shared per-relay limits (newsletter.workers.limits) cost per message.

    python benchmarks/relay_gate.py [--url postgresql://postgres@127.0.0.1:5432/test]
                                    [--messages 3000] [--processes 4]

In one run, on a scratch database of the server: per message, `before_send` +
`after_send(True)` without a rate limit and with one too high to wait for (so only the
round trip is measured), against the baseline of one autocommit UPDATE on the same server
(what the ledger's commit per SMTP reply costs); statements counted per message; and the
most slot reservations a second one relay's row gives several processes at once (the
ceiling of a shared rate limit).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from newsletter.workers.limits import RelayGate, create_tables

RELAY = "bench.example.org:587"


def sa_url(url: str) -> str:
    return urlunsplit(("postgresql+psycopg", *urlsplit(url)[1:]))


def gate(engine: sa.Engine, rate: float) -> RelayGate:
    return RelayGate(engine, RELAY, rate_limit=rate, connections=4, pause_after_failures=50,
                     lease_seconds=60, owner="bench")


def per_message(engine: sa.Engine, rate: float | None, n: int) -> tuple[float, float]:
    """(µs per message, statements per message); rate None: the baseline UPDATE."""
    statements = [0]

    def count(*_: object) -> None:
        statements[0] += 1

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        if rate is None:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                update = sa.text("UPDATE relay_limits SET failures = 0 WHERE relay = :r")
                statements[0] = 0
                start = time.perf_counter()
                for _ in range(n):
                    conn.execute(update, {"r": RELAY})
                took = time.perf_counter() - start
        else:
            g = gate(engine, rate)
            g._stop.set()  # the keeper's once-a-second round trips are not per message
            statements[0] = 0
            start = time.perf_counter()
            for _ in range(n):
                g.before_send()
                g.after_send(True)
            took = time.perf_counter() - start
            g.close()
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    return took / n * 1e6, statements[0] / n


def _reserve(url: str, seconds: float, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    engine = sa.create_engine(sa_url(url))
    g = gate(engine, 1e6)
    done, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        g.before_send()
        done += 1
    g.close()
    out.put(done)


def contended(url: str, processes: int, seconds: float = 3.0) -> float:
    """Slot reservations a second on one relay row, `processes` reserving at once."""
    out: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    workers = [multiprocessing.Process(target=_reserve, args=(url, seconds, out))
               for _ in range(processes)]
    for w in workers:
        w.start()
    total = sum(out.get() for _ in workers)
    for w in workers:
        w.join()
    return total / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--processes", type=int, default=4)
    args = parser.parse_args()
    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(args.url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit((*urlsplit(args.url)[:2], "/" + name, "", ""))
    try:
        engine = sa.create_engine(sa_url(url))
        create_tables(engine)
        gate(engine, 0).close()  # the relay's rows
        rounds: dict[str, list[tuple[float, float]]] = {"baseline": [], "rate 0": [],
                                                         "rate set": []}
        for _ in range(3):  # alternately, the median of three
            rounds["baseline"].append(per_message(engine, None, args.messages))
            rounds["rate 0"].append(per_message(engine, 0, args.messages))
            rounds["rate set"].append(per_message(engine, 1e6, args.messages))
        base = statistics.median(us for us, _ in rounds["baseline"])
        print(f"per message, {args.messages} messages, median of 3 rounds:")
        labels = {"baseline": "one autocommit UPDATE (a ledger commit's round trip)",
                  "rate 0": "gate, rate_limit 0", "rate set": "gate, rate_limit set"}
        for key, label in labels.items():
            us = statistics.median(u for u, _ in rounds[key])
            trips = rounds[key][0][1]
            print(f"  {label:55} {us:8.1f} µs  {trips:.2f} statements  "
                  f"({us / base:.2f}× the UPDATE)")
        engine.dispose()
        for n in (1, args.processes):
            print(f"  slot reservations/s on one relay row, {n} process(es): "
                  f"{contended(url, n):,.0f}")
    finally:
        with psycopg.connect(args.url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
