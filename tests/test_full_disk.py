"""A full disk and a read-only ledger, for real: one line naming the file, a non-zero exit,
no traceback, nothing half-written, and the same command completes once there is room.

As root the outbox is a small tmpfs (filled up, or remounted read-only) and the ledger can
be made immutable (`chattr +i`); anywhere, a file-size limit (RLIMIT_FSIZE) on the process
makes its writes fail as a full disk does (Python ignores SIGXFSZ, so writes get EFBIG).
"""

from __future__ import annotations

import os
import resource
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from tests.conftest import ISSUE_DATE, Project, clean_env, mounted_tmpfs
from tests.smtp_server import Sink, free_port, start_server

ACTIVE = ["ada@example.com.eml", "linus@example.com.eml", "zoe@example.org.eml"]
DAY_BEFORE = "2026-11-23"


def _can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


def _need_mount() -> None:
    if not _can_mount():
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run the full-disk tests: run them as root (mount, chattr)")
        pytest.skip("needs root to mount a small tmpfs (the RLIMIT_FSIZE tests still run)")


@pytest.fixture
def small_outbox(project: Project) -> Iterator[Path]:
    """The project's outbox as a 1 MB tmpfs of its own."""
    _need_mount()
    with mounted_tmpfs(project.outbox, "1M") as outbox:
        yield outbox


def _fill(outbox: Path, leave: int) -> Path:
    """Fill the disk but `leave` bytes."""
    free = shutil.disk_usage(outbox).free
    filler = outbox / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def _send(project: Project, date: str = ISSUE_DATE, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("env", clean_env())
    return subprocess.run([sys.executable, "-m", "newsletter", "send", "--date", date],
                          cwd=project.root, capture_output=True, text=True, timeout=60,
                          **kwargs)


def _assert_clean_failure(project: Project, result: subprocess.CompletedProcess,
                          names: tuple[str, ...]) -> str:
    """A non-zero exit with one error line naming one of `names`; nothing half-written."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert any(name in line for name in names), line
    _assert_nothing_half_written(project)
    return line


def _assert_nothing_half_written(project: Project) -> None:
    leftovers = [p for p in project.outbox.rglob("*")
                 if p.name.endswith((".part", ".new")) or ".new" in p.name]
    assert leftovers == []
    for eml in project.outbox.rglob("*.eml"):
        data = eml.read_bytes()
        msg = message_from_bytes(data, policy=policy.default)
        assert data.endswith(b"--\r\n") and len(msg.get_payload()) == 2, eml  # complete
    for page in project.outbox.rglob("*.html"):
        assert page.read_text(encoding="utf-8").rstrip().endswith("</html>"), page


def _assert_everyone_has_it_once(project: Project, date: str = ISSUE_DATE) -> None:
    assert sorted(p.name for p in project.outbox.rglob(f"morning-brief/{date}/*.eml")) == ACTIVE
    db = sqlite3.connect(project.outbox / "newsletter.sqlite3")
    rows = dict(db.execute("SELECT email, status FROM deliveries WHERE issue_id = ?",
                           (f"morning-brief/{date}",)))
    db.close()
    assert rows == {"ada@example.com": "sent", "linus@example.com": "sent",
                    "zoe@example.org": "sent", "grace@example.com": "skipped"}
    _assert_nothing_half_written(project)


# Free space left, with a new ledger or yesterday's: none at all, then amounts at which (as
# measured) the ledger's writes, the archive page, the first message or a later one run out.
# Any other level may fail elsewhere, or not at all, but must fail cleanly and recover.
@pytest.mark.parametrize(("ledger", "leave"), [
    ("new", 0), ("new", 130_000), ("new", 160_000), ("existing", 40_000),
    ("existing", 100_000)])
def test_a_full_disk_stops_cleanly_and_the_same_command_completes(
        project: Project, small_outbox: Path, leave: int, ledger: str) -> None:
    if ledger == "existing":
        assert _send(project, DAY_BEFORE).returncode == 0
    filler = _fill(small_outbox, leave)
    full = _send(project)
    if full.returncode != 0 or leave == 0:
        line = _assert_clean_failure(project, full, ("newsletter.sqlite3", "outbox"))
        assert "full" in line or "No space left" in line
    filler.unlink()
    again = _send(project)
    assert again.returncode == 0, again.stderr
    _assert_everyone_has_it_once(project)


def test_a_read_only_outbox_stops_cleanly(project: Project, small_outbox: Path) -> None:
    assert _send(project, DAY_BEFORE).returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(small_outbox)], check=True)
    try:
        result = _send(project)
        line = _assert_clean_failure(project, result, ("outbox/newsletter.sqlite3",))
        assert "read-only" in line
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_outbox)], check=True)
    again = _send(project)
    assert again.returncode == 0, again.stderr
    _assert_everyone_has_it_once(project)


def test_an_immutable_ledger_stops_cleanly(project: Project) -> None:
    _need_mount()  # root, for chattr
    assert _send(project, DAY_BEFORE).returncode == 0
    ledger = project.outbox / "newsletter.sqlite3"
    subprocess.run(["chattr", "+i", str(ledger)], check=True)
    try:
        result = _send(project)
        line = _assert_clean_failure(project, result, ("outbox/newsletter.sqlite3",))
        assert "read-only" in line
        assert not list(project.outbox.rglob(f"morning-brief/{ISSUE_DATE}/*.eml"))
    finally:
        subprocess.run(["chattr", "-i", str(ledger)], check=True)
    again = _send(project)
    assert again.returncode == 0, again.stderr
    _assert_everyone_has_it_once(project)


def _limit_file_size(limit: int):
    def limit_it() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limit_it


@pytest.mark.parametrize("ledger", ["new", "existing"])
def test_writes_refused_by_a_file_size_limit_stop_cleanly(project: Project,
                                                          ledger: str) -> None:
    """No root needed: every write past 40 kB in a file fails (EFBIG), as on a full disk."""
    if ledger == "existing":
        assert _send(project, DAY_BEFORE).returncode == 0
    limited = _send(project, preexec_fn=_limit_file_size(40_000))
    _assert_clean_failure(project, limited, ("newsletter.sqlite3", "outbox"))
    again = _send(project)
    assert again.returncode == 0, again.stderr
    _assert_everyone_has_it_once(project)


def test_a_disk_that_fills_up_mid_run_over_smtp_duplicates_at_most_one_message(
        project: Project, small_outbox: Path) -> None:
    """Over SMTP every reply is committed before the next message: when the ledger cannot
    record one, the run stops there, and only that reader can get the issue twice."""
    readers = [f"reader{i:02d}@example.com" for i in range(10)]
    project.subscribers.write_text("lists:\n  morning-brief:\n    title: The Morning Brief\n"
                                   "    subscribers:\n" + "".join(f"      - {r}\n"
                                                                  for r in readers))
    fillers: list[Path] = []

    def fill_after_the_third(sink: Sink) -> None:
        if len(sink.received) == 3:
            fillers.append(_fill(small_outbox, 0))

    sink = Sink(on_message=fill_after_the_third)
    port = free_port()
    controller = start_server(sink, port=port)
    env = {"NEWSLETTER_DELIVERY__BACKEND": "smtp", "NEWSLETTER_SMTP__PORT": str(port),
           "NEWSLETTER_SMTP__SECURITY": "none"}
    try:
        full = _send(project, env={**clean_env(), **env})
        _assert_clean_failure(project, full, ("outbox/newsletter.sqlite3",))
        assert "full" in full.stderr
        stopped_at = len(sink.received)
        fillers[0].unlink()
        again = _send(project, env={**clean_env(), **env})
    finally:
        controller.stop()
    assert again.returncode == 0, again.stderr
    got = Counter(r.recipients[0] for r in sink.received)
    assert set(got) == set(readers)
    assert 3 <= stopped_at < 10 and sum(got.values()) - len(readers) <= 1
