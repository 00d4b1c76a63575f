"""The List-Unsubscribe mailto carries the reader's token, not the address, and
`newsletter unsubscribe` acts on that token (or the mail's subject) as on an address."""

from __future__ import annotations

import base64
import re
from email.header import decode_header, make_header
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

from newsletter.ledger import ALL_LISTS, SqliteLedger
from newsletter.unsubscribe import opaque_token, read_token
from tests.conftest import ISSUE_DATE, Project
from tests.test_unsubscribe_links import https_link, message

SECRET = "a-long-random-test-secret-for-the-mailto"
READERS = ("ada@example.com", "linus@example.com", "zoe@example.org")


def mailto(header: str) -> str:
    [found] = [u for u in re.findall(r"<([^>]+)>", header) if u.startswith("mailto:")]
    return found


def subject(header: str) -> str:
    [value] = parse_qs(urlsplit(mailto(header)).query)["subject"]
    return value


def suppressions(project: Project) -> dict[str, dict[str, str]]:
    ledger = SqliteLedger(project.outbox / "newsletter.sqlite3")
    try:
        return {lst: ledger.suppressed(lst) for lst in ("morning-brief", ALL_LISTS)}
    finally:
        ledger.close()


def test_the_list_unsubscribe_header_shows_no_address(project: Project) -> None:
    env = {"NEWSLETTER_UNSUBSCRIBE__SECRET": SECRET}
    assert project.run("send", "--date", ISSUE_DATE, env=env).returncode == 0
    for email in READERS:
        msg = message(project, email)
        header = str(msg["List-Unsubscribe"])
        local_part = email.split("@")[0]
        readings = {header, unquote(header), unquote(unquote(header)),
                    str(make_header(decode_header(header)))}
        forms = {email, local_part, quote(email, safe=""), quote(email),
                 base64.b64encode(email.encode()).decode(),
                 base64.urlsafe_b64encode(email.encode()).decode().rstrip("=")}
        for reading in readings:
            for form in forms:
                assert form.lower() not in reading.lower(), (form, header)
        # The mailto's subject is the link's token, which names her on her list.
        token = https_link(msg).split("t=")[1]
        assert subject(header) == f"unsubscribe {token}"
        assert read_token(SECRET, token) == ("morning-brief", email)


@pytest.mark.parametrize("form", ["subject", "token", "mailto", "link", "reply"])
def test_unsubscribe_acts_on_the_token_of_a_mailto(project: Project, form: str) -> None:
    assert project.run("send", "--date", ISSUE_DATE).returncode == 0  # a generated secret
    msg = message(project, "linus@example.com")
    header = str(msg["List-Unsubscribe"])
    given = {"subject": subject(header), "token": subject(header).split()[1],
             "mailto": mailto(header), "link": https_link(msg),
             "reply": f"Re: {subject(header)}"}[form]
    result = project.run("unsubscribe", given)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("linus@example.com will get no more issues of list "
                                     "'morning-brief'")
    found = suppressions(project)
    assert list(found["morning-brief"]) == ["linus@example.com"]
    assert found[ALL_LISTS] == {}
    again = project.run("unsubscribe", given, "--list", "morning-brief")
    assert again.returncode == 0 and "already unsubscribed" in again.stdout


def test_the_subject_of_an_earlier_version_still_works(project: Project) -> None:
    result = project.run("unsubscribe", "unsubscribe morning-brief Linus@Example.com")
    assert result.returncode == 0, result.stderr
    assert list(suppressions(project)["morning-brief"]) == ["linus@example.com"]


def error_line(result) -> str:
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    return line


def test_a_token_that_does_not_verify_is_a_clear_error(project: Project) -> None:
    assert project.run("send", "--date", ISSUE_DATE).returncode == 0
    token = subject(str(message(project, "linus@example.com")["List-Unsubscribe"])).split()[1]
    flipped = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    foreign = opaque_token("another-projects-secret-of-some-length", "morning-brief",
                           "linus@example.com")
    for bad in (token[:-4], token + "AAAA", flipped, foreign, "A" * 2000,
                f"unsubscribe {flipped}"):
        line = error_line(project.run("unsubscribe", bad))
        assert line.startswith("error: EMAIL|TOKEN: '")
        assert "is not an unsubscribe token of this project — " in line
        assert len(line) < 400
    for junk in ("", "unsubscribe", "a b c", "unsubscribe me please", "no-at-sign!"):
        line = error_line(project.run("unsubscribe", junk))
        assert "EMAIL|TOKEN" in line and " — " in line
    assert suppressions(project) == {"morning-brief": {}, ALL_LISTS: {}}


def test_a_token_for_another_list_than_the_one_given_is_refused(project: Project) -> None:
    assert project.run("send", "--date", ISSUE_DATE).returncode == 0
    token = subject(str(message(project, "ada@example.com")["List-Unsubscribe"])).split()[1]
    line = error_line(project.run("unsubscribe", token, "--list", "evening-brief"))
    assert "the request is for list 'morning-brief', not 'evening-brief'" in line
    assert suppressions(project) == {"morning-brief": {}, ALL_LISTS: {}}


def test_a_token_before_any_secret_exists_makes_none(project: Project) -> None:
    token = opaque_token("x" * 43, "morning-brief", "ada@example.com")
    line = error_line(project.run("unsubscribe", token))
    assert "is not an unsubscribe token of this project" in line
    assert not (project.outbox / "unsubscribe.key").exists()


def test_a_token_that_starts_with_a_dash_is_a_token_not_an_option(project: Project) -> None:
    # URL-safe base64 starts with '-' one time in 64: click took it for an unknown option.
    token = next(t for n in range(2000) if (t := opaque_token(
        SECRET, "morning-brief", f"r{n}@example.com")).startswith("-"))
    env = {"NEWSLETTER_UNSUBSCRIBE__SECRET": SECRET}
    result = project.run("unsubscribe", token, env=env)
    assert result.returncode == 0, result.stderr
    assert "will get no more issues of list 'morning-brief'" in result.stdout
    assert project.run("unsubscribe", token, "--list", "morning-brief",
                       env=env).returncode == 0
    line = error_line(project.run("unsubscribe", token, "--list", "evening-brief", env=env))
    assert "the request is for list 'morning-brief', not 'evening-brief'" in line
