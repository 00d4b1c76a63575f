"""Render an issue through the Jinja2 templates and inline its CSS, once per issue.

Personal fields (`subscriber.name`, `.first_name`, `.email`, `.unsubscribe_url`,
`.preferences_url`) are not
known while rendering: the templates see letters-and-digits sentinels in their place,
which survive premailer untouched. The result is split at those sentinels, so each
subscriber's copy is a cheap join (`PersonalTemplate.fill`) with no Jinja and no premailer.

Article and feed text is printed in the same pass, so a fixed sentinel could be forged by
any author (and get readers' addresses spliced into their markup). Each render therefore
draws a random nonce that no content can know in advance, and the output is split only
when its sentinels are exactly the slots the templates printed, in order (`_split`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import logging
import re
import secrets
import textwrap
import traceback
from collections.abc import Callable
from dataclasses import dataclass, fields
from io import BytesIO
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import babel.dates
import jinja2
from babel import Locale, UnknownLocaleError
from babel.messages.catalog import Catalog, Message
from babel.messages.mofile import write_mo
from babel.messages.pofile import PoFileError, read_po
from babel.support import NullTranslations, Translations
from markupsafe import Markup
from premailer import Premailer

from newsletter.errors import ConfigError, NewsletterError, Problem, TemplateError
from newsletter.links import tag_url
from newsletter.models import Article, Issue
from newsletter.settings import LinksSection, NewsletterSection, Settings

HTML_TEMPLATE = "digest.html"
TEXT_TEMPLATE = "digest.txt"
CATALOG = "locale/{name}/LC_MESSAGES/messages.po"  # under the template folder
PREHEADER_LENGTH = 140
# 10 random bytes, 16 characters of base32 (A-Z, 2-7): letters and digits survive
# premailer (which URL-encodes anything else in an href) and `| upper`.
_NONCE_BYTES = 10
_RENDER_TRIES = 2  # a second nonce, should content ever hold the first (odds 2**-80)
_PLACEHOLDER = re.compile(r"%\((\w+)\)")
# A lone surrogate (a YAML or JSON escape in content) cannot be encoded: lxml drops the
# rest of the document at one, and the message could not be written.
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class PersonalFields:
    """What differs between two subscribers' copies of the same issue."""

    email: str
    unsubscribe_url: str
    name: str = ""
    # The reader's preference page (topics, time zone, pause, name, leave).
    preferences_url: str = ""

    @property
    def first_name(self) -> str:
        return self.name.split()[0] if self.name.split() else ""


PERSONAL_FIELDS = (*(f.name for f in fields(PersonalFields)), "first_name")


@dataclass(frozen=True)
class PersonalTemplate:
    """A rendered part cut at its personal fields: literal, slot, literal, …, literal."""

    literals: tuple[str, ...]
    slots: tuple[tuple[str, str], ...]  # (field name, default when the field is empty)
    escape_html: bool

    def fill(self, personal: PersonalFields) -> str:
        """This part as one subscriber reads it."""
        out = [self.literals[0]]
        for (name, default), literal in zip(self.slots, self.literals[1:], strict=True):
            value = getattr(personal, name) or default
            out.append(html.escape(value) if self.escape_html else value)
            out.append(literal)
        return "".join(out)


@dataclass(frozen=True)
class RenderedIssue:
    """An issue rendered and inlined once, ready to be personalised per subscriber."""

    issue: Issue
    subject: str
    preheader: str
    html: PersonalTemplate
    text: PersonalTemplate


@dataclass(frozen=True)
class _Localised:
    """The templates set up for one locale: its Jinja environment carries its translations
    and date filters, so switching locale is a dictionary lookup."""

    locale: Locale
    env: jinja2.Environment

    @property
    def lang(self) -> str:
        """The BCP 47 tag for `<html lang>`: `en-GB`, `zh-Hant-TW`."""
        return str(self.locale).replace("_", "-")


class Renderer:
    """Renders issues from one template folder. Build once per run; reuse for every issue.

    `locale` is the default for `render(issue, locale=None)`; without it, the newsletter's.
    `timezone` is the default zone the date filters show times in.
    """

    def __init__(self, templates: Path, newsletter: NewsletterSection, locale: str | None = None,
                 links: LinksSection | None = None, timezone: str = "UTC") -> None:
        if not templates.is_dir():
            raise ConfigError("template folder not found (setting 'templates')", file=templates,
                              fix=f"create it with {HTML_TEMPLATE} and {TEXT_TEMPLATE}, "
                                  "or point 'templates' at a folder that has them")
        self.templates = templates
        self.newsletter = newsletter
        self.locale = locale or newsletter.locale
        self.links = links or LinksSection()
        self.timezone = timezone
        self._loader = jinja2.FileSystemLoader(templates)
        self._localised: dict[str, _Localised] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Renderer:
        return cls(settings.templates, settings.newsletter, settings.newsletter.locale,
                   links=settings.links, timezone=settings.schedule.timezone)

    def render(self, issue: Issue, locale: str | None = None,
               zone: str | None = None) -> RenderedIssue:
        """Render both parts of `issue` in `locale` (None: the default) and inline the HTML's
        CSS; the date filters show times in `zone` (the list's)."""
        kit = self._localise(locale)
        subject = _encodable(f"{issue.list_title}: {issue.lead.title}")
        preheader = _encodable(_preheader(issue))
        context = self._context(kit, issue, subject, preheader, archive=False, zone=zone)
        return RenderedIssue(
            issue=issue,
            subject=subject,
            preheader=preheader,
            html=self._personal(kit, HTML_TEMPLATE, context, self._inline, escape_html=True),
            text=self._personal(kit, TEXT_TEMPLATE, context, _tidy_text, escape_html=False),
        )

    def render_web(self, issue: Issue, locale: str | None = None,
                   zone: str | None = None) -> str:
        """The issue as a public web page (the archive): no reader's details, CSS kept in
        `<style>` (browsers need no inlining, so premailer is not run)."""
        kit = self._localise(locale)
        context = self._context(kit, issue, f"{issue.list_title}: {issue.lead.title}",
                                _preheader(issue), archive=True, zone=zone)
        page = self._personal(kit, HTML_TEMPLATE, context, lambda html: html, escape_html=True)
        # A template that prints reader fields even here gets them empty, never sentinels.
        return page.fill(PersonalFields(email="", unsubscribe_url=""))

    def _personal(self, kit: _Localised, name: str, context: dict[str, Any],
                  finish: Callable[[str], str], *, escape_html: bool) -> PersonalTemplate:
        """Template `name` rendered, passed through `finish` and cut at its personal fields,
        verified: only sentinels of this render's own nonce, exactly as printed."""
        for _ in range(_RENDER_TRIES):
            slots = _Slots()
            raw = _encodable(self._render(kit, name, {**context, "subscriber": _Personal(slots)}))
            template = _split(finish(raw), slots, escape_html=escape_html)
            if template is not None:
                return template
        if _split(raw, slots, escape_html=escape_html) is not None:
            # The template printed every field and the CSS inliner lost one: a field inside
            # <style>, or content past what lxml reads (the sources' limits stop that).
            lead = context["issue"]["lead"]
            raise TemplateError(
                "inlining the CSS lost a personal field (subscriber.…) that the template "
                "printed", file=self.templates / name,
                fix="print subscriber fields in the body, not in <style>; if they are, "
                    "an article's markup is past what lxml reads (nesting, a huge "
                    f"paragraph): leave out the lead, {lead.title[:80]!r}, or the others")
        raise TemplateError(
            "a personal field (subscriber.…) did not come out of the template as it was "
            "printed", file=self.templates / name,
            fix="print each subscriber field where it is used, e.g. {{ subscriber.email }}, "
                "not through a filter that changes its text (lower, truncate, replace) or a "
                "variable printed twice")

    def _localise(self, locale: str | None) -> _Localised:
        name = locale or self.locale
        kit = self._localised.get(name)
        if kit is None:
            kit = self._localised[name] = self._build(name)
        return kit

    def _build(self, name: str) -> _Localised:
        try:
            locale = Locale.parse(name.replace("-", "_"))
        except (UnknownLocaleError, ValueError, TypeError) as err:
            raise ConfigError(f"unknown locale {name!r}", field="locale",
                              fix="use a name such as en_GB, en_US, de_DE or fr_FR") from err
        env = jinja2.Environment(
            loader=self._loader,
            autoescape=jinja2.select_autoescape(["html", "htm"], default_for_string=False),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            extensions=["jinja2.ext.i18n"],
        )
        env.filters.update({
            "or_else": _or_else,
            "wrap_paragraphs": wrap_paragraphs,
            "format_date": _date_filter(babel.dates.format_date, locale),
            "format_datetime": _date_filter(babel.dates.format_datetime, locale),
        })
        # Newstyle: translations are %-formatted by Jinja after escaping the variables, and
        # a translation that drops a variable is no error.
        env.install_gettext_translations(  # type: ignore[attr-defined]
            load_translations(self.templates, locale), newstyle=True)
        return _Localised(locale, env)

    def _context(self, kit: _Localised, issue: Issue, subject: str, preheader: str,
                 archive: bool, zone: str | None) -> dict[str, Any]:
        n = self.newsletter
        return {
            "lang": kit.lang,
            "timezone": zone or self.timezone,
            "locale": str(kit.locale),
            "archive": archive,
            "newsletter": {
                "title": n.title, "sender_name": n.sender_name or n.title,
                "sender_address": n.sender_address, "base_url": n.base_url,
                "postal_address": n.postal_address,
            },
            "list": {"id": issue.list_id, "title": issue.list_title},
            "issue": {
                "id": issue.id, "date": issue.date,
                "date_label": date_label(issue.date, kit.locale),
                "subject": subject, "preheader": preheader,
                "lead": self._tagged(issue, issue.lead),
                "headlines": [self._tagged(issue, a) for a in issue.headlines],
                "web_url": f"{n.base_url}/{web_path(issue)}",
            },
        }

    def _tagged(self, issue: Issue, article: Article) -> Article:
        tags = self.links.tags(issue.list_id, issue.date.isoformat())
        if not tags or not article.url:
            return article
        return article.model_copy(update={"url": tag_url(article.url, tags)})

    def _render(self, kit: _Localised, name: str, context: dict[str, Any]) -> str:
        try:
            return kit.env.get_template(name).render(context)
        except jinja2.TemplateNotFound as err:
            raise TemplateError(f"template {err.name!r} not found in this folder",
                                file=self.templates,
                                fix="add it, or copy it from the project's templates/") from err
        except jinja2.TemplateSyntaxError as err:
            raise TemplateError(f"template syntax error: {err.message}",
                                file=err.filename or name, line=err.lineno) from err
        except _PersonalFieldTested as err:
            file, line = _template_frame(err, self.templates)
            raise TemplateError(str(err), file=file or name, line=line,
                                fix='write e.g. {{ subscriber.first_name | or_else("reader") }}'
                                ) from err
        except (jinja2.UndefinedError, TypeError, ValueError, AttributeError, KeyError) as err:
            file, line = _template_frame(err, self.templates)
            raise TemplateError(f"template error: {err}", file=file or name, line=line,
                                fix="check the variable names against the README") from err
        except RecursionError as err:
            file, line = _template_frame(err, self.templates)
            raise TemplateError("template error: endless recursion (a macro, include or "
                                "extends that calls itself)", file=file or name, line=line,
                                fix="give the recursion a condition that ends it") from err
        except NewsletterError:
            raise
        except Exception as err:  # whatever else a template's own expressions raise: 1/0
            file, line = _template_frame(err, self.templates)
            raise TemplateError(f"template error: {type(err).__name__}: {err}",
                                file=file or name, line=line,
                                fix="fix the expression on that line") from err

    def _inline(self, raw_html: str) -> str:
        try:
            return Premailer(
                raw_html,
                allow_network=False,
                strip_important=False,  # keep !important inside the @media rules it leaves
                align_floating_images=False,
                # Keep the templates' pixel width="536"/"600": premailer would copy the CSS
                # (width="100%", height="auto") over them, and Outlook for Windows sizes
                # images and tables from the attribute only.
                disable_basic_attributes=["width", "height"],
                remove_classes=False,
                disable_validation=True,
                cssutils_logging_level=logging.CRITICAL,
            ).transform(pretty_print=False)
        except Exception as err:  # premailer raises bare lxml/cssutils errors
            raise TemplateError(f"CSS inlining failed: {err}", file=self.templates / HTML_TEMPLATE,
                                fix="check the template's <style> for invalid CSS") from err


def web_path(issue: Issue) -> str:
    """Where the issue's web page lives, under base_url and under the outbox: topic
    variants have their own page, beside the general issue's."""
    return f"archive/{issue.list_id}/{page_name(issue)}.html"


def page_name(issue: Issue) -> str:
    """`2026-11-24` for the general issue, `2026-11-24.city+culture` for a topic variant."""
    if not issue.topics or issue.fallback:
        return issue.date.isoformat()
    slugs = [re.sub(r"[^a-z0-9-]+", "-", topic.lower()).strip("-") for topic in issue.topics]
    name = issue.date.isoformat() + "." + "+".join(slugs)
    if slugs != list(issue.topics):
        # "c++" and "c#" both shorten to "c": a hash of the real topics keeps pages apart
        # (and the name plain ASCII, safe in a link).
        name += "." + hashlib.sha256("\n".join(issue.topics).encode()).hexdigest()[:8]
    return name


def date_label(date: dt.date, locale: Locale | str = "en_GB") -> str:
    """The issue's dateline: `Tuesday, 24 November 2026`, `Dienstag, 24. November 2026`."""
    return babel.dates.format_date(date, format="full", locale=locale)


def load_translations(templates: Path, locale: Locale) -> NullTranslations:
    """The catalogs for `locale` in the template folder, most specific first (`de_DE`, then
    `de`); with none, untranslated strings. A catalog that cannot be used is a
    `TemplateError` naming it."""
    regional = f"{locale.language}_{locale.territory}" if locale.territory else None
    # A dict keeps the order and drops repeats: zh_Hant_TW, zh_TW, zh; de_DE, de; de.
    names = [n for n in dict.fromkeys([str(locale), regional, locale.language]) if n]
    found = [_read_catalog(path) for name in names
             if (path := templates / CATALOG.format(name=name)).is_file()]
    if not found:
        return NullTranslations()
    for fallback in found[1:]:
        found[0].add_fallback(fallback)
    return found[0]


_LIST_ITEM = re.compile(r"^\s*(?:[*•+-]|\d{1,3}[.)])\s+", re.MULTILINE)


def wrap_paragraphs(text: str, width: int = 72) -> str:
    """Wrap each paragraph of plain text to `width`, keeping the blank lines between them.

    List items keep a line each, continued under their own text.
    """
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    return "\n\n".join(_wrap_block(p, width) for p in paragraphs)


def _wrap_block(paragraph: str, width: int) -> str:
    starts = [m.start() for m in _LIST_ITEM.finditer(paragraph)]
    if not starts:
        return _fill(paragraph, width)
    pieces = [paragraph[:starts[0]]] if starts[0] else []
    pieces += [paragraph[a:b] for a, b in zip(starts, [*starts[1:], len(paragraph)], strict=True)]
    lines = []
    for piece in pieces:
        marker = _LIST_ITEM.match(piece)
        if marker is None:
            lines.append(_fill(piece, width))
            continue
        bullet = marker.group().strip()
        bullet = "*" if bullet in "*•+-" else bullet
        lines.append(_fill(piece[marker.end():], width, initial=f"{bullet} ",
                           subsequent=" " * (len(bullet) + 1)))
    return "\n".join(lines)


def _fill(text: str, width: int, initial: str = "", subsequent: str = "") -> str:
    return textwrap.fill(" ".join(text.split()), width, initial_indent=initial,
                         subsequent_indent=subsequent, break_long_words=False,
                         break_on_hyphens=False)


def _read_catalog(path: Path) -> Translations:
    fix = "fix the file, or delete it to send this language's mail in English"
    try:
        with path.open("rb") as fp:
            catalog = read_po(fp, abort_invalid=True)
    except PoFileError as err:
        # Babel's message ends in " on <0-based line>"; the Problem carries the line itself.
        what = str(err).rsplit(" on ", 1)[0]
        raise TemplateError(f"translation catalog is malformed: {what}", file=path,
                            line=err.lineno + 1, fix=fix) from err
    except (OSError, UnicodeError, ValueError) as err:
        raise TemplateError(f"translation catalog cannot be read: {err}", file=path,
                            fix=fix) from err
    problems = [Problem(f"translation of {message.id!r}: {error}", path, message.lineno,
                        fix="keep the msgid's %(name)s placeholders as they are spelled "
                            "there; write %% for a percent sign")
                for message in catalog if message.id and message.string and not message.fuzzy
                if (error := _translation_error(catalog, message))]
    if problems:
        raise TemplateError(problems=problems)
    compiled = BytesIO()
    write_mo(compiled, catalog)  # fuzzy entries are left out, as msgfmt does
    compiled.seek(0)
    return Translations(compiled)


def _translation_error(catalog: Catalog, message: Message) -> str | None:
    """Why `message` would fail when rendered, if it would."""
    errors = message.check(catalog)
    if errors:
        return str(errors[0])
    # Newstyle gettext %-formats every translation, even one whose msgid has no
    # placeholders, which Babel's own check skips.
    ids = message.id if isinstance(message.id, tuple | list) else (message.id,)
    names = {name: 0 for name in _PLACEHOLDER.findall(" ".join(ids))}
    strings = message.string if isinstance(message.string, tuple | list) else (message.string,)
    for string in strings:
        try:
            (string or "") % names
        except KeyError as err:
            return f"unknown placeholder %({err.args[0]})s"
        except (ValueError, TypeError) as err:
            return f"not a valid %-format ({err})"
    return None


def _date_filter(format_: Callable[..., str], locale: Locale) -> Callable[..., str]:
    """`{{ article.published | format_date("long") }}` in the issue's locale and, for a
    moment in time, the list's time zone (23:30 UTC is already tomorrow in Berlin)."""

    @jinja2.pass_context
    def filter_(context: jinja2.runtime.Context, value: dt.date, format: str = "medium") -> str:
        if isinstance(value, dt.datetime) and value.tzinfo is not None:
            value = value.astimezone(ZoneInfo(context.get("timezone") or "UTC"))
        return str(format_(value, format, locale=locale))

    return filter_


class _PersonalFieldTested(Exception):
    pass


class _Slots:
    """The personal fields one render printed, in order, and the nonce of its sentinels."""

    def __init__(self) -> None:
        self.nonce = base64.b32encode(secrets.token_bytes(_NONCE_BYTES)).decode("ascii")
        self.prefix = f"NL{self.nonce}S"  # then the slot's index and "X"
        self.printed: list[tuple[str, str]] = []  # (field name, default when empty)

    def sentinel(self, name: str, default: str) -> str:
        self.printed.append((name, default))
        return f"{self.prefix}{len(self.printed) - 1}X"


class _Slot:
    """Stands for one personal field in a template; prints as a sentinel."""

    def __init__(self, name: str, slots: _Slots, default: str = "") -> None:
        self.name, self.default, self._slots = name, default, slots

    def __str__(self) -> str:
        return self._slots.sentinel(self.name, self.default)

    __html__ = __str__

    def __bool__(self) -> bool:
        raise _PersonalFieldTested(
            f"subscriber.{self.name} is filled in per subscriber after rendering, "
            "so a template cannot test it")


class _Personal:
    def __init__(self, slots: _Slots) -> None:
        self._slots = slots

    def __getattr__(self, name: str) -> _Slot:
        if name not in PERSONAL_FIELDS:
            raise AttributeError(f"subscriber has no field {name!r} "
                                 f"(fields: {', '.join(PERSONAL_FIELDS)})")
        return _Slot(name, self._slots)


def _or_else(value: Any, default: str) -> Any:
    """`{{ subscriber.first_name | or_else("reader") }}`: a fallback for an empty field."""
    if isinstance(value, _Slot):
        # The fallback is filled in as plain text and escaped then, like the field itself;
        # `_("reader")` in an HTML template is Markup already.
        plain = default.unescape() if isinstance(default, Markup) else str(default)
        return _Slot(value.name, value._slots, plain)
    return value or default


def _split(rendered: str, slots: _Slots, *, escape_html: bool) -> PersonalTemplate | None:
    """`rendered` cut at its sentinels, or None unless they are exactly the printed slots in
    order and the nonce appears nowhere else (a filter cut one, or content held it)."""
    first, *pieces = rendered.split(slots.prefix)
    if len(pieces) != len(slots.printed) or rendered.count(slots.nonce) != len(pieces):
        return None
    literals = [first]
    for expected, piece in enumerate(pieces):
        index, _, literal = piece.partition("X")
        if index != str(expected):
            return None
        literals.append(literal)
    return PersonalTemplate(tuple(literals), tuple(slots.printed), escape_html)


def _encodable(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD, as a decoder would."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def _tidy_text(text: str) -> str:
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def _preheader(issue: Issue) -> str:
    summary = " ".join(issue.lead.summary.split()) or issue.lead.title
    if len(summary) <= PREHEADER_LENGTH:
        return summary
    return summary[:PREHEADER_LENGTH].rsplit(" ", 1)[0].rstrip(",;:") + "…"


def _template_frame(err: BaseException, templates: Path) -> tuple[str | None, int | None]:
    """The template file and line where a render-time error happened, from the traceback."""
    found: tuple[str | None, int | None] = (None, None)
    root = templates.resolve()
    for frame, line in traceback.walk_tb(err.__traceback__):
        filename = frame.f_code.co_filename
        if Path(filename).resolve().is_relative_to(root):
            found = (filename, line)
    return found
