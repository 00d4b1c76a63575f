"""Secrets in a mistaken setting never reach the terminal: a DKIM key that is not a path,
and a `.env` line python-dotenv cannot parse (it would be dropped without a word)."""

from __future__ import annotations

import pytest

from tests.conftest import Project

SECRET = "MIIEsecretstuffhunter2"
DKIM = {"NEWSLETTER_DKIM__DOMAIN": "example.com", "NEWSLETTER_DKIM__SELECTOR": "s1"}


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("value", [
    SECRET,                          # a base64 line of a key, pasted alone
    SECRET + "+/x",                  # base64 has '/' too: still not a file
    "config/" + SECRET,              # a separator, a folder that exists, but no such file
])
def test_a_dkim_key_that_is_not_an_existing_file_is_never_echoed(project: Project,
                                                                 value: str) -> None:
    result = project.run("check", env={**DKIM, "NEWSLETTER_DKIM__PRIVATE_KEY": value})
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output
    assert SECRET not in output
    errors = _error_lines(result.stderr)
    assert len(errors) == 1 and "dkim.private_key" in errors[0], result.stderr
    assert "neither a PEM key nor" in errors[0]


def test_an_existing_key_file_is_still_named(project: Project) -> None:
    result = project.run("check", env={**DKIM,
                                       "NEWSLETTER_DKIM__PRIVATE_KEY": "config/subscribers.yaml"})
    assert result.returncode == 2
    assert _error_lines(result.stderr) == [
        "error: config/subscribers.yaml: dkim.private_key: the DKIM private key is not an "
        "unencrypted PEM key — use the file `newsletter dkim keygen` writes"]


@pytest.mark.parametrize("line", [
    'NEWSLETTER_SMTP__PASSWORD="pa ss' + SECRET,     # unclosed double quote
    "NEWSLETTER_SMTP__PASSWORD='pa ss" + SECRET,     # unclosed single quote
    "NEWSLETTER_SMTP__PASSWORD pa ss" + SECRET,      # '=' forgotten
])
def test_a_dotenv_line_dotenv_cannot_parse_is_an_error_without_its_value(
        project: Project, line: str) -> None:
    (project.root / ".env").write_text(
        f"NEWSLETTER_SMTP__USERNAME=brief\n{line}\nNEWSLETTER_SMTP__HOST=127.0.0.1\n")
    result = project.run("check")
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output
    assert SECRET not in output and "pa ss" not in output
    errors = _error_lines(result.stderr)
    assert len(errors) == 1 and errors[0].startswith("error: .env:2: "), result.stderr
    assert "no password" not in output


def test_the_line_number_skips_blank_lines_and_comments(project: Project) -> None:
    (project.root / ".env").write_text(
        "# secrets\n\nNEWSLETTER_SMTP__USERNAME=brief\n\n\n"
        f'NEWSLETTER_SMTP__PASSWORD="{SECRET}\n')
    result = project.run("check")
    assert result.returncode == 2 and SECRET not in result.stdout + result.stderr
    assert _error_lines(result.stderr)[0].startswith("error: .env:6: "), result.stderr
