"""One-click unsubscribe out of the box: opaque signed links, a secret made on first use."""

from __future__ import annotations

import base64
import re
import stat
import threading
from email import message_from_bytes, policy
from email.message import EmailMessage
from urllib.parse import quote, quote_plus, unquote, urlsplit

import pytest

from newsletter.errors import ConfigError
from newsletter.ledger import SqliteLedger
from newsletter.secret import unsubscribe_secret
from newsletter.settings import load_settings
from newsletter.unsubscribe import opaque_token, read_token
from newsletter.web import create_app
from tests.conftest import ISSUE_DATE, Project
from tests.web_server import call, one_click, running

NEXT_DAY = "2026-11-25"


def message(project: Project, email: str, date: str = ISSUE_DATE) -> EmailMessage:
    eml = project.outbox / "mail" / "morning-brief" / date / f"{email}.eml"
    return message_from_bytes(eml.read_bytes(), policy=policy.default)  # type: ignore[return-value]


def https_link(msg: EmailMessage) -> str:
    [https] = [u for u in re.findall(r"<([^>]+)>", str(msg["List-Unsubscribe"]))
               if u.startswith("https:")]
    return https


def every_link(msg: EmailMessage) -> list[str]:
    """The https List-Unsubscribe URL and every URL in both parts of the body."""
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    return [https_link(msg), *re.findall(r'href="([^"]+)"', html),
            *re.findall(r"https?://\S+", text)]


def shows(url: str, email: str) -> bool:
    """Whether the address can be read from `url`, in clear or encoded."""
    local_part = email.split("@")[0]
    forms = {email, quote(email), quote(email, safe=""), quote_plus(email),
             email.replace("@", "&#64;"), local_part}
    decoded = unquote(url)
    return any(form.lower() in url.lower() or form.lower() in decoded.lower()
               for form in forms)


def local(url: str, base: str) -> str:
    parts = urlsplit(url)
    return f"{base}{parts.path}?{parts.query}"


def suppressed(project: Project) -> dict[str, str]:
    ledger = SqliteLedger(project.outbox / "newsletter.sqlite3")
    try:
        return ledger.suppressed("morning-brief")
    finally:
        ledger.close()


def test_a_fresh_project_sends_opaque_links_that_serve_honours(project: Project) -> None:
    assert project.run("send", "--date", ISSUE_DATE).returncode == 0
    secret_file = project.outbox / "unsubscribe.key"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    stored = secret_file.read_bytes()
    for email in ("ada@example.com", "linus@example.com", "zoe@example.org"):
        msg = message(project, email)
        assert https_link(msg).startswith("https://news.example.com/unsubscribe?t=")
        for url in every_link(msg):
            assert not shows(url, email), url
    linus = https_link(message(project, "linus@example.com"))

    with running(create_app(load_settings(project.settings))) as base:
        page = call(local(linus, base))
        assert page.status == 200 and "linus@example.com" in page.body
        assert suppressed(project) == {}  # a GET changes nothing
        answer = one_click(local(linus, base))
        assert answer.status == 200 and "gets no more" in answer.body
    assert "linus@example.com" in suppressed(project)

    project.write("articles/2026-11-25-new.md",
                  "---\ntitle: Next day\npublished: 2026-11-25T05:00:00+00:00\n---\nNews.\n")
    again = project.run("send", "--date", NEXT_DAY)
    assert again.returncode == 0 and "1 suppressed" in again.stdout, again.stdout
    assert not (project.outbox / "mail/morning-brief" / NEXT_DAY / "linus@example.com.eml").exists()
    assert secret_file.read_bytes() == stored  # reused, not replaced
    # Deterministic: the same reader's link is the same in every issue.
    assert https_link(message(project, "ada@example.com", NEXT_DAY)) == https_link(
        message(project, "ada@example.com"))
    assert stored.decode().strip() not in again.stdout + again.stderr


def test_a_tampered_token_is_refused(project: Project) -> None:
    assert project.run("send", "--date", ISSUE_DATE).returncode == 0
    link = https_link(message(project, "ada@example.com"))
    sealed = bytearray(base64.urlsafe_b64decode(link.split("t=")[1] + "=="))
    sealed[-1] ^= 1  # one bit of the address
    tampered = link.split("t=")[0] + "t=" + base64.urlsafe_b64encode(
        bytes(sealed)).decode().rstrip("=")
    with running(create_app(load_settings(project.settings))) as base:
        assert one_click(local(tampered, base)).status == 403
        assert call(local(tampered, base)).status == 403
    assert suppressed(project) == {}


def test_a_configured_secret_wins_and_nothing_is_stored(project: Project) -> None:
    secret = "configured-secret-0123456789-abcdefghij"
    result = project.run("send", "--date", ISSUE_DATE,
                         env={"NEWSLETTER_UNSUBSCRIBE__SECRET": secret})
    assert result.returncode == 0, result.stderr
    assert not (project.outbox / "unsubscribe.key").exists()
    token = https_link(message(project, "ada@example.com")).split("t=")[1]
    assert read_token(secret, token) == ("morning-brief", "ada@example.com")


def test_the_secret_file_lives_beside_the_ledger(project: Project) -> None:
    project.settings.write_text(project.settings.read_text() + "ledger: state/ledger.db\n")
    assert project.run("send", "--date", ISSUE_DATE).returncode == 0
    assert (project.root / "state" / "unsubscribe.key").is_file()
    assert not list(project.outbox.rglob("unsubscribe.key"))


@pytest.mark.parametrize(("content", "what"), [
    (b"", "is empty"),
    (b"\n  \n", "is empty"),
    (b"short\n", "is not an unsubscribe secret"),
    (b"\xff\xfe" * 40, "is not an unsubscribe secret"),
])
def test_a_damaged_secret_file_is_an_error_not_a_new_secret(project: Project, content: bytes,
                                                            what: str) -> None:
    secret_file = project.outbox / "unsubscribe.key"
    secret_file.parent.mkdir(parents=True)
    secret_file.write_bytes(content)
    for command in (("check", "--date", ISSUE_DATE), ("send", "--date", ISSUE_DATE),
                    ("serve",),
                    ("preview", "--date", ISSUE_DATE, "--subscriber", "ada@example.com")):
        result = project.run(*command)
        assert result.returncode == 2, (command, result.stderr)
        assert "Traceback" not in result.stderr
        [line] = [x for x in result.stderr.splitlines() if not x.startswith("warning:")]
        assert line.startswith(f"error: outbox/unsubscribe.key: unsubscribe.secret: the "
                               f"unsubscribe secret file {what}")
        assert "— restore it from a backup" in line
    assert secret_file.read_bytes() == content
    assert not list(project.outbox.rglob("*.eml"))


def test_a_secret_that_cannot_be_stored_stops_check_and_send(project: Project) -> None:
    project.outbox.mkdir()
    (project.outbox / "unsubscribe.key").mkdir()  # not a file: neither readable nor creatable
    for command in ("check", "send"):
        result = project.run(command, "--date", ISSUE_DATE)
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.splitlines()[-1].startswith(
            "error: outbox/unsubscribe.key: unsubscribe.secret: the unsubscribe secret file is "
            "not a regular file")
    assert not list(project.outbox.rglob("*.eml"))


def test_a_folder_that_cannot_be_made_is_a_clear_error(project: Project) -> None:
    project.write("state", "a file where the ledger's folder should be\n")
    project.settings.write_text(project.settings.read_text() + "ledger: state/ledger.db\n")
    checked = project.run("check", "--date", ISSUE_DATE)
    assert checked.returncode == 2 and "Traceback" not in checked.stderr
    assert checked.stderr.startswith("error: state/unsubscribe.key: unsubscribe.secret: "
                                     "cannot read the unsubscribe secret: Not a directory — "
                                     "check that the ledger's folder is a folder")


def test_runs_that_start_together_share_one_secret(project: Project) -> None:
    settings = load_settings(project.settings)
    found: list[str] = []
    start = threading.Barrier(8)

    def first_use() -> None:
        start.wait()
        found.append(unsubscribe_secret(settings))

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(found) == 8 and len(set(found)) == 1
    assert sorted(p.name for p in project.outbox.iterdir()) == ["unsubscribe.key"]
    assert len(found[0]) >= 43  # 256 bits, URL-safe base64


def test_a_secret_in_the_public_archive_is_refused(project: Project) -> None:
    project.settings.write_text(project.settings.read_text()
                                + "ledger: outbox/archive/ledger.db\n")
    with pytest.raises(ConfigError, match="would be kept in the public archive folder"):
        unsubscribe_secret(load_settings(project.settings))


def test_tokens_name_list_and_address_and_nothing_else() -> None:
    secret = "k" * 40
    made = opaque_token(secret, "morning-brief", "Ada@Example.com")
    assert made == opaque_token(secret, "morning-brief", "Ada@Example.com")  # deterministic
    assert re.fullmatch(r"[A-Za-z0-9_-]+", made)
    assert read_token(secret, made) == ("morning-brief", "Ada@Example.com")
    assert read_token("x" * 40, made) is None  # another secret
    assert opaque_token(secret, "other-list", "Ada@Example.com") != made
    for junk in ("", "é", "a" * 5000, "!!!!", made + "A", made[:-2], "A" * len(made),
                 made + "\n", made + "=", " " + made):
        assert read_token(secret, junk) is None


def test_an_empty_configured_secret_is_an_error(project: Project) -> None:
    result = project.run("send", "--date", ISSUE_DATE,
                         env={"NEWSLETTER_UNSUBSCRIBE__SECRET": " "})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "error: NEWSLETTER_UNSUBSCRIBE__SECRET: the unsubscribe secret is empty — set a long "
        "random value, or unset it to use a generated one")
    assert not list(project.outbox.rglob("*.eml"))
