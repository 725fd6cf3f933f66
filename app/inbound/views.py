"""What operators see of received reports at a glance: totals, senders, our domains.

Aggregated in SQL over the reports of a range of days (`inbound_reports_day` index);
a domain's day-by-day detail is `service.summarize`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from app.db.pool import Pool
from app.inbound import store


@dataclass(frozen=True)
class Totals:
    """Reports and the sessions they count; `name` is a sender or one of our domains."""

    name: str
    reports: int
    successful: int
    failed: int


async def totals_since(pool: Pool, from_day: date) -> Totals:
    async with pool.connection() as conn:
        return Totals("", *await store.get_totals_since(conn, from_day))


async def by_organization(pool: Pool, from_day: date, limit: int = 100) -> list[Totals]:
    """Sending organizations since `from_day`, the most failed sessions first."""
    async with pool.connection() as conn:
        return [Totals(*r) for r in await store.list_organization_totals(conn, from_day, limit)]


async def by_policy_domain(pool: Pool, from_day: date, limit: int = 100) -> list[Totals]:
    """Our policy domains reported on since `from_day`, the most failed sessions first."""
    async with pool.connection() as conn:
        rows = await store.list_policy_domain_totals(conn, from_day, limit)
    return [Totals(*r) for r in rows]
