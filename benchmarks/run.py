"""Benchmark: compose → render → build → deliver, against baselines measured in the same run.

    python benchmarks/run.py --subscribers 100000 [--smtp-subscribers 10000] [--connections 2]

Prints a table and writes the same figures as JSON (benchmarks/results.json). Ratios matter,
not absolute times: every baseline runs on this machine, now, on the same issue.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
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
REPO = HERE.parent
sys.path.insert(0, str(REPO))

import newsletter.render as render_module  # noqa: E402
from newsletter.digest import compose_issue, load_inputs  # noqa: E402
from newsletter.fastmime import MessageTemplate  # noqa: E402
from newsletter.message import build_message, personal_fields  # noqa: E402
from newsletter.render import Renderer  # noqa: E402
from newsletter.settings import load_settings  # noqa: E402

DATE = "2026-11-24"
NOW = dt.datetime(2026, 11, 24, 7, 0, tzinfo=dt.UTC)
NAMES = ["Ada Lovelace", "Zoë Ångström-Núñez", "山田 太郎", "O'Brien, Pat", "Grace Hopper", ""]


def make_project(root: Path, subscribers: int, port: int = 2525, connections: int = 1,
                 source: Path = REPO) -> Path:
    """A project folder with the bundled templates and articles (of the tree at `source`)
    and `subscribers` readers."""
    shutil.copytree(source / "templates", root / "templates")
    shutil.copytree(source / "articles", root / "articles")
    (root / "config").mkdir()
    (root / "config" / "newsletter.yaml").write_text(f"""\
newsletter:
  title: The Morning Brief
  sender: "The Morning Brief <brief@example.com>"
  base_url: https://example.com
  unsubscribe_mailto: unsubscribe@example.com
  postal_address: "1 Quay Street, Harbourton"
articles: {{paths: [articles], headlines: 8, max_age_days: 2}}
subscribers: config/subscribers.yaml
templates: templates
delivery: {{backend: file, outbox: outbox}}
smtp: {{host: 127.0.0.1, port: {port}, security: none, connections: {connections},
       messages_per_connection: 100000}}
schedule: {{time: "07:00", timezone: Europe/London}}
""", encoding="utf-8")
    with (root / "config" / "subscribers.yaml").open("w", encoding="utf-8") as out:
        out.write("lists:\n  morning-brief:\n    title: The Morning Brief\n    subscribers:\n")
        for i in range(subscribers):
            name = NAMES[i % len(NAMES)]
            if name:
                out.write(f'      - email: reader{i}@example.com\n        name: "{name} {i}"\n')
            else:
                out.write(f"      - reader{i}@example.com\n")
    return root


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds else float("inf")


def measure_build(project: Path, sample_slow: int, sample_reference: int) -> dict[str, Any]:
    """In this process: render once, build every message, and the two build baselines."""
    os.chdir(project)
    settings = load_settings(Path("config/newsletter.yaml"))
    inputs = load_inputs(settings)
    [subscriber_list] = inputs.roster.lists.values()
    readers = subscriber_list.active
    calls = {"premailer": 0}
    real = render_module.Premailer.transform

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["premailer"] += 1
        return real(self, *args, **kwargs)

    render_module.Premailer.transform = counting  # type: ignore[method-assign]
    renderer = Renderer(settings.templates, settings.newsletter)
    issue = compose_issue(inputs, subscriber_list, dt.date.fromisoformat(DATE))
    started = time.perf_counter()
    rendered = renderer.render(issue)
    render_seconds = time.perf_counter() - started

    template = MessageTemplate(rendered, settings.newsletter, NOW)
    started, cpu = time.perf_counter(), time.process_time()
    size = 0
    for reader in readers:
        size += len(template.build(reader).data)
    fast_seconds = time.perf_counter() - started
    fast_cpu = time.process_time() - cpu

    # The same with DKIM signing (a 2048-bit key), on a sample.
    from cryptography.hazmat.primitives.asymmetric import rsa

    from newsletter.dkim import DkimSigner

    signer = DkimSigner("example.com", "bench", rsa.generate_private_key(
        public_exponent=65537, key_size=2048))
    signed = MessageTemplate(rendered, settings.newsletter, NOW, signer=signer)
    started = time.perf_counter()
    for reader in readers[:sample_reference]:
        signed.build(reader)
    dkim_seconds = time.perf_counter() - started
    # …and signed by dkimpy instead (its own RSA arithmetic), the library we verify with.
    import dkim as dkimpy
    from cryptography.hazmat.primitives import serialization

    from newsletter.dkim import SIGNED_HEADERS

    pem = signer.key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.TraditionalOpenSSL,
                                   serialization.NoEncryption())
    unsigned = [template.build(reader).data for reader in readers[:100]]
    started = time.perf_counter()
    for data in unsigned:
        dkimpy.sign(data, b"bench", b"example.com", pem, canonicalize=(b"relaxed", b"relaxed"),
                    include_headers=[h.encode() for h in SIGNED_HEADERS])
    dkimpy_seconds = time.perf_counter() - started

    # Baseline: render and inline per subscriber, as a naive tool does (on a sample).
    started = time.perf_counter()
    for reader in readers[:sample_slow]:
        personal = personal_fields(settings.newsletter, subscriber_list.id, reader)
        one = renderer.render(issue)
        one.html.fill(personal), one.text.fill(personal)
        build_message(one, reader, settings.newsletter, NOW)
    slow_seconds = time.perf_counter() - started

    # Baseline: render once, but build each message with the stdlib EmailMessage.
    started = time.perf_counter()
    for reader in readers[:sample_reference]:
        build_message(rendered, reader, settings.newsletter, NOW)
    reference_seconds = time.perf_counter() - started
    render_module.Premailer.transform = real  # type: ignore[method-assign]
    return {
        "subscribers": len(readers),
        "message_bytes_avg": size // max(1, len(readers)),
        "html_bytes": len(rendered.html.literals[0]) + sum(map(len, rendered.html.literals[1:])),
        "render_and_inline_once_s": round(render_seconds, 4),
        "build_fast_msgs_per_s": round(rate(len(readers), fast_seconds)),
        "build_fast_cpu_msgs_per_s": round(rate(len(readers), fast_cpu)),
        "build_fast_dkim_msgs_per_s": round(rate(sample_reference, dkim_seconds)),
        "dkimpy_sign_msgs_per_s": round(rate(len(unsigned), dkimpy_seconds)),
        "baseline_inline_per_subscriber_msgs_per_s": round(rate(sample_slow, slow_seconds), 1),
        "baseline_inline_sample": sample_slow,
        "baseline_emailmessage_msgs_per_s": round(rate(sample_reference, reference_seconds)),
        "baseline_emailmessage_sample": sample_reference,
    }


def run_cli(project: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `newsletter` in a child process; wall time, peak RSS and premailer calls."""
    count_file = project / "premailer-calls.txt"
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    child_env.update(env or {}, BENCH_COUNT_FILE=str(count_file), PYTHONPATH=str(REPO))
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(HERE / "counting_newsletter.py"), *args],
                               cwd=project, env=child_env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    _, status, _ = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    out, err = process.stdout.read().decode(), process.stderr.read().decode()  # type: ignore[union-attr]
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"newsletter {' '.join(args)} failed:\n{out}\n{err}")
    premailer_calls, peak_kb = map(int, count_file.read_text().split())
    # The progress lines' last rate covers the sending alone, without start-up.
    rates = re.findall(r"([\d.]+) msg/s", err)
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(peak_kb / 1024, 1),
            "premailer_calls": premailer_calls, "summary": out.strip()[-200:],
            "send_phase_msgs_per_s": round(float(rates[-1])) if rates else None}


class Sink:
    """The aiosmtpd sink in a process of its own (benchmarks/sink.py)."""

    def __init__(self, port: int) -> None:
        self.process = subprocess.Popen([sys.executable, str(HERE / "sink.py"), str(port)],
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready"

    def received(self) -> int:
        self.process.send_signal(2)
        out, _ = self.process.communicate(timeout=60)
        return int(out.strip().splitlines()[-1])


def bare_smtplib(port: int, messages: list[bytes], total: int, connections: int) -> float:
    """The ceiling: prebuilt messages over `connections` reused smtplib connections."""
    def worker(share: int) -> None:
        conn = smtplib.SMTP("127.0.0.1", port, local_hostname="example.com")
        for i in range(share):
            conn.sendmail("brief@example.com", [f"reader{i}@example.com"],
                          messages[i % len(messages)])
        conn.quit()

    shares = [total // connections + (1 if n < total % connections else 0)
              for n in range(connections)]
    threads = [threading.Thread(target=worker, args=(share,)) for share in shares]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--smtp-subscribers", type=int, default=10_000)
    parser.add_argument("--connections", type=lambda v: [int(c) for c in v.split(",")],
                        default=[1, 2, 4], help="comma-separated, e.g. 1,2,4")
    parser.add_argument("--json", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    results: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                               "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    with tempfile.TemporaryDirectory(prefix="newsletter-bench-") as tmp:
        tmp_path = Path(tmp)
        print(f"building messages for {args.subscribers:,} subscribers…", file=sys.stderr)
        big = make_project(tmp_path / "file", args.subscribers)
        results["build"] = measure_build(big, sample_slow=20, sample_reference=1000)
        os.chdir(REPO)
        print("newsletter send, file backend…", file=sys.stderr)
        results["file_send"] = run_cli(big, "send", "--date", DATE)
        results["file_send"]["msgs_per_s"] = round(
            results["build"]["subscribers"] / results["file_send"]["seconds"])
        shutil.rmtree(big / "outbox")

        results["smtp"] = [measure_smtp(tmp_path / f"smtp{c}", args.smtp_subscribers, c)
                           for c in args.connections]
    build = results["build"]
    results["ratios"] = {
        "fast_vs_emailmessage": round(build["build_fast_msgs_per_s"]
                                      / build["baseline_emailmessage_msgs_per_s"], 1),
        "fast_vs_inline_per_subscriber": round(
            build["build_fast_msgs_per_s"] / build["baseline_inline_per_subscriber_msgs_per_s"]),
    }
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"\n(written to {args.json})")


def measure_smtp(root: Path, n: int, connections: int) -> dict[str, Any]:
    """`newsletter send` over SMTP against a bare smtplib client on the same number of
    connections, both into the same kind of aiosmtpd sink, one after the other."""
    port = free_port()
    small = make_project(root, n, port, connections)
    os.chdir(small)
    inputs = load_inputs(load_settings(Path("config/newsletter.yaml")))
    [lst] = inputs.roster.lists.values()
    rendered = Renderer(inputs.settings.templates, inputs.settings.newsletter).render(
        compose_issue(inputs, lst, dt.date.fromisoformat(DATE)))
    template = MessageTemplate(rendered, inputs.settings.newsletter, NOW)
    prebuilt = [template.build(s).data for s in lst.active[:200]]
    os.chdir(REPO)
    active = len(lst.active)
    print(f"bare smtplib, {connections} connection(s), {active:,} messages…", file=sys.stderr)
    sink = Sink(port)
    ceiling_seconds = bare_smtplib(port, prebuilt, active, connections)
    assert sink.received() == active
    print(f"newsletter send, smtp backend, {connections} connection(s)…", file=sys.stderr)
    sink = Sink(port)
    smtp_run = run_cli(small, "send", "--date", DATE, "--backend", "smtp")
    assert sink.received() == active, "the sink did not get every message"
    bare = rate(active, ceiling_seconds)
    send = rate(active, smtp_run["seconds"])
    phase = smtp_run["send_phase_msgs_per_s"]
    return {
        "subscribers": active, "connections": connections, "sink": "aiosmtpd 1.4 "
        "in a separate process (Controller, handler counts messages)",
        "bare_smtplib_msgs_per_s": round(bare),
        "newsletter_send_msgs_per_s": round(send),
        "newsletter_send_phase_msgs_per_s": phase,
        "send_vs_bare": round(send / bare, 2),
        "send_phase_vs_bare": round(phase / bare, 2) if phase else None,
        "newsletter_send": smtp_run,
    }


def print_table(r: dict[str, Any]) -> None:
    b, f, s, q = r["build"], r["file_send"], r["smtp"], r["ratios"]
    rows = [
        ("render + inline CSS, once per issue", f"{b['render_and_inline_once_s'] * 1000:.0f} ms",
         ""),
        ("build messages (per-issue template)", f"{b['build_fast_msgs_per_s']:,} msg/s",
         f"CPU-only {b['build_fast_cpu_msgs_per_s']:,} msg/s"),
        ("  the same, DKIM-signed (RSA 2048)", f"{b['build_fast_dkim_msgs_per_s']:,} msg/s",
         f"one core; dkimpy signing alone: {b['dkimpy_sign_msgs_per_s']:,} msg/s"),
        ("  baseline: EmailMessage per subscriber",
         f"{b['baseline_emailmessage_msgs_per_s']:,} msg/s", f"×{q['fast_vs_emailmessage']}"),
        ("  baseline: render + premailer per subscriber",
         f"{b['baseline_inline_per_subscriber_msgs_per_s']:,} msg/s",
         f"×{q['fast_vs_inline_per_subscriber']:,}"),
        (f"newsletter send, file backend, {b['subscribers']:,}", f"{f['seconds']} s",
         f"{f['msgs_per_s']:,} msg/s, peak RSS {f['peak_rss_mb']} MB, "
         f"premailer calls {f['premailer_calls']}"),
    ]
    one = s[0]["bare_smtplib_msgs_per_s"]
    for m in s:
        c = m["connections"]
        rows += [
            (f"bare smtplib → aiosmtpd, {c} conn., {m['subscribers']:,}",
             f"{m['bare_smtplib_msgs_per_s']:,} msg/s",
             f"×{m['bare_smtplib_msgs_per_s'] / one:.2f} of bare smtplib on {s[0]['connections']}"),
            (f"newsletter send, smtp backend, {c} conn.",
             f"{m['newsletter_send_msgs_per_s']:,} msg/s",
             f"{m['send_vs_bare']:.0%} of bare smtplib with start-up, peak RSS "
             f"{m['newsletter_send']['peak_rss_mb']} MB"),
            ("  the sending alone (from its progress lines)",
             f"{m['newsletter_send_phase_msgs_per_s'] or 0:,} msg/s",
             f"{m['send_phase_vs_bare'] or 0:.0%} of bare smtplib"),
        ]
    width = max(len(row[0]) for row in rows)
    print(f"\n{'measure':<{width}}  {'result':>16}  notes")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>16}  {note}")


if __name__ == "__main__":
    main()
