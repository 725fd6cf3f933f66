"""Ingest benchmark: `tlsrpt serve` loaded over HTTP on loopback.

    python bench/ingest.py [--database-url URL] [--batch-seconds 30] [--single-seconds 30]
                           [--baseline-root DIR] [--py-spy FILE]

Starts the server on a fresh database (created on --database-url and dropped afterwards;
else the embedded PostgreSQL in a temporary directory),
then (a) batches of 1,000 results over 1,000 policy domains with 5 % failures, and
(b) single-result requests from 64 concurrent clients. It samples the server's RSS, and
afterwards checks that the database totals equal what the 200 responses acknowledged.
With `--baseline-root DIR` (an older checkout) that tree's server is measured first, so
before and now come from one run; `--py-spy FILE` records the server during (b).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT, ProcessSampler, fresh_database, load_average, serve
from loadgen import Stats, encode_post, run_clients

FAILURES = [
    "certificate-expired",
    "starttls-not-supported",
    "sts-policy-invalid",
    "certificate-host-mismatch",
    "validation-failure",
]


def make_result(rng: random.Random, domains: int) -> dict[str, object]:
    d = rng.randrange(domains)
    domain = f"d{d}.bench.example"
    item: dict[str, object] = {
        "policy": {
            "policy-type": "sts",
            "policy-domain": domain,
            "policy-string": [
                "version: STSv1",
                "mode: enforce",
                f"mx: mx.{domain}",
                "max_age: 86400",
            ],
            "mx-host": [f"mx.{domain}"],
        },
        "result-type": "success",
    }
    if rng.random() < 0.05:
        item["result-type"] = rng.choice(FAILURES)
        item["sending-mta-ip"] = f"192.0.2.{rng.randrange(1, 5)}"
        item["receiving-mx-hostname"] = f"mx.{domain}"
        item["receiving-ip"] = f"198.51.100.{rng.randrange(1, 5)}"
    return item


def commits(url: str) -> int:
    """Transactions committed in the benchmark's database so far (the statistics
    collector's count, a little behind)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


def db_total(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(success_count + failure_count), 0) FROM policy_counts"
        ).fetchone()
    return int(row[0]) if row else 0


async def phase(
    port: int, token: str, clients: int, seconds: float, batch: int, rng: random.Random
) -> tuple[Stats, int, float]:
    sent = 0
    pool_size = 64
    bodies = []
    for _ in range(pool_size):
        items = [make_result(rng, 1000) for _ in range(batch)]
        body = orjson.dumps({"results": items})
        bodies.append((encode_post("127.0.0.1", port, "/v1/results", token, body), batch))
    counter = 0

    def next_request() -> tuple[bytes, int]:
        nonlocal counter
        counter += 1
        return bodies[counter % pool_size]

    def on_ok(sessions: int) -> None:
        nonlocal sent
        sent += sessions

    stats = Stats()
    started = time.perf_counter()
    await run_clients("127.0.0.1", port, clients, seconds, next_request, stats, on_ok)
    return stats, sent, time.perf_counter() - started


def measure(args: argparse.Namespace, root: Path, label: str) -> tuple[float, float, bool]:
    """Run both phases against `root`'s server; returns results/s, requests/s, exact."""
    with (
        tempfile.TemporaryDirectory(prefix="tlsrpt-bench-") as tmp,
        fresh_database(args.database_url, Path(tmp), "ingest", root) as env,
        serve(env, "--workers", str(args.workers)) as (server, port),
    ):
        token = env.token("ingest", "bench")
        url = env.database_url
        before = db_total(url)
        rss = ProcessSampler(server.pid)
        rss.start()
        rng = random.Random(8460)
        print(f"{label}: server pid {server.pid}, day {datetime.now(UTC).date()}; {load_average()}")
        batches = singles = 0.0
        sent_a = 0
        cpu0 = rss.cpu()
        if args.batch_seconds > 0:
            stats, sent_a, took = asyncio.run(
                phase(port, token, args.batch_clients, args.batch_seconds, 1000, rng)
            )
            batches = sent_a / took
            print(
                f"{label} (a) batches of 1000 over 1000 domains, {args.batch_clients} clients: "
                f"{batches:,.0f} results/s ({stats.ok} batches ok, {stats.failed} failed, "
                f"p50 {stats.p(0.5) * 1000:.1f} ms, p99 {stats.p(0.99) * 1000:.1f} ms)"
            )
            cpu1 = rss.cpu()
            print(
                f"    server CPU {(cpu1 - cpu0) / took:.2f} "
                f"cores, {(cpu1 - cpu0) * 1e6 / max(sent_a, 1):.1f} "
                "us per result"
            )
        cpu1 = rss.cpu()
        commits1 = commits(url)
        spy = None
        if args.py_spy and root == ROOT:
            spy = subprocess.Popen(
                ["py-spy", "record", "--pid", str(server.pid), "--format", "raw",
                 "--rate", "200", "--output", str(args.py_spy), "--nonblocking"],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
        stats, sent_b, took = asyncio.run(
            phase(port, token, args.single_clients, args.single_seconds, 1, rng)
        )
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        singles = stats.ok / took
        print(
            f"{label} (b) single results, {args.single_clients} clients: {singles:,.0f} "
            f"requests/s, p50 {stats.p(0.5) * 1000:.1f} ms, p99 {stats.p(0.99) * 1000:.1f} ms, "
            f"{stats.failed} failed {stats.statuses}"
        )
        cpu2 = rss.cpu()
        time.sleep(1)  # the statistics collector reports every 0.5 s
        groups = commits(url) - commits1
        print(
            f"    server CPU {(cpu2 - cpu1) / took:.2f} "
            f"cores, {(cpu2 - cpu1) * 1e6 / max(stats.ok, 1):.0f} "
            f"us per request; {groups:,} transactions committed, "
            f"{stats.ok / max(groups, 1):.1f} requests a transaction (group commit)"
        )
        rss.stop.set()
        stored = db_total(url) - before
        sent = sent_a + sent_b
        print(
            f"{label}: server peak RSS {rss.peak / 2**20:.0f} MB in all, "
            f"{rss.peak_one / 2**20:.0f} MB the largest process"
        )
        print(
            f"{label}: acknowledged {sent:,} sessions, database holds {stored:,}: "
            f"{'exact' if stored == sent else 'MISMATCH'}"
        )
        return batches, singles, stored == sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=os.environ.get("TLSRPT_DATABASE_URL"))
    parser.add_argument("--batch-seconds", type=float, default=30, help="0 skips (a)")
    parser.add_argument("--single-seconds", type=float, default=30)
    parser.add_argument("--batch-clients", type=int, default=4)
    parser.add_argument("--single-clients", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1, help="tlsrpt serve --workers")
    parser.add_argument("--py-spy", type=Path, help="record the server during (b)")
    parser.add_argument(
        "--baseline-root", type=Path, help="first run this checkout's server (before/after)"
    )
    args = parser.parse_args()
    exact = True
    if args.baseline_root:
        before = measure(args, args.baseline_root.resolve(), "before")
        exact = before[2]
    now = measure(args, ROOT, "now")
    if args.baseline_root:
        ratios = [
            f"{name} {n / b:.2f}x"
            for name, b, n in zip(("(a)", "(b)"), before[:2], now[:2], strict=True)
            if b > 0
        ]
        print(f"now / before (same run): {', '.join(ratios)}; {load_average()}")
    return 0 if exact and now[2] else 1


if __name__ == "__main__":
    raise SystemExit(main())
