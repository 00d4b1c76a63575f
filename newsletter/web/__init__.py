"""`newsletter serve`: the web side (one-click unsubscribe, the archive, a health check)."""

from __future__ import annotations

from newsletter.web.app import create_app

__all__ = ["create_app"]
