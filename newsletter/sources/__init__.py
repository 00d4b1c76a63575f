"""Article sources: one reader per file format, picked by extension from `READERS`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from zoneinfo import ZoneInfo

from newsletter.errors import ContentError, NewsletterError, Problem
from newsletter.models import Article
from newsletter.sources.markdown import read_markdown
from newsletter.sources.textpage import read_textpage

Reader = Callable[[Path, ZoneInfo], list[Article]]

READERS: dict[str, Reader] = {
    ".md": read_markdown,
    ".markdown": read_markdown,
    ".txt": read_textpage,
}


def load_articles(paths: Iterable[Path], tz: ZoneInfo) -> list[Article]:
    """Read every article under `paths` (files or folders), reporting all bad files at once.

    `tz` is the zone for dates written without one.
    """
    problems: list[Problem] = []
    articles: list[Article] = []
    for path in paths:
        for file in _article_files(path, problems):
            try:
                articles.extend(READERS[file.suffix.lower()](file, tz))
            except NewsletterError as err:
                problems.extend(err.problems)
    if problems:
        raise ContentError(problems=problems)
    return articles


def _article_files(path: Path, problems: list[Problem]) -> list[Path]:
    if path.is_dir():
        return sorted(
            p for p in path.rglob("*")
            if p.is_file() and p.suffix.lower() in READERS
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
    if path.is_file():
        if path.suffix.lower() in READERS:
            return [path]
        problems.append(Problem("not an article file", path, field="articles.paths",
                                fix="use one of: " + ", ".join(READERS)))
        return []
    problems.append(Problem("article folder not found", path, field="articles.paths",
                            fix="create it or fix articles.paths in the settings"))
    return []
