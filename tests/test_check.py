"""`newsletter check` finds each problem inboxes punish, on deliberately broken templates."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

import newsletter.check as check_module
from newsletter.digest import compose_issue, load_inputs
from newsletter.dkim import DkimSigner, load_signer
from newsletter.render import Renderer
from newsletter.settings import load_settings
from tests.conftest import ISSUE_DATE, Project


def break_template(project: Project, name: str, old: str, new: str) -> None:
    path = project.templates / name
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


HTML = "digest.html"
PROBLEMS = {
    "relative link": (HTML, '<p class="dateline">', '<p><a href="/about">About</a></p>'
                      '<p class="dateline">', "error: relative link '/about'"),
    "empty link": (HTML, '<p class="dateline">', '<p><a href="">x</a></p><p class="dateline">',
                   "error: a link has an empty href"),
    "http link": (HTML, '<p class="dateline">', '<p><a href="http://example.com/x">x</a></p>'
                  '<p class="dateline">', "warning: link over plain http: http://example.com/x"),
    "image without alt": (HTML, 'alt="{{ lead.image_alt or lead.title }}" width="536"', "",
                          "error: image without alt text: https://news.example.com/img/"
                          "bridge.jpg"),
    "missing preheader": (HTML, "{{ issue.preheader }}</div>", "</div>",
                          "error: no preheader"),
    "overlong preheader": (HTML, "{{ issue.preheader }}</div>", "{{ issue.preheader * 5 }}</div>",
                           "warning: the preheader is"),
    "text part lost the lead": ("digest.txt", "{{ lead.title }}", "", "error: the plain-text "
                                "part lacks the lead, 'Harbour bridge reopens after repairs'"),
    "no unsubscribe link": (HTML, '<a href="{{ url }}">Unsubscribe</a>',
                            "", "error: the HTML has no unsubscribe link"),
    "too big for Gmail": (HTML, "</body>", "<p>{{ 'x' * 110000 }}</p></body>",
                          "error: the HTML is 1"),
}


@pytest.mark.parametrize("name", PROBLEMS)
def test_check_catches_the_problem_and_send_refuses(project: Project, name: str) -> None:
    template, old, new, expected = PROBLEMS[name]
    break_template(project, template, old, new)
    result = project.run("check", "--date", ISSUE_DATE)
    assert expected in result.stdout, result.stdout + result.stderr
    error = expected.startswith("error")
    assert result.returncode == (1 if error else 0)
    sent = project.run("send", "--date", ISSUE_DATE)
    if error:
        assert sent.returncode == 1 and "send it anyway with --force" in sent.stderr
        assert not list(project.outbox.rglob("*.eml"))
        forced = project.run("send", "--date", ISSUE_DATE, "--force")
        assert forced.returncode == 0 and len(list(project.outbox.rglob("*.eml"))) == 3
    else:
        assert sent.returncode == 0 and "warning: morning-brief/2026-11-24:" in sent.stderr


def test_a_long_subject_is_a_warning(project: Project) -> None:
    path = project.articles / "2026-11-24-bridge.md"
    path.write_text(path.read_text().replace(
        "title: Harbour bridge reopens after repairs",
        "title: Harbour bridge reopens after six long weeks of repairs to its gears and cabin"))
    result = project.run("check", "--date", ISSUE_DATE)
    assert result.returncode == 0 and "warning: the subject is 96 characters" in result.stdout


def test_the_bundled_templates_pass(project: Project) -> None:
    result = project.run("check", "--date", ISSUE_DATE)
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        "morning-brief/2026-11-24: 1 problem(s)",
        "  warning: no DKIM key is set: unsigned mail is often junked or refused (fine if your "
        "relay signs for you) — run `newsletter dkim keygen` and set dkim.domain, "
        "dkim.selector and dkim.private_key"]


def test_a_dkim_signature_that_does_not_verify_is_an_error(project: Project,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    assert project.run("dkim", "keygen", "--selector", "s1", "--bits", "1024").returncode == 0
    monkeypatch.setenv("NEWSLETTER_DKIM__DOMAIN", "example.com")
    monkeypatch.setenv("NEWSLETTER_DKIM__SELECTOR", "s1")
    monkeypatch.setenv("NEWSLETTER_DKIM__PRIVATE_KEY", "config/dkim/s1.pem")
    settings = load_settings(Path("config/newsletter.yaml"))
    inputs = load_inputs(settings)
    [lst] = inputs.roster.lists.values()
    rendered = Renderer(settings.templates, settings.newsletter).render(
        compose_issue(inputs, lst, dt.date(2026, 11, 24)))
    signer = load_signer(settings.dkim)
    now = dt.datetime(2026, 11, 24, 7, tzinfo=dt.UTC)
    assert check_module.check_issue(rendered, lst, settings, signer, now) == []

    class Tampering(DkimSigner):  # signs, then the message changes in transit
        def sign(self, message: bytes) -> bytes:
            return super().sign(message).replace(b"Subject: ", b"Subject: Re: ", 1)

    broken = Tampering(signer.domain, signer.selector, signer.key)
    findings = check_module.check_issue(rendered, lst, settings, broken, now)
    assert [str(f) for f in findings] == [
        "error: the DKIM signature does not verify — check dkim.domain, dkim.selector and "
        "the key"]


def test_an_unsubscribe_link_that_is_not_https_is_an_error(project: Project) -> None:
    project.settings.write_text(project.settings.read_text().replace(
        "base_url: https://news.example.com", "base_url: http://news.example.com"))
    result = project.run("check", "--date", ISSUE_DATE)
    assert result.returncode == 1
    assert ("error: the unsubscribe link is not https (http://news.example.com): mail clients "
            "offer one-click unsubscribe only for https links (RFC 8058) — set "
            "newsletter.base_url to the https address of `newsletter serve`") in result.stdout
    sent = project.run("send", "--date", ISSUE_DATE)
    assert sent.returncode == 1 and not list(project.outbox.rglob("*.eml"))


def test_no_dkim_key_is_a_warning_and_a_key_silences_it(project: Project) -> None:
    warning = "warning: no DKIM key is set"
    result = project.run("check", "--date", ISSUE_DATE)
    assert result.returncode == 0 and warning in result.stdout
    assert project.run("dkim", "keygen", "--selector", "s1", "--bits", "1024").returncode == 0
    signed = project.run("check", "--date", ISSUE_DATE, env={
        "NEWSLETTER_DKIM__DOMAIN": "example.com", "NEWSLETTER_DKIM__SELECTOR": "s1",
        "NEWSLETTER_DKIM__PRIVATE_KEY": "config/dkim/s1.pem"})
    assert signed.returncode == 0 and warning not in signed.stdout
    assert signed.stdout.strip() == "morning-brief/2026-11-24: no problems found"


@pytest.mark.parametrize("header", [
    "<https://news.example.com/unsubscribe?t={other}>, <mailto:u@example.com>",  # not hers
    "<https://news.example.com/unsubscribe?list=morning-brief&email=ada%40example.com>",
    "<mailto:u@example.com>",
    "",
])
def test_a_header_link_that_serve_would_refuse_is_an_error(header: str) -> None:
    from newsletter.unsubscribe import opaque_token

    secret = "s" * 40
    other = opaque_token(secret, "morning-brief", "linus@example.com")
    message = (f"List-Unsubscribe: {header.format(other=other)}\r\n\r\nbody\r\n").encode()
    [finding] = check_module._one_click(message, "https://news.example.com", secret,
                                        "morning-brief", "ada@example.com")
    assert str(finding) == ("error: the List-Unsubscribe header has no https link that "
                            "`newsletter serve` would accept for this reader")
    mine = opaque_token(secret, "morning-brief", "ada@example.com")
    good = f"List-Unsubscribe: <https://news.example.com/unsubscribe?t={mine}>\r\n\r\n".encode()
    assert check_module._one_click(good, "https://news.example.com", secret, "morning-brief",
                                   "ada@example.com") == []
