"""`newsletter signup-form`: an HTML snippet for the publisher's own site that posts to
`serve`'s `POST /subscribe/LIST` (fields `email`, `name`, `topics`, honeypot `website`).

No script: it works wherever HTML does. Every value is escaped, list titles and sections
too (they are the publisher's, but a `<` in a title must not break their page). The
honeypot is hidden from people (off-screen, `aria-hidden`, out of the tab order, no
autofill) but not from the bots that fill in every field they find.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape

from newsletter.models import SubscriberList

_OFF_SCREEN = "position:absolute;left:-10000px;top:auto;width:1px;height:1px;overflow:hidden"


def signup_form(lst: SubscriberList, base_url: str,
                gettext: Callable[[str], str] = lambda text: text) -> str:
    """The snippet for list `lst`, posting to `base_url`/subscribe/<list>."""
    _ = gettext
    prefix = f"nl-{lst.id}"

    def attr(value: str) -> str:
        return escape(value, quote=True)

    lines = [
        f"<!-- {escape(lst.title)}: sign-up form (newsletter signup-form --list "
        f"{escape(lst.id)}) -->",
        f'<style>.nl-hp{{{_OFF_SCREEN}}}</style>',
        f'<form class="nl-signup" method="post" '
        f'action="{attr(base_url.rstrip("/"))}/subscribe/{attr(lst.id)}">',
        f"  <p><label for=\"{attr(prefix)}-email\">{escape(_('Email address'))}</label>",
        f'  <input id="{attr(prefix)}-email" name="email" type="email" required '
        'autocomplete="email" maxlength="254"></p>',
        f"  <p><label for=\"{attr(prefix)}-name\">{escape(_('Name'))}</label>",
        f'  <input id="{attr(prefix)}-name" name="name" type="text" autocomplete="name" '
        'maxlength="200"></p>',
    ]
    if lst.sections:
        lines.append(f"  <fieldset><legend>{escape(_('Topics'))}</legend>")
        for index, section in enumerate(lst.sections):
            ident = attr(f"{prefix}-topic-{index}")
            lines.append(f'    <p><input id="{ident}" name="topics" type="checkbox" '
                         f'value="{attr(section)}"> <label for="{ident}">'
                         f"{escape(section.capitalize())}</label></p>")
        lines.append("  </fieldset>")
    lines += [
        # Bots fill every field; people never see this one. Left empty or no sign-up.
        f'  <div class="nl-hp" aria-hidden="true" style="{_OFF_SCREEN}">',
        f'    <label for="{attr(prefix)}-website">Website</label>',
        f'    <input id="{attr(prefix)}-website" name="website" type="text" tabindex="-1" '
        'autocomplete="off">',
        "  </div>",
        f"  <p><button type=\"submit\">{escape(_('Subscribe'))}</button></p>",
        "</form>",
    ]
    return "\n".join(lines) + "\n"
