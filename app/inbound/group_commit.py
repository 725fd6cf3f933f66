"""Group commit for received reports: concurrent reports share one statement and commit.

A report's cost in PostgreSQL is mostly per transaction and statement, not per row, so
writer tasks take whatever reports wait, write them in one multi-report statement (its
own transaction: one round trip), and answer each request after that commit. Copies of
one (organization, report-id) in a group are written once (the others are duplicates);
when a group fails its reports are written again one by one, so a report the database
refuses fails alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging

from app.clock import Clock
from app.db.group_commit import GroupCommitQueue, Pending
from app.db.pool import Pool
from app.inbound import store
from app.inbound.store import NewReport

log = logging.getLogger(__name__)


_Pending = Pending[NewReport, tuple[int, bool]]


class ReportCommitter(GroupCommitQueue[NewReport, tuple[int, bool]]):
    def __init__(
        self, pool: Pool, clock: Clock, *, writers: int = 3, max_policies: int = 5_000
    ) -> None:
        # The budget bounds a statement and its memory by policy rows.
        super().__init__(writers=writers, budget=max_policies)
        self._pool = pool
        self._clock = clock

    async def insert(self, report: NewReport) -> tuple[int, bool]:
        """Return the report's row id and whether this call stored it (False: a duplicate)
        once it is committed."""
        return await self.submit(report)

    def size(self, item: NewReport) -> int:
        return len(item.policies)

    async def write_group(self, group: list[_Pending]) -> None:
        # Copies of one key, in arrival order: the first one is the report.
        by_key: dict[tuple[str, str], list[_Pending]] = {}
        for pending in group:
            by_key.setdefault(pending.item.key, []).append(pending)
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
        reports = [dataclasses.replace(same[0].item, copies=len(same)) for same in copies]
        async with self._pool.connection() as conn:
            # The group is one statement, so it is its own transaction: sent alone it is
            # one round trip, committed when it returns (BEGIN and COMMIT were two more).
            await conn.set_autocommit(True)
            try:
                stored = await store.insert_reports(conn, reports, now=self._clock())
            finally:
                # As the pool's own check does: a broken connection must not hide the error.
                with contextlib.suppress(Exception):
                    await conn.set_autocommit(False)
        for same, (report_pk, inserted) in zip(copies, stored, strict=True):
            for index, pending in enumerate(same):
                pending.settle((report_pk, inserted and index == 0))


def _fail(same: list[_Pending], exc: BaseException) -> None:
    for pending in same:
        pending.fail(exc)
