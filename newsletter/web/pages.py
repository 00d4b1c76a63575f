"""The pages `serve` shows readers (sign-up, confirmation, preferences), from templates.

Built-in templates live in `newsletter/web/templates/`; a publisher overrides any of them
by putting a file of the same name in `<templates>/web/`. Pages are rendered in the list's
locale with the catalogs of both folders (the publisher's first), autoescaped: whatever a
reader or a request typed is text on the page, never markup (`.txt` templates, the plain
text of a mail, are not escaped: there is no markup in them to escape from). No page loads
anything from elsewhere (no script, font or image), so it reads the same with images off.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jinja2
from babel import Locale, UnknownLocaleError
from babel.support import NullTranslations, Translations
from starlette.responses import HTMLResponse

from newsletter.render import load_translations

BUILT_IN = Path(__file__).parent / "templates"


class Pages:
    """Renders the reader pages for one project (its template folder)."""

    def __init__(self, templates: Path, default_locale: str) -> None:
        self.templates = templates
        self.default_locale = default_locale
        self._loader = jinja2.ChoiceLoader([
            jinja2.FileSystemLoader(templates / "web"),
            jinja2.FileSystemLoader(BUILT_IN),
        ])

    @functools.lru_cache(maxsize=16)  # noqa: B019  (one Pages per app, a few locales)
    def _catalog(self, locale_name: str) -> tuple[Locale, NullTranslations]:
        try:
            locale = Locale.parse(locale_name.replace("-", "_"))
        except (UnknownLocaleError, ValueError, TypeError):
            locale = Locale.parse("en_GB")
        own = load_translations(self.templates / "web", locale)
        built_in = load_translations(BUILT_IN, locale)
        translations: NullTranslations = built_in
        if isinstance(own, Translations):
            own.add_fallback(built_in)
            translations = own
        return locale, translations

    @functools.lru_cache(maxsize=16)  # noqa: B019
    def _env(self, locale_name: str) -> tuple[jinja2.Environment, Locale]:
        locale, translations = self._catalog(locale_name)
        env = jinja2.Environment(
            loader=self._loader,
            autoescape=jinja2.select_autoescape(disabled_extensions=("txt",), default=True),
            undefined=jinja2.StrictUndefined,
            extensions=["jinja2.ext.i18n"],
        )
        env.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
        return env, locale

    def gettext(self, locale: str | None, text: str, **values: Any) -> str:
        """One string in `locale`, plain text (for a confirmation mail's subject, say)."""
        _, translations = self._catalog(locale or self.default_locale)
        return translations.gettext(text) % values

    def render(self, name: str, locale: str | None, **context: Any) -> str:
        env, loc = self._env(locale or self.default_locale)
        return env.get_template(name).render(
            lang=loc.language, locale=str(loc), **context)

    def page(self, name: str, locale: str | None, status: int = 200, *,
             headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
        """A page as an answer. Never cached: most name a reader."""
        return HTMLResponse(self.render(name, locale, **context), status_code=status,
                            headers={"Cache-Control": "no-store", **(headers or {})})

    def message(self, locale: str | None, title: str, text: str, status: int = 200,
                **context: Any) -> HTMLResponse:
        """A page that only says something: `title` and a paragraph (already translated)."""
        return self.page("message.html", locale, status, title=title, text=text,
                         error=status >= 400, **context)
