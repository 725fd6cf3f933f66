"""Report-building benchmark: `build_day` for one day of 10,000 policy domains.

    python bench/build_day.py [--database-url URL] [--domains 10000] [--results 1000000]

Creates a scratch database on the server (default: TLSRPT_DATABASE_URL, else
postgresql://postgres@127.0.0.1:5432/postgres), migrates it, and loads the results through
the ingest service in a child process (batches of 10,000, as POST /v1/results would):
per domain an `sts` and a `no-policy-found` policy with 5 % failures over a few failure
details; every tenth policy domain is an MX host with a DANE (`tlsa`) policy. Then it times
`build_day` in this process with a resolver that answers at once (9 in 10 domains publish
a record with a mailto and an https rua), and prints domains/s and this process's peak RSS.
The scratch database is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import subprocess
import sys
import time
import zlib
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time
from pathlib import Path

import psycopg
from psycopg import sql
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.config import Settings  # noqa: E402
from app.db.migrate import upgrade  # noqa: E402
from app.db.pool import open_pool  # noqa: E402
from app.dns.resolver import TxtAnswer  # noqa: E402
from app.ingest.service import IngestCommitter, record_tally  # noqa: E402
from app.report.service import build_day  # noqa: E402
from app.tlsrpt.model import FailureDetail, Policy, PolicyType, ResultType  # noqa: E402
from app.tlsrpt.tally import Tally  # noqa: E402

DAY = date(2026, 11, 23)


def clock() -> datetime:
    """The service's time during the benchmark: the day after DAY."""
    return datetime.combine(DAY + timedelta(days=1), day_time(12), UTC)


BATCH = 10_000
FAILURES = [
    ResultType.CERTIFICATE_EXPIRED,
    ResultType.STARTTLS_NOT_SUPPORTED,
    ResultType.VALIDATION_FAILURE,
]


def domain_name(i: int) -> str:
    return f"mx.d{i}.bench.example" if i % 10 == 0 else f"d{i}.bench.example"


def policies(i: int) -> list[Policy]:
    name = domain_name(i)
    if i % 10 == 0:
        return [Policy(PolicyType.TLSA, name, ("3 1 1 " + f"{i:064X}",))]
    sts = Policy(
        PolicyType.STS,
        name,
        ("version: STSv1", "mode: enforce", f"mx: mx.{name}", "max_age: 86400"),
        (f"mx.{name}",),
    )
    return [sts, Policy(PolicyType.NO_POLICY_FOUND, name)]


async def load(url: str, domains: int, results: int) -> None:
    """Ingest `results` sessions over `domains` policy domains via the ingest service."""
    settings = Settings(database_url=SecretStr(url))
    pool = await open_pool(url, settings.database)
    committer = IngestCommitter(pool, clock)
    rng = random.Random(8460)
    all_policies = [policies(i) for i in range(domains)]
    try:
        tally = Tally()
        for n in range(results):
            choices = all_policies[n % domains]
            policy = choices[0] if len(choices) == 1 or rng.random() < 0.8 else choices[1]
            detail = None
            if rng.random() < 0.05:
                detail = FailureDetail(
                    rng.choice(FAILURES),
                    sending_mta_ip=f"192.0.2.{rng.randrange(1, 4)}",
                    receiving_mx_hostname=f"mx.{policy.policy_domain}",
                    receiving_ip=f"198.51.100.{rng.randrange(1, 3)}",
                )
            tally.add_session(DAY, policy, detail)
            if tally.sessions == BATCH:
                await record_tally(committer, clock, settings, tally)
                tally = Tally()
        if len(tally):
            await record_tally(committer, clock, settings, tally)
    finally:
        await committer.close()
        await pool.close()


class InstantResolver:
    """Answers every `_smtp._tls` query at once; one domain in ten has no record."""

    async def resolve_txt(self, name: str) -> TxtAnswer:
        domain = name.removeprefix("_smtp._tls.").rstrip(".")
        if zlib.crc32(domain.encode()) % 10 == 0:
            return []
        return [(f"v=TLSRPTv1; rua=mailto:tlsrpt@{domain},https://tlsrpt.{domain}/v1".encode(),)]


async def build(url: str) -> None:
    settings = Settings(database_url=SecretStr(url))
    pool = await open_pool(url, settings.database)
    resolver = InstantResolver()
    try:
        started = time.perf_counter()
        cpu_started = time.process_time()
        summary = await build_day(pool, resolver, clock, settings.report, DAY)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        again_started = time.perf_counter()
        again = await build_day(pool, resolver, clock, settings.report, DAY)
        again_elapsed = time.perf_counter() - again_started
    finally:
        await pool.close()
    domains = summary.built + summary.no_report + summary.pending + summary.gave_up
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"policy domains      {domains}")
    print(f"reports built       {summary.built} (no report: {summary.no_report})")
    print(f"build_day           {elapsed:.2f} s, {domains / elapsed:,.0f} domains/s")
    print(f"  CPU of the builder {cpu:.2f} s (the rest: PostgreSQL, other processes)")
    print(f"second run (no-op)  {again_elapsed:.2f} s, already done: {again.already_done}")
    print(f"peak RSS (builder)  {rss_mb:.0f} MB")


def admin(server_url: str, statement: sql.Composed) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(statement)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "TLSRPT_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--domains", type=int, default=10_000)
    parser.add_argument("--results", type=int, default=1_000_000)
    parser.add_argument("--load-only", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_only:
        asyncio.run(load(args.load_only, args.domains, args.results))
        return
    name = f"tlsrpt_bench_reports_{os.getpid()}"
    info = psycopg.conninfo.conninfo_to_dict(args.database_url)
    url = psycopg.conninfo.make_conninfo(**{**info, "dbname": name})  # type: ignore[arg-type]
    admin(args.database_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        upgrade(url)
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--load-only",
                url,
                "--domains",
                str(args.domains),
                "--results",
                str(args.results),
            ],
            check=True,
            timeout=1800,
        )
        print(f"loaded {args.results:,} results in {time.perf_counter() - started:.1f} s")
        asyncio.run(build(url))
    finally:
        admin(
            args.database_url,
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)),
        )


if __name__ == "__main__":
    main()
