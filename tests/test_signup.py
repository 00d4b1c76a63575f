"""Sign-up with double opt-in over real HTTP: the form, the confirmation mail, the confirm
button, and the next `newsletter send` (the real CLI) mailing the new reader."""

from __future__ import annotations

import ast
import re
from email.header import decode_header, make_header
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from newsletter.readers.tokens import read_confirm_token, read_preferences_token
from newsletter.web import confirm, signup
from newsletter.web.mails import SUBJECTS
from newsletter.web.pages import BUILT_IN
from tests.conftest import ISSUE_DATE, Project
from tests.signup_site import (
    SECRET,
    Site,
    form_field,
    link_in,
    text_of,
)
from tests.web_server import call

NEXT_DAY = "2026-11-25"


def send(project: Project, date: str) -> str:
    if date != ISSUE_DATE:
        project.write(f"articles/{date}-next.md", f"---\ntitle: Next day\nsection: city\n"
                      f"published: {date}T05:00:00+00:00\n---\nNews.\n")
    result = project.run("send", "--date", date, env={"NEWSLETTER_UNSUBSCRIBE__SECRET": SECRET})
    assert result.returncode == 0, result.stderr
    return result.stdout


def issue_to(project: Project, email: str, date: str, list_id: str = "morning-brief") -> bool:
    return (project.outbox / "mail" / list_id / date / f"{email}.eml").exists()


def test_the_form_page_has_the_contract_fields(site: Site) -> None:
    page = site.form()
    assert page.status == 200 and page.headers["Cache-Control"] == "no-store"
    body = page.body
    for label in ("Email address", "Name", "Time zone"):
        assert re.search(rf"<label for=\"\w+\">{label}\b", body), label
    assert 'name="email"' in body and 'type="email"' in body and "required" in body
    assert "Subscribe</button>" in body and '<datalist id="zones">' in body
    assert "<fieldset>" not in body  # morning-brief has no sections: no topics to choose
    trap = re.search(r'<div class="trap" aria-hidden="true">.*?</div>', body, re.S)
    assert trap and 'name="website"' in trap.group() and 'tabindex="-1"' in trap.group()
    assert form_field(body)
    assert "<script" not in body


def test_a_german_list_gets_a_german_form_with_its_sections(site: Site) -> None:
    page = site.form("abendblatt")
    assert page.status == 200 and '<html lang="de">' in page.body
    for label in ("E-Mail-Adresse", "Zeitzone", "Abonnieren</button>", "<legend>Themen</legend>"):
        assert label in page.body
    assert re.findall(r'type="checkbox" name="topics" value="(\w+)"', page.body) == [
        "city", "culture"]


def test_sign_up_confirm_and_the_next_send_mails_the_new_reader(site: Site,
                                                                project: Project) -> None:
    answer = site.post(email="New.Reader@Example.COM", name="Nia Reader",
                       timezone="Europe/Paris")
    assert answer.status == 200 and "Check your inbox" in answer.body
    msg = site.mail("New.Reader@example.com")
    assert msg is not None
    assert msg["From"].addresses[0].addr_spec == "brief@example.com"
    assert msg["To"].addresses[0].display_name == ""  # a stranger may have typed it
    assert msg["Subject"] == "Please confirm your subscription to The Morning Brief"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert re.fullmatch(r"<confirm\.[0-9a-f]{24}@example\.com>", msg["Message-ID"])
    assert parsedate_to_datetime(msg["Date"]).tzinfo is not None
    text, html = text_of(msg)
    assert "Hello," in text and "48 hours" in text and "Confirm subscription" in html
    link = link_in(msg, "/confirm?token=")
    token = link.split("token=")[1]
    found = read_confirm_token(SECRET, token)
    assert found and (found.list_id, found.email) == ("morning-brief", "new.reader@example.com")

    row = site.row("new.reader@example.com")
    assert row and row.state == "pending" and row.timezone == "Europe/Paris"
    assert row.consent["source"] == "form" and "network" in row.consent
    assert "127.0.0.1" not in str(row.consent)  # the client's network, never its address
    send(project, ISSUE_DATE)
    assert issue_to(project, "ada@example.com", ISSUE_DATE)
    assert not issue_to(project, "New.Reader@example.com", ISSUE_DATE)  # pending: nothing

    page = call(site.local(link))  # what a link scanner does
    assert page.status == 200 and "Confirm subscription</button>" in page.body
    assert site.row("new.reader@example.com").state == "pending"  # type: ignore[union-attr]

    done = site.confirm(site.local(link))
    assert done.status == 200 and "You are subscribed" in done.body
    prefs = re.search(r'href="(https://news\.example\.com/preferences\?token=[\w-]+)"',
                      done.body)
    assert prefs and read_preferences_token(SECRET, prefs.group(1).split("token=")[1]) == (
        "morning-brief", "new.reader@example.com")
    row = site.row("new.reader@example.com")
    assert row and row.state == "confirmed" and row.nonce is None
    send(project, NEXT_DAY)
    assert issue_to(project, "New.Reader@example.com", NEXT_DAY)


def test_a_german_sign_up_keeps_known_topics_and_gets_a_german_mail(site: Site) -> None:
    answer = site.post("abendblatt", {"email": "leser@example.de", "name": "Lena",
                                      "topics": ["culture", "sport", "CITY"]})
    assert answer.status == 200 and "Posteingang" in answer.body
    site.settle()  # stored after the answer, by the background thread
    row = site.row("leser@example.de", "abendblatt")
    assert row and row.topics == ("city", "culture")  # "sport" is no section: left out
    msg = site.mail("leser@example.de", "abendblatt")
    assert msg and msg["Subject"] == "Bitte bestätigen Sie Ihr Abonnement von Das Abendblatt"
    text, _ = text_of(msg)
    assert "Hallo," in text and "48 Stunden" in text
    page = call(site.local(link_in(msg, "/confirm?token=")))
    assert '<html lang="de">' in page.body and "Abonnement bestätigen</button>" in page.body
    done = site.confirm(site.local(link_in(msg, "/confirm?token=")))
    assert done.status == 200 and "Sie sind angemeldet" in done.body


def test_a_single_opt_in_list_takes_the_reader_at_once(site: Site, project: Project) -> None:
    answer = site.post("open-door", email="walk.in@example.com")
    assert answer.status == 200 and "welcome message" in answer.body
    msg = site.mail("walk.in@example.com", "open-door")
    assert msg and msg["Subject"] == "Welcome to The Open Door"
    prefs = link_in(msg, "/preferences?token=")
    assert read_preferences_token(SECRET, prefs.split("token=")[1]) == (
        "open-door", "walk.in@example.com")
    row = site.row("walk.in@example.com", "open-door")
    assert row and row.state == "confirmed"
    send(project, ISSUE_DATE)
    assert issue_to(project, "walk.in@example.com", ISSUE_DATE, "open-door")


def test_a_filled_honeypot_is_answered_as_a_success_and_does_nothing(site: Site) -> None:
    real = site.post(email="person@example.com")
    bot = site.post(email="bot@example.com", website="https://spam.example")
    assert (bot.status, bot.body) == (real.status, real.body)
    site.settle()
    assert site.row("bot@example.com") is None and site.mail("bot@example.com") is None
    assert site.mail("person@example.com") is not None


@pytest.mark.parametrize(("fields", "message"), [
    ({"email": "not-an-address"}, "Enter your email address"),
    ({"email": ""}, "Enter your email address"),
    ({"email": "a@example.com", "timezone": "Mars/Olympus"}, "Choose a time zone"),
    ({"email": "a@example.com", "name": "x" * 201}, "at most 200 characters"),
])
def test_a_malformed_field_shows_the_form_again_with_a_400(site: Site, fields: dict,
                                                           message: str) -> None:
    answer = site.post(fields=fields)
    assert answer.status == 400 and message in answer.body
    assert 'aria-invalid="true"' in answer.body and "Subscribe</button>" in answer.body
    site.settle()
    assert site.row("a@example.com") is None


def test_typed_values_are_shown_again_as_text(site: Site) -> None:
    answer = site.post(email='"><script>alert(1)</script>', name="<b>Bold</b>")
    assert answer.status == 400
    assert "<script>alert" not in answer.body and "<b>Bold" not in answer.body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in answer.body
    assert 'value="&lt;b&gt;Bold&lt;/b&gt;"' in answer.body


@pytest.mark.parametrize("name", [
    "Eve\r\nBcc: victim@example.net",
    "Eve\nSubject: you won",
    "Eve\x00",
    "Eve \u202egnp.exe",  # a right-to-left override
    "Eve\u2028Bcc: x@example.net",
])
def test_a_name_with_line_breaks_or_controls_is_refused(site: Site, name: str) -> None:
    answer = site.post(email="eve@example.com", name=name)
    assert answer.status == 400 and "line breaks or control characters" in answer.body
    site.settle()
    assert site.row("eve@example.com") is None and site.mail("eve@example.com") is None


def test_a_hostile_name_is_text_in_the_mail_never_markup_or_a_header(site: Site) -> None:
    name = '<script>alert(1)</script> =?utf-8?q?Bcc=3A_x@example.net?= "Mallory"'
    assert site.post(email="mallory@example.com", name=f"  {name}\t ").status == 200
    # The confirmation shows none of it (a stranger may have typed it); once confirmed it
    # is the reader's name, and the next mail to them carries it.
    site.settle()
    assert "Mallory" not in site.mail_path("mallory@example.com").read_text()
    assert site.confirm(site.confirm_link("mallory@example.com")).status == 200
    site.clock.advance(3601)
    assert site.post(email="mallory@example.com").status == 200
    msg = site.mail("mallory@example.com")
    assert msg is not None and msg["Subject"].startswith("You are already subscribed")
    # decode_header: the stdlib's structured parser keeps the fold between two encoded words
    # as a space, which RFC 2047 says to drop.
    raw = re.search(rb"^To: (.*?)\r\n(?! )", site.mail_path("mallory@example.com")
                    .read_bytes(), re.M | re.S)
    assert raw and str(make_header(decode_header(raw.group(1).decode()))) == (
        f"{name} <mallory@example.com>")  # collapsed, and nothing else
    assert msg["To"].addresses[0].addr_spec == "mallory@example.com"
    assert msg["Bcc"] is None and len(msg.get_all("To") or []) == 1
    text, html = text_of(msg)
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert f"Hello {name}," in text
    assert site.row("mallory@example.com").name == name  # type: ignore[union-attr]


def test_an_unknown_list_is_404(site: Site) -> None:
    assert site.form("no-such-list").status == 404
    answer = site.post("no-such-list", email="a@example.com")
    assert answer.status == 404 and "no such newsletter" in answer.body
    site.settle()
    assert not (site.project.outbox / "confirmations").exists()


def test_every_string_of_the_sign_up_pages_and_mails_has_a_german_translation() -> None:
    catalog = read_po((BUILT_IN / "locale/de/LC_MESSAGES/messages.po").open("rb"))
    wanted = set(SUBJECTS.values()) | set(signup.ERRORS.values())
    for template in ("subscribe.html", "confirm.html", "confirm-mail.txt", "confirm-mail.html",
                     "welcome-mail.txt", "welcome-mail.html", "already-mail.txt",
                     "already-mail.html"):
        wanted |= set(re.findall(r'_\("([^"]+)"', (BUILT_IN / template).read_text("utf-8")))
    for module in (signup, confirm):  # note(list, status, TITLE, TEXT, (href, LINK TEXT))
        for node in ast.walk(ast.parse(Path(module.__file__).read_text("utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "note":
                wanted |= {a.value for a in node.args[2:4] if isinstance(a, ast.Constant)}
            elif isinstance(node, ast.FunctionDef) and node.name in ("again", "preferences"):
                wanted |= {e.value for r in ast.walk(node) if isinstance(r, ast.Tuple)
                           for e in r.elts[1:] if isinstance(e, ast.Constant)}
    assert len(wanted) > 40
    assert sorted(m for m in wanted if not (catalog.get(m) and catalog[m].string)) == []
