"""Incoming-report benchmark: 10,000 reports of 50 policies POSTed to the rua endpoint.

    python bench/inbound.py [--database-url URL] [--reports 10000] [--clients 16]
                            [--runs N] [--baseline-root DIR] [--no-scheduler] [--py-spy FILE]

Starts `tlsrpt serve` on 127.0.0.1 (the database: --database-url or TLSRPT_DATABASE_URL,
where a fresh database is created and dropped afterwards; else the embedded one in a
temporary directory), creates an `inbound` token, then sends every report once as
`application/tlsrpt+gzip` over keep-alive connections. Each report has its own
report-id, 50 policies and failure details on a tenth of them. Prints reports/s, latency,
the server's CPU and peak RSS (VmHWM), the CPU of the server's database backends (WAL
writer and checkpointer not included), and checks the database holds every report.
With `--baseline-root DIR` (e.g. `git archive REV | tar -x -C DIR`) that tree's server
runs the same reports first in each of the `--runs`, and the ratio is printed;
`--py-spy FILE` records this tree's server (collapsed stacks for bench/flame.py).
`--no-scheduler` leaves out the scheduler's rounds (alerts and metrics read every report
received in the last 24 hours, every 30 s): whether a round falls inside a run depends on
how long the run takes, so before/after comparisons are fairer without.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import orjson
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import backend_cpu, cpu_seconds, fresh_database, load_average, serve

ROOT = Path(__file__).resolve().parents[1]
FAILURES = ["certificate-expired", "starttls-not-supported", "sts-policy-fetch-error",
            "validation-failure", "tlsa-invalid"]  # fmt: skip


def make_report(rng: random.Random, n: int, policies: int) -> bytes:
    entries = []
    for p in range(policies):
        domain = f"d{rng.randrange(500)}.bench.example"
        entry: dict[str, object] = {
            "policy": {
                "policy-type": "sts", "policy-domain": domain,
                "policy-string": ["version: STSv1", "mode: enforce", f"mx: mx{p % 3}.{domain}",
                                  "max_age: 604800"],
                "mx-host": [f"mx{p % 3}.{domain}"],
            },
            "summary": {"total-successful-session-count": rng.randrange(1, 5000),
                        "total-failure-session-count": 0},
        }  # fmt: skip
        if rng.random() < 0.1:
            counts = [rng.randrange(1, 9) for _ in range(rng.randrange(1, 4))]
            entry["failure-details"] = [
                {"result-type": rng.choice(FAILURES), "failed-session-count": count,
                 "sending-mta-ip": f"192.0.2.{rng.randrange(1, 250)}",
                 "receiving-mx-hostname": f"mx{p % 3}.{domain}",
                 "receiving-ip": f"198.51.100.{rng.randrange(1, 250)}"}
                for count in counts
            ]  # fmt: skip
            entry["summary"] = {"total-successful-session-count": rng.randrange(1, 5000),
                                "total-failure-session-count": sum(counts)}  # fmt: skip
        entries.append(entry)
    day = f"2026-11-{1 + n % 28:02d}"
    return orjson.dumps({
        "organization-name": f"Sender {n % 20}",
        "date-range": {"start-datetime": f"{day}T00:00:00Z", "end-datetime": f"{day}T23:59:59Z"},
        "contact-info": "tlsrpt@sender.example",
        "report-id": f"bench-{n}",
        "policies": entries,
    })  # fmt: skip


def request(port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/tlsrpt+gzip\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_status(reader: asyncio.StreamReader) -> int:
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def send_all(
    port: int, requests: list[bytes], clients: int
) -> tuple[list[float], dict[int, int]]:
    """Send every request once over `clients` keep-alive connections (a minimal HTTP/1.1
    client: a general-purpose one would cost more CPU than the server under test)."""
    queue = iter(requests)
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for item in queue:
                started = time.perf_counter()
                writer.write(item)
                status = await read_status(reader)
                latencies.append(time.perf_counter() - started)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, statuses


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(
    args: argparse.Namespace, bodies: list[bytes], work: Path, root: Path, label: str
) -> tuple[float, bool]:
    """One timed pass of every body against `root`'s server on a fresh database; returns
    reports/s and whether the database holds exactly what was acknowledged."""
    with (
        fresh_database(args.database_url, work, "inbound", root) as env,
        serve(env, *(["--no-scheduler"] if args.no_scheduler else [])) as (server, port),
    ):
        token = env.token("inbound", "bench")
        url = env.database_url
        path = f"/v1/tlsrpt/{token}"
        requests = [request(port, path, body) for body in bodies]
        spy = None
        if args.py_spy and root == ROOT:
            spy = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                 str(server.pid), "--format", "raw", "--rate", "200", "--output",
                 str(args.py_spy), "--nonblocking"],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
        db_before = backend_cpu(url)
        cpu_before = cpu_seconds(server.pid)
        started = time.perf_counter()
        latencies, statuses = asyncio.run(send_all(port, requests, args.clients))
        took = time.perf_counter() - started
        cpu = cpu_seconds(server.pid) - cpu_before
        db_after = backend_cpu(url)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        db_cpu = sum(t - db_before.get(pid, 0.0) for pid, t in db_after.items())
        latencies.sort()

        def p(q: float) -> float:
            return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

        rate = len(latencies) / took
        print(f"{label}: {len(latencies):,} reports in {took:.1f} s: {rate:,.0f} reports/s "
              f"({len(latencies) * args.policies / took:,.0f} policies/s), {args.clients} "
              f"clients, p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms, statuses {statuses}; "
              f"{load_average()}")  # fmt: skip
        per_report = cpu * 1000 / len(latencies)
        print(f"{label}: server CPU {cpu / took:.2f} cores, {per_report:.2f} ms per report; "
              f"peak RSS {peak_rss_mb(server.pid):.0f} MB; database backends CPU "
              f"{db_cpu / took:.2f} cores, "
              f"{db_cpu * 1000 / len(latencies):.2f} ms per report")  # fmt: skip
        with psycopg.connect(url) as conn:
            reports, policies = conn.execute(
                "SELECT count(*), coalesce(sum(policy_count), 0) FROM inbound_reports"
            ).fetchone() or (0, 0)
        expected = statuses.get(201, 0)
        exact = reports == expected == args.reports
        print(
            f"{label}: acknowledged {expected:,} reports, database holds {reports:,} with "
            f"{policies:,} policies: {'exact' if exact else 'MISMATCH'}"
        )
        return rate, exact


def spread(values: list[float], digits: int = 0) -> str:
    """min / median / max."""
    return " / ".join(f"{v:,.{digits}f}" for v in (min(values), median(values), max(values)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=os.environ.get("TLSRPT_DATABASE_URL"))
    parser.add_argument("--reports", type=int, default=10_000)
    parser.add_argument("--policies", type=int, default=50)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--runs", type=int, default=1, help="repeat (min / median / max)")
    parser.add_argument(
        "--baseline-root", type=Path, help="also run this checkout's server (before/after)"
    )
    parser.add_argument(
        "--no-scheduler",
        action="store_true",
        help="serve without the scheduler: no alert and metrics rounds during the run",
    )
    parser.add_argument(
        "--py-spy", type=Path, help="record this tree's server (collapsed stacks; last run)"
    )
    args = parser.parse_args()

    rng = random.Random(8460)
    started = time.perf_counter()
    bodies = [gzip.compress(make_report(rng, n, args.policies), 6) for n in range(args.reports)]
    print(f"built {len(bodies):,} reports of {args.policies} policies in "
          f"{time.perf_counter() - started:.1f} s; mean gzip body "
          f"{sum(map(len, bodies)) / len(bodies) / 1024:.1f} KiB; {load_average()}")  # fmt: skip
    ours: list[float] = []
    before: list[float] = []
    exact = True
    with tempfile.TemporaryDirectory(prefix="tlsrpt-bench-inbound-") as tmp:
        for _ in range(args.runs):
            if args.baseline_root:
                root = args.baseline_root.resolve()
                rate, ok = run(args, bodies, Path(tmp), root, f"baseline ({root})")
                before.append(rate)
                exact &= ok
            rate, ok = run(args, bodies, Path(tmp), ROOT, "ours")
            ours.append(rate)
            exact &= ok
    if args.runs > 1 or before:
        print(f"ours: {spread(ours)} reports/s (min / median / max of {args.runs})")
    if before:
        print(f"baseline: {spread(before)} reports/s")
        ratios = [a / b for a, b in zip(ours, before, strict=True)]
        print(f"ours / baseline, same run: {spread(ratios, 2)}x; {load_average()}")
    return 0 if exact else 1


if __name__ == "__main__":
    raise SystemExit(main())
