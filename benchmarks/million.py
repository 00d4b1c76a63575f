"""Benchmark: `newsletter send` with the file backend to a very long list: wall time and
peak memory (the child's ru_maxrss), against smaller lists and the baseline revision's code
in the same run.

    python benchmarks/million.py [--readers 1000000] [--small 100000] [--baseline main]
                                 [--baseline-readers 100000]

Each run is a fresh project in a temporary folder: three lists, some readers with topics
(two topic variants), some in other time zones, some unsubscribed, and three tiny articles
so that a million messages fit on the disk (about 6 KB each). The send runs in a child
process of its own (`python -m newsletter send`), so its peak RSS is the send's alone.
The outbox is deleted after each run. Memory should not grow with the list; the baseline
revision's grows by about 1 KB per reader.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATE = "2026-11-24"
# (list id, share of the readers)
LISTS = (("morning-brief", 0.6), ("harbour-news", 0.3), ("weekend", 0.1))
ZONES = ("America/New_York", "Asia/Tokyo")
ARTICLES = (("city", "Ferry timetable changes"), ("culture", "Choir fills the customs house"),
            ("sport", "Rowers take the estuary cup"))


def make_project(root: Path, readers: int, source: Path) -> Path:
    """A project with the templates of `source`, three tiny articles and `readers` readers."""
    shutil.copytree(source / "templates", root / "templates")
    (root / "articles").mkdir()
    for n, (section, title) in enumerate(ARTICLES):
        (root / "articles" / f"{DATE}-{section}.md").write_text(
            f"---\ntitle: {title}\nurl: https://example.com/{section}\nsummary: {title}.\n"
            f"published: {DATE}T0{5 + n}:00:00+00:00\nsection: {section}\n---\n{title}.\n",
            encoding="utf-8")
    (root / "config").mkdir()
    (root / "config" / "newsletter.yaml").write_text("""\
newsletter:
  title: The Morning Brief
  sender: "The Morning Brief <brief@example.com>"
  base_url: https://example.com
  unsubscribe_mailto: unsubscribe@example.com
  postal_address: "1 Quay Street, Harbourton"
articles: {paths: [articles], headlines: 2, max_age_days: 2, min_new: 1}
subscribers: config/subscribers.yaml
templates: templates
delivery: {backend: file, outbox: outbox}
schedule: {time: "07:00", timezone: Europe/London}
""", encoding="utf-8")
    with (root / "config" / "subscribers.yaml").open("w", encoding="utf-8") as out:
        out.write("lists:\n")
        for list_id, share in LISTS:
            out.write(f"  {list_id}:\n    title: {list_id.replace('-', ' ').title()}\n"
                      "    sections: [city, culture, sport]\n    subscribers:\n")
            for i in range(int(readers * share)):
                address = f"reader{i}@{list_id}.example.com"
                kind = i % 10
                if kind < 5:
                    out.write(f"      - {address}\n")
                elif kind < 7:
                    out.write(f'      - {{email: {address}, name: "Reader {i}"}}\n')
                elif kind == 7:
                    out.write(f"      - {{email: {address}, topics: [city]}}\n")
                elif kind == 8:
                    out.write(f"      - {{email: {address}, topics: [culture, sport], "
                              f"timezone: {ZONES[i % 2]}}}\n")
                elif i % 20 == 9:
                    out.write(f"      - {{email: {address}, status: unsubscribed}}\n")
                else:
                    out.write(f"      - {{email: {address}, timezone: {ZONES[i % 2]}}}\n")
    return root


def run_send(code: Path, readers: int) -> dict[str, float | int | str]:
    """Make a project, send its issue in a child process; wall time and peak RSS."""
    with tempfile.TemporaryDirectory(prefix="newsletter-million-", dir=os.environ.get(
            "MILLION_TMP")) as tmp:
        project = make_project(Path(tmp) / "p", readers, code)
        env = {**os.environ, "PYTHONPATH": str(code)}
        started = time.perf_counter()
        with (project / "send.out").open("w+") as out_file, \
                (project / "send.err").open("w+") as err_file:
            child = subprocess.Popen(
                [sys.executable, "-m", "newsletter", "send", "--date", DATE], cwd=project,
                env=env, stdout=out_file, stderr=err_file, text=True)
            while True:  # a line now and then, for a run that takes long
                try:
                    child.wait(timeout=10)  # the wall time to the moment it ends
                    break
                except subprocess.TimeoutExpired:
                    pass
                print(f"  {time.perf_counter() - started:6.0f} s: {_rss(child.pid)}",
                      file=sys.stderr, flush=True)
            wall = time.perf_counter() - started
            out_file.seek(0)
            err_file.seek(0)
            out, err = out_file.read(), err_file.read()[-5000:]
        # This process (a helper of its own per run) has had no other child: the largest
        # RSS of its children is the send's.
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        mails = sum(1 for _ in (project / "outbox" / "mail").rglob("*.eml")) \
            if (project / "outbox" / "mail").exists() else 0
        if child.returncode != 0:
            print(out, err, file=sys.stderr)
            raise SystemExit(f"send failed with exit code {child.returncode}")
        return {"readers": readers, "wall_s": wall, "peak_mb": peak_kb / 1024,
                "messages": mails, "summary": out.strip().replace("\n", " | ")}


def _rss(pid: int) -> str:
    """The child's resident memory now and at its peak so far, from /proc."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return "ended"
    return ", ".join(line.replace("\t", " ").replace("  ", " ") for line in
                     status.splitlines() if line.startswith(("VmRSS", "VmHWM")))


def export(rev: str, into: Path) -> Path:
    """The tree of `rev` as a folder (its code and templates)."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "newsletter",
                              "templates"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readers", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000,
                        help="a smaller list sent by this tree, to show memory stays flat")
    parser.add_argument("--baseline", default="main", metavar="REV",
                        help="the revision whose code is the baseline ('' for none)")
    parser.add_argument("--baseline-readers", type=int, default=100_000)
    args = parser.parse_args()
    where = os.environ.get("MILLION_TMP") or tempfile.gettempdir()
    print(f"disk free in {where}: {shutil.disk_usage(where).free / 2**30:.0f} GB "
          f"(about {args.readers * 7 / 2**20:.1f} GB needed for the outbox)")
    # ru_maxrss of RUSAGE_CHILDREN is the largest of all children so far: each send runs
    # under a fresh helper process, so each figure is that send's own.
    runs: list[tuple[str, dict]] = []
    with tempfile.TemporaryDirectory(prefix="newsletter-baseline-") as tmp:
        plan = []
        if args.baseline:
            plan.append((f"baseline {args.baseline}", export(args.baseline, Path(tmp) / "b"),
                         args.baseline_readers))
        if args.small:
            plan.append(("this tree", REPO, args.small))
        plan.append(("this tree", REPO, args.readers))
        for label, code, readers in plan:
            result = subprocess.run([sys.executable, __file__, "--one", str(code), str(readers)],
                                    stdout=subprocess.PIPE, text=True)
            if result.returncode:
                print(result.stdout, file=sys.stderr)
                raise SystemExit(f"{label} at {readers} readers failed")
            figures = eval(result.stdout.strip().splitlines()[-1])  # our own repr
            runs.append((label, figures))
            print(f"{label:>18} {readers:>9,} readers: {figures['wall_s']:7.1f} s, "
                  f"peak RSS {figures['peak_mb']:6.1f} MB, {figures['messages']:,} messages "
                  f"({figures['messages'] / figures['wall_s']:,.0f}/s); "
                  f"{figures['summary']}", flush=True)
    base = runs[0][1]
    for label, figures in runs[1:]:
        print(f"{label} at {figures['readers']:,}: peak RSS {figures['peak_mb']:.1f} MB = "
              f"{figures['peak_mb'] / base['peak_mb']:.2f}x the {runs[0][0]} at "
              f"{base['readers']:,} readers ({base['peak_mb']:.1f} MB)")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--one":
        print(repr(run_send(Path(sys.argv[2]), int(sys.argv[3]))))
    else:
        main()
