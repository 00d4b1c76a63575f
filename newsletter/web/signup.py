"""`/subscribe/LIST` and `/confirm`: sign-up with double opt-in. (Being built.)"""

from __future__ import annotations

from starlette.routing import Route

from newsletter.web.context import WebContext


def signup_routes(web: WebContext) -> list[Route]:
    return []
