"""Concurrent writers against one database: exact totals, and closing a day mid-stream."""

from __future__ import annotations

import asyncio
from datetime import date

import psycopg
import pytest

from app.config import Settings
from app.db.pool import open_pool
from app.ingest.service import ClosedDayError, close_day, day_aggregates, record_tally
from app.tlsrpt.model import FailureDetail, Policy, PolicyType, ResultType
from app.tlsrpt.tally import Tally

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


async def test_many_concurrent_batches_give_exact_totals(
    database_url: str, settings: Settings
) -> None:
    # Two pools stand for two service instances.
    pools = [await open_pool(database_url, settings.database) for _ in range(2)]
    try:
        batches = 80
        await asyncio.gather(*(record_tally(pools[i % 2], batch(i)) for i in range(batches)))
        aggregates = await day_aggregates(pools[0], DAY)
    finally:
        for pool in pools:
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
    database_url: str, settings: Settings
) -> None:
    """A batch either lands before the close or is refused: nothing slips in after."""
    pool = await open_pool(database_url, settings.database)
    try:
        # A writer holds the shared day lock in an open transaction ...
        writer = await psycopg.AsyncConnection.connect(database_url)
        await writer.execute(
            "SELECT pg_advisory_xact_lock_shared(84600001, %(d)s::date - DATE '1970-01-01')",
            {"d": DAY},
        )

        async def closer() -> bool:
            async with pool.connection() as conn, conn.transaction():
                return await close_day(conn, DAY)

        closing = asyncio.create_task(closer())
        await asyncio.sleep(0.3)
        # ... so the close waits for it.
        assert not closing.done()
        await writer.commit()
        await writer.close()
        assert await asyncio.wait_for(closing, 5)
        with pytest.raises(ClosedDayError) as refused:
            await record_tally(pool, batch(0))
        assert refused.value.days == [DAY]
        assert await day_aggregates(pool, DAY) == []
    finally:
        await pool.close()


async def test_group_commit_fails_only_the_requests_of_a_closed_day(
    database_url: str, settings: Settings
) -> None:
    from app.ingest.group_commit import GroupCommitter

    pool = await open_pool(database_url, settings.database)
    committer = GroupCommitter(pool, writers=1)
    closed_day = date(2026, 11, 23)
    try:
        async with pool.connection() as conn, conn.transaction():
            await close_day(conn, closed_day)
        late = Tally()
        late.add_session(closed_day, Policy(PolicyType.NO_POLICY_FOUND, "late.example"), None)
        # 40 requests queued at once are written in a few shared transactions.
        outcomes = await asyncio.gather(
            *(committer.record(batch(i)) for i in range(20)),
            committer.record(late),
            *(committer.record(batch(i)) for i in range(20, 40)),
            return_exceptions=True,
        )
        assert [type(o).__name__ for o in outcomes].count("ClosedDayError") == 1
        assert isinstance(outcomes[20], ClosedDayError)
        assert all(o is None for i, o in enumerate(outcomes) if i != 20)
        aggregates = await day_aggregates(pool, DAY)
        assert {a.success_count for a in aggregates} == {2 * 40}
        assert await day_aggregates(pool, closed_day) == []
    finally:
        await committer.close()
        await pool.close()
