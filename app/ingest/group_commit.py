"""Group commit of ingest tallies (see app.db.group_commit).

Each request stays all-or-nothing: one whose day turned out to be closed fails alone
with ClosedDayError; the others of the group are written in the shared transaction.
"""

from __future__ import annotations

from app.db.group_commit import GroupCommitQueue, Pending
from app.db.pool import Pool
from app.ingest import store
from app.ingest.service import ClosedDayError
from app.tlsrpt.tally import Tally


class GroupCommitter(GroupCommitQueue[Tally, None]):
    def __init__(self, pool: Pool, *, writers: int = 3, max_entries: int = 20_000) -> None:
        super().__init__(writers=writers, budget=max_entries)
        self._pool = pool

    async def record(self, tally: Tally) -> None:
        """Return once the tally is committed; raise ClosedDayError if its day is closed."""
        if len(tally):
            await self.submit(tally)

    def size(self, item: Tally) -> int:
        return len(item)

    async def write_group(self, group: list[Pending[Tally, None]]) -> None:
        days = sorted(set().union(*(p.item.days() for p in group)))
        async with self._pool.connection() as conn, conn.transaction():
            await store.lock_days_shared(conn, days)
            closed = set(await store.list_closed_days(conn, days))
            accepted = []
            for pending in group:
                refused = closed & pending.item.days()
                if refused:
                    pending.fail(ClosedDayError(sorted(refused)))
                else:
                    accepted.append(pending)
            if len(accepted) == 1:
                await store.upsert_counts(conn, accepted[0].item)
            elif accepted:
                merged = Tally()
                for pending in accepted:
                    merged.merge(pending.item)
                await store.upsert_counts(conn, merged)
        for pending in accepted:
            pending.settle(None)
