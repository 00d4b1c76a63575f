"""The send loop: deliver one issue's messages over N connections, record every reply.

The contract with the ledger: a subscriber's row says `sent` only after the server said
250, and it says so before the next message on that connection goes out. A process killed
at any moment therefore leaves at most one unconfirmed message per connection, which the
next run sends again; everyone else is either recorded as sent or still pending. Backends
whose deliveries are idempotent (a file written again is the same file) record in batches:
after a crash they redo the unrecorded part, which duplicates nothing.

A ledger that cannot be written (disk full, read-only) stops the run like a crash does, with
the same guarantee: the reply that could not be recorded leaves that reader pending (the one
possible duplicate on that connection), and nothing else goes out. A message the server
refuses as a message (`MessageRefused`) stops the run too, and leaves everyone pending.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from newsletter.delivery import DeliveryBackend, DeliveryResult, parallel
from newsletter.delivery.throttle import Throttle
from newsletter.errors import DeliveryError
from newsletter.ledger import DeliveryStatus, Ledger
from newsletter.message import OutgoingMessage
from newsletter.models import Sample, Subscriber

LEDGER_BATCH = 1000
# Readers handed to the sending processes at a time (delivery.parallel forks per slice).
PROCESS_CHUNK = 20 * LEDGER_BATCH
# The longest wait between retry rounds (unless retry_backoff itself is longer): doubling
# from an hour over 20 rounds would wait 30 years.
MAX_RETRY_WAIT = 3600.0


def retry_wait(backoff: float, round_: int) -> float:
    """Seconds before retry round `round_` (1, 2, …): `backoff`, doubled each round, capped."""
    return min(backoff * 2.0 ** (round_ - 1), max(backoff, MAX_RETRY_WAIT))


@dataclass(frozen=True)
class DispatchOptions:
    connections: int = 1
    retries: int = 3  # attempts per recipient in this run for 4xx replies
    retry_backoff: float = 5.0  # seconds before the first retry round; doubles each round
    pause_after_failures: int = 20
    rate_limit: float = 0  # messages per second, all connections together
    processes: int = 1  # the connections spread over this many processes (delivery.parallel)


@dataclass
class DispatchOutcome:
    """Counts, not a list of every result: memory stays flat however long the list."""

    sent: int = 0
    failed: dict[str, DeliveryResult] = field(default_factory=dict)  # last failure by address
    not_attempted: Sample[Subscriber] = field(default_factory=Sample)
    error: DeliveryError | None = None
    paused: str | None = None
    stopped: bool = False


class _Run:
    """State shared by the worker threads of one dispatch."""

    def __init__(self, options: DispatchOptions, stop: threading.Event) -> None:
        self.options = options
        self.stop = stop
        self.halt = threading.Event()  # error, pause or stop: every worker finishes up
        self.lock = threading.Lock()
        self.outcome = DispatchOutcome()
        self.failures_in_a_row = 0
        self.streak: dict[str, Subscriber] = {}  # who failed in the current run of failures
        self.attempts: dict[str, int] = {}  # of those failing so far
        self.retry: list[Subscriber] = []  # 4xx: try again next round
        self.fed = threading.Event()  # every recipient of the round is in the queue
        self.returned: list[Subscriber] = []  # taken from the queue, then not sent
        self.unconfirmed: list[Subscriber] = []  # never sent, or no reply before a fault
        self.crash: BaseException | None = None  # a bug in a worker, re-raised by dispatch


def dispatch(
    recipients: Iterable[Subscriber],
    build: Callable[[Subscriber], OutgoingMessage],
    open_backend: Callable[[], DeliveryBackend],
    options: DispatchOptions,
    *,
    ledger: Ledger | None = None,
    issue_id: str = "",
    stop: threading.Event | None = None,
    sleep: Callable[[float], object] | None = None,
    on_result: Callable[[DeliveryResult], None] | None = None,
) -> DispatchOutcome:
    """Send to `recipients`, retrying 4xx replies, until done, paused, stopped or broken.

    `recipients` is read as the sending goes, a queue of LEDGER_BATCH ahead at most, so a
    list of any length costs the same memory. `open_backend` makes one backend per
    connection. Results go to `ledger` (if given) the moment they arrive. `sleep` waits
    between retry rounds; by default it waits on `stop`, so a signal cuts the wait short.
    """
    stop = stop or threading.Event()
    sleep = sleep or stop.wait
    run = _Run(options, stop)
    throttle = Throttle(options.rate_limit, sleep=stop.wait)  # a signal ends the wait
    todo: Iterator[Subscriber] = iter(recipients)
    for round_ in range(options.retries):
        if round_:
            sleep(retry_wait(options.retry_backoff, round_))
            if stop.is_set():
                run.outcome.stopped = True
                break
        # No more connections than readers: a short list opens as many as it needs.
        head = list(itertools.islice(todo, max(1, options.connections)))
        if not head:
            break
        todo = itertools.chain(head, todo)
        work: queue.Queue[Subscriber] = queue.Queue(maxsize=LEDGER_BATCH)
        run.fed.clear()
        workers: list[threading.Thread] = []
        reopen = parallel.ledger_opener(ledger) if options.processes > 1 else None
        if reopen is not None and len(head) > 1:
            # Processes, not threads, once the client is CPU-bound: the same loop in each,
            # a slice of the list at a time, so memory stays flat however long the list.
            while chunk := list(itertools.islice(todo, PROCESS_CHUNK)):
                left_over = parallel.run_round(run, chunk, build, open_backend, reopen,
                                               issue_id, on_result, options.processes)
                if left_over or run.halt.is_set():
                    run.returned.extend(left_over)  # the round was halted
                    break
            run.fed.set()
        else:
            workers = [
                threading.Thread(target=_worker, name=f"smtp-{n}",
                                 args=(run, work, build, open_backend, throttle, ledger,
                                       issue_id, on_result))
                for n in range(max(1, min(options.connections, len(head))))
            ]
        for worker in workers:
            worker.start()
        try:
            if workers:
                _feed(run, work, todo)
            for worker in workers:
                worker.join()
        except KeyboardInterrupt:  # a second Ctrl-C: stop now, but let replies be recorded
            run.halt.set()
            for worker in workers:
                worker.join()
            raise
        if run.crash is not None:
            raise run.crash
        if run.outcome.paused:
            _absolve(run, ledger, issue_id)
        if run.halt.is_set():
            left = Sample(list(work.queue) + run.returned)
            left.extend(s for s in run.unconfirmed if s not in run.returned)
            for _ in todo:  # never queued: counted, a sample named
                left.append(_)
            run.outcome.not_attempted = left
            run.outcome.stopped = stop.is_set() and not run.outcome.error
            break
        if not run.retry:  # nothing to try again: no wait for a round that has no one
            break
        todo, run.retry = iter(run.retry), []
    if _everyone_refused(run):
        # Too few readers to reach pause_after_failures, and every one refused: a relay
        # that refuses all recipients (no login) looks like this, so it is a pause too.
        last = list(run.outcome.failed.values())[-1]
        run.outcome.paused = (
            f"every reader of this run ({len(run.streak)}) was refused (last: "
            f"{last.recipient}: {last.reply}); the server may be refusing everyone, so none "
            "of them was marked failed or suppressed: if its reply names the cause, fix it")
        _absolve(run, ledger, issue_id)
        waiting = run.outcome.not_attempted
        waiting.extend(s for s in run.unconfirmed if s not in waiting)
    return run.outcome


def _feed(run: _Run, work: queue.Queue[Subscriber], todo: Iterator[Subscriber]) -> None:
    """Queue `todo` for the workers as they take it, until it ends or the run halts."""
    try:
        for subscriber in todo:
            while True:
                if run.halt.is_set():
                    run.returned.append(subscriber)
                    return
                try:
                    work.put(subscriber, timeout=0.05)
                    break
                except queue.Full:
                    continue
    finally:
        run.fed.set()


def _everyone_refused(run: _Run) -> bool:
    """Whether two or more readers were tried, and every one was refused for good."""
    failed = run.outcome.failed.values()
    return (not run.outcome.paused and not run.outcome.sent and run.outcome.error is None
            and len(run.streak) >= 2 and len(failed) == len(run.streak)
            and all(r.status == "failed-permanent" for r in failed))


def _worker(run: _Run, work: queue.Queue[Subscriber],
            build: Callable[[Subscriber], OutgoingMessage],
            open_backend: Callable[[], DeliveryBackend], throttle: Throttle,
            ledger: Ledger | None, issue_id: str,
            on_result: Callable[[DeliveryResult], None] | None) -> None:
    backend: DeliveryBackend | None = None
    own = Throttle(0)  # the connection's own rate limit, once it is open
    batch: list[tuple[str, DeliveryStatus, str]] = []
    batched: list[Subscriber] = []  # whose results are in `batch`
    # The next reader and its message, announced to the backend before this one went
    # (see `_announce_next`): it is sent next, or given back.
    ahead: tuple[Subscriber, OutgoingMessage] | None = None
    try:
        while not run.halt.is_set():
            if run.stop.is_set():
                run.halt.set()
                break
            message: OutgoingMessage | None = None
            if ahead is not None:
                (subscriber, message), ahead = ahead, None
            else:
                try:
                    subscriber = work.get(timeout=0.05)
                except queue.Empty:
                    if not run.fed.is_set():
                        continue  # the feeder is reading the next readers
                    try:  # every put came before `fed`: what is queued now is all there is
                        subscriber = work.get_nowait()
                    except queue.Empty:
                        break
            if backend is None:
                try:
                    backend = open_backend()
                    backend.open()
                except DeliveryError as err:
                    _fail(run, err, subscriber)
                    break
                own = Throttle(backend.rate_per_connection, sleep=run.stop.wait)
            throttle.wait()
            own.wait()
            if run.stop.is_set():  # stopped while waiting for the rate limit: not sent
                with run.lock:
                    run.returned.append(subscriber)
                run.halt.set()
                break
            if message is None:
                message = build(subscriber)
            if backend.lookahead and not (throttle.interval or own.interval):
                ahead = _announce_next(run, work, build, backend)
            try:
                result = backend.send(message)
            except DeliveryError as err:
                _fail(run, err, subscriber)
                break
            _tally(run, subscriber, result)
            if ledger is not None:
                try:
                    if backend.idempotent:
                        batch.append((subscriber.email, result.status, result.reply))
                        batched.append(subscriber)
                        if len(batch) >= LEDGER_BATCH:
                            ledger.record_many(issue_id, batch)
                            batch.clear()
                            batched.clear()
                    else:  # the reply is on record before the next message goes out
                        ledger.record(issue_id, subscriber.email, result.status, result.reply)
                except DeliveryError as err:  # the ledger cannot be written: stop sending
                    _unrecorded(run, err, batched if backend.idempotent else [subscriber])
                    batch.clear()
                    break
            if on_result is not None:
                on_result(result)
    except Exception as err:  # a bug, not a delivery fault: stop everyone and surface it
        with run.lock:
            run.crash = run.crash or err
            run.halt.set()
    finally:
        if ahead is not None:  # announced, never sent: still pending
            with run.lock:
                run.returned.append(ahead[0])
        if batch and ledger is not None:
            try:
                ledger.record_many(issue_id, batch)
            except DeliveryError as err:
                _unrecorded(run, err, batched)
        if backend is not None:
            backend.close()


def _announce_next(run: _Run, work: queue.Queue[Subscriber],
                   build: Callable[[Subscriber], OutgoingMessage],
                   backend: DeliveryBackend) -> tuple[Subscriber, OutgoingMessage] | None:
    """Take the next reader if one is queued, build their message and announce it, so
    that its commands go out with this message's body. Only without a rate limit: the
    next message's place in the rate is taken when it is sent, and it must not wait with
    its DATA open. Its body still waits for this message's reply and ledger commit."""
    try:
        subscriber = work.get_nowait()
    except queue.Empty:
        return None
    try:
        message = build(subscriber)
    except BaseException:  # a bug: the run stops, and this reader is still not sent
        with run.lock:
            run.returned.append(subscriber)
        raise
    backend.announce(message)
    return subscriber, message


def _fail(run: _Run, err: DeliveryError, subscriber: Subscriber) -> None:
    with run.lock:
        run.outcome.error = run.outcome.error or err
        run.unconfirmed.append(subscriber)  # still pending in the ledger
        run.halt.set()


def _unrecorded(run: _Run, err: DeliveryError, subscribers: list[Subscriber]) -> None:
    """Results that could not be recorded: those readers are still pending in the ledger,
    so the report counts them as not sent yet, and the run stops."""
    with run.lock:
        run.outcome.error = run.outcome.error or err
        for subscriber in subscribers:
            if run.outcome.failed.pop(subscriber.email, None) is None:
                run.outcome.sent -= 1
            run.attempts.pop(subscriber.email, None)
            if subscriber in run.retry:
                run.retry.remove(subscriber)
            run.unconfirmed.append(subscriber)
        run.halt.set()


def _tally(run: _Run, subscriber: Subscriber, result: DeliveryResult) -> None:
    with run.lock:
        attempts = run.attempts.pop(subscriber.email, 0) + 1
        if result.ok:
            run.outcome.sent += 1
            run.outcome.failed.pop(subscriber.email, None)
            if not run.outcome.paused:  # a late success on another connection: still paused
                run.failures_in_a_row = 0
                run.streak.clear()
            return
        run.streak[subscriber.email] = subscriber
        run.attempts[subscriber.email] = attempts
        run.outcome.failed[subscriber.email] = result
        run.failures_in_a_row += 1
        if result.status == "failed-temporary" and attempts < run.options.retries:
            run.retry.append(subscriber)
        if run.failures_in_a_row >= run.options.pause_after_failures and not run.outcome.paused:
            run.outcome.paused = (
                f"{run.failures_in_a_row} failures in a row (last: {result.recipient}: "
                f"{result.reply}); the server may be refusing everyone, so none of them was "
                "marked failed or suppressed: if its reply names the cause, fix it; if these "
                "addresses really are bad, raise delivery.pause_after_failures")
            run.halt.set()


def _absolve(run: _Run, ledger: Ledger | None, issue_id: str) -> None:
    """A pause: the run of failures that caused it is no evidence against those readers
    (a relay refusing every recipient looks the same), so they are pending again, not
    failed, and nobody is suppressed for it."""
    readers = list(run.streak.values())
    if not readers:
        return
    for subscriber in readers:
        run.outcome.failed.pop(subscriber.email, None)
        run.attempts.pop(subscriber.email, None)
        if subscriber in run.retry:
            run.retry.remove(subscriber)
    run.unconfirmed.extend(s for s in readers if s not in run.unconfirmed)
    run.streak.clear()
    if ledger is not None:
        try:
            ledger.reset(issue_id, [s.email for s in readers])
        except DeliveryError as err:
            run.outcome.error = run.outcome.error or err
