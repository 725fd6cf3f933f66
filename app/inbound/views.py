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


async def by_policy_domain(
    pool: Pool, from_day: date, limit: int = 100, *, failing_only: bool = False
) -> list[Totals]:
    """Our policy domains reported on since `from_day` (only those with failed sessions,
    when `failing_only`), the most failed sessions first."""
    async with pool.connection() as conn:
        rows = await store.list_policy_domain_totals(
            conn, from_day, limit, failing_only=failing_only
        )
    return [Totals(*r) for r in rows]


@dataclass(frozen=True)
class FailureGroup:
    result_type: str
    mx_host: str | None
    failed: int
    receiving_ips: list[str]


async def failure_groups(
    pool: Pool, domain: str, from_day: date, to_day: date
) -> list[FailureGroup]:
    """A domain's reported failures grouped by result type and receiving MX, most first."""
    async with pool.connection() as conn:
        rows = await store.list_summary_failures(conn, domain, from_day, to_day)
    groups: dict[tuple[str, str | None], tuple[int, set[str]]] = {}
    for _day, _org, result_type, mx_host, receiving_ip, _sending_ip, count in rows:
        failed, ips = groups.get((result_type, mx_host), (0, set()))
        if receiving_ip:
            ips.add(receiving_ip)
        groups[(result_type, mx_host)] = (failed + count, ips)
    found = [FailureGroup(t, mx, n, sorted(ips)) for (t, mx), (n, ips) in groups.items()]
    return sorted(found, key=lambda g: (-g.failed, g.result_type, g.mx_host or ""))
