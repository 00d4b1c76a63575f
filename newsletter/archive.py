"""The web archive: each sent issue as a public page, and an index per list."""

from __future__ import annotations

import datetime as dt
import html
import re
from pathlib import Path

from newsletter.delivery.file import write_atomically
from newsletter.models import Issue
from newsletter.render import date_label, web_path

_TITLE = re.compile(r"<title>(.*?)</title>", re.S)


def archive_issue(outbox: Path, issue: Issue, page: str, locale: str = "en_GB") -> Path:
    """Write the issue's page and rebuild its list's index (dates in `locale`); return the
    page's path."""
    path = outbox / web_path(issue)
    write_atomically(path, page.encode("utf-8"))
    if path.stem == issue.date.isoformat():  # the index lists general issues, not variants
        _write_index(path.parent, issue.list_title, locale)
    return path


def _write_index(folder: Path, list_title: str, locale: str) -> None:
    rows = []
    for page in sorted(folder.glob("????-??-??.html"), reverse=True):
        found = _TITLE.search(page.read_text(encoding="utf-8", errors="replace"))
        title = found.group(1).strip() if found else page.stem
        date = page.stem
        label = date_label(dt.date.fromisoformat(date), locale)
        rows.append(f'<li><a href="{date}.html">{label}</a> — {title}</li>')
    name = html.escape(list_title)
    write_atomically(folder / "index.html", (
        f'<!DOCTYPE html>\n<html lang="{locale.replace("_", "-")}"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width"><title>{name}: all issues</title>'
        f"<style>body{{font-family:Georgia,serif;max-width:40rem;margin:3rem auto;"
        f"padding:0 1rem;line-height:1.6}}</style></head><body><h1>{name}</h1><ul>\n"
        + "\n".join(rows) + "\n</ul></body></html>\n").encode("utf-8"))

