"""Benchmark: throughput against a distant relay, a sink that waits 20 ms per message.

    python benchmarks/relay.py [--messages 2000] [--delay 0.02] [--connections 1,2,4]
    python benchmarks/relay.py --command 'newsletter worker --burst' --workers 1,2,4 \
        --prepare 'newsletter send --queue --date 2026-11-24'

Without `--command`: our send path (`run_send`, as `newsletter send --backend smtp`) with
1, 2 and 4 connections into benchmarks/zerosink.py with `--delay`, each against the first.
With `--command`: the project is prepared once per measurement with `--prepare` (run in the
project folder), then N copies of `--command` run side by side in it until all exit; the
figure is messages the sink took per second of wall time, against 1 copy. The project's
settings point at the sink (`smtp.host`/`port`) and at `--database` when given (a
postgresql:// URL for workers); `{port}` in a command is the sink's port. `measure_command`
is the function to call for other set-ups.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from run import free_port, make_project  # noqa: E402
from smtp_client import ZeroSink, our_send, set_connections  # noqa: E402


def measure_send(project: Path, connections: int, delay: float) -> tuple[float, int]:
    """Messages per second of our send phase with `connections` connections."""
    port = free_port()
    set_connections(project, port, connections)
    sink = ZeroSink(port, delay)
    seconds, sent = our_send(project)
    assert sink.received() == sent
    return sent / seconds, sent


def measure_command(project: Path, command: str, copies: int, delay: float,
                    prepare: str | None = None, database: str | None = None,
                    connections: int = 1) -> tuple[float, int]:
    """Messages per second the sink took while `copies` of `command` ran side by side."""
    port = free_port()
    set_connections(project, port, connections)
    if database:
        config = project / "config" / "newsletter.yaml"
        config.write_text(config.read_text() + f"database: {database}\n")
    sink = ZeroSink(port, delay)
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    if prepare:
        subprocess.run(shlex.split(prepare.format(port=port)), cwd=project, env=env,
                       check=True, capture_output=True)
    started = time.perf_counter()
    processes = [subprocess.Popen(shlex.split(command.format(port=port)), cwd=project,
                                  env=env) for _ in range(copies)]
    for process in processes:
        process.wait()
    seconds = time.perf_counter() - started
    received = sink.received()
    return received / seconds, received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--delay", type=float, default=0.02, help="seconds per message")
    parser.add_argument("--connections", type=lambda v: [int(c) for c in v.split(",")],
                        default=[1, 2, 4])
    parser.add_argument("--command", help="run this many times side by side instead")
    parser.add_argument("--workers", type=lambda v: [int(c) for c in v.split(",")],
                        default=[1, 2, 4], help="copies of --command")
    parser.add_argument("--prepare", help="run once before each --command measurement")
    parser.add_argument("--database", help="database: setting for the project")
    args = parser.parse_args()
    print(f"sink: benchmarks/zerosink.py --delay {args.delay:g} (a forked process per "
          f"connection), {os.cpu_count()} CPUs, {args.messages:,} messages")
    rows: list[tuple[str, float, int]] = []
    with tempfile.TemporaryDirectory(prefix="newsletter-relay-bench-") as tmp:
        project = make_project(Path(tmp) / "p", args.messages)
        if args.command:
            for copies in args.workers:
                print(f"{copies} × {args.command}…", file=sys.stderr)
                rate, count = measure_command(project, args.command, copies, args.delay,
                                              args.prepare, args.database)
                rows.append((f"{copies} × command", rate, count))
        else:
            for connections in args.connections:
                print(f"send, {connections} connection(s)…", file=sys.stderr)
                rate, count = measure_send(project, connections, args.delay)
                rows.append((f"send, {connections} connection(s)", rate, count))
    ideal = 1 / args.delay if args.delay else float("inf")
    print(f"\n{'run':<24}  {'msg/s':>8}  {'vs first':>8}  messages  (one connection's "
          f"ceiling: {ideal:.0f} msg/s)")
    for name, rate, count in rows:
        print(f"{name:<24}  {rate:>8.1f}  ×{rate / rows[0][1]:>7.2f}  {count:>8,}")


if __name__ == "__main__":
    main()
