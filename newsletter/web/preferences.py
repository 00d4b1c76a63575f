"""`/preferences?token=…`: a reader's own choices. (Being built.)"""

from __future__ import annotations

from starlette.routing import Route

from newsletter.web.context import WebContext


def preferences_routes(web: WebContext) -> list[Route]:
    return []
