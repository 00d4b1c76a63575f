"""Real mail servers on loopback for the bounce tests (issue 11): a private Postfix that
relays to an aiosmtpd "remote" and writes its own DSNs, and a private Dovecot that holds
the bounce mailbox (IMAP with STARTTLS, IMAPS, a plain Maildir on disk).

`tests/servers/install.sh` (run by `make test`) installs the Debian packages; here each
server runs from its own configuration in a temp folder, on free loopback ports, and is
stopped at the end. Where they cannot run, `unavailable()` says why.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from pathlib import Path
from typing import cast

import pytest
import trustme
import yaml
from aiosmtpd.controller import Controller

from tests.daemons import (
    ServerError,
    read_pid,
    read_text,
    start_daemon,
    wait_for_port,
    wait_gone,
)
from tests.smtp_server import Received, Sink, free_port, start_server

SERVERS = Path(__file__).resolve().parent / "servers"
# The product's address checks refuse special-use names such as .test for its own
# addresses and the readers', so the bounce domain is under example.com.
BOUNCE_DOMAIN = "bounce.example.com"
# Postfix relays these to the remote (and nothing else: no DNS, no outside world).
REMOTE_DOMAINS = ("example.test", "example.com", "example.org", "example.net")
USER = "bounces"
MAIL_USER = "mail"  # Debian's: owns the Maildir (Dovecot never serves mail as root)
POSTFIX = "/usr/sbin/postfix"
DOVECOT = "/usr/sbin/dovecot"
NEEDED = (POSTFIX, DOVECOT, "/usr/sbin/postqueue", "/usr/sbin/postsuper",
          "/usr/lib/dovecot/imap")


def unavailable() -> str | None:
    """Why the real servers cannot run here, or None when they can."""
    missing = [path for path in NEEDED if not os.access(path, os.X_OK)]
    if missing:
        return (f"Postfix/Dovecot not installed ({', '.join(missing)} missing): "
                "run tests/servers/install.sh as root (make test does)")
    for user in ("postfix", "dovecot", "dovenull", MAIL_USER):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"no system user {user!r} (the packages make it): run tests/servers/install.sh"
    if os.geteuid() != 0:
        return ("the private Postfix and Dovecot instances need root (Postfix's master, "
                "delivery as the `mail` user)")
    return None


@dataclass
class MailServers:
    """What a test needs to talk to the servers; `settings()` writes the product's side."""

    base: Path
    smtp_host: str
    smtp_port: int          # Postfix's smtpd, no TLS, relays from 127.0.0.0/8
    imap_host: str
    imap_port: int          # STARTTLS
    imaps_port: int         # implicit TLS
    username: str
    password: str
    ca_file: Path           # PEM of the trustme CA that issued the servers' certificate
    maildir: Path           # the bounce mailbox as Dovecot keeps it (INBOX + .Folders)
    remote: Sink            # the aiosmtpd Postfix relays example.test to; `.received`
    remote_port: int
    bounce_domain: str = BOUNCE_DOMAIN
    remote_domains: tuple[str, ...] = REMOTE_DOMAINS
    _postfix_conf: Path = field(default=Path(), repr=False)

    @property
    def bounce_address(self) -> str:
        return f"{USER}@{self.bounce_domain}"

    def env(self, source: str = "imap") -> dict[str, str]:
        """The environment that gives `newsletter` the IMAP password. None for a Maildir:
        the password alone would make a `bounces.imap` section, and two sources."""
        if source == "maildir":
            return {}
        return {"NEWSLETTER_BOUNCES__IMAP__PASSWORD": self.password}

    def bounces_settings(self, *, source: str = "imap", security: str = "ssl",
                         folder: str = "INBOX",
                         processed_folder: str = "Processed") -> dict[str, object]:
        """The `bounces:` block for this mailbox: `source` "imap" or "maildir"; `security`
        "ssl", "starttls" or "none" (the port follows)."""
        block: dict[str, object] = {"address": self.bounce_address}
        if source == "maildir":
            block["maildir"] = str(self.maildir)
            return block
        block["imap"] = {
            "host": self.imap_host,
            "port": self.imaps_port if security == "ssl" else self.imap_port,
            "security": security, "username": self.username, "folder": folder,
            "processed_folder": processed_folder, "ca_file": str(self.ca_file),
        }
        return block

    def settings(self, settings_file: Path, **bounces: str) -> str:
        """Point a project's newsletter.yaml at these servers (SMTP delivery to Postfix,
        the bounce mailbox); keyword arguments as for `bounces_settings`. Returns the YAML."""
        data = yaml.safe_load(settings_file.read_text(encoding="utf-8")) or {}
        data.setdefault("delivery", {})["backend"] = "smtp"
        smtp = data.setdefault("smtp", {})
        smtp.update({"host": self.smtp_host, "port": self.smtp_port, "security": "none"})
        for key in ("username", "password", "ca_file"):
            smtp.pop(key, None)
        kept = {k: v for k, v in (data.get("bounces") or {}).items()
                if k not in ("imap", "maildir")}  # one source only
        data["bounces"] = {**kept, **self.bounces_settings(**bounces)}
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        settings_file.write_text(text, encoding="utf-8")
        return text

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def flush(self) -> None:
        """Ask Postfix to try its deferred mail now (postqueue -f)."""
        _run(["/usr/sbin/postqueue", "-c", str(self._postfix_conf), "-f"])

    def queue_ids(self) -> list[str]:
        """Ids of the messages still in Postfix's queue."""
        done = _run(["/usr/sbin/postqueue", "-c", str(self._postfix_conf), "-j"])
        return [json.loads(line)["queue_id"] for line in done.stdout.splitlines() if line]

    def messages(self, folder: str = "INBOX") -> list[EmailMessage]:
        """The mail now in a folder of the Maildir (new/ and cur/), in order of arrival."""
        path = self.maildir if folder == "INBOX" else self.maildir / f".{folder}"
        files = []
        for sub in ("new", "cur"):
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(path / sub):
                    with contextlib.suppress(FileNotFoundError):
                        files.append((entry.stat().st_mtime_ns, entry.name, entry.path))
        messages: list[EmailMessage] = []
        for _mtime, _name, file in sorted(files):
            try:
                raw = Path(file).read_bytes()
            except FileNotFoundError:  # Dovecot moved it from new/ to cur/ meanwhile
                continue
            messages.append(message_from_bytes(raw, policy=policy.default))
        return messages

    def wait_for_mail(self, count: int = 1, *, folder: str = "INBOX", timeout: float = 20,
                      match: Callable[[EmailMessage], bool] = lambda m: True,
                      ) -> list[EmailMessage]:
        """Wait until `count` messages that `match` are in `folder`, flushing Postfix's
        queue now and then; returns them. Real servers' queues take their time."""
        deadline = time.monotonic() + timeout
        next_flush = time.monotonic() + 0.5
        while True:
            found = [m for m in self.messages(folder) if match(m)]
            if len(found) >= count:
                return found
            now = time.monotonic()
            if now > deadline:
                raise AssertionError(
                    f"{len(found)} of {count} messages in {folder} after {timeout}s; "
                    f"Postfix queue: {self.queue_ids()}; log:\n{self.postfix_log()[-3000:]}")
            if now > next_flush:
                self.flush()
                next_flush = now + 0.5
            time.sleep(0.05)

    def wait_for_remote(self, count: int = 1, *, timeout: float = 20) -> list[Received]:
        """Wait until the remote has received `count` messages; returns all it has."""
        deadline = time.monotonic() + timeout
        while len(self.remote.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the remote has {len(self.remote.received)} of {count} messages after "
                    f"{timeout}s; Postfix log:\n{self.postfix_log()[-3000:]}")
            time.sleep(0.05)
        return list(self.remote.received)

    def master_pids(self) -> dict[str, int | None]:
        """Postfix's and Dovecot's master processes (each leads its own process group)."""
        return {"postfix": read_pid(self.base / "postfix" / "queue" / "pid" / "master.pid"),
                "dovecot": read_pid(self.base / "dovecot" / "run" / "master.pid")}

    def postfix_log(self) -> str:
        return read_text(self.base / "postfix" / "maillog")

    def dovecot_log(self) -> str:
        return read_text(self.base / "dovecot" / "dovecot.log")

    def clear(self) -> None:
        """Empty the mailbox (every folder), Postfix's queue and what the remote received,
        so each test starts from nothing."""
        _run(["/usr/sbin/postsuper", "-c", str(self._postfix_conf), "-d", "ALL"])
        shutil.rmtree(self.maildir)
        shutil.rmtree(self.base / "mailstate")
        _make_mail_folders(self.base)
        fresh = Sink(rcpt_replies=dict(REMOTE_REPLIES))
        for name in (f.name for f in fields(Sink)):  # the same object: the server holds it
            setattr(self.remote, name, getattr(fresh, name))

    def add_message(self, raw: bytes, folder: str = "INBOX") -> Path:
        """Put a message into a folder of the mailbox as a delivery would (new/, owned by
        the mailbox's user, so Dovecot can move and flag it). Returns its path."""
        path = self.maildir if folder == "INBOX" else self.maildir / f".{folder}"
        if not (path / "cur").is_dir():
            for sub in ("", "new", "cur", "tmp"):
                (path / sub).mkdir(exist_ok=True)
                _give_to_mail_user(path / sub)
        name = f"{time.time_ns()}.{secrets.token_hex(6)}.{socket.gethostname()}"
        temporary = path / "tmp" / name
        temporary.write_bytes(raw)
        _give_to_mail_user(temporary)
        final = path / "new" / name
        temporary.rename(final)
        return final


def delivery_status(dsn: EmailMessage) -> tuple[Message, list[Message]]:
    """The per-message and per-recipient fields of a DSN's message/delivery-status part
    (RFC 3464), as the stdlib parses them; AssertionError when it is no DSN."""
    assert dsn.get_content_type() == "multipart/report", dsn.get_content_type()
    assert dsn.get_param("report-type") == "delivery-status"
    [status] = [part for part in dsn.walk()
                if part.get_content_type() == "message/delivery-status"]
    per_message, *per_recipient = cast(list[Message], status.get_payload())
    return per_message, per_recipient


@pytest.fixture(scope="session")
def mail_servers_session() -> Iterator[MailServers]:
    """Postfix, Dovecot and the remote, started once for the whole run."""
    reason = unavailable()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the real mail server tests: {reason}")
        pytest.skip(reason)
    with running() as servers:
        yield servers


@pytest.fixture
def mail_servers(mail_servers_session: MailServers) -> MailServers:
    """The running servers with an empty mailbox, queue and remote (see MailServers)."""
    mail_servers_session.clear()
    return mail_servers_session


# Addresses the remote refuses at RCPT, as a real receiving server would; Postfix turns
# each into a DSN to the envelope sender. Tests may add their own to `remote.rcpt_replies`.
REMOTE_REPLIES = {
    **{f"dead@{d}": f"550 5.1.1 <dead@{d}>: no such user" for d in REMOTE_DOMAINS},
    **{f"full@{d}": f"452 4.2.2 <full@{d}>: mailbox full" for d in REMOTE_DOMAINS},
}


@contextlib.contextmanager
def running() -> Iterator[MailServers]:
    """Start the remote, Dovecot and Postfix; stop all three on the way out."""
    # /tmp itself, not $TMPDIR: the servers' users must reach it, and their Unix sockets
    # inside must stay under the 107 bytes a socket path may have.
    base = Path(tempfile.mkdtemp(prefix="newsletter-mail-", dir="/tmp"))
    base.chmod(0o755)  # Postfix's and Dovecot's unprivileged processes walk into it
    remote = Sink(rcpt_replies=dict(REMOTE_REPLIES))
    remote_port = free_port()
    stack = contextlib.ExitStack()
    try:
        controller: Controller = start_server(remote, port=remote_port)
        stack.callback(controller.stop)
        servers = _prepare(base, remote, remote_port)
        stack.callback(_stop_dovecot, base)
        _start_dovecot(base, servers)
        stack.callback(_stop_postfix, base)
        _start_postfix(servers)
        yield servers
    finally:
        try:
            stack.close()
        finally:
            shutil.rmtree(base, ignore_errors=True)


def _prepare(base: Path, remote: Sink, remote_port: int) -> MailServers:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    tls = base / "tls"
    tls.mkdir()
    ca.cert_pem.write_to_path(str(tls / "ca.pem"))
    cert.private_key_pem.write_to_path(str(tls / "server.key"))
    (tls / "server.pem").write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    (tls / "server.key").chmod(0o600)
    maildir = base / "Maildir"
    _make_mail_folders(base)
    password = secrets.token_urlsafe(12)
    mail_user = pwd.getpwnam(MAIL_USER)
    servers = MailServers(
        base=base, smtp_host="127.0.0.1", smtp_port=free_port(), imap_host="127.0.0.1",
        imap_port=free_port(), imaps_port=free_port(), username=USER, password=password,
        ca_file=tls / "ca.pem", maildir=maildir, remote=remote, remote_port=remote_port,
        _postfix_conf=base / "postfix" / "conf")
    values = {
        "BASE": str(base), "INSTANCE": base.name, "IMAP_PORT": str(servers.imap_port),
        "IMAPS_PORT": str(servers.imaps_port), "SMTPD": f"127.0.0.1:{servers.smtp_port}",
        "BOUNCE_DOMAIN": BOUNCE_DOMAIN, "MAILBOXES": f"@{BOUNCE_DOMAIN}=Maildir/",
        "MAIL_UID": str(mail_user.pw_uid), "MAIL_GID": str(mail_user.pw_gid),
        "TRANSPORTS": ", ".join(f"{domain}=smtp:[127.0.0.1]:{remote_port}"
                                for domain in REMOTE_DOMAINS),
    }
    (base / "dovecot").mkdir()
    _render("dovecot.conf", base / "dovecot" / "dovecot.conf", values)
    # The auth process reads it as the `dovecot` user.
    passwd = base / "dovecot" / "passwd"
    passwd.write_text(f"{USER}:{{PLAIN}}{password}::::::\n", encoding="ascii")
    passwd.chmod(0o644)
    servers._postfix_conf.mkdir(parents=True)
    (base / "postfix" / "queue").mkdir(parents=True)  # `postfix start` makes the rest
    for name in ("main.cf", "master.cf"):
        _render(name, servers._postfix_conf / name, values)
        # Postfix waits (2 s) for a main.cf changed within the last second to settle.
        past = time.time() - 60
        os.utime(servers._postfix_conf / name, (past, past))
    return servers


def _make_mail_folders(base: Path) -> None:
    """The Maildir and Dovecot's state for it (indexes, uidlists), owned by `mail`."""
    for folder in ("Maildir", "Maildir/new", "Maildir/cur", "Maildir/tmp", "mailstate",
                   "mailstate/home", "mailstate/index", "mailstate/control"):
        (base / folder).mkdir(exist_ok=True)
        _give_to_mail_user(base / folder)


def _give_to_mail_user(path: Path) -> None:
    user = pwd.getpwnam(MAIL_USER)
    os.chown(path, user.pw_uid, user.pw_gid)


def _render(template: str, target: Path, values: dict[str, str]) -> None:
    text = (SERVERS / template).read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    target.write_text(text, encoding="utf-8")


def _start_dovecot(base: Path, servers: MailServers) -> None:
    conf = base / "dovecot" / "dovecot.conf"
    output = base / "dovecot" / "start.out"
    if start_daemon([DOVECOT, "-c", str(conf)], output) != 0:
        raise ServerError(f"dovecot did not start: {read_text(output).strip()}\n"
                          f"{servers.dovecot_log()[-3000:]}")
    for port in (servers.imap_port, servers.imaps_port):
        wait_for_port(port, lambda: servers.dovecot_log())


def _start_postfix(servers: MailServers) -> None:
    conf = str(servers._postfix_conf)
    output = servers.base / "postfix" / "start.out"
    if start_daemon([POSTFIX, "-c", conf, "start"], output) != 0:
        raise ServerError(f"postfix start failed: {read_text(output).strip()}\n"
                          f"{servers.postfix_log()[-3000:]}")
    wait_for_port(servers.smtp_port, servers.postfix_log)


def _stop_postfix(base: Path) -> None:
    pid = read_pid(base / "postfix" / "queue" / "pid" / "master.pid")
    if pid is None:
        return
    # What `postfix stop` does, without its one-second sleeps: the master takes its
    # children down with it.
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    wait_gone(pid, "Postfix")


def _stop_dovecot(base: Path) -> None:
    pid = read_pid(base / "dovecot" / "run" / "master.pid")
    if pid is None:
        return
    # The whole process group: the master alone waits seconds for its children.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    wait_gone(pid, "Dovecot")


def _run(command: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=check)


# A list whose readers the remote treats three ways: ada@ accepted, dead@ refused with
# 550 5.1.1, full@ with 452 4.2.2.
REFUSING_READERS = """\
lists:
  morning-brief:
    title: The Morning Brief
    subscribers:
      - email: ada@example.com
        name: Ada Lovelace
      - dead@example.com
      - full@example.org
"""
