"""The reader's whole path in a real headless Chromium, at 375 px and at 1280 px (issue 12):
sign up → confirmation mail → Confirm → preferences → the next `newsletter send`."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, Request, expect

from newsletter.readers.store import ReaderRow
from tests.browser import DEVICES, Site, body_html, body_text, new_context

READER = "reader@example.net"
# What the German pages say (newsletter/web/templates/locale/de/LC_MESSAGES/messages.po).
GERMAN = {"email": "E-Mail-Adresse", "topics": "Themen", "subscribe": "Abonnieren",
          "confirm": "Abonnement bestätigen"}


class Recorder:
    """Every request a page makes; the reader pages load nothing but themselves."""

    def __init__(self, context: BrowserContext) -> None:
        self.requests: list[Request] = []
        context.on("request", self._seen)

    def _seen(self, request: Request) -> None:
        self.requests.append(request)

    def assert_documents_only(self) -> None:
        others = [f"{r.resource_type} {r.url}" for r in self.requests
                  if r.resource_type != "document"]
        assert not others, f"the page loaded more than itself: {others}"


@pytest.fixture
def context(chromium: Browser, browser_device: str) -> Iterator[BrowserContext]:
    context = new_context(chromium, browser_device, color_scheme="light")
    try:
        yield context
    finally:
        context.close()


def reader(site: Site, list_id: str, address: str = READER) -> ReaderRow | None:
    return site.reader(list_id, address)


def assert_fits(page: Page, device: str) -> None:
    """No horizontal scrolling: the page is no wider than the phone's screen."""
    width = DEVICES[device]["viewport"]["width"]
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"{page.url}: {scroll} px wide on a {width} px screen"


def choose_time_zone(control: Locator, zone: str) -> None:
    """A <select> of zones or a text field (with a datalist): whichever the page has."""
    if control.evaluate("e => e.tagName") == "SELECT":
        control.select_option(zone)
    else:
        control.fill(zone)


def topic(page: Page, name: str) -> Locator:
    return page.get_by_role("group", name="Topics").get_by_label(re.compile(name, re.I))


def sign_up(page: Page, site: Site, device: str, address: str = READER) -> None:
    """Fill the sign-up form by its labels and submit it; lands on "check your inbox"."""
    page.goto(site.url("/subscribe/morning-brief"))
    assert_fits(page, device)
    page.get_by_label("Email address").fill(address)
    page.get_by_label("Name").fill("Rosalind <b>Franklin</b>")
    topic(page, "city").check()
    choose_time_zone(page.get_by_label("Time zone"), "Europe/Paris")
    with page.expect_navigation():
        page.get_by_role("button", name="Subscribe").click()
    expect(page.locator("body")).to_contain_text(re.compile("inbox", re.I))
    assert_fits(page, device)


def confirm(page: Page, site: Site, device: str, address: str = READER) -> str:
    """Open the mail's link, press Confirm; returns the preference page's URL."""
    page.goto(site.confirmation_link(address))
    assert_fits(page, device)
    button = page.get_by_role("button", name="Confirm subscription")
    expect(button).to_be_visible()
    # Opening the link (as a mail scanner does) confirms nothing: only the POST does.
    row = reader(site, "morning-brief", address)
    assert row is not None and row.state == "pending"
    with page.expect_navigation():
        button.click()
    expect(page.locator("body")).to_contain_text("You are subscribed")
    assert_fits(page, device)
    row = reader(site, "morning-brief", address)
    assert row is not None and row.state == "confirmed"
    link = page.locator('a[href*="/preferences?token="]')
    expect(link).to_have_count(1)
    return site.local(str(link.get_attribute("href")))


def save(page: Page, button: str = "Save preferences") -> None:
    with page.expect_navigation():
        page.get_by_role("button", name=button).click()


def test_sign_up_confirm_choose_and_get_the_next_issue(
        context: BrowserContext, reader_site: Site, browser_device: str) -> None:
    site, device = reader_site, browser_device
    page = context.new_page()
    recorder = Recorder(context)
    sign_up(page, site, device)
    [mail] = site.mails_to(READER)
    # The name typed is a stranger's text until the address's owner confirms: the
    # confirmation greets nobody by it (it is stored, and shown on their own page).
    assert "Hello," in body_text(mail)
    assert "Rosalind" not in body_text(mail) and "Rosalind" not in body_html(mail)
    assert "Rosalind" not in str(mail["To"])
    preferences = confirm(page, site, device)

    page.goto(preferences)
    assert_fits(page, device)
    expect(page.get_by_label("Name")).to_have_value("Rosalind <b>Franklin</b>")
    expect(topic(page, "city")).to_be_checked()
    topic(page, "city").uncheck()
    topic(page, "culture").check()
    choose_time_zone(page.get_by_label("Time zone"), "America/New_York")
    page.get_by_label("Pause").select_option("2")
    save(page)
    expect(page.locator("body")).to_contain_text("next issue")
    assert_fits(page, device)
    row = reader(site, "morning-brief")
    assert row is not None and row.topics == ("culture",)
    assert row.timezone == "America/New_York" and row.paused_until is not None

    # Paused: the next send passes them by.
    site.send()
    assert site.issue_to(READER) is None, "a paused reader got the issue"

    page.goto(preferences)
    page.get_by_label("Pause").select_option("0")
    save(page)
    expect(page.locator("body")).to_contain_text("next issue")
    row = reader(site, "morning-brief")
    assert row is not None and row.paused_until is None

    site.send()
    issue = site.issue_to(READER)
    assert issue is not None, "the reader got no issue after unpausing"
    text = body_text(issue)
    assert "Museum opens a gallery of ship models" in text  # culture: their topic
    assert "Harbour bridge reopens" not in text  # city: no longer theirs
    # The issue's own link opens their preferences as they left them.
    [link] = set(re.findall(r"https?://\S+/preferences\?token=[\w-]+", text))
    page.goto(site.local(link))
    expect(topic(page, "culture")).to_be_checked()
    expect(topic(page, "city")).not_to_be_checked()
    expect(page.get_by_label("Time zone")).to_have_value("America/New_York")
    recorder.assert_documents_only()


def test_leaving_from_the_preference_page_stops_the_next_issue(
        context: BrowserContext, reader_site: Site, browser_device: str) -> None:
    site, device = reader_site, browser_device
    page = context.new_page()
    sign_up(page, site, device)
    preferences = confirm(page, site, device)
    page.goto(preferences)
    save(page, "Unsubscribe")
    assert_fits(page, device)
    site.send()
    assert site.issue_to(READER) is None, "a reader who left got the issue"
    assert site.issue_to("ada@example.com") is not None  # the send did run


def test_a_german_list_gets_german_pages(
        context: BrowserContext, reader_site: Site, browser_device: str) -> None:
    site, device = reader_site, browser_device
    page = context.new_page()
    page.goto(site.url("/subscribe/morgen"))
    expect(page.locator("html")).to_have_attribute("lang", "de")
    expect(page.get_by_role("button", name="Subscribe", exact=True)).to_have_count(0)
    page.get_by_label(GERMAN["email"]).fill(READER)
    page.get_by_role("group", name=GERMAN["topics"]).get_by_label(
        re.compile("culture", re.I)).check()
    assert_fits(page, device)
    with page.expect_navigation():
        page.get_by_role("button", name=GERMAN["subscribe"]).click()
    expect(page.locator("html")).to_have_attribute("lang", "de")
    assert_fits(page, device)

    page.goto(site.confirmation_link(READER))
    expect(page.locator("html")).to_have_attribute("lang", "de")
    with page.expect_navigation():
        page.get_by_role("button", name=GERMAN["confirm"]).click()
    expect(page.locator("html")).to_have_attribute("lang", "de")
    row = reader(site, "morgen")
    assert row is not None and row.state == "confirmed" and row.topics == ("culture",)
    assert reader(site, "morning-brief") is None  # the other list is not theirs


def test_with_images_off_the_form_is_the_same_and_nothing_else_loads(
        chromium: Browser, reader_site: Site, browser_device: str) -> None:
    context = new_context(chromium, browser_device)
    try:
        context.route(re.compile(r".*"), lambda route: route.abort()
                      if route.request.resource_type == "image" else route.continue_())
        recorder = Recorder(context)
        page = context.new_page()
        page.goto(reader_site.url("/subscribe/morning-brief"))
        for label in ("Email address", "Name", "Time zone"):
            expect(page.get_by_label(label)).to_be_visible()
        expect(page.get_by_role("group", name="Topics")).to_be_visible()
        expect(page.get_by_role("button", name="Subscribe")).to_be_visible()
        page.evaluate("document.fonts.ready")
        recorder.assert_documents_only()
        assert len(recorder.requests) == 1
    finally:
        context.close()
