"""Concurrent writers against one database: exact totals, and closing a day mid-stream."""

from __future__ import annotations

import asyncio
from datetime import date

import psycopg
import pytest

from app.config import Settings
from app.db.pool import Pool, open_pool
from app.ingest.service import (
    ClosedDayError,
    IngestCommitter,
    close_day,
    day_aggregates,
    record_tally,
)
from app.tlsrpt.model import FailureDetail, Policy, PolicyType, ResultType
from app.tlsrpt.tally import Tally
from tests.clock import FakeClock

DAY = date(2026, 11, 24)
DOMAINS = [f"d{i}.example" for i in range(20)]


def batch(seed: int) -> Tally:
    """Every batch touches every domain, in a different order, so row locks interleave."""
    tally = Tally()
    order = DOMAINS[seed % len(DOMAINS) :] + DOMAINS[: seed % len(DOMAINS)]
    for domain in order:
        policy = Policy(PolicyType.STS, domain, ("version: STSv1",), (f"mx.{domain}",))
        tally.add_session(DAY, policy, None, count=2)
        detail = FailureDetail(ResultType.STARTTLS_NOT_SUPPORTED, "192.0.2.1", f"mx.{domain}")
        tally.add_session(DAY, policy, detail, count=1)
    return tally


async def until_waiting_for_a_lock(pool: Pool) -> None:
    """Return once some session of this database waits for a lock (10 s at most)."""
    async with asyncio.timeout(10):
        while True:
            async with pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                    "WHERE NOT l.granted AND d.datname = current_database()"
                )
                row = await cur.fetchone()
            if row and row[0]:
                return
            await asyncio.sleep(0.01)


async def test_many_concurrent_batches_give_exact_totals(
    database_url: str, settings: Settings, clock: FakeClock
) -> None:
    # Two pools and committers stand for two service instances.
    pools = [await open_pool(database_url, settings.database) for _ in range(2)]
    committers = [IngestCommitter(pool, clock) for pool in pools]
    try:
        batches = 80
        await asyncio.gather(
            *(record_tally(committers[i % 2], clock, settings, batch(i)) for i in range(batches))
        )
        aggregates = await day_aggregates(pools[0], DAY)
    finally:
        for committer, pool in zip(committers, pools, strict=True):
            await committer.close()
            await pool.close()
    assert len(aggregates) == len(DOMAINS)
    for agg in aggregates:
        assert (agg.success_count, agg.failure_count, agg.trigger_count) == (
            2 * batches,
            batches,
            3 * batches,
        )
        ((_, n),) = agg.failure_details
        assert n == batches


async def test_closing_a_day_waits_for_inflight_batches_then_refuses(
    database_url: str, settings: Settings, clock: FakeClock
) -> None:
    """A batch either lands before the close or is refused: nothing slips in after."""
    pool = await open_pool(database_url, settings.database)
    committer = IngestCommitter(pool, clock)
    try:
        # A writer holds the shared day lock in an open transaction ...
        writer = await psycopg.AsyncConnection.connect(database_url)
        await writer.execute(
            "SELECT pg_advisory_xact_lock_shared(84600001, %(d)s::date - DATE '1970-01-01')",
            {"d": DAY},
        )

        closing = asyncio.create_task(close_day(pool, clock, DAY))
        # ... so the close waits for it.
        await until_waiting_for_a_lock(pool)
        assert not closing.done()
        await writer.commit()
        await writer.close()
        assert await asyncio.wait_for(closing, 5)
        with pytest.raises(ClosedDayError) as refused:
            await record_tally(committer, clock, settings, batch(0))
        assert refused.value.days == [DAY]
        assert await day_aggregates(pool, DAY) == []
    finally:
        await committer.close()
        await pool.close()


async def test_group_commit_fails_only_the_requests_of_a_closed_day(
    database_url: str, settings: Settings, clock: FakeClock
) -> None:
    pool = await open_pool(database_url, settings.database)
    committer = IngestCommitter(pool, clock, writers=1)
    closed_day = date(2026, 11, 23)
    try:
        await close_day(pool, clock, closed_day)
        late = Tally()
        late.add_session(closed_day, Policy(PolicyType.NO_POLICY_FOUND, "late.example"), None)
        # 40 requests queued at once are written in a few shared transactions.
        outcomes = await asyncio.gather(
            *(record_tally(committer, clock, settings, batch(i)) for i in range(20)),
            record_tally(committer, clock, settings, late),
            *(record_tally(committer, clock, settings, batch(i)) for i in range(20, 40)),
            return_exceptions=True,
        )
        assert [type(o).__name__ for o in outcomes].count("ClosedDayError") == 1
        assert isinstance(outcomes[20], ClosedDayError)
        assert all(o is True for i, o in enumerate(outcomes) if i != 20)
        aggregates = await day_aggregates(pool, DAY)
        assert {a.success_count for a in aggregates} == {2 * 40}
        assert await day_aggregates(pool, closed_day) == []
    finally:
        await committer.close()
        await pool.close()
