"""Counters partitioned by UTC day: retention drops partitions, ingest creates them, and
concurrent creators make each partition once."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import psycopg

from app.config import Settings
from app.db.pool import open_pool
from app.ingest import store
from app.ingest.service import IngestCommitter, day_aggregates, purge_expired, record_tally
from app.tlsrpt.model import FailureDetail, Policy, PolicyType, ResultType
from app.tlsrpt.tally import Tally
from tests.clock import FakeClock

TABLES = ("policy_counts", "failure_counts", "recipient_counts")


def tally(day: date, sessions: int) -> Tally:
    t = Tally()
    policy = Policy(PolicyType.STS, "example.com", ("version: STSv1",), ("mx.example.com",))
    t.add_session(day, policy, None, count=sessions, recipient_domain="example.com")
    detail = FailureDetail(ResultType.CERTIFICATE_EXPIRED, "192.0.2.1", "mx.example.com")
    t.add_session(day, policy, detail, recipient_domain="example.com")
    return t


def partitions(url: str, day: date) -> list[str]:
    names = [f"{table}_{day:%Y%m%d}" for table in TABLES]
    with psycopg.connect(url) as conn:
        return [n for n in names if conn.execute("SELECT to_regclass(%s)", (n,)).fetchone()[0]]  # type: ignore[index]


async def test_retention_drops_the_partitions_of_expired_days(
    database_url: str, settings: Settings, clock: FakeClock
) -> None:
    old, kept = date(2025, 3, 1), date(2025, 3, 2)
    pool = await open_pool(database_url, settings.database)
    committer = IngestCommitter(pool, clock)
    try:
        clock.set(datetime(2025, 3, 2, 12, tzinfo=UTC))
        assert await record_tally(committer, clock, settings, tally(old, 4))
        assert await record_tally(committer, clock, settings, tally(kept, 6))
        assert len(partitions(database_url, old)) == 3
        # The day after `old` leaves the retention window: its partitions go, whole.
        clock.set(datetime(2025, 3, 2, 12, tzinfo=UTC) + timedelta(days=30))
        assert await purge_expired(pool, clock, settings) == 1
        assert partitions(database_url, old) == []
        assert len(partitions(database_url, kept)) == 3
        assert await day_aggregates(pool, old) == []
        [aggregate] = await day_aggregates(pool, kept)
        assert (aggregate.success_count, aggregate.failure_count) == (6, 1)
        # ... and today's and tomorrow's are made ahead.
        today = clock().date()
        assert len(partitions(database_url, today + timedelta(days=1))) == 3
    finally:
        await committer.close()
        await pool.close()


async def test_a_day_dropped_after_ingest_saw_it_is_created_again(
    database_url: str, settings: Settings, clock: FakeClock
) -> None:
    day = date(2025, 4, 1)
    pool = await open_pool(database_url, settings.database)
    committer = IngestCommitter(pool, clock)
    try:
        clock.set(datetime(2025, 4, 1, 12, tzinfo=UTC))
        assert await record_tally(committer, clock, settings, tally(day, 2))
        async with pool.connection() as conn, conn.transaction():
            await store.drop_counts_before(conn, day + timedelta(days=1))
        assert partitions(database_url, day) == []
        # This committer remembers the day as partitioned; the insert finds no partition.
        assert await record_tally(committer, clock, settings, tally(day, 3))
        [aggregate] = await day_aggregates(pool, day)
        assert (aggregate.success_count, aggregate.failure_count) == (3, 1)
    finally:
        await committer.close()
        await pool.close()


async def test_concurrent_creators_make_each_partition_once(database_url: str) -> None:
    day = date(2025, 5, 1)
    conns = [await psycopg.AsyncConnection.connect(database_url) for _ in range(4)]
    try:

        async def create(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> int:
            async with conn.transaction():
                return await store.ensure_partitions(conn, [day, day + timedelta(days=1)])

        created = await asyncio.gather(*(create(c) for c in conns))
        assert sorted(created) == [0, 0, 0, 6]
        assert len(partitions(database_url, day)) == 3
    finally:
        for conn in conns:
            await conn.close()
