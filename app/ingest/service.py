"""Ingest service: validates days, adds a batch's counters, and closes days.

`record_tally` is the one write path (HTTP results, pre-counted tallies, the libtlsrpt
collector): the whole tally is added in one transaction, so a batch is all-or-nothing,
and a day being closed concurrently either sees the batch or makes it fail with
`ClosedDayError` (the shared/exclusive day locks in `store` settle the race).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from app.config import Settings
from app.db.pool import Pool
from app.ingest import store
from app.ingest.store import Conn
from app.tlsrpt.model import PolicyAggregate
from app.tlsrpt.tally import Tally


class ClosedDayError(Exception):
    """Results for a day whose reports are already built (SPEC §3: refused, never merged)."""

    def __init__(self, days: Sequence[date]) -> None:
        self.days = sorted(days)
        super().__init__("closed: " + ", ".join(d.isoformat() for d in self.days))


def oldest_accepted_day(now: datetime, settings: Settings) -> date:
    """Results for days before this are past retention (refused, and purged)."""
    return now.astimezone(UTC).date() - timedelta(days=settings.retention.results_days)


@dataclass(frozen=True, slots=True)
class TimestampWindow:
    """The timestamps ingest accepts at one moment: from the first instant of the oldest
    retained UTC day to a little clock skew into the future."""

    earliest: datetime
    latest: datetime
    future_seconds: int
    retention_days: int

    @classmethod
    def at(cls, now: datetime, settings: Settings) -> TimestampWindow:
        oldest = oldest_accepted_day(now, settings)
        return cls(
            earliest=datetime(oldest.year, oldest.month, oldest.day, tzinfo=UTC),
            latest=now + timedelta(seconds=settings.ingest.max_future_seconds),
            future_seconds=settings.ingest.max_future_seconds,
            retention_days=settings.retention.results_days,
        )

    def problem(self, ts: datetime) -> str | None:
        """Why a result's timestamp is refused, or None when it is acceptable."""
        if ts > self.latest:
            return f"more than {self.future_seconds} s in the future"
        if ts < self.earliest:
            return f"older than the retention of {self.retention_days} days"
        return None


async def record_tally(pool: Pool, tally: Tally) -> None:
    """Add the tally's counters in one transaction; raise ClosedDayError, storing nothing."""
    if not len(tally):
        return
    days = sorted(tally.days())
    async with pool.connection() as conn, conn.transaction():
        await store.lock_days_shared(conn, days)
        closed = await store.list_closed_days(conn, days)
        if closed:
            raise ClosedDayError(closed)
        await store.upsert_counts(conn, tally)


async def close_day(conn: Conn, day: date) -> bool:
    """Close a day inside the caller's transaction; True if this call closed it.

    Waits for in-flight batches of that day to commit; batches after it get
    ClosedDayError. The caller builds the day's reports after its commit.
    """
    await store.lock_day_exclusive(conn, day)
    return await store.upsert_day_closed(conn, day)


async def day_aggregates(
    pool: Pool, day: date, policy_domain: str | None = None
) -> list[PolicyAggregate]:
    async with pool.connection() as conn:
        return await store.list_day_aggregates(conn, day, policy_domain)


async def purge_expired(pool: Pool, now: datetime, settings: Settings) -> int:
    """Delete counters past retention; returns the number of policy rows deleted."""
    async with pool.connection() as conn, conn.transaction():
        return await store.delete_counts_before(conn, oldest_accepted_day(now, settings))
