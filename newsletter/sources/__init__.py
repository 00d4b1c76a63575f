"""Article sources: one reader per file format, picked by extension from `READERS`."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

from newsletter.errors import ContentError, NewsletterError, Problem
from newsletter.models import Article
from newsletter.sources.markdown import read_markdown
from newsletter.sources.textpage import read_textpage


class Reader(Protocol):
    """Reads one file into articles; `tz` dates what has no zone, and what the reader had
    to change or drop (unsafe markup) is added to `warnings`."""

    def __call__(self, path: Path, tz: ZoneInfo,
                 warnings: list[Problem] | None = None) -> list[Article]: ...


READERS: dict[str, Reader] = {
    ".md": read_markdown,
    ".markdown": read_markdown,
    ".txt": read_textpage,
}


def load_articles(paths: Iterable[Path], tz: ZoneInfo,
                  warnings: list[Problem] | None = None) -> list[Article]:
    """Read every article under `paths` (files or folders), reporting all bad files at once.

    `tz` is the zone for dates written without one; `warnings` gets what was removed from
    an article (markup that is not safe in mail).
    """
    problems: list[Problem] = []
    articles: list[Article] = []
    for path in paths:
        for file in _article_files(path, problems):
            try:
                articles.extend(READERS[file.suffix.lower()](file, tz, warnings))
            except NewsletterError as err:
                problems.extend(err.problems)
    if problems:
        raise ContentError(problems=problems)
    return articles


def _article_files(path: Path, problems: list[Problem]) -> list[Path]:
    if path.is_dir():
        # Not only regular files: a FIFO or a device named like an article is refused by
        # its reader with a clear error, not skipped without a word.
        return sorted(
            p for p in path.rglob("*")
            if p.suffix.lower() in READERS and not p.is_dir()
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
    if path.exists():
        if path.suffix.lower() in READERS:
            return [path]
        problems.append(Problem("not an article file", path, field="articles.paths",
                                fix="use one of: " + ", ".join(READERS)))
        return []
    problems.append(Problem("article folder not found", path, field="articles.paths",
                            fix="create it or fix articles.paths in the settings"))
    return []
