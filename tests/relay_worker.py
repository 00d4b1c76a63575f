"""A worker process that sends through a `RelayGate`, for the shared-limits tests.

python -m tests.relay_worker URL RELAY MODE [key=value …]; it prints "ready", waits for a
line on stdin (so several start together), then prints one JSON line per event.
Modes: `rate` (count= messages, their start times), `smtp` (count= sessions to port= while
holding a connection slot), `hold` (takes a slot and waits to be killed), `fail` (fails
every message until Paused).
"""

from __future__ import annotations

import json
import smtplib
import sys
import threading
import time

from sqlalchemy import create_engine

from newsletter.workers.limits import Paused, RelayGate


def emit(**event: object) -> None:
    print(json.dumps(event), flush=True)


def main(url: str, relay: str, mode: str, *options: str) -> None:
    opts = dict(option.split("=", 1) for option in options)
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    gate = RelayGate(engine, relay, rate_limit=float(opts.get("rate", 0)),
                     connections=int(opts.get("connections", 1)),
                     pause_after_failures=int(opts.get("pause", 20)),
                     lease_seconds=float(opts.get("lease", 120)), owner=f"test-{mode}")
    count = int(opts.get("count", 10))
    emit(event="ready")
    sys.stdin.readline()
    if mode == "rate":
        for _ in range(count):
            gate.before_send()
            emit(event="send", at=time.time(), slot=gate.last_slot)
            gate.after_send(True)
    elif mode == "smtp":
        def session(n: int) -> None:
            for i in range(count):
                with gate.connection():
                    gate.before_send()
                    with smtplib.SMTP("127.0.0.1", int(opts["port"]), timeout=10) as smtp:
                        smtp.sendmail("a@example.org", [f"r{n}-{i}@example.org"],
                                      b"Subject: hi\r\n\r\nhello\r\n")
                        time.sleep(0.02)  # a slow relay: sessions overlap
                    gate.after_send(True)
        threads = [threading.Thread(target=session, args=(n,))
                   for n in range(int(opts.get("threads", 2)))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        emit(event="done")
    elif mode == "hold":
        with gate.connection():
            emit(event="held")
            time.sleep(3600)
    elif mode == "fail":
        failures = 0
        try:
            while True:
                gate.before_send()
                failures += 1
                gate.after_send(False, detail="550 no")
                time.sleep(0.01)
        except Paused as err:
            emit(event="paused", failures=failures, reason=err.reason)
    gate.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
