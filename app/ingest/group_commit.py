"""Group commit: concurrent ingest requests share one transaction.

Under load most of a small request's cost is its transaction (locks, round trips, the
WAL flush at commit). Requests hand their tally to `GroupCommitter.record`, a few writer
tasks merge whatever is waiting into one transaction, and every request is answered
after that commit. Each request stays all-or-nothing: one whose day turned out to be
closed fails alone with ClosedDayError; the others of the group are written.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from app.db.pool import Pool
from app.ingest import store
from app.ingest.service import ClosedDayError
from app.tlsrpt.tally import Tally

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    tally: Tally
    done: asyncio.Future[None]


class GroupCommitter:
    def __init__(self, pool: Pool, *, writers: int = 3, max_entries: int = 20_000) -> None:
        self._pool = pool
        self._writers = writers
        self._max_entries = max_entries
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    async def record(self, tally: Tally) -> None:
        """Return once the tally is committed; raise ClosedDayError if its day is closed."""
        if not len(tally):
            return
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._run()) for _ in range(self._writers)]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(tally, done))
        await done

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _run(self) -> None:
        while True:
            group = [await self._queue.get()]
            size = len(group[0].tally)
            while size < self._max_entries and not self._queue.empty():
                item = self._queue.get_nowait()
                group.append(item)
                size += len(item.tally)
            try:
                await self._write(group)
            except Exception as exc:
                for item in group:
                    if not item.done.done():
                        item.done.set_exception(exc)

    async def _write(self, group: list[_Pending]) -> None:
        days = sorted(set().union(*(item.tally.days() for item in group)))
        async with self._pool.connection() as conn, conn.transaction():
            await store.lock_days_shared(conn, days)
            closed = set(await store.list_closed_days(conn, days))
            accepted = []
            for item in group:
                refused = closed & item.tally.days()
                if not refused:
                    accepted.append(item)
                elif not item.done.done():
                    item.done.set_exception(ClosedDayError(sorted(refused)))
            if len(accepted) == 1:
                await store.upsert_counts(conn, accepted[0].tally)
            elif accepted:
                merged = Tally()
                for item in accepted:
                    merged.merge(item.tally)
                await store.upsert_counts(conn, merged)
        for item in accepted:
            if not item.done.done():
                item.done.set_result(None)
