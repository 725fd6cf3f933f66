"""What operators see of the collected counters: per-day totals and a day's domains.

Read-only and aggregated in SQL, so a day of 10,000 policy domains is one indexed scan
(`policy_counts` by day) and a page of domains comes back in a few milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from app.db.pool import Pool
from app.ingest import store


@dataclass(frozen=True)
class DayTotals:
    day: date
    domains: int
    successful: int
    failed: int

    @property
    def sessions(self) -> int:
        return self.successful + self.failed


@dataclass(frozen=True)
class DomainTotals:
    policy_domain: str
    policies: int
    successful: int
    failed: int


async def day_totals(pool: Pool, from_day: date, to_day: date) -> list[DayTotals]:
    """Every day with results in [from_day, to_day], newest first."""
    async with pool.connection() as conn:
        return [DayTotals(*row) for row in await store.list_day_totals(conn, from_day, to_day)]


async def domain_totals(
    pool: Pool,
    day: date,
    *,
    contains: str | None = None,
    failing_only: bool = False,
    by_failures: bool = False,
    after: str | None = None,
    offset: int = 0,
    limit: int = 100,
) -> list[DomainTotals]:
    """A page of a day's policy domains with their session counts: by name after `after`,
    or (`by_failures`) the most failed first from `offset`."""
    async with pool.connection() as conn:
        rows = await store.list_domain_totals(
            conn,
            day,
            contains=contains or None,
            failing_only=failing_only,
            by_failures=by_failures,
            after=after,
            offset=offset,
            limit=limit,
        )
    return [DomainTotals(*row) for row in rows]


async def top_failing(pool: Pool, day: date, limit: int) -> list[tuple[str, int]]:
    """(policy domain, failed sessions): the day's domains failing most."""
    async with pool.connection() as conn:
        return await store.list_top_failing_domains(conn, day, limit)
