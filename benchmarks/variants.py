"""Benchmark: reader topics against the same list without them, in the same run.

    python benchmarks/variants.py --subscribers 100000

Both runs are `newsletter send` with the file backend in a child process, on the bundled
articles. In the second, 40 % of the readers chose one or two topics (sections and tags of
the bundled articles, and one topic nothing matches) and live in four time zones. Prints
the variants, premailer calls, wall time and peak RSS of each, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import DATE, REPO, make_project, run_cli  # noqa: E402

TOPICS = ["city", "culture", "sport", "business", "science", "harbour", "food", "astronomy"]
ZONES = ["America/Los_Angeles", "Europe/London", "Asia/Kolkata", "Pacific/Auckland"]


def add_topics(project: Path, share: float, seed: int = 7) -> None:
    """Give `share` of the readers one or two topics and a time zone (deterministic)."""
    chance = random.Random(seed)
    path = project / "config" / "subscribers.yaml"
    out: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("- ") and chance.random() < share:
            if not stripped.startswith("- email:"):
                line = line.replace("- ", "- email: ", 1)
            topics = chance.sample(TOPICS, chance.choice((1, 2)))
            out.append(line)
            out.append(f"        topics: [{', '.join(topics)}]")
            out.append(f"        timezone: {chance.choice(ZONES)}")
        else:
            out.append(line)
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def variants(project: Path) -> list[dict[str, Any]]:
    result = subprocess.run([sys.executable, "-m", "newsletter", "compose", "--date", DATE,
                             "--json"], cwd=project, capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    return json.loads(result.stdout)["variants"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--share", type=float, default=0.4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="newsletter-variants-") as tmp:
        plain = make_project(Path(tmp) / "plain", args.subscribers)
        topical = make_project(Path(tmp) / "topics", args.subscribers)
        add_topics(topical, args.share)
        found = variants(topical)
        print(f"newsletter send, {args.subscribers:,} readers without topics…", file=sys.stderr)
        base = run_cli(plain, "send", "--date", DATE)
        print(f"newsletter send, {args.share:.0%} with topics…", file=sys.stderr)
        with_topics = run_cli(topical, "send", "--date", DATE)
    readers_with_topics = sum(v["subscribers"] for v in found if not v["general"])
    print(f"\n{len(found)} variants for {args.subscribers:,} readers "
          f"({readers_with_topics:,} get a topic variant):")
    for v in found:
        label = "general" if v["general"] else " | ".join("+".join(t) for t in v["topics"])
        print(f"  {v['subscribers']:>7,}  {label[:70]}")
    print(f"\n{'run':<28} {'seconds':>8} {'premailer':>10} {'peak RSS MB':>12}")
    for name, run in (("no topics", base), ("with topics", with_topics)):
        print(f"{name:<28} {run['seconds']:>8} {run['premailer_calls']:>10} "
              f"{run['peak_rss_mb']:>12}")
    print(f"\nwith topics / without: ×{with_topics['seconds'] / base['seconds']:.2f} wall time; "
          f"premailer {with_topics['premailer_calls']} calls for {len(found)} variants")


if __name__ == "__main__":
    main()
