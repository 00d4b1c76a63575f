"""Benchmark: per-variant render and per-message build, this tree against a baseline revision.

    python benchmarks/build.py [--baseline main] [--readers 5000] [--renders 15] [--rounds 3]

The baseline is exported with `git archive` into a temporary folder; each tree (its code,
templates and bundled articles) is measured in a child process of its own, alternately,
`--rounds` times, and the best round of each is printed side by side. Figures are medians:
`Renderer.render` of the issue (Jinja + premailer, once per variant), `Renderer.render_web`
(the archive page), and `MessageTemplate.build` per reader (the per-message cost of a send).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATE = "2026-11-24"
MEASURES = (("render_ms", "render + inline, per variant", "ms"),
            ("render_web_ms", "render_web (archive page)", "ms"),
            ("build_us", "MessageTemplate.build, per message", "µs"))


def measure(code: Path, readers: int, renders: int) -> dict[str, float]:
    """In this process, with the `newsletter` package of `code`."""
    sys.path.insert(0, str(code))
    import newsletter

    assert Path(newsletter.__file__).resolve().is_relative_to(code.resolve()), newsletter.__file__
    sys.path.insert(1, str(HERE))
    from run import make_project

    from newsletter.digest import compose_issue, load_inputs
    from newsletter.fastmime import MessageTemplate
    from newsletter.render import Renderer
    from newsletter.settings import load_settings

    with tempfile.TemporaryDirectory(prefix="newsletter-build-") as tmp:
        project = make_project(Path(tmp) / "p", readers, source=code)
        os.chdir(project)
        settings = load_settings(Path("config/newsletter.yaml"))
        inputs = load_inputs(settings)
        [lst] = inputs.roster.lists.values()
        issue = compose_issue(inputs, lst, dt.date.fromisoformat(DATE))
        renderer = Renderer(settings.templates, settings.newsletter)
        for _ in range(2):  # premailer fills its caches on the first call
            rendered = renderer.render(issue)
            renderer.render_web(issue)
        render = _timed(lambda: renderer.render(issue), renders)
        render_web = _timed(lambda: renderer.render_web(issue), renders)
        template = MessageTemplate(rendered, settings.newsletter,
                                   dt.datetime(2026, 11, 24, 7, tzinfo=dt.UTC))
        batches = []
        for start in range(0, len(lst.active), 500):
            batch = lst.active[start:start + 500]
            began = time.perf_counter()
            for reader in batch:
                template.build(reader)
            batches.append((time.perf_counter() - began) / len(batch))
    return {"render_ms": render * 1e3, "render_web_ms": render_web * 1e3,
            "build_us": statistics.median(batches) * 1e6}


def _timed(call: Any, times: int) -> float:
    seconds = []
    for _ in range(times):
        began = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds)


def child(code: Path, args: argparse.Namespace) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--measure", str(code),
                          "--readers", str(args.readers), "--renders", str(args.renders)],
                         capture_output=True, text=True, check=True, env={
                             k: v for k, v in os.environ.items()
                             if k != "PYTHONPATH" and not k.startswith("NEWSLETTER_")})
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="main", help="git revision to compare against")
    parser.add_argument("--readers", type=int, default=5000)
    parser.add_argument("--renders", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.readers, args.renders)))
        return
    with tempfile.TemporaryDirectory(prefix="newsletter-baseline-") as tmp:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.baseline],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}/{args.rounds}…", file=sys.stderr)
            runs["before"].append(child(Path(tmp), args))
            runs["after"].append(child(REPO, args))
    best = {side: {key: min(r[key] for r in rounds) for key, _, _ in MEASURES}
            for side, rounds in runs.items()}
    print(f"\nbefore = {args.baseline}, after = this tree; best of {args.rounds} rounds, "
          f"medians of {args.renders} renders and of {args.readers:,} builds")
    print(f"{'measure':<36} {'before':>10} {'after':>10} {'after/before':>13}")
    for key, label, unit in MEASURES:
        before, after = best["before"][key], best["after"][key]
        print(f"{label:<36} {before:>7.2f} {unit:<2} {after:>7.2f} {unit:<2} "
              f"{after / before:>12.2f}×")


if __name__ == "__main__":
    main()
