"""Group commit for received reports: concurrent reports share one statement and commit.

Under load a report's cost in PostgreSQL is mostly per transaction and per statement
(planning, round trip, the WAL flush at commit), not per row. Requests hand their report
to `ReportCommitter.insert`; a few writer tasks take whatever is waiting, write it with
one multi-report statement in one transaction, and answer every request after that
commit. Copies of one (organization, report-id) in the same group are written once: the
first is the report, the others are acknowledged as duplicates, as they would be one
after the other. Each request stays all-or-nothing: when a group fails, its reports are
written again one by one, so a report the database refuses fails alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass

from app.db.pool import Pool
from app.inbound import store
from app.inbound.store import NewReport

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    report: NewReport
    # (row id, inserted by this request)
    done: asyncio.Future[tuple[int, bool]]


class ReportCommitter:
    def __init__(self, pool: Pool, *, writers: int = 3, max_policies: int = 5_000) -> None:
        self._pool = pool
        self._writers = writers
        # A group stops growing past this many policy rows (one large report may exceed
        # it alone), so a statement and its memory stay bounded.
        self._max_policies = max_policies
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    async def insert(self, report: NewReport) -> tuple[int, bool]:
        """Return the report's row id and whether this call stored it (False: a duplicate)
        once it is committed."""
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._run()) for _ in range(self._writers)]
        done: asyncio.Future[tuple[int, bool]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(report, done))
        return await done

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _run(self) -> None:
        while True:
            group = [await self._queue.get()]
            size = len(group[0].report.policies)
            while size < self._max_policies and not self._queue.empty():
                item = self._queue.get_nowait()
                group.append(item)
                size += len(item.report.policies)
            await self._write_group(group)

    async def _write_group(self, group: list[_Pending]) -> None:
        # Copies of one key, in arrival order: the first one is the report.
        by_key: dict[tuple[str, str], list[_Pending]] = {}
        for item in group:
            by_key.setdefault(item.report.key, []).append(item)
        copies = list(by_key.values())
        try:
            await self._write(copies)
        except Exception as exc:
            if len(copies) == 1:
                _fail(copies[0], exc)
                return
            log.warning(
                "inbound_group_failed",
                extra={"fields": {"reports": len(copies), "error": type(exc).__name__}},
            )
            for same in copies:
                try:
                    await self._write([same])
                except Exception as alone:
                    _fail(same, alone)

    async def _write(self, copies: list[list[_Pending]]) -> None:
        reports = [dataclasses.replace(same[0].report, copies=len(same)) for same in copies]
        async with self._pool.connection() as conn, conn.transaction():
            stored = await store.insert_reports(conn, reports)
        for same, (report_pk, inserted) in zip(copies, stored, strict=True):
            for index, item in enumerate(same):
                if not item.done.done():
                    item.done.set_result((report_pk, inserted and index == 0))


def _fail(same: list[_Pending], exc: BaseException) -> None:
    for item in same:
        if not item.done.done():
            item.done.set_exception(exc)
