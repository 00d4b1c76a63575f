"""Work `serve` does after it has answered: one thread, one bounded queue.

A sign-up is answered before it is stored or its mail sent, so that how long the answer
takes says nothing about the address (new, already a reader, forgotten) and a slow mail
server never holds a request. One thread does the jobs in order: two sign-ups of one
address never race, and the mail server sees one connection at a time.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger("newsletter.serve")

Job = Callable[[], None]
QUEUE_SIZE = 1000
_STOP = object()


class Background:
    """A worker thread for jobs that must not hold a request (see module docstring)."""

    def __init__(self, name: str, size: int = QUEUE_SIZE) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=size)
        # Set when `serve` stops: the jobs still queued store what they must and skip
        # whatever is slow (mail), so a hanging mail server cannot lose a sign-up.
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> bool:
        """Queue `job`; False when the queue is full (the caller answers 503)."""
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            return False
        return True

    def join(self) -> None:
        """Wait until every job queued so far is done (tests, and the shutdown)."""
        self._queue.join()

    def close(self, timeout: float = 30.0) -> None:
        """Finish the queued jobs (their quick part: see `stopping`), then stop the thread."""
        self.stopping.set()
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is _STOP:
                    return
                assert callable(job)
                job()
            except Exception:  # a job logs its own failures; this is a bug, not a reason to stop
                log.exception("background job failed")
            finally:
                self._queue.task_done()
