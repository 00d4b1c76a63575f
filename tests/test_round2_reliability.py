"""Round two of issue #10: a misbehaving machine and mail server, and a new user's mistakes,
through the real CLI. Each outcome is one line naming the cause and the fix, a non-zero
exit, no traceback, and the same command completing once the cause is gone."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ISSUE_DATE, REPO, Project, clean_env, mounted_tmpfs
from tests.smtp_server import Sink, free_port, start_server

ACTIVE = ["ada@example.com", "linus@example.com", "zoe@example.org"]


def _run(project: Project, *args: str, env: dict[str, str] | None = None,
         timeout: float = 30) -> subprocess.CompletedProcess:
    """The real CLI; a hang fails the test (TimeoutExpired) instead of blocking the suite."""
    return subprocess.run([sys.executable, "-m", "newsletter", *args], cwd=project.root,
                          env={**clean_env(), **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def _one_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    return line


def _statuses(project: Project, date: str = ISSUE_DATE) -> dict[str, str]:
    db = sqlite3.connect(project.outbox / "newsletter.sqlite3")
    try:
        return dict(db.execute("SELECT email, status FROM deliveries WHERE issue_id = ?",
                               (f"morning-brief/{date}",)))
    finally:
        db.close()


# --- files that are not regular files -------------------------------------------------

@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_dotenv_that_is_not_a_regular_file_is_refused_not_waited_on(
        project: Project, kind: str) -> None:
    env_file = project.root / ".env"
    if kind == "fifo":
        os.mkfifo(env_file)
    else:
        env_file.symlink_to("/dev/zero")
    line = _one_error(_run(project, "status"))
    assert line.startswith("error: .env: ") and "not a regular file" in line
    env_file.unlink()
    assert _run(project, "status").returncode == 0


def test_a_virtualenv_called_dotenv_is_not_a_settings_file(project: Project) -> None:
    (project.root / ".env" / "bin").mkdir(parents=True)
    assert _run(project, "status").returncode == 0


@pytest.mark.parametrize("kind", ["fifo", "device", "huge"])
def test_a_dkim_key_that_is_not_a_key_sized_regular_file_is_refused(
        project: Project, kind: str) -> None:
    key = project.root / "config" / "dkim.pem"
    if kind == "fifo":
        os.mkfifo(key)
    elif kind == "device":
        key.symlink_to("/dev/zero")
    else:
        key.write_bytes(b"-----BEGIN PRIVATE KEY-----\n" + b"A" * 1_000_000)
    env = {"NEWSLETTER_DKIM__DOMAIN": "example.com", "NEWSLETTER_DKIM__SELECTOR": "brief",
           "NEWSLETTER_DKIM__PRIVATE_KEY": str(key)}
    line = _one_error(_run(project, "send", "--date", ISSUE_DATE, env=env))
    assert "config/dkim.pem" in line and "dkim.private_key" in line
    assert "AAAA" not in line
    assert not (project.outbox / "mail").exists()


# --- rate limits ---------------------------------------------------------------------

@pytest.mark.parametrize("variable", ["NEWSLETTER_DELIVERY__RATE_LIMIT",
                                      "NEWSLETTER_SMTP__RATE_LIMIT_PER_CONNECTION"])
@pytest.mark.parametrize("value", ["1e-300", "0.00001"])
def test_a_rate_limit_of_almost_nothing_is_a_setting_error(
        project: Project, variable: str, value: str) -> None:
    line = _one_error(_run(project, "send", "--date", ISSUE_DATE, env={variable: value}))
    assert variable in line and "at least 0.001" in line
    assert _run(project, "send", "--date", ISSUE_DATE).returncode == 0


def _until(condition: Callable[[], bool]) -> None:
    """Poll `condition` (another process's ledger) until it holds, at most 30 s."""
    pause = threading.Event()
    for _ in range(600):
        if condition():
            return
        pause.wait(0.05)
    raise AssertionError("condition never held")


@pytest.fixture
def first_message() -> Iterator[tuple[Sink, int, threading.Event]]:
    arrived = threading.Event()
    sink = Sink(on_message=lambda s: arrived.set())
    port = free_port()
    controller = start_server(sink, port=port)
    yield sink, port, arrived
    controller.stop()


@pytest.mark.parametrize("variable", ["NEWSLETTER_DELIVERY__RATE_LIMIT",
                                      "NEWSLETTER_SMTP__RATE_LIMIT_PER_CONNECTION"])
def test_a_signal_ends_a_rate_limit_wait_and_the_same_command_completes(
        project: Project, first_message: tuple[Sink, int, threading.Event],
        variable: str) -> None:
    sink, port, arrived = first_message
    env = {**clean_env(), "NEWSLETTER_DELIVERY__BACKEND": "smtp",
           "NEWSLETTER_SMTP__PORT": str(port)}
    command = [sys.executable, "-m", "newsletter", "send", "--date", ISSUE_DATE]
    slow = subprocess.Popen(command, cwd=project.root, env={**env, variable: "0.001"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert arrived.wait(30)  # the next message is 1000 s away
        _until(lambda: "sent" in _statuses(project).values())  # now waiting for the limit
        slow.send_signal(signal.SIGTERM)
        _, err = slow.communicate(timeout=20)
    finally:
        slow.kill()
    assert slow.returncode == 1 and "Traceback" not in err, err
    assert sorted(_statuses(project).values()) == ["pending", "pending", "sent", "skipped"]
    again = subprocess.run(command, cwd=project.root, env=env, capture_output=True,
                           text=True, timeout=30)
    assert again.returncode == 0, again.stderr
    assert Counter(r.recipients[0] for r in sink.received) == Counter(ACTIVE)


# --- a server that refuses every reader ------------------------------------------------

def _use_readers(project: Project, count: int) -> list[str]:
    emails = [f"reader{i:02d}@example.com" for i in range(count)]
    project.subscribers.write_text(
        "lists:\n  morning-brief:\n    title: The Morning Brief\n    subscribers:\n"
        + "".join(f"      - {e}\n" for e in emails))
    return emails


@pytest.mark.parametrize(("count", "connections"), [(25, "1"), (25, "3"), (5, "1"), (2, "2")])
@pytest.mark.parametrize("reply", ["554 5.7.1 <{}>: Relay access denied",
                                   "550 5.1.1 <{}>: User unknown in local recipient table"])
def test_a_server_refusing_every_recipient_pauses_without_suppressing_anyone(
        project: Project, reply: str, count: int, connections: str) -> None:
    """A relay refusing every RCPT (no login, a domain it takes for its own) looks like
    25 bad addresses: the pause must not turn it into 20 suppressed readers per run, nor
    suppress a whole list too short to reach pause_after_failures."""
    emails = _use_readers(project, count)

    class RefuseAll(Sink):
        refusing = True

        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            if self.refusing:
                return reply.format(address)
            return await super().handle_RCPT(server, session, envelope, address,
                                             rcpt_options)

    sink = RefuseAll()
    port = free_port()
    controller = start_server(sink, port=port)
    env = {"NEWSLETTER_DELIVERY__BACKEND": "smtp", "NEWSLETTER_SMTP__PORT": str(port),
           "NEWSLETTER_SMTP__CONNECTIONS": connections}
    try:
        refused = _run(project, "send", "--date", ISSUE_DATE, env=env)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        if count < 20 and " 5.7." in reply:
            # A policy refusal at RCPT is no evidence against anyone (smtp._blame): each is
            # a temporary failure, tried again by the next send.
            assert refused.stdout.count("failed (will retry)") == count
            assert set(_statuses(project).values()) == {"failed-temporary"}
        else:
            said = ("failures in a row" if count >= 20
                    else f"every reader of this run ({count})")
            assert said in refused.stdout and "none of them was marked failed or suppressed" in (
                refused.stdout)
            assert set(_statuses(project).values()) == {"pending"}
        db = sqlite3.connect(project.outbox / "newsletter.sqlite3")
        assert db.execute("SELECT count(*) FROM suppressions").fetchone() == (0,)
        db.close()
        sink.refusing = False  # the cause is gone (the login set, the domain fixed)
        again = _run(project, "send", "--date", ISSUE_DATE, env=env)
    finally:
        controller.stop()
    assert again.returncode == 0, again.stdout + again.stderr
    assert Counter(r.recipients[0] for r in sink.received) == Counter(emails)


# --- the feed cache in the ledger's file -----------------------------------------------

def _need_root() -> None:
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the read-only ledger tests as root (chattr)")
        pytest.skip("needs root for chattr +i")


@pytest.mark.parametrize("command", ["compose", "send"])
def test_a_read_only_ledger_under_the_feed_cache_is_one_line(
        project: Project, command: str) -> None:
    """Undated feed entries are dated when first seen, a write into the ledger's file: it
    fails there as one line naming the file, not a raw sqlite3 traceback."""
    _need_root()
    shutil.copy(REPO / "tests" / "feeds" / "undated.xml", project.root / "feed.xml")
    project.settings.write_text(project.settings.read_text().replace(
        "  max_age_days: 2\n", "  max_age_days: 2\n  feeds: [feed.xml]\n"))
    assert _run(project, "send", "--date", "2026-11-23").returncode == 0
    ledger = project.outbox / "newsletter.sqlite3"
    subprocess.run(["chattr", "+i", str(ledger)], check=True)
    try:
        line = _one_error(_run(project, command, "--date", ISSUE_DATE))
    finally:
        subprocess.run(["chattr", "-i", str(ledger)], check=True)
    assert "outbox/newsletter.sqlite3" in line and "feed cache" in line and "read-only" in line
    assert _run(project, command, "--date", ISSUE_DATE).returncode == 0


# --- where the ledger is ---------------------------------------------------------------

def test_status_with_a_ledger_link_to_nowhere_says_so(project: Project) -> None:
    """A ledger on a mount that is gone: `status` must not say nothing was recorded, nor
    `compose` choose articles already sent."""
    (project.root / "gone").symlink_to("/nonexistent/mount/newsletter.sqlite3")
    line = _one_error(_run(project, "status", env={"NEWSLETTER_LEDGER": "gone"}))
    assert "gone: ledger: is a symbolic link to /nonexistent/mount" in line


@pytest.mark.parametrize("command", ["compose", "send"])
def test_a_ledger_link_to_nowhere_stops_compose_and_send(project: Project,
                                                         command: str) -> None:
    (project.root / "gone").symlink_to("/nonexistent/mount/newsletter.sqlite3")
    line = _one_error(_run(project, command, "--date", ISSUE_DATE,
                           env={"NEWSLETTER_LEDGER": "gone"}))
    assert "gone: ledger: is a symbolic link to /nonexistent/mount" in line
    assert not (project.outbox / "mail").exists()


def test_a_ledger_path_that_is_a_folder_says_so(project: Project) -> None:
    (project.root / "ledgers").mkdir()
    line = _one_error(_run(project, "send", "--date", ISSUE_DATE,
                           env={"NEWSLETTER_LEDGER": "ledgers"}))
    assert "ledgers: ledger: is a folder" in line and "ledgers/newsletter.sqlite3" in line


@pytest.mark.parametrize("variable", ["NEWSLETTER_LEDGER", "NEWSLETTER_SUBSCRIBERS",
                                      "NEWSLETTER_TEMPLATES", "NEWSLETTER_DELIVERY__OUTBOX",
                                      "NEWSLETTER_SCHEDULE__JOBS", "NEWSLETTER_SMTP__CA_FILE"])
def test_an_empty_path_setting_is_named_not_taken_for_the_current_folder(
        project: Project, variable: str) -> None:
    line = _one_error(_run(project, "send", "--date", ISSUE_DATE, env={variable: " "}))
    assert variable in line and "is empty" in line


# --- 421: the server closing the connection -------------------------------------------

def _smtp_env(port: int, **more: str) -> dict[str, str]:
    return {"NEWSLETTER_DELIVERY__BACKEND": "smtp", "NEWSLETTER_SMTP__PORT": str(port),
            "NEWSLETTER_DELIVERY__RETRY_BACKOFF": "0", **more}


@pytest.mark.parametrize("where", ["MAIL FROM", "RCPT TO", "DATA"])
def test_a_server_answering_421_is_not_any_readers_failure(project: Project,
                                                          where: str) -> None:
    """421 closes the connection (busy, shutting down): it says nothing about the reader,
    so nobody is recorded failed; the run ends with the reply and everyone pending."""
    closing = "421 4.3.2 System shutting down"

    class Closing(Sink):
        busy = True

        async def handle_MAIL(self, server, session, envelope, address, options):
            if self.busy and where == "MAIL FROM":
                return closing
            return await super().handle_MAIL(server, session, envelope, address, options)

        async def handle_RCPT(self, server, session, envelope, address, options):
            if self.busy and where == "RCPT TO":
                return closing
            return await super().handle_RCPT(server, session, envelope, address, options)

        async def handle_DATA(self, server, session, envelope):
            if self.busy and where == "DATA":
                return closing
            return await super().handle_DATA(server, session, envelope)

    sink = Closing()
    port = free_port()
    controller = start_server(sink, port=port)
    try:
        busy = _run(project, "send", "--date", ISSUE_DATE, env=_smtp_env(port))
        line = _one_error(busy)
        assert "421 4.3.2 System shutting down" in line
        assert set(_statuses(project).values()) == {"pending", "skipped"}
        sink.busy = False
        again = _run(project, "send", "--date", ISSUE_DATE, env=_smtp_env(port))
    finally:
        controller.stop()
    assert again.returncode == 0, again.stdout + again.stderr
    assert Counter(r.recipients[0] for r in sink.received) == Counter(ACTIVE)


@pytest.fixture
def greeting() -> Iterator[tuple[int, list[bytes]]]:
    """A loopback server that answers every connection with the greeting in the list and
    hangs up (a busy server's 421, or something that is not an SMTP server at all)."""
    import socket

    reply: list[bytes] = [b""]
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(reply[0])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port, reply
    server.close()


@pytest.mark.parametrize(("greets", "says"), [
    (b"421 4.3.2 Too busy, try later\r\n",
     "is not taking mail now: 421 4.3.2 Too busy, try later — nothing was sent"),
    (b"HTTP/1.1 400 Bad Request\r\n\r\n", "refused the connection"),
])
def test_a_greeting_that_is_not_250_is_one_readable_line(
        project: Project, greeting: tuple[int, list[bytes]], greets: bytes, says: str) -> None:
    port, reply = greeting
    reply[0] = greets
    line = _one_error(_run(project, "send", "--date", ISSUE_DATE, env=_smtp_env(port)))
    assert says in line and "b'" not in line and "(421," not in line
    assert set(_statuses(project).values()) == {"pending", "skipped"}


# --- a new user's command lines ----------------------------------------------------------

@pytest.mark.parametrize("to", ["", " "])
def test_an_empty_test_address_is_a_mistake_not_a_send_to_everyone(project: Project,
                                                                   to: str) -> None:
    """`send --to "$TEST_ADDRESS"` with the variable unset must not mail the whole list."""
    line = _one_error(_run(project, "send", "--date", ISSUE_DATE, "--to", to))
    assert "--to" in line and "invalid address" in line
    assert not (project.outbox / "mail").exists()
    assert not (project.outbox / "newsletter.sqlite3").exists()


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_lock_file_that_is_not_a_file_is_one_line_and_nothing_is_sent(
        project: Project, kind: str) -> None:
    lock = project.outbox / "newsletter.sqlite3.lock"
    lock.parent.mkdir(parents=True)
    if kind == "fifo":
        os.mkfifo(lock)
    else:
        lock.mkdir()
    line = _one_error(_run(project, "send", "--date", ISSUE_DATE))
    assert "outbox/newsletter.sqlite3.lock: the lock file is" in line and "remove it" in line
    assert not (project.outbox / "mail").exists()
    lock.unlink() if kind == "fifo" else lock.rmdir()
    assert _run(project, "send", "--date", ISSUE_DATE).returncode == 0
    assert set(_statuses(project).values()) == {"sent", "skipped"}


# --- a ledger that cannot be written, for commands that only read it -------------------

@pytest.fixture
def small_outbox(project: Project) -> Iterator[Path]:
    """The project's outbox as a 2 MB tmpfs of its own (root only)."""
    _need_root()
    with mounted_tmpfs(project.outbox, "2M") as outbox:
        yield outbox


READ_ONLY_COMMANDS = [
    (["status"], "morning-brief/2026-11-24 [complete]: 3 sent"),
    (["compose", "--date", "2026-11-25"], "nothing new for morning-brief on 2026-11-25"),
    (["check", "--date", ISSUE_DATE], "morning-brief/2026-11-24"),
    (["send", "--date", ISSUE_DATE, "--dry-run"], "0 to send, 3 sent earlier"),
]


@pytest.mark.parametrize("disk", ["read-only", "full"])
@pytest.mark.parametrize(("command", "says"), READ_ONLY_COMMANDS,
                         ids=[c[0] for c, _ in READ_ONLY_COMMANDS])
def test_commands_that_only_read_the_ledger_work_where_it_cannot_be_written(
        project: Project, small_outbox: Path, disk: str, command: list[str],
        says: str) -> None:
    """`status` on a read-only mount or a full disk reads the ledger; `compose` still
    knows what earlier issues carried (so it does not offer them again)."""
    assert _run(project, "send", "--date", ISSUE_DATE).returncode == 0
    if disk == "read-only":
        subprocess.run(["mount", "-o", "remount,ro", str(small_outbox)], check=True)
    else:
        free = shutil.disk_usage(small_outbox).free
        (small_outbox / "filler").write_bytes(b"\0" * free)
    try:
        result = _run(project, *command)
        written = _run(project, "send", "--date", "2026-11-25")  # a write still says why not
    finally:
        if disk == "read-only":
            subprocess.run(["mount", "-o", "remount,rw", str(small_outbox)], check=True)
    assert result.returncode == 0, result.stderr
    assert says in result.stdout
    line = _one_error(written)
    assert "outbox/newsletter.sqlite3" in line and ("read-only" in line or "full" in line)


# --- a server slower than smtp.timeout ----------------------------------------------------

def test_a_server_slower_than_the_timeout_gets_a_message_twice_at_most(
        project: Project) -> None:
    """A server that keeps each message but answers after smtp.timeout: every resend is
    one more copy in the reader's inbox. One resend, then the run stops naming the
    setting; with the server quick again the same command completes."""
    import asyncio

    class Slow(Sink):
        slow = True

        async def handle_DATA(self, server, session, envelope):
            reply = await super().handle_DATA(server, session, envelope)  # kept...
            if self.slow:
                await asyncio.sleep(1.0)  # ...but confirmed after the client gave up
            return reply

    sink = Slow()
    port = free_port()
    controller = start_server(sink, port=port)
    env = _smtp_env(port, NEWSLETTER_SMTP__TIMEOUT="0.3")
    try:
        slow = _run(project, "send", "--date", ISSUE_DATE, env=env)
        line = _one_error(slow)
        assert "smtp.timeout" in line and "without confirming it" in line
        first = Counter(r.recipients[0] for r in sink.received)
        assert list(first.values()) == [2]  # the first reader, once resent; nobody else
        assert set(_statuses(project).values()) == {"pending", "skipped"}
        sink.slow = False
        again = _run(project, "send", "--date", ISSUE_DATE, env=env)
    finally:
        controller.stop()
    assert again.returncode == 0, again.stdout + again.stderr
    got = Counter(r.recipients[0] for r in sink.received)
    assert set(got) == set(ACTIVE) and sum(got.values()) == len(ACTIVE) + 2


def test_retry_waits_double_up_to_an_hour_not_for_years(project: Project,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """retries 20 with retry_backoff 3600 doubled each round would wait 30 years in the
    last round; each wait is at most an hour (or retry_backoff, if longer)."""
    import datetime as dt

    from newsletter.digest import load_inputs, run_send
    from newsletter.ledger import SqliteLedger
    from newsletter.settings import load_settings

    sink = Sink(defer={"linus@example.com": 19})
    port = free_port()
    controller = start_server(sink, port=port)
    for name, value in {**_smtp_env(port), "NEWSLETTER_DELIVERY__RETRIES": "20",
                        "NEWSLETTER_DELIVERY__RETRY_BACKOFF": "3600"}.items():
        monkeypatch.setenv(name, value)
    sleeps: list[float] = []
    settings = load_settings(project.settings)
    ledger = SqliteLedger(settings.ledger)
    try:
        [report] = run_send(load_inputs(settings), dt.date.fromisoformat(ISSUE_DATE),
                            dt.datetime(2026, 11, 24, 7, 0, tzinfo=dt.UTC), ledger,
                            sleep=sleeps.append)
    finally:
        ledger.close()
        controller.stop()
    assert report.ok and len(sleeps) == 19
    assert sleeps[0] == 3600 and max(sleeps) == 3600


# --- the scheduler's job store ------------------------------------------------------------

@pytest.mark.parametrize(("kind", "says"), [("folder", "is a folder"),
                                            ("fifo", "is not a regular file"),
                                            ("text", "is not an SQLite database")])
def test_a_job_store_that_is_not_one_is_a_line_not_a_traceback(
        project: Project, kind: str, says: str) -> None:
    jobs = project.root / "jobs.sqlite3"
    if kind == "folder":
        jobs.mkdir()
    elif kind == "fifo":
        os.mkfifo(jobs)
    else:
        jobs.write_text("my notes\n")
    line = _one_error(_run(project, "schedule", env={"NEWSLETTER_SCHEDULE__JOBS": str(jobs)}))
    assert "jobs.sqlite3: schedule.jobs: the scheduler's job store " + says in line
    if kind == "text":
        assert jobs.read_text() == "my notes\n"  # left alone


@pytest.mark.parametrize(("host", "says"), [
    ("", "is empty"), ("mail example.com", "without spaces"),
    ("smtp.example.com:587", "set smtp.host to smtp.example.com and smtp.port to 587"),
    ("[::1]", "without brackets: ::1"),
])
def test_an_smtp_host_a_new_user_gets_wrong_is_named_with_the_fix(
        project: Project, host: str, says: str) -> None:
    line = _one_error(_run(project, "send", "--date", ISSUE_DATE, "--backend", "smtp",
                           env={"NEWSLETTER_SMTP__HOST": host}))
    assert "NEWSLETTER_SMTP__HOST (environment)" in line and says in line
