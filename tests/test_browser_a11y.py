"""The reader pages are accessible, checked in a real headless Chromium (issue 12): every
control has a name, the keyboard reaches each in order with a visible focus, text keeps a
4.5:1 contrast in the light and the dark scheme, touch targets are 24 px at least, and
the honeypot is neither reachable nor announced."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import axe_playwright_python
import pytest
from playwright.sync_api import Browser, Page

from newsletter.readers.tokens import preferences_url
from newsletter.secret import unsubscribe_secret
from newsletter.settings import load_settings
from tests.browser import Site, new_context
from tests.web_server import call

# The pages with a form, and every other kind of page a reader meets.
FORMS = ("subscribe", "subscribe-de", "confirm", "preferences")
PAGES = (*FORMS, "unknown-list", "altered-token")
PENDING = "pending@example.net"
ADDRESSES = itertools.count(1)
# axe-core (Deque's rules engine, MPL-2.0) as the axe-playwright-python wheel carries it:
# injected through the DevTools protocol, which the pages' CSP (no scripts) does not stop.
AXE = Path(axe_playwright_python.__file__).parent / "axe.min.js"
AXE_RUN = """axe.run(document, {runOnly: {type: 'tag', values: [
  'wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice']},
  resultTypes: ['violations']})"""

# Shared by the checks below: what counts as a control, and what is hidden from everyone.
JS_COMMON = """
const hidden = e => !!e.closest('[aria-hidden="true"]') || e.closest('[hidden]') ||
  getComputedStyle(e).visibility === 'hidden' || getComputedStyle(e).display === 'none';
const controls = () => [...document.querySelectorAll(
  'a[href], input:not([type=hidden]), select, textarea, button')]
  .filter(e => !hidden(e) && !e.disabled);
"""

NAMES_JS = JS_COMMON + """
() => controls().map(e => {
  const byIds = (e.getAttribute('aria-labelledby') || '').split(/\\s+/).filter(Boolean)
    .map(id => (document.getElementById(id) || {}).textContent || '').join(' ');
  const labels = [...(e.labels || [])].map(l => l.textContent).join(' ');
  const own = ['BUTTON', 'A'].includes(e.tagName) ? e.textContent : '';
  const name = (byIds || e.getAttribute('aria-label') || labels || own ||
                e.getAttribute('title') || '').trim();
  return {control: e.outerHTML.slice(0, 120), name};
})
"""

ORDER_JS = JS_COMMON + """
() => {
  const found = controls();
  found.forEach((e, i) => { e.dataset.a11yOrder = String(i); });
  const positive = [...document.querySelectorAll('[tabindex]')].filter(e => e.tabIndex > 0);
  return {count: found.length, positive: positive.map(e => e.outerHTML.slice(0, 80))};
}
"""

# The colour maths of WCAG 2.x: relative luminance of sRGB colours, alpha composited.
COLOUR_JS = """
const rgba = c => {
  const m = c.match(/rgba?\\(([^)]+)\\)/);
  if (!m) throw new Error('unparsed colour ' + c);
  const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
  return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
};
const over = (top, bottom) => top.slice(0, 3).map((v, i) => v * top[3] + bottom[i] * (1 - top[3]))
  .concat([1]);
const canvas = () => matchMedia('(prefers-color-scheme: dark)').matches &&
  getComputedStyle(document.documentElement).colorScheme.includes('dark')
  ? [18, 18, 18, 1] : [255, 255, 255, 1];
const background = e => {
  const layers = [];
  for (let n = e; n && n.nodeType === 1; n = n.parentElement) {
    const c = rgba(getComputedStyle(n).backgroundColor);
    if (c[3] > 0) layers.push(c);
    if (c[3] >= 1) break;
  }
  return layers.reverse().reduce((under, layer) => over(layer, under), canvas());
};
const luminance = c => {
  const [r, g, b] = c.slice(0, 3).map(v => {
    v /= 255; return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
};
const ratio = (a, b) => {
  const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p);
  return (x + 0.05) / (y + 0.05);
};
"""

CONTRAST_JS = JS_COMMON + COLOUR_JS + """
() => {
  const out = [];
  for (const e of document.body.querySelectorAll('*')) {
    const own = [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    const field = ['INPUT', 'SELECT', 'TEXTAREA', 'BUTTON'].includes(e.tagName) &&
      !['checkbox', 'radio'].includes(e.type);
    if (!(own || field) || hidden(e) || e.closest('.trap')) continue;
    const rect = e.getBoundingClientRect();
    if (rect.width === 0 || rect.height === 0) continue;
    const bg = background(e);
    const fg = over(rgba(getComputedStyle(e).color), bg);
    out.push({element: e.tagName.toLowerCase() + (e.className ? '.' + e.className : ''),
              text: (e.value || e.textContent || '').trim().slice(0, 40),
              ratio: ratio(fg, bg)});
  }
  return out;
}
"""

FOCUS_JS = COLOUR_JS + """
() => {
  const e = document.activeElement;
  const s = getComputedStyle(e);
  const outline = s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2;
  const shadow = s.boxShadow !== 'none';
  return {order: e.dataset.a11yOrder ?? null, tag: e.outerHTML.slice(0, 100),
          visible: outline || shadow,
          contrast: outline ? ratio(over(rgba(s.outlineColor), background(e.parentElement)),
                                    background(e.parentElement)) : null};
}
"""

TARGETS_JS = JS_COMMON + """
() => controls().filter(e => !(e.tagName === 'A' && e.closest('p'))).map(e => {
  // A checkbox's label is part of its target: a tap on the label ticks it.
  const rects = [e, ...(e.labels || [])].map(n => n.getBoundingClientRect());
  return {control: e.outerHTML.slice(0, 100),
          width: Math.max(...rects.map(r => r.width)),
          height: Math.max(...rects.map(r => r.height))};
})
"""


@pytest.fixture(scope="module")
def urls(shared_reader_site: Site) -> dict[str, str]:
    """A URL of each page: a pending reader's confirmation (signed up over HTTP, the link
    taken from the mail), a file reader's preferences."""
    site = shared_reader_site
    form = call(site.url("/subscribe/morning-brief"))
    token = re.search(r'name="form" value="([^"]+)"', form.body)
    assert form.status == 200 and token, form.body[:300]
    posted = call(site.url("/subscribe/morning-brief"), "POST",
                  urlencode({"email": PENDING, "form": token.group(1)}).encode())
    assert posted.status == 200, posted.body[:300]
    confirm = site.confirmation_link(PENDING)
    secret = unsubscribe_secret(load_settings(site.project.settings))
    return {
        "subscribe": site.url("/subscribe/morning-brief"),
        "subscribe-de": site.url("/subscribe/morgen"),
        "confirm": confirm,
        "preferences": preferences_url(site.base, "morning-brief", "ada@example.com", secret),
        "unknown-list": site.url("/subscribe/no-such-list"),
        "altered-token": confirm[:-4] + ("AAAA" if not confirm.endswith("AAAA") else "BBBB"),
    }


@pytest.fixture(params=["light", "dark"])
def scheme_page(request: pytest.FixtureRequest, chromium: Browser,
                browser_device: str) -> Iterator[Page]:
    context = new_context(chromium, browser_device, color_scheme=request.param)
    try:
        yield context.new_page()
    finally:
        context.close()


def _open(page: Page, url: str, *, form: bool = False) -> None:
    answer = page.goto(url)
    assert answer is not None
    if form:
        assert answer.status == 200, f"{url}: {answer.status}"
    else:
        assert answer.status in (200, 400, 404, 410), f"{url}: {answer.status}"


@pytest.mark.parametrize("name", FORMS)
def test_every_control_has_an_accessible_name(web_page: Page, urls: dict[str, str],
                                              name: str) -> None:
    _open(web_page, urls[name], form=True)
    found: list[dict[str, Any]] = web_page.evaluate(NAMES_JS)
    assert any(c["control"].startswith(("<button", "<input")) for c in found)
    unnamed = [c["control"] for c in found if not c["name"]]
    assert not unnamed, f"{name}: controls without a name: {unnamed}"


@pytest.mark.parametrize("name", FORMS)
def test_tab_reaches_every_control_in_order_with_a_visible_focus(
        web_page: Page, urls: dict[str, str], name: str) -> None:
    _open(web_page, urls[name], form=True)
    order: dict[str, Any] = web_page.evaluate(ORDER_JS)
    assert not order["positive"], f"{name}: a positive tabindex reorders the page"
    assert order["count"] > 0
    for expected in range(order["count"]):
        web_page.keyboard.press("Tab")
        focus: dict[str, Any] = web_page.evaluate(FOCUS_JS)
        assert focus["order"] == str(expected), (
            f"{name}: Tab {expected + 1} reached {focus['tag']}, not control {expected}")
        assert focus["visible"], f"{name}: no visible focus on {focus['tag']}"
        assert focus["contrast"] is None or focus["contrast"] >= 3, (
            f"{name}: the focus outline of {focus['tag']} has {focus['contrast']:.2f}:1")


@pytest.mark.parametrize("name", PAGES)
def test_text_has_a_contrast_of_4_5_to_1_in_both_schemes(
        scheme_page: Page, urls: dict[str, str], name: str) -> None:
    _open(scheme_page, urls[name])
    poor = poor_contrast(scheme_page)
    assert not poor, f"{name}: text below 4.5:1: {poor}"


@pytest.mark.parametrize("name", FORMS)
def test_touch_targets_are_24_px_at_least_on_a_phone(
        chromium: Browser, urls: dict[str, str], name: str) -> None:
    context = new_context(chromium, "phone")
    try:
        page = context.new_page()
        _open(page, urls[name], form=True)
        small = [f"{t['control']}: {t['width']:.0f}×{t['height']:.0f}"
                 for t in page.evaluate(TARGETS_JS) if min(t["width"], t["height"]) < 24]
        assert not small, f"{name}: touch targets under 24 px: {small}"
    finally:
        context.close()


def test_the_honeypot_is_neither_reachable_nor_announced(
        web_page: Page, urls: dict[str, str]) -> None:
    _open(web_page, urls["subscribe"], form=True)
    trap = web_page.locator('input[name="website"]')
    assert trap.count() == 1, "the sign-up form has no honeypot field"
    assert trap.evaluate("e => e.tabIndex") == -1, "Tab reaches the honeypot"
    assert trap.evaluate("e => !!e.closest('[aria-hidden=\"true\"]')"), (
        "the honeypot is announced to screen readers (no aria-hidden)")
    assert trap.evaluate("e => e.autocomplete") == "off", "browsers would fill the honeypot"
    # Nor does any role or name of it reach the accessibility tree.
    tree = web_page.locator("body").aria_snapshot()
    assert "website" not in tree.lower()


def axe_violations(page: Page) -> list[str]:
    page.evaluate(AXE.read_text(encoding="utf-8"))
    result: dict[str, Any] = page.evaluate(AXE_RUN)
    return [f"{v['id']} ({v['impact']}): {v['help']} — "
            + "; ".join(n["html"][:80] for n in v["nodes"][:3]) for v in result["violations"]]


def poor_contrast(page: Page) -> list[str]:
    found: list[dict[str, Any]] = page.evaluate(CONTRAST_JS)
    assert found, f"{page.url}: no text found"
    return [f"{c['element']} {c['text']!r}: {c['ratio']:.2f}:1" for c in found
            if c["ratio"] < 4.5]


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("name", PAGES)
def test_axe_core_finds_no_violation_in_either_scheme(
        chromium: Browser, urls: dict[str, str], name: str, scheme: str) -> None:
    # On the phone only: axe's rules read the DOM and the styles, and the one that
    # depends on the viewport (target size) matters there.
    context = new_context(chromium, "phone", color_scheme=scheme)
    try:
        page = context.new_page()
        _open(page, urls[name])
        found = axe_violations(page)
        assert not found, f"{name}: axe-core: {found}"
    finally:
        context.close()


@pytest.mark.parametrize("after", ["signed-up", "saved"])
def test_the_pages_after_a_post_pass_too(
        scheme_page: Page, urls: dict[str, str], after: str) -> None:
    """What a reader sees after pressing a button: "check your inbox", "saved"."""
    page = scheme_page
    if after == "signed-up":
        _open(page, urls["subscribe"], form=True)
        # One address each: the site is shared, and an address may sign up 5 times an hour.
        page.get_by_label("Email address").fill(f"reader{next(ADDRESSES)}@example.net")
        button = page.get_by_role("button", name="Subscribe")
    else:
        _open(page, urls["preferences"], form=True)
        page.get_by_label("Name").fill("Ada King")
        button = page.get_by_role("button", name="Save preferences")
    with page.expect_navigation():
        button.click()
    assert not poor_contrast(page), f"{after}: text below 4.5:1: {poor_contrast(page)}"
    found = axe_violations(page)
    assert not found, f"{after}: axe-core: {found}"
