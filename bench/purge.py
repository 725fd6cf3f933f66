"""Retention purge of one UTC day of 10,000 policy domains: row deletes (before migration
0008, unpartitioned counters) against dropping the day's partitions (now).

    python bench/purge.py [--database-url URL] [--domains 10000] [--details-every 10]

Two fresh databases: one migrated to every head but 0008 (the tables as they were), one
to all heads. Both get the same day (a policy row and a recipient row per domain, a
failure row for every tenth), plus the next day, which must survive. Timed: the purge
transaction as each version runs it (before: the DELETE statements it had; now:
`app.ingest.service.purge_expired`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from app.config import Settings
from app.db.migrate import _config
from app.db.pool import Pool, open_pool
from app.ingest import store
from app.ingest.service import purge_expired
from bench.harness import load_average, with_database
from tests.clock import FakeClock

DAY = date(2026, 1, 10)
FILL = """
INSERT INTO policy_counts (day, policy_key, policy_type, policy_domain, policy_string,
    mx_host, success_count, failure_count, trigger_count)
SELECT d, decode(md5('p' || i), 'hex'), 'sts', 'd' || i || '.example',
    ARRAY['version: STSv1', 'mode: enforce', 'mx: mx.d' || i || '.example'],
    ARRAY['mx.d' || i || '.example'], 1000, 5, 1000
FROM generate_series(1, %(domains)s) AS i, unnest(%(days)s::date[]) AS d;
INSERT INTO recipient_counts (day, policy_key, recipient_domain, success_count, failure_count)
SELECT d, decode(md5('p' || i), 'hex'), 'd' || i || '.example', 1000, 5
FROM generate_series(1, %(domains)s) AS i, unnest(%(days)s::date[]) AS d;
INSERT INTO failure_counts (day, policy_key, detail_key, result_type, receiving_mx_hostname,
    failed_session_count)
SELECT d, decode(md5('p' || i), 'hex'), decode(md5('f' || i), 'hex'), 'certificate-expired',
    'mx.d' || i || '.example', 5
FROM generate_series(1, %(domains)s, %(every)s) AS i, unnest(%(days)s::date[]) AS d;
"""
# The purge statements before partitioning (app/ingest/store.py delete_counts_before).
DELETE_BEFORE = [
    "DELETE FROM failure_counts WHERE day < %(day)s",
    "DELETE FROM recipient_counts WHERE day < %(day)s",
    "DELETE FROM policy_counts WHERE day < %(day)s",
    "DELETE FROM days WHERE day < %(day)s",
    "DELETE FROM ingest_batches WHERE day < %(day)s",
]


def migrate(url: str, partitioned: bool) -> None:
    from alembic import command
    from alembic.script import ScriptDirectory

    cfg = _config(url)
    heads = ScriptDirectory.from_config(cfg).get_heads()  # type: ignore[arg-type]
    for head in heads:
        if partitioned or head != "0008":
            command.upgrade(cfg, head)  # type: ignore[arg-type]


def fill(url: str, domains: int, every: int, partitioned: bool) -> None:
    days = [DAY, DAY + timedelta(days=1)]
    with psycopg.connect(url) as conn:
        if partitioned:
            conn.execute("SELECT ensure_count_partitions(%s::date[])", (days,))
        for statement in FILL.split(";")[:-1]:
            conn.execute(statement, {"domains": domains, "days": days, "every": every})
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def remaining(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE day = %(d)s), count(*) FILTER (WHERE day > %(d)s)"
            " FROM policy_counts",
            {"d": DAY},
        ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def wal_bytes(url: str, since: str | None = None) -> tuple[str, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT pg_current_wal_lsn()::text,"
            " coalesce(pg_current_wal_lsn() - %s::pg_lsn, 0)::bigint",
            (since,),
        ).fetchone()
    assert row is not None
    return str(row[0]), int(row[1])


def purge_before(url: str) -> float:
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        with conn.transaction():
            for statement in DELETE_BEFORE:
                conn.execute(statement, {"day": DAY + timedelta(days=1)})
        return time.perf_counter() - started


async def purge_now(url: str, work: Path) -> float:
    settings = Settings(data_dir=work)
    pool = await open_pool(url, settings.database)
    try:
        # The day after DAY is the oldest kept: DAY is past retention.
        now = datetime.combine(DAY + timedelta(days=1 + settings.retention.results_days),
                               datetime.min.time(), UTC)  # fmt: skip
        clock = FakeClock(now)
        await ensure_ahead(pool, clock)  # what the scheduler's purge also does; not timed
        started = time.perf_counter()
        await purge_expired(pool, clock, settings)
        return time.perf_counter() - started
    finally:
        await pool.close()


async def ensure_ahead(pool: Pool, clock: FakeClock) -> None:
    today = clock().date()
    async with pool.connection() as conn, conn.transaction():
        await store.ensure_partitions(conn, [today, today + timedelta(days=1)])


def vacuum(url: str) -> float:
    """What reclaiming the space of deleted rows costs afterwards (autovacuum's work)."""
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        conn.execute("VACUUM policy_counts, failure_counts, recipient_counts")
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("TLSRPT_DATABASE_URL"))
    parser.add_argument("--domains", type=int, default=10_000)
    parser.add_argument("--details-every", type=int, default=10)
    args = parser.parse_args()
    if not args.database_url:
        parser.error("--database-url (or TLSRPT_DATABASE_URL) is required")
    ok = True
    with tempfile.TemporaryDirectory(prefix="tlsrpt-bench-purge-") as tmp:
        for partitioned in (False, True):
            name = f"tlsrpt_bench_purge_{int(partitioned)}_{os.getpid()}"
            with psycopg.connect(args.database_url, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            url = with_database(args.database_url, name)
            try:
                migrate(url, partitioned)
                fill(url, args.domains, args.details_every, partitioned)
                lsn, _ = wal_bytes(url)
                if partitioned:
                    took = asyncio.run(purge_now(url, Path(tmp)))
                else:
                    took = purge_before(url)
                _, wal = wal_bytes(url, lsn)
                reclaim = vacuum(url)
                left = remaining(url)
                ok = ok and left == (0, args.domains)
                label = "now (drop partitions)" if partitioned else "before (delete rows)"
                print(
                    f"purge of a {args.domains:,}-domain day, {label}: {took * 1000:.1f} ms, "
                    f"{wal / 1024:,.0f} KiB of WAL; VACUUM afterwards {reclaim * 1000:.1f} ms; "
                    f"rows left of that day {left[0]}, of the next day {left[1]:,}"
                )
            finally:
                with psycopg.connect(args.database_url, autocommit=True) as conn:
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(name)
                        )
                    )
    print(load_average())
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
