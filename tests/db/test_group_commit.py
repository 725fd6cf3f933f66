"""Group commit against real PostgreSQL: a group that loses a deadlock is written again
(the transaction was rolled back whole), and the error reaches its callers only when
every attempt lost."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from psycopg.errors import DeadlockDetected

from app.config import Settings
from app.db.group_commit import WRITE_ATTEMPTS, GroupCommitQueue, Pending
from app.db.pool import Pool, open_pool

A, B = 18_001, 18_002  # advisory lock keys of this test


class Locker(GroupCommitQueue[str, int]):
    """Writes a group by taking lock A then lock B; until `peer_rounds` runs out a peer
    transaction holds B and asks for A, so each of those attempts deadlocks."""

    def __init__(self, pool: Pool, url: str, peer_rounds: int) -> None:
        super().__init__(writers=1, budget=100)
        self.pool = pool
        self.url = url
        self.peer_rounds = peer_rounds
        self.attempts = 0

    def size(self, item: str) -> int:
        return 1

    async def write_group(self, group: list[Pending[str, int]]) -> None:
        self.attempts += 1
        peer = None
        try:
            async with self.pool.connection() as conn, conn.transaction():
                # This session notices the deadlock first and is the one rolled back.
                await conn.execute("SET LOCAL deadlock_timeout = '20ms'")
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", [A])
                if self.peer_rounds > 0:
                    self.peer_rounds -= 1
                    holds_b = asyncio.Event()
                    peer = asyncio.create_task(self._peer(holds_b))
                    await holds_b.wait()
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", [B])
        finally:
            if peer is not None:
                await peer  # it gets A once this transaction is rolled back
        for pending in group:
            pending.settle(self.attempts)

    async def _peer(self, holds_b: asyncio.Event) -> None:
        async with await psycopg.AsyncConnection.connect(self.url) as conn:
            async with conn.transaction():
                await conn.execute("SET LOCAL deadlock_timeout = '10s'")
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", [B])
                holds_b.set()
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", [A])


async def test_a_group_that_lost_a_deadlock_is_written_again(
    database_url: str, settings: Settings
) -> None:
    pool = await open_pool(database_url, settings.database)
    queue = Locker(pool, database_url, peer_rounds=1)
    try:
        assert await queue.submit("one") == 2  # the first attempt deadlocked
    finally:
        await queue.close()
        await pool.close()


async def test_a_deadlock_in_every_attempt_reaches_the_caller(
    database_url: str, settings: Settings
) -> None:
    pool = await open_pool(database_url, settings.database)
    queue = Locker(pool, database_url, peer_rounds=WRITE_ATTEMPTS)
    try:
        with pytest.raises(DeadlockDetected):
            await queue.submit("one")
        assert queue.attempts == WRITE_ATTEMPTS
    finally:
        await queue.close()
        await pool.close()


class Recorder(GroupCommitQueue[int, int]):
    """Items are their own size; a write waits until the test releases it and records
    the groups in flight together."""

    def __init__(self) -> None:
        super().__init__(writers=1, budget=10_000, small_size=10, small_writers=2)
        self.release = asyncio.Event()
        self.in_flight: list[list[int]] = []
        self.most_in_flight: list[list[int]] = []

    def size(self, item: int) -> int:
        return item

    async def write_group(self, group: list[Pending[int, int]]) -> None:
        self.in_flight.append([p.item for p in group])
        if len(self.in_flight) > len(self.most_in_flight):
            self.most_in_flight = list(self.in_flight)
        await self.release.wait()
        self.in_flight.remove([p.item for p in group])
        for pending in group:
            pending.settle(len(group))


async def test_small_items_have_two_writers_and_large_ones_one_that_merges() -> None:
    queue = Recorder()
    try:
        # Two small groups are written at once (one waits for its commit, the other is
        # written meanwhile), beside the one large group.
        first = []
        for n in (100, 1, 2):
            first.append(asyncio.create_task(queue.submit(n)))
            await asyncio.sleep(0.01)
        assert sorted(queue.most_in_flight) == [[1], [2], [100]]
        # While a large group is written, large items wait and are merged into one group.
        more = [asyncio.create_task(queue.submit(n)) for n in (200, 300)]
        await asyncio.sleep(0.01)
        assert [100] in queue.in_flight and [200, 300] not in queue.in_flight
        queue.release.set()
        assert await asyncio.gather(*first) == [1, 1, 1]
        assert await asyncio.gather(*more) == [2, 2]
    finally:
        await queue.close()


async def test_a_large_group_waits_for_the_requests_ready_to_submit() -> None:
    """Items submitted by tasks that are ready to run when the writer takes the first one
    (requests whose bodies are in, being parsed) join its group."""
    queue = Recorder()
    queue.release.set()

    async def parsed_later(item: int) -> int:
        await asyncio.sleep(0)  # its body was in; now it is parsed (no await), submitted
        return await queue.submit(item)

    try:
        sizes = await asyncio.gather(queue.submit(100), parsed_later(200), parsed_later(300))
        assert list(sizes) == [3, 3, 3]
        # It does not wait for what is not ready: a lone item is written alone.
        assert await queue.submit(400) == 1
    finally:
        await queue.close()
