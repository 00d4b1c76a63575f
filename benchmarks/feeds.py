"""Benchmark: reading big feeds, against parsing them alone, in the same run.

    python benchmarks/feeds.py --entries 2000

Writes RSS files of `--entries` items (titles of six random words, all within two days,
so every title is a candidate for the cross-feed title match), then times `load_feeds`
(read, parse, sanitise, merge duplicates) on one feed and on three feeds that carry the
same stories under other guids and half of them under other links, against parsing the
same files (feedparser + our entry conversion, no merging). Prints the times and the
ratio: merging should add little to parsing, whatever the feed's size.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from newsletter.sources.feed import load_feeds, parse_feed  # noqa: E402

WORDS = [f"word{i}" for i in range(3000)]


def _feed(path: Path, name: str, stories: list[tuple[str, int]], relink: bool) -> None:
    items = []
    for number, (title, minutes) in enumerate(stories):
        link = f"https://{name}.example.com/{number}" if relink and number % 2 else \
            f"https://news.example.com/{number}"
        stamp = time.strftime("%a, %d %b %Y %H:%M:%S +0000",
                              time.gmtime(1795500000 + minutes * 60))
        items.append(f"<item><title>{title}</title><link>{link}</link>"
                     f"<guid>{name}-{number}</guid><pubDate>{stamp}</pubDate>"
                     f"<description>&lt;p&gt;Story {number} from {name}.&lt;/p&gt;"
                     "</description></item>")
    path.write_text('<?xml version="1.0"?><rss version="2.0"><channel><title>'
                    f"{name}</title>{''.join(items)}</channel></rss>", encoding="utf-8")


def _best_of(runs: int, job: object) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        job()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    random.seed(1)
    stories = [(" ".join(random.sample(WORDS, 6)), random.randrange(2 * 24 * 60))
               for _ in range(args.entries)]
    with tempfile.TemporaryDirectory() as folder:
        paths = [Path(folder) / f"{name}.xml" for name in ("gazette", "mirror", "wire")]
        for path in paths:
            _feed(path, path.stem, stories, relink=path.stem != "gazette")
        blobs = [path.read_bytes() for path in paths]
        rows = []
        for feeds in (paths[:1], paths):
            count = len(feeds)
            parse = _best_of(args.runs, lambda n=count: [
                parse_feed(blob, "bench") for blob in blobs[:n]])
            loaded = load_feeds([str(p) for p in feeds], cache=None, timeout=10)
            load = _best_of(args.runs, lambda f=feeds: load_feeds(
                [str(p) for p in f], cache=None, timeout=10))
            rows.append((count, len(loaded.articles), parse, load))
    print(f"{'feeds':>5} {'entries':>8} {'stories':>8} {'parse only':>11} {'load+merge':>11} "
          f"{'ratio':>6}")
    for count, kept, parse, load in rows:
        print(f"{count:>5} {count * args.entries:>8} {kept:>8} {parse:>10.2f}s {load:>10.2f}s "
              f"{load / parse:>5.2f}x")


if __name__ == "__main__":
    main()
