"""What every webhook endpoint does alike, over real HTTP against the real `serve` app:
events about no delivery of ours are taken and logged, malformed bodies are 400, oversized
ones 413 however sent, an endpoint without its settings is off (404), a key `serve` cannot
read is one line, a full disk is a 503 that the provider's next try gets past."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest

from newsletter.settings import load_settings
from newsletter.web import create_app
from newsletter.web.webhooks import enabled
from tests.conftest import ISSUE_DATE, Project, mounted_tmpfs
from tests.web_server import call, running
from tests.webhooks.conftest import JSON, Hooked, hard, serving
from tests.webhooks.signers import (
    Keys,
    mailgun_body,
    mailgun_event,
    postmark_auth,
    sendgrid_headers,
)

# Every endpoint ----------------------------------------------------------------------

def test_an_event_about_no_delivery_of_ours_is_taken_and_logged(hooked: Hooked) -> None:
    stranger = mailgun_event("failed", "stranger@example.net", "<not-ours@elsewhere>",
                             severity="permanent")
    assert hooked.post("mailgun", mailgun_body(stranger)).status == 200
    assert hooked.suppressions() == []
    assert any("unmatched" in r.getMessage() for r in hooked.log)
    # The log names the provider's event, not the address: it is no list of readers.
    assert not any("stranger@" in r.getMessage() for r in hooked.log)


def signed_junk(hooked: Hooked, provider: str, body: bytes) -> dict[str, str]:
    """Valid credentials for `body` where they are not in it (Postmark, SendGrid)."""
    if provider == "postmark":
        return postmark_auth()
    if provider == "sendgrid":
        return sendgrid_headers(hooked.keys.sendgrid, body)
    return {}


@pytest.mark.parametrize("provider", ["ses", "postmark", "mailgun", "sendgrid"])
@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe\x00", b"[]", b"{}", b"null",
                                  b'{"Type": 5}', b"[" * 100_000])
def test_malformed_bodies_are_400(hooked: Hooked, provider: str, body: bytes) -> None:
    answer = hooked.post(provider, body, signed_junk(hooked, provider, body))
    expected = 200 if (provider, body) == ("sendgrid", b"[]") else 400  # an empty batch
    assert answer.status == expected, (answer.status, answer.body)
    assert hooked.suppressions() == []


def raw_post(base: str, provider: str, headers: dict[str, str], pieces: list[bytes]) -> int:
    """POST `pieces` (a body in chunks when no Content-Length is given) and read the answer
    as soon as the server gives one, without sending more."""
    import http.client
    from urllib.parse import urlsplit
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.putrequest("POST", f"/webhooks/{provider}")
        chunked = "Content-Length" not in headers
        for name, value in {**JSON, **headers,
                            **({"Transfer-Encoding": "chunked"} if chunked else {})}.items():
            conn.putheader(name, value)
        conn.endheaders()
        for piece in pieces:
            conn.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.mark.parametrize("provider", ["ses", "postmark", "mailgun", "sendgrid"])
def test_oversized_bodies_are_413_whatever_content_length_says(hooked: Hooked,
                                                               provider: str) -> None:
    auth = signed_junk(hooked, provider, b"")
    # Declared too long: refused before a byte of it is read.
    assert raw_post(hooked.base, provider, {**auth, "Content-Length": str(5 << 20)},
                    []) == 413
    # Chunked, with no length to go by: refused once it has grown past the cap (4 MB for
    # SendGrid's batches, 1 MB for the others), not read to its end.
    pieces = [b"[" + b" " * 65535] + [b" " * 65536] * (80 if provider == "sendgrid" else 20)
    assert raw_post(hooked.base, provider, auth, pieces) == 413
    assert hooked.suppressions() == []


def test_a_body_that_trickles_in_is_cut_off_not_waited_for(
        hooked: Hooked, monkeypatch: pytest.MonkeyPatch) -> None:
    # A slow loris: 10 of the 100 bytes it declared, then nothing. Without a deadline the
    # server waits as long as the client likes (here: until the client's 30 s timeout).
    from newsletter.web.webhooks import common
    monkeypatch.setattr(common, "BODY_SECONDS", 0.5, raising=False)
    auth = signed_junk(hooked, "mailgun", b"")
    assert raw_post(hooked.base, "mailgun", {**auth, "Content-Length": "100"},
                    [b'{"signatu']) == 408
    assert hooked.suppressions() == []


def test_get_is_not_allowed(hooked: Hooked) -> None:
    assert call(f"{hooked.base}/webhooks/mailgun").status == 405


def test_serve_says_which_endpoints_are_on(hooked: Hooked) -> None:
    assert enabled(load_settings(hooked.project.settings)) == ["ses", "postmark", "mailgun",
                                                               "sendgrid"]


def test_endpoints_without_their_settings_are_off(project: Project) -> None:
    result = project.run("send", "--date", ISSUE_DATE)
    assert result.returncode == 0, result.stderr
    assert enabled(load_settings(project.settings)) == []
    with running(create_app(load_settings(project.settings))) as base:
        for provider in ("ses", "postmark", "mailgun", "sendgrid"):
            answer = call(f"{base}/webhooks/{provider}", "POST", b"{}", JSON)
            assert answer.status == 404, provider


def test_serve_names_a_sendgrid_key_it_cannot_read(project: Project) -> None:
    result = project.run("serve", env={"NEWSLETTER_WEBHOOKS__SENDGRID_PUBLIC_KEY": "bm9wZQ=="})
    assert result.returncode == 2
    assert result.stderr.startswith("error: webhooks.sendgrid_public_key: is not a public key")
    assert "Traceback" not in result.stderr


def test_a_full_disk_is_a_503_and_the_provider_sending_again_gets_it_in(
        project: Project, keys: Keys, sent_outbox: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0 or not shutil.which("mount"):
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run the full-disk tests: run them as root (mount)")
        pytest.skip("needs root to mount a small tmpfs")
    with mounted_tmpfs(project.outbox, "2M"), \
            serving(project, keys, sent_outbox, monkeypatch) as hooked:
        ada = hooked.message_ids["ada@example.com"]
        body = mailgun_body(mailgun_event("failed", "ada@example.com", ada,
                                          severity="permanent"))
        filler = project.outbox / "filler"
        with open(filler, "wb") as f, contextlib.suppress(OSError):  # ENOSPC: full
            f.write(b"\0" * shutil.disk_usage(project.outbox).free)
        full = hooked.post("mailgun", body)
        assert full.status == 503, full.body
        assert any("503" in r.getMessage() for r in hooked.log)
        filler.unlink()
        again = hooked.post("mailgun", body)  # what Mailgun does after a 503
        assert again.status == 200, again.body
        assert [hard(s) for s in hooked.of("ada@example.com")] == [True]
