"""Campaign tags (UTM) on article links, if the publisher wants them. Off by default."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


def tag_url(url: str, tags: dict[str, str]) -> str:
    """`url` with `tags` added to its query; parameters it already has are left as they are."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not tags:
        return url
    query = parse_qsl(parts.query, keep_blank_values=True)
    present = {key for key, _ in query}
    query += [(key, value) for key, value in tags.items() if key not in present]
    return urlunsplit(parts._replace(query=urlencode(query)))
