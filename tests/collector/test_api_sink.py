"""The collector posting to a real service over HTTP, while that service goes away and back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest

from app.collector.service import Collector
from app.collector.sinks import ApiSink, BatchRefusedError, SinkUnavailableError
from app.ingest.service import close_day, day_aggregates
from app.main import create_app
from app.resources import Resources
from app.tokens.service import Scope
from tests.clock import FakeClock
from tests.collector.datagrams import Expected
from tests.collector.live import LiveServer, free_port
from tests.collector.memory import send_all
from tests.collector.test_collector import generated, options
from tests.collector.test_database_sink import from_aggregates, one_batch
from tests.conftest import MakeToken
from tests.wait import until

DAY = date(2026, 11, 24)


async def test_api_down_for_a_while_loses_and_doubles_nothing(
    tmp_path: Path, resources: Resources, clock: FakeClock, make_token: MakeToken
) -> None:
    token = await make_token(Scope.INGEST)
    server = LiveServer(create_app(resources.settings, resources), free_port())
    await server.start()
    sink = ApiSink(server.url, token, timeout=5)
    collector = Collector(options(tmp_path), sink, clock=clock)
    await collector.start()
    path = tmp_path / "tlsrpt.sock"
    expected = Expected()

    def spooled(batches: int) -> Callable[[], bool]:
        return lambda: collector.stats().spool_batches >= batches

    async def send(seed: int) -> None:
        datagrams, part = generated(400, seed=seed)
        expected.sessions.update(part.sessions)
        expected.failures.update(part.failures)
        expected.details.update(part.details)
        await asyncio.to_thread(send_all, path, datagrams)

    try:
        await send(50)
        await until(lambda: collector.stats().results_forwarded > 0)

        await server.stop()
        for seed in (51, 52, 53):
            await send(seed)
            # Each send ends in at least one more spooled batch before the next.
            await until(spooled(seed - 50))
        assert collector.stats().batches_failed >= 1

        await server.start()
        await until(lambda: collector.stats().spool_batches == 0)
        await send(54)
        await collector.stop()
    finally:
        await sink.aclose()
        await server.stop()

    assert from_aggregates(await day_aggregates(resources.pool, DAY)) == expected
    stats = collector.stats()
    assert stats.results_forwarded == sum(expected.sessions.values())
    assert stats.results_spooled > 0
    assert stats.batches_refused == 0


async def test_the_service_refusing_a_closed_day_is_final(
    resources: Resources, make_token: MakeToken
) -> None:
    token = await make_token(Scope.INGEST)
    server = LiveServer(create_app(resources.settings, resources), free_port())
    await server.start()
    batch = one_batch(60)
    await close_day(resources.pool, resources.clock, DAY)
    good = ApiSink(server.url, token)
    bad_token = ApiSink(server.url, "not-a-token")
    try:
        with pytest.raises(BatchRefusedError, match="409"):
            await good.deliver(batch)
        # A bad token may be fixed by the operator: keep the batch.
        with pytest.raises(SinkUnavailableError, match="401"):
            await bad_token.deliver(batch)
    finally:
        await good.aclose()
        await bad_token.aclose()
        await server.stop()
