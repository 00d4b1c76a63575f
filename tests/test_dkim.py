"""DKIM: our signatures verified by dkimpy (DNS stubbed), on files and after real SMTP."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import dkim as dkimpy
import pytest

from newsletter.dkim import SIGNED_HEADERS
from tests.conftest import ISSUE_DATE, REPO, Project
from tests.smtp_server import Sink, free_port, start_server


@pytest.fixture
def dkim_project(project: Project) -> tuple[Project, bytes]:
    """The project with a fresh key made by `newsletter dkim keygen`, and its DNS record."""
    result = project.run("dkim", "keygen", "--selector", "brief2026", "--bits", "1024")
    assert result.returncode == 0, result.stderr
    key = project.root / "config" / "dkim" / "brief2026.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    record = re.search(r'brief2026\._domainkey\.example\.com\. IN TXT \( (.*) \)',
                       result.stdout)
    assert record, result.stdout
    txt = "".join(re.findall(r'"([^"]*)"', record.group(1))).encode()
    project.settings.write_text(project.settings.read_text() + (
        "dkim:\n  domain: example.com\n  selector: brief2026\n"
        "  private_key: config/dkim/brief2026.pem\n"))
    return project, txt


def verify(message: bytes, txt: bytes) -> bool:
    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"brief2026._domainkey.example.com."
        return txt

    return dkimpy.verify(message, dnsfunc=dns)


def test_file_backend_messages_are_signed_and_verify(dkim_project) -> None:
    project, txt = dkim_project
    result = project.run("send", "--date", ISSUE_DATE)
    assert result.returncode == 0, result.stderr
    emls = sorted(project.outbox.rglob("*.eml"))
    assert len(emls) == 3
    for eml in emls:
        data = eml.read_bytes()
        assert data.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;")
        signed = re.search(rb"h=([^;]+);", data).group(1).replace(b"\r\n ", b"")
        assert signed.decode().split(":") == list(SIGNED_HEADERS)
        assert verify(data, txt)


def test_signature_survives_real_smtp_and_a_tampered_header_fails(dkim_project) -> None:
    project, txt = dkim_project
    sink, port = Sink(), free_port()
    controller = start_server(sink, port=port)
    try:
        result = project.run("send", "--date", ISSUE_DATE, "--backend", "smtp", env={
            "NEWSLETTER_SMTP__PORT": str(port), "NEWSLETTER_SMTP__SECURITY": "none"})
    finally:
        controller.stop()
    assert result.returncode == 0, result.stderr
    assert len(sink.received) == 3
    for received in sink.received:
        assert verify(received.data, txt)
    data = sink.received[0].data
    for header, forged in ((b"Subject: ", b"Subject: Win a prize! "),
                           (b"List-Unsubscribe-Post: ", b"List-Unsubscribe-Post: x")):
        assert not verify(data.replace(header, forged, 1), txt)
    assert not verify(data.replace(b"Good morning", b"Good evening", 1), txt)


def test_key_pem_from_the_environment(project: Project, tmp_path: Path) -> None:
    made = project.run("dkim", "keygen", "--selector", "s1", "--out", str(tmp_path / "k.pem"))
    assert made.returncode == 0
    pem = (tmp_path / "k.pem").read_text()
    result = project.run("send", "--date", ISSUE_DATE, env={
        "NEWSLETTER_DKIM__DOMAIN": "example.com", "NEWSLETTER_DKIM__SELECTOR": "s1",
        "NEWSLETTER_DKIM__PRIVATE_KEY": pem})
    assert result.returncode == 0, result.stderr
    assert all(p.read_bytes().startswith(b"DKIM-Signature:")
               for p in project.outbox.rglob("*.eml"))
    shown = project.run("config", "show", env={"NEWSLETTER_DKIM__PRIVATE_KEY": pem})
    assert "BEGIN" not in shown.stdout and "private_key: '**********'" in shown.stdout


@pytest.mark.parametrize(("env", "message"), [
    ({"NEWSLETTER_DKIM__PRIVATE_KEY": "config/missing.pem"},
     "error: dkim.private_key: the DKIM private key is neither a PEM key nor an existing file"),
    ({"NEWSLETTER_DKIM__PRIVATE_KEY": "config/subscribers.yaml"},
     "config/subscribers.yaml: dkim.private_key: the DKIM private key is not an unencrypted "
     "PEM key"),
    ({"NEWSLETTER_DKIM__SELECTOR": ""}, "dkim: DKIM needs a domain, a selector and a private"),
])
def test_an_unusable_key_stops_the_send_before_any_mail(project: Project, env: dict,
                                                        message: str) -> None:
    base = {"NEWSLETTER_DKIM__DOMAIN": "example.com", "NEWSLETTER_DKIM__SELECTOR": "s1",
            "NEWSLETTER_DKIM__PRIVATE_KEY": "config/missing.pem"}
    result = project.run("send", "--date", ISSUE_DATE, env={**base, **env})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr
    assert not list(project.root.rglob("*.eml"))


def test_keygen_puts_the_key_where_git_never_sees_it(project: Project) -> None:
    old = os.umask(0)  # even a careless umask gives an owner-only key
    try:
        result = project.run("dkim", "keygen", "--selector", "s2", "--bits", "1024")
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr
    key = project.root / "config" / "dkim" / "s2.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    assert key.parent.stat().st_mode & 0o077 == 0
    assert "config/dkim/s2.pem" in result.stdout
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    # The project's own .gitignore covers the default path (and the old config/dkim-*.pem).
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "config/dkim/s2.pem", "config/dkim-s2.pem"],
        cwd=REPO, capture_output=True, text=True)
    assert ignored.stdout.split() == ["config/dkim/s2.pem", "config/dkim-s2.pem"]


def test_keygen_never_replaces_a_key_unless_asked(project: Project) -> None:
    first = project.run("dkim", "keygen", "--selector", "s3", "--bits", "1024")
    assert first.returncode == 0, first.stderr
    key = project.root / "config" / "dkim" / "s3.pem"
    pem = key.read_bytes()
    again = project.run("dkim", "keygen", "--selector", "s3", "--bits", "1024")
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert again.stderr.startswith("error: config/dkim/s3.pem: --out: a key file is already "
                                   "there")
    assert key.read_bytes() == pem
    replaced = project.run("dkim", "keygen", "--selector", "s3", "--bits", "1024",
                           "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert key.read_bytes() != pem and key.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in key.parent.iterdir()] == ["s3.pem"]  # no temporary file left


def test_keygen_into_a_folder_it_cannot_write_is_one_line(project: Project) -> None:
    result = project.run("dkim", "keygen", "--selector", "s4", "--out",
                         "config/subscribers.yaml/s4.pem")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: config/subscribers.yaml/s4.pem: --out: cannot "
                                    "write the key")
