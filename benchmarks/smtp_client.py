"""Benchmark: our SMTP send path against a bare smtplib client, into a sink that costs nothing.

    python benchmarks/smtp_client.py [--messages 20000] [--connections 1,2,4] [--repeat 2]

For each number of connections, in one run: a bare smtplib client (threads of one process,
one reused connection each, `sendmail` of messages prebuilt by the real template), then our
send path (`run_send`, as `newsletter send --backend smtp` calls it: the real message build
per reader, a ledger commit per reply, `smtp.connections` connections, the processes
`smtp.processes` allows). Both send the same messages into benchmarks/zerosink.py, a fresh
one per measurement, in processes of its own. Our figure is the send phase alone (from the
moment the run starts delivering to its end), so composing and rendering the issue are not
counted; the ratio is against bare smtplib on the same number of connections.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from run import DATE, NOW, free_port, make_project  # noqa: E402

from newsletter.db import open_ledger  # noqa: E402
from newsletter.digest import compose_issue, load_inputs, run_send  # noqa: E402
from newsletter.fastmime import MessageTemplate  # noqa: E402
from newsletter.render import Renderer  # noqa: E402
from newsletter.settings import load_settings  # noqa: E402

SINK_NAME = "benchmarks/zerosink.py (a forked process per connection, no line parsing)"


class ZeroSink:
    """benchmarks/zerosink.py in a process of its own."""

    def __init__(self, port: int, delay: float = 0.0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "zerosink.py"), str(port), "--delay", str(delay)],
            stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready"

    def received(self) -> int:
        self.process.send_signal(2)
        out, _ = self.process.communicate(timeout=120)
        return int(out.strip().splitlines()[-1])


def prebuilt(project: Path, count: int = 200) -> tuple[list[bytes], str]:
    """`count` messages as our template builds them, and the envelope sender."""
    cwd = os.getcwd()
    os.chdir(project)
    try:
        inputs = load_inputs(load_settings(Path("config/newsletter.yaml")))
        [lst] = inputs.roster.lists.values()
        rendered = Renderer(inputs.settings.templates, inputs.settings.newsletter).render(
            compose_issue(inputs, lst, dt.date.fromisoformat(DATE)))
        template = MessageTemplate(rendered, inputs.settings.newsletter, NOW)
        built = [template.build(s) for s in lst.active[:count]]
        return [m.data for m in built], built[0].sender
    finally:
        os.chdir(cwd)


def bare_smtplib(port: int, messages: list[bytes], sender: str, total: int,
                 connections: int) -> float:
    """Seconds for `total` prebuilt messages over `connections` reused smtplib connections."""
    def worker(first: int, share: int) -> None:
        conn = smtplib.SMTP("127.0.0.1", port, local_hostname="example.com")
        for i in range(first, first + share):
            conn.sendmail(sender, [f"reader{i}@example.com"], messages[i % len(messages)])
        conn.quit()

    shares = [total // connections + (1 if n < total % connections else 0)
              for n in range(connections)]
    firsts = [sum(shares[:n]) for n in range(connections)]
    threads = [threading.Thread(target=worker, args=(f, s))
               for f, s in zip(firsts, shares, strict=True)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def our_send(project: Path) -> tuple[float, int]:
    """Seconds of `run_send`'s delivery phase in `project`, and how many it sent."""
    cwd = os.getcwd()
    os.chdir(project)
    try:
        settings = load_settings(Path("config/newsletter.yaml"))
        inputs = load_inputs(settings)
        ledger = open_ledger(settings)
        started: list[float] = []
        try:
            [report] = run_send(inputs, dt.date.fromisoformat(DATE), NOW, ledger,
                                backend_name="smtp",
                                on_start=lambda *_: started.append(time.perf_counter()))
        finally:
            ledger.close()
        seconds = time.perf_counter() - started[0]
        if report.error or report.paused:
            raise SystemExit(f"the send did not finish: {report.error or report.paused}")
        return seconds, report.sent
    finally:
        os.chdir(cwd)


def set_connections(project: Path, port: int, connections: int) -> None:
    """Point the project at `port` with `connections` connections, and a fresh ledger."""
    config = project / "config" / "newsletter.yaml"
    text = config.read_text()
    start = text.index("smtp: {")
    end = text.index("}", start) + 1
    config.write_text(text[:start] + f"smtp: {{host: 127.0.0.1, port: {port}, security: none, "
                      f"connections: {connections}, messages_per_connection: 1000000, "
                      "helo: bench.example.com}" + text[end:])
    shutil.rmtree(project / "outbox", ignore_errors=True)  # the ledger and the archive


def measure(project: Path, messages: list[bytes], sender: str, total: int,
            connections: int, repeat: int) -> dict[str, Any]:
    """Best of `repeat` for each client, alternating, each into a fresh zero-cost sink."""
    bare_best = ours_best = float("inf")
    for _ in range(repeat):
        port = free_port()
        sink = ZeroSink(port)
        bare_best = min(bare_best, bare_smtplib(port, messages, sender, total, connections))
        assert sink.received() == total, "the sink did not get every bare smtplib message"
        port = free_port()
        set_connections(project, port, connections)
        sink = ZeroSink(port)
        seconds, sent = our_send(project)
        got = sink.received()
        assert sent == total and got == total, f"not every message arrived: {sent} {got}"
        ours_best = min(ours_best, seconds)
    bare, ours = total / bare_best, total / ours_best
    return {"connections": connections, "messages": total, "bare_smtplib_msgs_per_s":
            round(bare), "ours_msgs_per_s": round(ours), "ours_vs_bare": round(ours / bare, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--connections", type=lambda v: [int(c) for c in v.split(",")],
                        default=[1, 2, 4])
    parser.add_argument("--repeat", type=int, default=2, help="best of this many runs each")
    args = parser.parse_args()
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, sink: {SINK_NAME}")
    with tempfile.TemporaryDirectory(prefix="newsletter-smtp-bench-") as tmp:
        project = make_project(Path(tmp) / "p", args.messages)
        messages, sender = prebuilt(project)
        print(f"{args.messages:,} messages of ~{sum(map(len, messages)) // len(messages):,} "
              f"bytes; best of {args.repeat}", file=sys.stderr)
        rows = []
        for connections in args.connections:
            print(f"{connections} connection(s)…", file=sys.stderr)
            rows.append(measure(project, messages, sender, args.messages, connections,
                                args.repeat))
    one = rows[0]
    print(f"\n{'connections':>11}  {'bare smtplib':>14}  {'ours':>14}  {'ours/bare':>9}  "
          f"{'ours vs ours on ' + str(one['connections']):>18}")
    for r in rows:
        print(f"{r['connections']:>11}  {r['bare_smtplib_msgs_per_s']:>10,} msg/s  "
              f"{r['ours_msgs_per_s']:>10,} msg/s  {r['ours_vs_bare']:>8.0%}  "
              f"×{r['ours_msgs_per_s'] / one['ours_msgs_per_s']:>17.2f}")


if __name__ == "__main__":
    main()
