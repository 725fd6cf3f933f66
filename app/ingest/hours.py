"""Outgoing sessions per hour of receipt and policy domain (`result_hours`).

The day counters say what goes into a report; these say what is happening now. The
ingest committer adds a group's hours in its own transaction (`add_hours`), so an
acknowledged batch is counted here too; the alert conditions read them: a domain's
failure rate in the last hour against its baseline (same-day spike), and the time of the
newest result (silence). Hours are those of receipt, not of the sessions' timestamps:
a late batch is news when it arrives. Kept for `HOURS_KEPT`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from app.db.pool import Pool
from app.ingest import hour_store
from app.ingest.hour_store import Conn, DomainHours
from app.tlsrpt.tally import Tally

HOURS_KEPT = timedelta(days=8)

__all__ = ["HOURS_KEPT", "DomainHours", "add_hours", "hour_of"]


def hour_of(now: datetime) -> datetime:
    return now.replace(minute=0, second=0, microsecond=0)


def domain_counts(tallies: Sequence[Tally]) -> dict[str, tuple[int, int]]:
    """(successes, failures) per policy domain of some tallies."""
    counts: dict[str, tuple[int, int]] = {}
    for tally in tallies:
        for entry in tally:
            ok, failed = counts.get(entry.policy.policy_domain, (0, 0))
            counts[entry.policy.policy_domain] = (
                ok + entry.success_count,
                failed + entry.failure_count,
            )
    return counts


async def add_hours(conn: Conn, tallies: Sequence[Tally], now: datetime) -> None:
    """Add tallies to the hour of `now`, inside the caller's ingest transaction."""
    counts = domain_counts(tallies)
    if counts:
        await hour_store.upsert_hour_counts(conn, hour_of(now), now, counts)


async def domain_hours(
    pool: Pool, now: datetime, *, baseline_hours: int, min_failures: int
) -> list[DomainHours]:
    """Domains with `min_failures` failed sessions in the last hour (this hour and the
    one before it, as whole hours), with their counts then and in the baseline before."""
    recent = hour_of(now) - timedelta(hours=1)
    async with pool.connection() as conn:
        return await hour_store.list_domain_hours(
            conn,
            recent_from=recent,
            baseline_from=recent - timedelta(hours=baseline_hours),
            min_failures=min_failures,
        )


async def last_result_at(pool: Pool, now: datetime) -> datetime | None:
    """When the newest result arrived (within the hours kept)."""
    async with pool.connection() as conn:
        return await hour_store.get_last_result_at(conn, now - HOURS_KEPT)


async def active_hours(pool: Pool, start: datetime, end: datetime) -> int:
    """Hours in [start, end) in which results arrived."""
    async with pool.connection() as conn:
        return await hour_store.get_active_hours(conn, hour_of(start), end)


async def purge_hours(pool: Pool, now: datetime) -> int:
    async with pool.connection() as conn, conn.transaction():
        return await hour_store.delete_hours_before(conn, hour_of(now) - HOURS_KEPT)


async def failing_domain_count(
    pool: Pool, since: datetime, *, min_sessions: int, min_rate: float
) -> int:
    """Policy domains whose failure rate since `since` is at least `min_rate`."""
    async with pool.connection() as conn:
        return await hour_store.get_failing_domain_count(
            conn, since=hour_of(since), min_sessions=min_sessions, min_rate=min_rate
        )
