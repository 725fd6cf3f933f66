"""Socket to committed aggregates: the collector with the database sink."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path

import pytest

from app.collector.batch import Batch, DayTallies
from app.collector.service import Collector
from app.collector.sinks import BatchRefusedError, DatabaseSink, SinkUnavailableError
from app.config import DatabaseSettings, Settings
from app.db.pool import open_pool
from app.ingest.service import IngestCommitter, close_day, day_aggregates
from app.resources import Resources
from app.tlsrpt.libtlsrpt import parse_datagram
from app.tlsrpt.model import PolicyAggregate
from tests.clock import FakeClock
from tests.collector.datagrams import Expected
from tests.collector.memory import send_all
from tests.collector.test_collector import generated, options
from tests.wait import until

DAY = date(2026, 11, 24)


def database_sink(resources: Resources) -> DatabaseSink:
    return DatabaseSink(resources.committer, resources.clock, resources.settings)


def from_aggregates(aggregates: list[PolicyAggregate]) -> Expected:
    seen = Expected()
    for agg in aggregates:
        p = agg.policy
        key = (p.policy_type.value, p.policy_domain, p.policy_string, p.mx_host)
        seen.sessions[key] += agg.success_count + agg.failure_count
        seen.failures[key] += agg.failure_count
        for d, n in agg.failure_details:
            detail = (
                d.result_type.value,
                d.sending_mta_ip,
                d.receiving_mx_hostname,
                d.receiving_mx_helo,
                d.receiving_ip,
                d.additional_information,
                d.failure_reason_code,
            )
            seen.details[(key, detail)] += n
    seen.failures = +seen.failures
    return seen


async def test_the_days_aggregates_equal_what_was_sent(
    tmp_path: Path, resources: Resources, clock: FakeClock
) -> None:
    collector = Collector(options(tmp_path), database_sink(resources), clock=clock)
    await collector.start()
    datagrams, expected = generated(4000, seed=40)
    invalid = [b"{", b'{"d":"x.example","policies":[{"policy-type":2,"f":7}]}'] * 5
    await asyncio.to_thread(send_all, tmp_path / "tlsrpt.sock", datagrams[:2000] + invalid)
    # The invalid datagrams came last: once they are counted, the first half is in a
    # sealed batch, and the second half goes into later ones.
    await until(lambda: collector.stats().invalid.total() == len(invalid))
    await asyncio.to_thread(send_all, tmp_path / "tlsrpt.sock", datagrams[2000:])
    await collector.stop()

    assert from_aggregates(await day_aggregates(resources.pool, DAY)) == expected
    stats = collector.stats()
    assert stats.results_forwarded == sum(expected.sessions.values())
    assert dict(stats.invalid) == {"bad_json": 5, "invalid_field": 5}
    # Every session carries its recipient domain (`d`) for the breakdowns.
    async with resources.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT sum(success_count + failure_count) FROM recipient_counts WHERE day = %s",
            (DAY,),
        )
        row = await cur.fetchone()
    assert row is not None and row[0] == sum(expected.sessions.values())


async def test_a_batch_delivered_twice_counts_once(resources: Resources) -> None:
    datagrams, expected = generated(300, seed=41)
    tallies = DayTallies()
    for data in datagrams:
        tallies.add(DAY, parse_datagram(data))
    (batch,) = tallies.seal()
    sink = database_sink(resources)
    await sink.deliver(batch)
    await sink.deliver(batch)
    assert from_aggregates(await day_aggregates(resources.pool, DAY)) == expected


def one_batch(seed: int) -> Batch:
    """A batch of the day holding one generated datagram."""
    datagrams, _ = generated(1, seed=seed)
    tallies = DayTallies()
    tallies.add(DAY, parse_datagram(datagrams[0]))
    (batch,) = tallies.seal()
    return batch


async def test_a_closed_day_refuses_the_batch(resources: Resources) -> None:
    batch = one_batch(42)
    await close_day(resources.pool, resources.clock, DAY)
    with pytest.raises(BatchRefusedError, match="2026-11-24"):
        await database_sink(resources).deliver(batch)


async def test_an_unreachable_database_is_reported_as_unavailable() -> None:
    pool = await open_pool(
        "postgresql://postgres@127.0.0.1:1/none",
        DatabaseSettings(pool_min_size=1, pool_max_size=1, connect_timeout_seconds=0.3),
        wait=False,
    )
    pool.timeout = 0.5  # how long connection() waits; the default 30 s is for servers
    clock = FakeClock()
    committer = IngestCommitter(pool, clock)
    try:
        with pytest.raises(SinkUnavailableError):
            await DatabaseSink(committer, clock, Settings()).deliver(one_batch(43))
    finally:
        await committer.close()
        await pool.close()
