"""Daemons started for the tests (Postfix, Dovecot): start one, wait for its port, stop
its whole process group and make sure nothing of it is left running."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


class ServerError(RuntimeError):
    """A server did not start or stop; the message holds the tail of its log."""


def read_pid(path: Path) -> int | None:
    """The pid in a daemon's pid file, or None when there is none (yet)."""
    try:
        return int(path.read_text(encoding="ascii").split()[0])
    except (OSError, ValueError, IndexError):
        return None


def wait_gone(pid: int, name: str, timeout: float = 10) -> None:
    """Wait until the master `pid` and every process of its group (the daemons lead their
    own) have exited; kill what is left after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not running_processes(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    raise ServerError(f"{name} (process group {pid}) did not stop within {timeout}s; killed")


def running_processes(pgid: int) -> list[int]:
    """The processes of group `pgid` that still run. A daemon is init's child, and an init
    that reaps slowly (as in some containers) leaves zombies for a second: those are gone."""
    running = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text(encoding="ascii", errors="replace").rsplit(")", 1)[1]
        except OSError:
            continue  # exited meanwhile
        state, _ppid, group = fields.split()[:3]
        if int(group) == pgid and state != "Z":
            running.append(int(stat.parent.name))
    return running


def wait_for_port(port: int, log: Callable[[], str], timeout: float = 10) -> None:
    def accepting() -> bool:
        with socket.socket() as sock:
            sock.settimeout(1)
            return sock.connect_ex(("127.0.0.1", port)) == 0
    wait_for(accepting, f"127.0.0.1:{port}", log, timeout)


def wait_for(ready: Callable[[], bool], what: str, log: Callable[[], str],
              timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise ServerError(f"{what} not ready after {timeout}s:\n{log()[-3000:]}")
        time.sleep(0.05)


def start_daemon(command: list[str], output: Path) -> int:
    """Run a command that leaves a daemon behind: its output goes to a file, since the
    daemon inherits and keeps open whatever pipes it is given."""
    with output.open("a", encoding="utf-8") as sink:
        return subprocess.run(command, stdin=subprocess.DEVNULL, stdout=sink,
                              stderr=subprocess.STDOUT, timeout=60, check=False).returncode


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
