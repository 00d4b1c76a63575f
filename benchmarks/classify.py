"""Benchmark: classifying the bounce mailbox, against parsing alone, in the same run.

    python benchmarks/classify.py --mails 10000

Builds N mails from tests/samples/inbound (40 % bounces: the hand-made DSNs and
flufl.bounce's real-world ones; 20 % complaints; 20 % auto-replies and challenges; 20 %
mailto unsubscribes), each with the tokens of its own reader, then times
`newsletter.inbound.classify.classify` over all of them and, as baselines on the same
mails, `email.message_from_bytes` alone (compat32, which classify parses with, and
policy.default) and compat32 parsing plus `flufl.bounce.all_failures` (flufl.bounce as its
own tests use it). Prints messages per second of each (wall and CPU time: the machine may
be shared) and the ratios, and how many mails came out as the kind they were built as.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import flufl.bounce  # noqa: E402

from newsletter import unsubscribe, verp  # noqa: E402
from newsletter.inbound.classify import classify  # noqa: E402
from newsletter.message import message_id  # noqa: E402

SAMPLES = REPO / "tests" / "samples" / "inbound"
SECRET = "benchmark-secret"
BASE = "bounces@bounce.example.com"
MIX = {"bounce": 0.4, "complaint": 0.2, "auto-reply": 0.2, "unsubscribe": 0.2}


def _pools() -> dict[str, list[bytes]]:
    """Sample bytes by the kind they classify as (tests/samples/inbound/*.tsv)."""
    pools: dict[str, list[bytes]] = {kind: [] for kind in MIX}
    for folder, table in ((SAMPLES, "expected.tsv"), (SAMPLES / "flufl", "MANIFEST.tsv")):
        for line in (folder / table).read_text(encoding="utf-8").splitlines():
            if line.startswith("#") or not line:
                continue
            name, kind = line.split("\t")[:2]
            if kind in pools:
                pools[kind].append((folder / name).read_bytes())
    return pools


def _fill(raw: bytes, n: int) -> bytes:
    issue, reader = f"daily-2026-11-{n % 28 + 1:02d}", f"reader{n}@example.org"
    local, _, domain = BASE.partition("@")
    ours = b"@@" in raw
    for name, value in (
            (b"@@VERP_B@@", f"{local}+{verp.token(SECRET, 'b', issue, reader)}@{domain}"),
            (b"@@VERP_U@@", f"{local}+{verp.token(SECRET, 'u', issue, reader)}@{domain}"),
            (b"@@LINK_TOKEN@@", unsubscribe.opaque_token(SECRET, "daily", reader)),
            (b"@@MESSAGE_ID@@", message_id(issue, reader, "example.com")[1:-1])):
        raw = raw.replace(name, value.encode())
    if not ours:
        # flufl.bounce's samples: as if they had come back to this reader's VERP address.
        raw = f"Delivered-To: {local}+{verp.token(SECRET, 'b', issue, reader)}@{domain}\n" \
              .encode() + raw
    return raw


def build(count: int, seed: int = 11) -> list[tuple[str, bytes]]:
    chance = random.Random(seed)
    pools = _pools()
    kinds = list(MIX)
    return [(kind, _fill(chance.choice(pools[kind]), n))
            for n, kind in enumerate(chance.choices(kinds, [MIX[k] for k in kinds], k=count))]


def timed(label: str, mails: list[bytes], work: Callable[[bytes], object]) -> float:
    """Messages per second of CPU time (also printed: wall time)."""
    start, cpu = time.perf_counter(), time.process_time()
    for raw in mails:
        work(raw)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    rate = len(mails) / cpu
    print(f"{label:<54} {seconds:7.2f} s wall {len(mails) / seconds:9,.0f} msgs/s   "
          f"{cpu:7.2f} s CPU {rate:9,.0f} msgs/s")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=10_000)
    args = parser.parse_args()
    built = build(args.mails)
    mails = [raw for _, raw in built]
    size = sum(map(len, mails)) / len(mails)
    print(f"{len(mails):,} mails, {size / 1024:.1f} KiB on average, "
          f"{dict(Counter(kind for kind, _ in built))}")

    def parse(raw: bytes) -> object:
        return email.message_from_bytes(raw, policy=email.policy.compat32)

    def parse_default(raw: bytes) -> object:
        return email.message_from_bytes(raw, policy=email.policy.default)

    def parse_and_scan(raw: bytes) -> object:
        return flufl.bounce.all_failures(email.message_from_bytes(raw))

    results: list[str] = []

    def ours(raw: bytes) -> object:
        got = classify(raw, secret=SECRET, bounces_address=BASE)
        results.append(got.kind)
        return got

    parse_rate = timed("baseline: message_from_bytes (compat32)", mails, parse)
    default_rate = timed("baseline: message_from_bytes (policy.default)", mails, parse_default)
    scan_rate = timed("baseline: compat32 parse + flufl.bounce.all_failures", mails,
                      parse_and_scan)
    rate = timed("newsletter.inbound.classify.classify", mails, ours)
    print(f"classify / parse alone: {rate / parse_rate:.2f} (compat32), "
          f"{rate / default_rate:.2f} (policy.default); "
          f"classify / parse + flufl.bounce: {rate / scan_rate:.2f}")
    right = sum(1 for (kind, _), got in zip(built, results, strict=True) if kind == got)
    print(f"classified as built: {right:,} of {len(mails):,}; kinds: {dict(Counter(results))}")


if __name__ == "__main__":
    main()
