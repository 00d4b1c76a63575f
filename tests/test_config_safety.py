"""Settings that reach headers and links are one line of text; user mistakes in settings,
options and the environment are one `error:` line and exit 2, never a traceback, a hang
or a secret on the screen."""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from newsletter.errors import ConfigError
from newsletter.settings import load_settings
from newsletter.settingsbase import control_character, is_loopback
from tests.conftest import ISSUE_DATE, Project

SEND = ("send", "--date", ISSUE_DATE)
INJECTED = "\r\nBcc: everyone@evil.example"

# Every text setting that reaches a header, a link or the footer: (section, key, a valid
# value the control character is appended to).
ONE_LINE_SETTINGS = [
    ("newsletter", "base_url", "https://news.example.com"),
    ("newsletter", "sender", "The Brief <brief@example.com>"),
    ("newsletter", "title", "The Brief"),
    ("newsletter", "unsubscribe_mailto", "unsubscribe@example.com"),
    ("newsletter", "postal_address", "1 Harbour Street"),
    ("dkim", "domain", "example.com"),
    ("dkim", "selector", "brief2026"),
    ("links", "utm_source", "newsletter"),
    ("links", "utm_medium", "email"),
    ("links", "utm_campaign", "{list}-{date}"),
    ("smtp", "host", "mail.example.com"),
    ("smtp", "username", "me"),
    ("serve", "host", "127.0.0.1"),
]


def _yaml_string(text: str) -> str:
    """`text` as a double-quoted YAML scalar, control characters escaped."""
    return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}"
                         for c in text) + '"'


@pytest.mark.parametrize("char", ["\r", "\n", "\x00", "\t", "\x1b", "\x85", "\u2028"])
@pytest.mark.parametrize(("section", "key", "value"), ONE_LINE_SETTINGS)
def test_a_control_character_in_a_yaml_setting_is_an_error_naming_it(
        tmp_path: Path, section: str, key: str, value: str, char: str) -> None:
    path = tmp_path / "newsletter.yaml"
    path.write_text(f"{section}:\n  {key}: {_yaml_string(value + char + 'x')}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    [problem] = caught.value.problems
    assert (problem.file, problem.line, problem.field) == (path, 2, f"{section}.{key}")
    assert problem.what.startswith(f"contains a control character (U+{ord(char):04X})")


@pytest.mark.parametrize(("section", "key", "value"), ONE_LINE_SETTINGS)
def test_a_control_character_in_an_environment_setting_is_an_error_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, section: str, key: str,
        value: str) -> None:
    path = tmp_path / "newsletter.yaml"
    path.write_text("{}\n")
    name = f"NEWSLETTER_{section.upper()}__{key.upper()}"
    monkeypatch.setenv(name, value + INJECTED)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    [problem] = caught.value.problems
    assert problem.field == f"{name} (environment)"
    assert "control character (U+000D)" in problem.what


def test_a_feed_url_in_a_list_is_checked_too(tmp_path: Path) -> None:
    path = tmp_path / "newsletter.yaml"
    path.write_text('articles:\n  feeds: ["https://a.example/feed", "https://b.example/\\r\\n"]\n')
    with pytest.raises(ConfigError, match=r"articles\.feeds: contains a control character"):
        load_settings(path)


def test_a_pem_key_may_span_lines_and_plain_text_passes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "newsletter.yaml"
    path.write_text("newsletter:\n  title: Zoë's Brief — daily\n")
    monkeypatch.setenv("NEWSLETTER_DKIM__PRIVATE_KEY",
                       "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    settings = load_settings(path)
    assert settings.newsletter.title == "Zoë's Brief — daily"
    assert control_character("Zoë\u200dx") is None  # a joiner is not a line break


@pytest.mark.parametrize("url", [
    "https://x.example/u>, <mailto:evil@x.example>",  # would add a List-Unsubscribe target
    "https://café.example",  # not ASCII: every message build crashed
    "https://x.example/?list=a", "https://x.example/#top", 'https://x.example/"a"',
    "https://x.example/a b",
])
def test_base_url_is_a_plain_ascii_url(tmp_path: Path, url: str) -> None:
    path = tmp_path / "newsletter.yaml"
    path.write_text(f"newsletter:\n  base_url: {_yaml_string(url)}\n")
    with pytest.raises(ConfigError, match=r":2: newsletter\.base_url: must be a plain "):
        load_settings(path)


@pytest.mark.parametrize("url", ["https://news.example.com/", "http://localhost:8025/brief",
                                 "https://xn--caf-dma.example/p%20q"])
def test_ordinary_base_urls_pass(tmp_path: Path, url: str) -> None:
    path = tmp_path / "newsletter.yaml"
    path.write_text(f"newsletter:\n  base_url: {url}\n")
    assert load_settings(path).newsletter.base_url == url.rstrip("/")


@pytest.mark.parametrize(("key", "value"), [("selector", "s1; d=evil.example"),
                                             ("domain", "example.com; s=x"),
                                             ("domain", "exämple.com")])
def test_dkim_names_are_dns_names(tmp_path: Path, key: str, value: str) -> None:
    path = tmp_path / "newsletter.yaml"
    path.write_text(f"dkim:\n  {key}: {_yaml_string(value)}\n")
    with pytest.raises(ConfigError, match=rf":2: dkim\.{key}: must be a DNS name"):
        load_settings(path)


def test_crlf_in_base_url_never_reaches_a_message(project: Project) -> None:
    text = project.settings.read_text().replace(
        "base_url: https://news.example.com",
        f"base_url: {_yaml_string('https://news.example.com' + INJECTED)}")
    project.settings.write_text(text)
    result = project.run(*SEND)
    assert result.returncode == 2, result.stdout
    assert result.stderr.startswith(
        "error: config/newsletter.yaml:4: newsletter.base_url: contains a control character")
    assert not list(project.outbox.rglob("*.eml"))


def test_the_same_settings_without_control_characters_send_clean_headers(
        project: Project) -> None:
    result = project.run(*SEND, env={"NEWSLETTER_LINKS__UTM_SOURCE": "brief"})
    assert result.returncode == 0, result.stderr
    for eml in project.outbox.rglob("*.eml"):
        message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        assert message["Bcc"] is None


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST.", "127.0.0.1", "127.1.2.3", "::1",
                                  "[::1]"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["mail.example.com", "10.0.0.1", "::2", "localhost.evil.com",
                                  "128.0.0.1"])
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_auth_in_the_clear_to_another_host_is_refused_naming_smtp_security(
        project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_SMTP__USERNAME", "me")
    monkeypatch.setenv("NEWSLETTER_SMTP__HOST", "mail.example.com")
    with pytest.raises(ConfigError) as caught:
        load_settings(project.settings)
    [problem] = caught.value.problems
    assert (problem.file, problem.line, problem.field) == (project.settings, 18,
                                                          "smtp.security")
    assert "unencrypted to mail.example.com" in problem.what
    monkeypatch.setenv("NEWSLETTER_SMTP__SECURITY", "starttls")
    assert load_settings(project.settings).smtp.security == "starttls"
    monkeypatch.setenv("NEWSLETTER_SMTP__SECURITY", "none")
    monkeypatch.setenv("NEWSLETTER_SMTP__HOST", "127.0.0.1")  # loopback: nothing on a wire
    assert load_settings(project.settings).smtp.username == "me"


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "Infinity"])
@pytest.mark.parametrize("key", ["DELIVERY__RATE_LIMIT", "DELIVERY__RETRY_BACKOFF",
                                 "SMTP__RATE_LIMIT_PER_CONNECTION", "SMTP__TIMEOUT",
                                 "ARTICLES__FEED_TIMEOUT"])
def test_no_float_setting_takes_nan_or_infinity(
        project: Project, monkeypatch: pytest.MonkeyPatch, key: str, value: str) -> None:
    monkeypatch.setenv(f"NEWSLETTER_{key}", value)
    with pytest.raises(ConfigError, match=f"NEWSLETTER_{key} "):
        load_settings(project.settings)


# --- .env is blamed for what it holds -------------------------------------------------

@pytest.mark.parametrize(("line", "expected"), [
    ("NEWSLETTER_SMTP__PROT=25", ".env:2: NEWSLETTER_SMTP__PROT: unknown setting"),
    ("NEWSLETTER_BOGUS=1", ".env:2: NEWSLETTER_BOGUS: unknown setting — name a section"),
    ("NEWSLETTER_SMTP__PORT=abc", ".env:2: NEWSLETTER_SMTP__PORT: Input should be a valid "
                                  "integer"),
    ("newsletter_smtp__port=abc", ".env:2: newsletter_smtp__port: Input should be a valid"),
    ('export NEWSLETTER_DKIM__SELECTOR="a\\rb"', ".env:2: NEWSLETTER_DKIM__SELECTOR: "
                                                 "contains a control character"),
    ("NEWSLETTER_CONFIG=other.yaml", ".env:2: NEWSLETTER_CONFIG: only the environment can "
                                     "choose the settings file"),
    # A key the YAML file does not have: the file has no line to blame.
    ("NEWSLETTER_SERVE__PORT=0", ".env:2: NEWSLETTER_SERVE__PORT: Input should be greater"),
    ('NEWSLETTER_SMTP={"port": "x"}', ".env:2: smtp.port in NEWSLETTER_SMTP: Input should"),
])
def test_a_bad_dotenv_line_is_blamed_on_dotenv(project: Project, line: str,
                                               expected: str) -> None:
    (project.root / ".env").write_text(f"# local secrets\n{line}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(project.settings)
    [message] = str(caught.value).splitlines()
    assert message.startswith(expected), message
    assert "newsletter.yaml" not in message


# --- the CLI: one line, exit 2, no traceback, no secret ---------------------------------

SECRET = "s3cr3t-Value-0f-the-User"
BASE64_KEY = "MIICdgIBADANBgkqhkiG9w0BAQEFAASCAmAwggJcAgEAAoGBAL" + SECRET + "x" * 800


@dataclass
class Case:
    args: tuple[str, ...]
    expect: str
    env: dict[str, str] = field(default_factory=dict)
    dotenv: str | None = None
    secret: str | None = None


CASES = {
    "compose --date 0001-01-01": Case(
        ("compose", "--date", "0001-01-01"),
        "Invalid value for '--date': 0001-01-01 is out of range"),
    "compose --date 9999-12-31": Case(
        ("compose", "--date", "9999-12-31"),
        "Invalid value for '--date': 9999-12-31 is out of range"),
    "preview --date 9999-12-31": Case(("preview", "--date", "9999-12-31"), "out of range"),
    "send --date 0001-01-01": Case(("send", "--date", "0001-01-01"), "out of range"),
    "status --date 0001-01-01": Case(("status", "--date", "0001-01-01"), "out of range"),
    "send --wait nan": Case((*SEND, "--wait", "nan"), "Invalid value for '--wait': 'nan'"),
    "send --wait inf": Case((*SEND, "--wait", "inf"), "Invalid value for '--wait': 'inf'"),
    "send --wait -5": Case((*SEND, "--wait", "-5"), "Invalid value for '--wait': '-5'"),
    "send --wait 1e400": Case((*SEND, "--wait", "1e400"), "'1e400' is not a number of"),
    "send --wait soon": Case((*SEND, "--wait", "soon"), "'soon' is not a number of seconds"),
    "NEWSLETTER_SMTP is malformed JSON": Case(
        SEND, "error: NEWSLETTER_SMTP (environment): not valid JSON",
        env={"NEWSLETTER_SMTP": '{"password": "' + SECRET}, secret=SECRET),
    "NEWSLETTER_ARTICLES__FEEDS is malformed JSON": Case(
        SEND, "error: NEWSLETTER_ARTICLES__FEEDS (environment): not valid JSON",
        env={"NEWSLETTER_ARTICLES__FEEDS": "[https://a.example/feed"}),
    "NEWSLETTER_SMTP in .env is malformed JSON": Case(
        SEND, "error: .env:1: NEWSLETTER_SMTP: not valid JSON",
        dotenv=f"NEWSLETTER_SMTP={{'password': '{SECRET}'}}\n", secret=SECRET),
    "an unknown key in .env": Case(
        SEND, "error: .env:2: NEWSLETTER_SMTP__PROT: unknown setting",
        dotenv="NEWSLETTER_SMTP__PASSWORD=" + SECRET + "\nNEWSLETTER_SMTP__PROT=25\n",
        secret=SECRET),
    ".env is not UTF-8": Case(
        SEND, "error: .env:2: not UTF-8 text — save it as UTF-8",
        dotenv="# Zoë's settings\nNEWSLETTER_SMTP__HOST=caf\udce9\n"),
    "a list variable is not JSON": Case(
        SEND, 'error: NEWSLETTER_ARTICLES__PATHS (environment): not valid JSON (Expecting '
              'value at line 1 column 1) — write the list as JSON, e.g. ["articles"',
        env={"NEWSLETTER_ARTICLES__PATHS": "articles"}),
    "a bad value in .env": Case(
        SEND, "error: .env:1: NEWSLETTER_SMTP__PORT: Input should be a valid integer",
        dotenv="NEWSLETTER_SMTP__PORT=twenty-five\n"),
    "a DKIM key without its BEGIN line": Case(
        SEND, "error: dkim.private_key: the DKIM private key is neither a PEM key nor",
        env={"NEWSLETTER_DKIM__DOMAIN": "example.com", "NEWSLETTER_DKIM__SELECTOR": "s1",
             "NEWSLETTER_DKIM__PRIVATE_KEY": BASE64_KEY}, secret=SECRET),
    "a DKIM key that is a broken PEM": Case(
        SEND, "error: NEWSLETTER_DKIM__PRIVATE_KEY: dkim.private_key: the DKIM private key "
              "is not an unencrypted PEM key",
        dotenv=f'NEWSLETTER_DKIM__PRIVATE_KEY="-----BEGIN PRIVATE KEY-----\\n{SECRET}\\n'
               '-----END PRIVATE KEY-----"\nNEWSLETTER_DKIM__DOMAIN=example.com\n'
               "NEWSLETTER_DKIM__SELECTOR=s1\n", secret=SECRET),
    "AUTH in the clear to a relay": Case(
        SEND, "error: config/newsletter.yaml:18: smtp.security: would send the password "
              "unencrypted to smtp.example.net",
        env={"NEWSLETTER_SMTP__USERNAME": "me", "NEWSLETTER_SMTP__PASSWORD": SECRET,
             "NEWSLETTER_SMTP__HOST": "smtp.example.net"}, secret=SECRET),
    "CRLF in the sender from the environment": Case(
        SEND, "error: NEWSLETTER_NEWSLETTER__SENDER (environment): contains a control",
        env={"NEWSLETTER_NEWSLETTER__SENDER": "Brief <brief@example.com>" + INJECTED}),
}


@pytest.mark.parametrize("name", CASES)
def test_a_mistake_is_one_error_line_and_exit_2(project: Project, name: str) -> None:
    case = CASES[name]
    if case.dotenv is not None:  # a lone surrogate stands for a byte that is not UTF-8
        (project.root / ".env").write_bytes(case.dotenv.encode("utf-8", "surrogateescape"))
    result = project.run(*case.args, env=case.env)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    errors = [line for line in result.stderr.splitlines() if line.lower().startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert case.expect in errors[0], errors[0]
    if case.secret is not None:
        assert case.secret not in output
    assert not list(project.outbox.rglob("*.eml"))
