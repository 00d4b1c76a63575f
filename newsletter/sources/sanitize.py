"""The one allow-list for article HTML from every source (Markdown, text pages, feeds).

Article markup is untrusted: it reaches every reader's mail and the public archive page.
nh3 (ammonia) does the cleaning; a second, lenient pass with the standard library's parser
lists what the author wrote that did not survive, so the publisher can be told which
article lost what.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import nh3

# Email-safe markup: text structure, tables, links and images; nothing that runs, styles,
# submits or embeds.
TAGS = frozenset({
    "p", "br", "hr", "a", "em", "strong", "b", "i", "u", "s", "del", "ins", "mark", "small",
    "sub", "sup", "code", "kbd", "samp", "var", "pre", "blockquote", "q", "cite", "abbr",
    "ul", "ol", "li", "dl", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6", "img", "figure",
    "figcaption", "table", "caption", "thead", "tbody", "tfoot", "tr", "th", "td",
})
ATTRIBUTES = {
    "a": {"href", "title"}, "img": {"src", "alt", "width", "height"}, "abbr": {"title"},
    "th": {"colspan", "rowspan"}, "td": {"colspan", "rowspan"},
}
URL_SCHEMES = frozenset({"http", "https", "mailto"})
_NUMERIC = frozenset({"width", "height", "colspan", "rowspan"})
# Dropped without a word: layout wrappers and attributes that only name or label things
# (Markdown writes `<div class="footnote">`, `id="fn:1"`, `class="language-py"`).
_QUIET_TAGS = frozenset({"div", "span", "section", "article", "header", "footer", "main"})
_QUIET_ATTRIBUTES = frozenset({"class", "id", "lang", "dir", "title", "align", "role",
                               "name", "start", "type", "scope", "valign"})
_QUIET_PREFIXES = ("aria-", "data-")
# Foreign content: the sanitiser drops these with everything inside them.
_FOREIGN = frozenset({"svg", "math"})

# A link whose href was refused: only its text stays (an <a> that goes nowhere is what
# `check` rightly calls an error). ammonia writes attributes in double quotes.
_A_WITHOUT_HREF = re.compile(r"<a(?:\s+(?:title|lang)=\"[^\"]*\")*>(.*?)</a>", re.DOTALL)
_EMPTY_PARAGRAPH = re.compile(r"<p>\s*</p>")
# Elements that are no phrasing content: an article with one is not bare text (a <p> around
# an <li> or <dd> would be closed by it).
_BLOCK = re.compile(r"<(?:p|ul|ol|dl|dt|dd|li|blockquote|pre|h[1-6]|figure|figcaption|hr"
                    r"|table|caption|thead|tbody|tfoot|tr|th|td)\b")
# Where bare text starts a new paragraph, or a tag as ammonia writes it.
_PARAGRAPH_OR_TAG = re.compile(r'(?P<brk>\n\s*\n|(?:<br>\s*){2,})'
                               r'|<(?P<end>/?)(?P<name>[a-zA-Z][a-zA-Z0-9]*)(?:[^>"]|"[^"]*")*>')
_ANY_TAG = re.compile(r"<(?!img\b)[^>]*>")
_EMPTY_ELEMENT = re.compile(r'<([a-z][a-z0-9]*)\b(?:[^>"]|"[^"]*")*></\1>')
_LINE_BREAKS = re.compile(r"\s*\n\s*")
# What browsers ignore in a URL before its scheme: C0 controls, spaces, tabs, newlines.
_URL_NOISE = re.compile(r"[\x00-\x20\x7f]+")
# C0 and C1 controls and the Unicode line separators: the text part would break the link
# in two where one stands (`str.splitlines`).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# lxml (libxml2), which premailer parses the mail with, stops reading at 256 levels of
# elements: deeper content would cut off the rest of the mail, its unsubscribe link too.
# The templates use a dozen; elements below this depth in an article are dropped, their
# text kept.
MAX_DEPTH = 64
# lxml also drops the rest of the document at a text node or attribute value of 10,000,000
# characters (libxml2's XML_MAX_TEXT_LENGTH), and both fit in a 10 MiB article or feed.
# Gmail clips a mail at 102 KB anyway: an article's HTML past this is cut (the sanitiser
# closes what the cut leaves open), a longer URL is none (RFC 9110 asks for 8,000 octets).
MAX_HTML = 1_000_000
MAX_URL = 8_000
_VOID = frozenset({"br", "hr", "img"})
# A tag as ammonia writes it: attribute values in double quotes, "<" escaped in text.
_TAG = re.compile(r'<(/?)([a-zA-Z][a-zA-Z0-9]*)(?:[^>"]|"[^"]*")*>')
_SURROGATE = re.compile("[\ud800-\udfff]")
# The templates' text column: an article image wider than this is scaled down to it, as
# Outlook for Windows sizes images by their width attribute alone (the CSS caps the rest).
IMAGE_WIDTH = 536
# ammonia escapes "<", ">" and '"' in attribute values and writes every one as name="value".
_IMG = re.compile(r"<img\b[^>]*>")
_ATTRIBUTE = re.compile(r'\s([a-zA-Z][a-zA-Z0-9-]*)="([^"]*)"')


@dataclass(frozen=True)
class Cleaned:
    """Email-safe HTML, and what was removed from the original (for a warning)."""

    html: str
    removed: tuple[str, ...] = ()


def sanitize_html(fragment: str, base_url: str | None) -> str:
    """Email-safe HTML: allowed tags only, links and image sources made absolute."""
    return clean_html(fragment, base_url).html


def clean_html(fragment: str, base_url: str | None) -> Cleaned:
    """`fragment` cleaned to the allow-list, with a list of what it lost, e.g.
    `("<script>", "onclick attribute", "javascript: link")`."""

    def keep(tag: str, attribute: str, value: str) -> str | None:
        if attribute in ("href", "src"):  # a malformed URL: drop the attribute, keep the text
            return absolute_url(value, base_url, mailto=attribute == "href")
        if attribute in _NUMERIC:
            return value if value.isdigit() else None
        return value

    # A lone surrogate (a YAML or JSON escape) is no character: nothing could encode it.
    fragment = without_surrogates(fragment)
    cut = len(fragment) > MAX_HTML
    if cut:
        fragment = fragment[:MAX_HTML]
    cleaned = nh3.clean(fragment, tags=set(TAGS), attributes=ATTRIBUTES,
                        attribute_filter=keep, url_schemes=set(URL_SCHEMES), link_rel=None,
                        strip_comments=True)
    cleaned, flattened = _flatten(cleaned)
    if "<img" in cleaned:
        cleaned = _IMG.sub(_image, cleaned)
    cleaned = _A_WITHOUT_HREF.sub(r"\1", cleaned)
    cleaned = _EMPTY_PARAGRAPH.sub("", cleaned).strip()
    if cleaned and not _BLOCK.search(cleaned):  # RSS descriptions are often bare text
        cleaned = _paragraphs(cleaned)
    if "<pre" not in cleaned:  # indentation left by the source's own markup, except in <pre>
        cleaned = _LINE_BREAKS.sub("\n", cleaned)
    found = _Inventory(base_url)
    try:
        found.feed(fragment)
        found.close()
    except (AssertionError, ValueError):  # the inventory is a report; the cleaning stands
        pass
    if cut:
        found.removed.setdefault(f"everything after its first {MAX_HTML:,} characters (cut)")
    if flattened:
        found.removed.setdefault(f"elements nested deeper than {MAX_DEPTH} levels")
    return Cleaned(cleaned, tuple(item for item in found.removed if item))


def without_surrogates(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD (as a decoder would)."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def _image(img: re.Match[str]) -> str:
    """An `<img>` as mail can show it: none without a source; at most `IMAGE_WIDTH` wide,
    its height scaled with it; and always with an `alt` (`check` refuses an issue with an
    image without one, and an article's author must not decide whether an issue goes out:
    `alt=""` is the right value for an image whose meaning is unknown)."""
    attributes = dict(_ATTRIBUTE.findall(img.group()))
    if "src" not in attributes:
        return ""
    width = int(attributes.get("width", "0"))
    if width > IMAGE_WIDTH:
        attributes["width"] = str(IMAGE_WIDTH)
        if "height" in attributes:
            attributes["height"] = str(max(1, round(int(attributes["height"]) * IMAGE_WIDTH
                                                     / width)))
    attributes.setdefault("alt", "")
    return "<img" + "".join(f' {name}="{value}"' for name, value in attributes.items()) + ">"


def _paragraphs(bare: str) -> str:
    """Bare text (ammonia's balanced output without block elements) as paragraphs, split at
    blank lines and double `<br>`s. Markup open at a split is closed before it and opened
    again after it, so the paragraphs stay well-nested: a link over three paragraphs is
    three links, never one `<a>` around `</p><p>` that browsers stretch over the body."""
    paragraphs: list[str] = []
    current: list[str] = []
    open_tags: list[tuple[str, str]] = []  # (name, start tag as written)
    last = 0
    for piece in _PARAGRAPH_OR_TAG.finditer(bare):
        current.append(bare[last:piece.start()])
        last = piece.end()
        if piece.group("brk"):
            current.extend(f"</{name}>" for name, _ in reversed(open_tags))
            paragraphs.append("".join(current))
            current = [start for _, start in open_tags]
            continue
        current.append(piece.group())
        name = piece.group("name").lower()
        if piece.group("end"):
            if open_tags and open_tags[-1][0] == name:
                open_tags.pop()
        elif name not in _VOID:
            open_tags.append((name, piece.group()))
    current.append(bare[last:])
    paragraphs.append("".join(current))
    # Markup reopened just before its end tag is empty, and a paragraph of it none.
    kept = []
    for paragraph in paragraphs:
        while (emptied := _EMPTY_ELEMENT.sub("", paragraph)) != paragraph:
            paragraph = emptied
        if _ANY_TAG.sub("", paragraph).strip():
            kept.append(f"<p>{paragraph.strip()}</p>")
    return "\n".join(kept)


def _flatten(cleaned: str) -> tuple[str, bool]:
    """Ammonia's balanced output with the elements deeper than `MAX_DEPTH` dropped (their
    text stays), and whether there were any."""
    if cleaned.count("<") <= MAX_DEPTH:  # too few tags to nest that deep
        return cleaned, False
    out: list[str] = []
    depth = last = 0
    for tag in _TAG.finditer(cleaned):
        closing, name = tag.group(1), tag.group(2).lower()
        if closing:
            depth -= 1
        if depth >= MAX_DEPTH:
            out.append(cleaned[last:tag.start()])
            last = tag.end()
        if not closing and name not in _VOID:
            depth += 1
    if not out:
        return cleaned, False
    out.append(cleaned[last:])
    return "".join(out), True


def absolute_url(link: str | None, base: str | None, *, mailto: bool = False) -> str | None:
    """`link` made absolute against `base` if it is http(s) (or, with `mailto`, mailto:);
    otherwise None."""
    if not link or len(link) > MAX_URL:
        return None
    try:
        url = urljoin(base, link.strip()) if base else link.strip()
        parts = urlsplit(url)
    except ValueError:  # e.g. "http://[::1": a broken link is no link
        return None
    if _CONTROL.search(url):  # a control character: no link two programs read alike
        return None
    if parts.scheme in ("http", "https") and parts.netloc:
        return url
    return url if mailto and parts.scheme == "mailto" else None


def _url_problem(value: str, kind: str) -> str:
    """How a refused link or image source is named in the warning ('' to say nothing)."""
    bare = _URL_NOISE.sub("", value)
    if not bare or bare.startswith("#"):
        return ""  # an in-page anchor (a Markdown footnote): nothing a reader can follow
    scheme = re.match(r"([a-zA-Z][a-zA-Z0-9+.-]*):", bare)
    if scheme and scheme.group(1).lower() not in URL_SCHEMES:
        return f"{scheme.group(1).lower()}: {kind}"
    if scheme is None and not bare.startswith("//"):
        return f"relative {kind} {value.strip()[:60]!r}"
    return f"malformed {kind} {value.strip()[:60]!r}"


class _Inventory(HTMLParser):
    """Names what the allow-list will drop: elements, attributes, link schemes."""

    def __init__(self, base_url: str | None) -> None:
        super().__init__(convert_charrefs=True)
        self.base_url = base_url
        self.removed: dict[str, None] = {}
        self._foreign = 0  # depth inside <svg> or <math>, which go with all they hold

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, closed=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, closed=True)

    def handle_endtag(self, tag: str) -> None:
        if self._foreign and tag in _FOREIGN:
            self._foreign -= 1

    def _start(self, tag: str, attrs: list[tuple[str, str | None]], closed: bool) -> None:
        if tag in _FOREIGN or self._foreign:
            if not self._foreign:
                self.removed.setdefault(f"<{tag}> with its content")
            self._foreign += tag in _FOREIGN and not closed
            return
        kept = tag in TAGS
        if not kept and tag not in _QUIET_TAGS:
            self.removed.setdefault(f"<{tag}>")
        allowed = ATTRIBUTES.get(tag, set())
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.removed.setdefault(f"{name} attribute")
            elif not kept:
                continue  # the element's own removal says it
            elif name in ("href", "src") and name in allowed:
                if absolute_url(value, self.base_url, mailto=name == "href") is None:
                    self.removed.setdefault(_url_problem(value or "",
                                                         "link" if tag == "a" else "image"))
            elif (name not in allowed and name not in _QUIET_ATTRIBUTES
                  and not name.startswith(_QUIET_PREFIXES)):
                self.removed.setdefault(f"{name} attribute")
