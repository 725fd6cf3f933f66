"""Incoming-report benchmark: 10,000 reports of 50 policies POSTed to the rua endpoint.

    python bench/inbound.py [--database-url URL] [--reports 10000] [--clients 16]

Starts `tlsrpt serve` on 127.0.0.1 (the database: --database-url or TLSRPT_DATABASE_URL,
where a fresh database is created and dropped afterwards; else the embedded one in a
temporary directory), creates an `inbound` token, then sends every report once as
`application/tlsrpt+gzip` over keep-alive connections. Each report has its own
report-id, 50 policies and failure details on a tenth of them. Prints reports/s, latency,
the server's CPU and peak RSS (VmHWM), the CPU of the server's database backends (WAL
writer and checkpointer not included), and checks the database holds every report.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import random
import sys
import tempfile
import time
from pathlib import Path

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=os.environ.get("TLSRPT_DATABASE_URL"))
    parser.add_argument("--reports", type=int, default=10_000)
    parser.add_argument("--policies", type=int, default=50)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()

    rng = random.Random(8460)
    started = time.perf_counter()
    bodies = [gzip.compress(make_report(rng, n, args.policies), 6) for n in range(args.reports)]
    print(f"built {len(bodies):,} reports of {args.policies} policies in "
          f"{time.perf_counter() - started:.1f} s; mean gzip body "
          f"{sum(map(len, bodies)) / len(bodies) / 1024:.1f} KiB")  # fmt: skip
    with (
        tempfile.TemporaryDirectory(prefix="tlsrpt-bench-inbound-") as tmp,
        fresh_database(args.database_url, Path(tmp), "inbound") as env,
        serve(env) as (server, port),
    ):
        token = env.token("inbound", "bench")
        url = env.database_url
        path = f"/v1/tlsrpt/{token}"
        requests = [request(port, path, body) for body in bodies]
        db_before = backend_cpu(url)
        cpu_before = cpu_seconds(server.pid)
        started = time.perf_counter()
        latencies, statuses = asyncio.run(send_all(port, requests, args.clients))
        took = time.perf_counter() - started
        cpu = cpu_seconds(server.pid) - cpu_before
        db_after = backend_cpu(url)
        db_cpu = sum(t - db_before.get(pid, 0.0) for pid, t in db_after.items())
        latencies.sort()

        def p(q: float) -> float:
            return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

        print(f"{len(latencies):,} reports in {took:.1f} s: {len(latencies) / took:,.0f} reports/s "
              f"({len(latencies) * args.policies / took:,.0f} policies/s), {args.clients} clients, "
              f"p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms, statuses {statuses}; "
              f"{load_average()}")  # fmt: skip
        per_report = cpu * 1000 / len(latencies)
        print(f"server CPU {cpu / took:.2f} cores, {per_report:.2f} ms per report; "
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
            f"acknowledged {expected:,} reports, database holds {reports:,} with "
            f"{policies:,} policies: {'exact' if exact else 'MISMATCH'}"
        )
        return 0 if exact else 1


if __name__ == "__main__":
    raise SystemExit(main())
