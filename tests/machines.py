"""Helpers for tests that break machines: a private PostgreSQL cluster (to restart it),
a network namespace whose link to the database can be cut, and an SMTP sink that records
every Message-ID it accepts (optionally slowly). Reusable by any test module.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from tests.pg import unavailable
from tests.smtp_server import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def wait_for(condition: Callable[[], Any], timeout: float, what: str,
             every: float = 0.05) -> Any:
    """Poll `condition` until it is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


# -- a private PostgreSQL cluster -------------------------------------------------------

@dataclass
class Cluster:
    """A PostgreSQL server of the test's own, which it may stop and start."""

    folder: Path
    port: int
    listen: str = "127.0.0.1"

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, host: str | None = None, database: str = "postgres") -> str:
        return f"postgresql://postgres@{host or self.listen.split(',')[0]}:{self.port}/{database}"

    def _as_postgres(self, *args: str, timeout: float = 30) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True,
                       capture_output=True, timeout=timeout)

    def start(self) -> None:
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-t", "20",
                          "-l", str(self.folder / "log"), "-o",
                          f"-p {self.port} -k {self.folder} -c listen_addresses='{self.listen}' "
                          "-c fsync=off -c full_page_writes=off", "start")

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-m", mode,
                          "stop")

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def private_cluster(listen: str = "127.0.0.1") -> Iterator[Cluster]:
    """initdb + pg_ctl in a temporary folder, on a free port (as the postgres user: initdb
    refuses root); trust auth; stopped and removed afterwards."""
    if not (PG_BIN / "initdb").exists() or not shutil.which("runuser"):
        unavailable(f"no PostgreSQL binaries at {PG_BIN}")
    folder = Path(tempfile.mkdtemp(prefix="nl-pg-"))
    shutil.chown(folder, "postgres", "postgres")
    cluster = Cluster(folder, free_port(), listen)
    try:
        cluster._as_postgres(str(PG_BIN / "initdb"), "-D", str(cluster.data), "-U",
                             "postgres", "--auth=trust", "-E", "UTF8", "--no-sync",
                             timeout=60)
        with (cluster.data / "pg_hba.conf").open("a") as hba:
            hba.write("host all all 0.0.0.0/0 trust\n")
        cluster.start()
        yield cluster
    finally:
        with suppress(subprocess.CalledProcessError):
            cluster.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


# -- a network namespace with two links: one to the database, one to the relay ---------

@dataclass
class Netns:
    name: str
    db_host: str  # the host side's address on the database link (listen there)
    smtp_host: str  # the host side's address on the relay link
    _links: tuple[str, str]

    def command(self, *args: str) -> list[str]:
        """`args` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *args]

    def cut_database(self) -> None:
        """Take the database link down: packets vanish, connections hang, none errors."""
        subprocess.run(["ip", "link", "set", self._links[0], "down"], check=True)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextmanager
def network_namespace() -> Iterator[Netns]:
    """A namespace joined to this host by two veth pairs (10.213.N.1 here, .2 there)."""
    if not shutil.which("ip"):
        unavailable("no `ip` command (iproute2)")
    tag = uuid.uuid4().hex[:6]
    name, net = f"nl{tag}", (int(tag, 16) % 200) + 20
    links = (f"nd{tag}", f"ns{tag}")
    try:
        _ip("netns", "add", name)
    except subprocess.CalledProcessError as err:
        unavailable(f"cannot make a network namespace: {err.stderr.decode().strip()}")
    try:
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        for index, link in enumerate(links):
            subnet = f"10.{net}.{index + 1}"
            _ip("link", "add", link, "type", "veth", "peer", "name", link + "p")
            _ip("link", "set", link + "p", "netns", name)
            _ip("addr", "add", f"{subnet}.1/24", "dev", link)
            _ip("link", "set", link, "up")
            _ip("netns", "exec", name, "ip", "addr", "add", f"{subnet}.2/24", "dev",
                link + "p")
            _ip("netns", "exec", name, "ip", "link", "set", link + "p", "up")
        yield Netns(name, f"10.{net}.1.1", f"10.{net}.2.1", links)
    finally:
        for link in links:
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


# -- an SMTP sink that records Message-IDs ----------------------------------------------

@dataclass
class Delivered:
    message_id: str
    recipient: str
    at: float  # time.monotonic() when accepted
    peer: str  # the client's address


@dataclass
class IdSink:
    """Accepts everything, after `delay` seconds per message, and keeps who got what."""

    delay: float = 0.0
    delivered: list[Delivered] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        headers = BytesHeaderParser().parsebytes(envelope.original_content)
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.delivered.append(Delivered(str(headers["Message-ID"]), rcpt,
                                                time.monotonic(), session.peer[0]))
        return "250 OK"

    def ids(self) -> list[str]:
        with self.lock:
            return [d.message_id for d in self.delivered]

    def count(self) -> int:
        with self.lock:
            return len(self.delivered)


@contextmanager
def id_sink(delay: float = 0.0, host: str = "127.0.0.1") -> Iterator[tuple[IdSink, int]]:
    """An `IdSink` listening on `host`, and its port."""
    sink = IdSink(delay)
    port = free_port()
    controller = Controller(sink, hostname=host, port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()
