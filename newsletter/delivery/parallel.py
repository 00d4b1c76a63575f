"""Processes per core for the send loop: one round of `dispatch` over several processes.

Threads stop helping once the client is bound by the CPU: building each message, the SMTP
exchange and the ledger commit all hold the GIL, so on two cores two or four connections of
one process were no faster than one. Here each child process (forked, so it has the issue's
templates without pickling them) takes every P-th reader of the round and its share of
`smtp.connections`, opens a ledger connection of its own (SQLite in WAL mode takes several
writers, each waiting its turn; PostgreSQL any number), and runs the very per-connection
loop the threads run: a reply is on record before the next message on its connection goes
out, so a crash still leaves at most one unconfirmed message per connection.

Every result is also streamed to the parent, which keeps the counts, the failures in a row,
the retries and the pause exactly as with threads, and tells the children to stop (an
error, a pause, a signal: they finish the message in hand). A child dies with its parent:
kill -9 of the run is a crash of all of it, with the same bound on duplicates.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import multiprocessing
import os
import queue
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, cast

from newsletter.delivery.base import DeliveryBackend, DeliveryResult
from newsletter.delivery.throttle import Throttle
from newsletter.errors import DeliveryError
from newsletter.message import OutgoingMessage
from newsletter.models import Subscriber

if TYPE_CHECKING:
    from newsletter.dispatch import _Run
    from newsletter.ledger import Ledger

_FORK = multiprocessing.get_context("fork") if sys.platform != "win32" else None
_PR_SET_PDEATHSIG = 1


def process_count(connections: int) -> int:
    """Processes for `connections` connections: one per core, never more than connections."""
    return max(1, min(connections, os.cpu_count() or 1)) if _FORK is not None else 1


def ledger_opener(ledger: Ledger | None) -> Callable[[], Ledger | None] | None:
    """How a child opens its own connection to `ledger`'s database (a connection must not
    cross a fork), or None where that is not known: then the run keeps to threads."""
    if ledger is None:
        return lambda: None
    reopen = getattr(ledger, "reopen", None)
    if callable(reopen):
        return cast(Callable[[], "Ledger"], reopen)
    from newsletter.ledger import SqliteLedger

    if type(ledger) is SqliteLedger:
        path = ledger.path
        return lambda: SqliteLedger(path)
    return None


def run_round(run: _Run, todo: list[Subscriber], build: Callable[[Subscriber], OutgoingMessage],
              open_backend: Callable[[], DeliveryBackend],
              open_ledger: Callable[[], Ledger | None], issue_id: str,
              on_result: Callable[[DeliveryResult], None] | None,
              processes: int) -> list[Subscriber]:
    """Send to `todo` over `processes` processes; the results go into `run` as with threads.
    Returns the readers nobody attempted (the round was halted)."""
    from newsletter.dispatch import _tally

    assert _FORK is not None
    connections = max(1, min(run.options.connections, len(todo)))
    processes = max(1, min(processes, connections))
    halt = _FORK.Event()
    left: list[Subscriber] = []
    collectors: list[threading.Thread] = []
    children: list[Any] = []

    def collect(reader: Connection, share: list[int]) -> None:
        seen: set[int] = set()
        try:
            while True:
                item = reader.recv()
                if item[0] == "result":
                    seen.add(item[1])
                    _tally(run, todo[item[1]], item[2])
                    if on_result is not None:
                        on_result(item[2])
                else:  # the child's last word: who is left and what stopped it
                    _, left_over, unconfirmed, error, crash = item
                    with run.lock:
                        left.extend(todo[i] for i in left_over)
                        run.unconfirmed.extend(todo[i] for i in unconfirmed)
                        if error is not None:
                            run.outcome.error = run.outcome.error or error
                            run.halt.set()
                        if crash is not None:
                            run.crash = run.crash or RuntimeError(
                                f"a sending process failed:\n{crash}")
                            run.halt.set()
                    return
                if run.halt.is_set():
                    halt.set()
        except EOFError:  # it died without a word: who it did not report is still pending
            with run.lock:
                run.outcome.error = run.outcome.error or DeliveryError(
                    "a sending process ended unexpectedly", field="smtp.connections",
                    fix="whoever was not recorded as sent is still pending: run the same "
                        "command again")
                run.unconfirmed.extend(todo[i] for i in share if i not in seen)
                run.halt.set()
        finally:
            reader.close()
            if run.halt.is_set():
                halt.set()

    for n in range(processes):
        share = list(range(n, len(todo), processes))
        share_connections = connections // processes + (n < connections % processes)
        reader, writer = _FORK.Pipe(duplex=False)
        child = _FORK.Process(
            target=_child, name=f"smtp-process-{n}", daemon=True,
            args=(writer, halt, todo, share, share_connections, build, open_backend,
                  open_ledger, issue_id, run.options, processes, os.getpid()))
        child.start()
        writer.close()
        children.append(child)
        collectors.append(threading.Thread(target=collect, args=(reader, share),
                                           name=f"smtp-collect-{n}"))
        collectors[-1].start()
    try:
        while any(c.is_alive() for c in collectors):
            if run.stop.is_set() or run.halt.is_set():
                halt.set()
            for collector in collectors:
                collector.join(0.05 / len(collectors))
    except KeyboardInterrupt:  # a second Ctrl-C: stop now, but let replies be recorded
        run.halt.set()
        halt.set()
        for collector in collectors:
            collector.join()
        raise
    finally:
        for child in children:
            child.join()
    if left or run.stop.is_set():  # a child stopped early: so has the round (as a thread would)
        run.halt.set()
    return left


def _child(writer: Connection, halt: Any, todo: list[Subscriber], share: list[int],
           connections: int, build: Callable[[Subscriber], OutgoingMessage],
           open_backend: Callable[[], DeliveryBackend],
           open_ledger: Callable[[], Ledger | None], issue_id: str, options: Any,
           processes: int, parent: int) -> None:
    """One process's part of the round: its readers over its connections, as threads."""
    from newsletter.dispatch import _Run, _worker

    # Signals are the parent's to handle: it tells us to stop through `halt`.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with(parent)
    # A result names its recipient as the message has it, which may be spelled otherwise
    # than the reader's entry: the thread notes whose message it built.
    # A thread builds the next reader's message before the result of this one arrives (it
    # announces it, dispatch._announce_next): results are matched by their Message-ID.
    by_id = {id(todo[i]): i for i in share}
    current = threading.local()

    def tracked(subscriber: Subscriber) -> OutgoingMessage:
        message = build(subscriber)
        built = current.__dict__.setdefault("built", {})
        built[message.message_id] = by_id[id(subscriber)]
        return message

    work: queue.Queue[Subscriber] = queue.Queue()
    for i in share:
        work.put(todo[i])
    # The parent decides about pauses, from every process's results together.
    mine = dataclasses.replace(options, connections=connections,
                               pause_after_failures=sys.maxsize)
    run = _Run(mine, cast(threading.Event, halt))  # a process-shared event, same methods
    run.fed.set()  # the whole share is queued: a worker that finds the queue empty is done
    lock = threading.Lock()

    def report(result: DeliveryResult) -> None:
        with lock:
            try:
                writer.send(("result", current.built.pop(result.message_id), result))
            except OSError:  # the parent is gone: send nothing more
                halt.set()

    error: DeliveryError | None = None
    crash: str | None = None
    ledger: Ledger | None = None
    try:
        ledger = open_ledger()
        throttle = Throttle(options.rate_limit / processes, sleep=halt.wait)
        workers = [threading.Thread(target=_worker, name=f"smtp-{n}",
                                    args=(run, work, tracked, open_backend, throttle, ledger,
                                          issue_id, report))
                   for n in range(max(1, min(connections, len(share))))]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        error = run.outcome.error
        if run.crash is not None:
            crash = "".join(traceback.format_exception(run.crash))
    except DeliveryError as err:  # the ledger cannot be opened: nothing was sent here
        error = err
    except Exception as err:
        crash = "".join(traceback.format_exception(err))
    finally:
        with contextlib.suppress(Exception):
            if ledger is not None:
                ledger.close()
    # Taken from the queue but not sent (a stop while waiting for the rate), or never taken.
    left = [by_id[id(s)] for s in [*run.returned, *work.queue]]
    unconfirmed = [by_id[id(s)] for s in run.unconfirmed]
    with lock, contextlib.suppress(OSError):
        writer.send(("end", left, unconfirmed, _portable(error), crash))
    writer.close()


def _portable(error: DeliveryError | None) -> DeliveryError | None:
    """`error` as it will arrive in the parent (exceptions pickle by their arguments)."""
    if error is None:
        return None
    import pickle

    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return DeliveryError(str(error), field=getattr(error, "field", None),
                             fix=getattr(error, "fix", None))


def _die_with(parent: int) -> None:
    """Be killed when the parent dies (Linux), so a killed run sends nothing more."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before we asked
        os._exit(1)
